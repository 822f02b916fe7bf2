"""A pod's lifecycle state beyond its job: what the service decided and must remember across a restart.

Persisted as the record's ``meta`` object of the state file, with the keys it always had (a state written
before this type, or by an older plugin, loads as it is; a key this version does not know is kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

WaitingReason = Literal[
    "",  # not waiting
    "BackendUnavailable",  # an outage: retried by the poller until the submit deadline
    "SubmitThrottled",  # a limit of the scheduler: retried with back-off at retry_at
]

DEFAULT_GRACE_SECONDS = 30.0


@dataclass
class Lifecycle:
    # from the pod spec, at create (or at adoption, from the job dir's pod.json)
    images: dict[str, str] = field(default_factory=dict)  # container -> image
    sidecars: list[str] = field(default_factory=list)  # init containers that keep running (restartPolicy Always)
    grace_seconds: float | None = None  # the pod's terminationGracePeriodSeconds (None: not known)
    field_notes: dict[str, list[str]] = field(default_factory=dict)  # container -> pod fields not honoured
    # submission
    waiting_reason: WaitingReason = ""  # why a pod in phase waiting-backend waits
    submit_attempts: int = 0  # attempts so far (after the first, a retry looks the job up before it submits)
    submit_refused: bool = False  # the last attempt was answered with a refusal: it cannot have gone through
    throttled: int = 0  # refusals for a scheduler limit in a row (the back-off doubles with each)
    retry_at: float = 0.0  # a throttled pod's next attempt (epoch seconds)
    # delete
    delete_graceful_sent: bool = False  # the graceful cancel went out (the hard one follows at delete_after)
    # reporting
    node: str = ""  # where the job runs, as the scheduler said last
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a newer plugin, kept as they were

    @property
    def grace(self) -> float:
        """The pod's grace period, or Kubernetes' default when it is not known."""
        return DEFAULT_GRACE_SECONDS if self.grace_seconds is None else float(self.grace_seconds)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Lifecycle:
        """From a state file's ``meta`` object, or a pod.json read back at adoption: a key missing, or of
        a type it never has (a job can rewrite its pod.json), is its default."""
        data = dict(data or {})
        if not _waiting_reason(data.get("waiting_reason")) and data.get("waiting_reason"):
            reason = ""  # a reason of a newer plugin: kept as it was, in extra
        else:
            reason = data.pop("waiting_reason", "")
        return cls(
            images={str(k): str(v) for k, v in _mapping(data.pop("images", None)).items()},
            sidecars=[str(name) for name in _sequence(data.pop("sidecars", None))],
            grace_seconds=_number(data.pop("grace_seconds", None)),
            field_notes={str(k): [str(n) for n in _sequence(v)]
                         for k, v in _mapping(data.pop("field_notes", None)).items()},
            waiting_reason=_waiting_reason(reason),
            submit_attempts=int(_number(data.pop("submit_attempts", None)) or 0),
            submit_refused=bool(data.pop("submit_refused", False)),
            throttled=int(_number(data.pop("throttled", None)) or 0),
            retry_at=_number(data.pop("retry_at", None)) or 0.0,
            delete_graceful_sent=bool(data.pop("delete_graceful_sent", False)),
            node=str(data.pop("node", "") or ""),
            extra=data,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``meta`` object as the state file has it: the keys set, by the names they always had."""
        data: dict[str, Any] = dict(self.extra)
        data.update(images=dict(self.images), sidecars=list(self.sidecars))
        if self.grace_seconds is not None:
            data["grace_seconds"] = self.grace_seconds
        optional: dict[str, Any] = {
            "field_notes": {k: list(v) for k, v in self.field_notes.items()},
            "waiting_reason": self.waiting_reason,
            "submit_attempts": self.submit_attempts,
            "submit_refused": self.submit_refused,
            "throttled": self.throttled,
            "retry_at": self.retry_at,
            "delete_graceful_sent": self.delete_graceful_sent,
            "node": self.node,
        }
        data.update({key: value for key, value in optional.items() if value})
        return data


def _waiting_reason(value: object) -> WaitingReason:
    if value == "BackendUnavailable":
        return "BackendUnavailable"
    if value == "SubmitThrottled":
        return "SubmitThrottled"
    return ""


def _mapping(value: object) -> Mapping[Any, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
