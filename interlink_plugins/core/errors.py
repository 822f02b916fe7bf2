"""Errors the HTTP edge maps to status codes."""

from __future__ import annotations


class PodSpecError(ValueError):
    """The pod is invalid or unsupported: answered with a 4xx naming the field."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


class BackendUnavailable(RuntimeError):
    """The scheduler could not be reached (connection, daemon down, timeout)."""

    def __init__(self, backend: str, command: str, detail: str) -> None:
        super().__init__(f"{backend} unavailable: {command}: {detail}")
        self.backend = backend
        self.command = command
        self.detail = detail


class SubmitRejected(RuntimeError):
    """The scheduler answered and refused the job (bad request, limits)."""

    def __init__(self, detail: str, *, retryable: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable


class LogRequestError(ValueError):
    """A log request that cannot be served (container not started, no previous run)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ConfigError(ValueError):
    """A known config key with a bad value: start-up stops naming key and value."""
