"""Wire models, exact keys as interLink's Go types serialise them (see the wire contract).

Pod bodies stay plain JSON (parsed by core.pod with Kubernetes field paths in every error);
these models describe the envelopes and answers, and document them in the OpenAPI schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CreateResponse(BaseModel):
    PodUID: str
    PodJID: str


class LogOpts(BaseModel):
    model_config = ConfigDict(extra="ignore")

    Tail: int = Field(default=0, ge=0)
    Bytes: int = Field(default=0, ge=0)
    LimitBytes: int = Field(default=0, ge=0, description="accepted for SDK clients; interLink sends Bytes")
    Timestamps: bool = False
    Follow: bool = False
    Previous: bool = False
    SinceSeconds: int = Field(default=0, ge=0)
    SinceTime: datetime | None = None

    @field_validator("SinceTime", mode="before")
    @classmethod
    def _zero_time(cls, value: Any) -> Any:
        if value in (None, "", "0001-01-01T00:00:00Z"):
            return None
        return value


class LogRequestBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    Namespace: str = ""
    PodUID: str = Field(min_length=1)
    PodName: str = ""
    ContainerName: str = Field(min_length=1)
    Opts: LogOpts = Field(default_factory=lambda: LogOpts())


class Taint(BaseModel):
    key: str
    value: str = ""
    effect: str = "NoSchedule"


class Accelerator(BaseModel):
    resourceType: str
    available: str


class PingResources(BaseModel):
    cpu: str | None = None
    memory: str | None = None
    pods: str | None = None
    accelerators: list[Accelerator] | None = None


class PingResponse(BaseModel):
    status: str = "ok"
    resources: PingResources | None = None
    taints: list[Taint] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: str
    field: str | None = None
