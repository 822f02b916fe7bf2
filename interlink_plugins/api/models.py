"""Wire models, exact keys as interLink's Go types serialise them (see the wire contract).

Pod bodies stay plain JSON (parsed by core.model.pod with Kubernetes field paths in every error);
these models describe the envelopes and answers, and document them in the OpenAPI schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CreateResponse(BaseModel):
    PodUID: str
    PodJID: str


# interLink's LogOpts fields are Go ints (int64): a larger number never comes from it, and would overflow
# the C sizes and dates the plugin turns it into
GO_INT_MAX = 2**63 - 1


class LogOpts(BaseModel):
    model_config = ConfigDict(extra="ignore")

    Tail: int = Field(default=0, ge=0, le=GO_INT_MAX)
    Bytes: int = Field(default=0, ge=0, le=GO_INT_MAX)
    LimitBytes: int = Field(default=0, ge=0, le=GO_INT_MAX,
                            description="accepted for SDK clients; interLink sends Bytes")
    Timestamps: bool = False
    Follow: bool = False
    Previous: bool = False
    SinceSeconds: int = Field(default=0, ge=0, le=GO_INT_MAX)
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


class StateWaiting(BaseModel):
    reason: str = ""
    message: str = ""


class StateRunning(BaseModel):
    startedAt: str


class StateTerminated(BaseModel):
    exitCode: int
    reason: str = ""
    message: str = ""
    startedAt: str | None = None
    finishedAt: str | None = None
    signal: int | None = None


class ContainerState(BaseModel):
    """Exactly one of the three, as Kubernetes' v1.ContainerState."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    waiting: StateWaiting | None = None
    running: StateRunning | None = None
    terminated: StateTerminated | None = None


class ContainerStatus(BaseModel):
    name: str
    state: ContainerState
    lastState: ContainerState | None = None
    ready: bool
    started: bool
    restartCount: int = Field(ge=0)
    image: str
    imageID: str


class PodStatusAnswer(BaseModel):
    """One entry of the /status answer (interLink's PodStatus)."""

    name: str
    UID: str
    namespace: str
    JID: str
    containers: list[ContainerStatus]
    initContainers: list[ContainerStatus]
