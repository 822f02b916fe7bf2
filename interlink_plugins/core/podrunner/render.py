"""Render the pod runner: the bash script that runs a pod's containers inside the job.

One script for every backend: a small generated header (``templates/pod_runner_header.sh.j2``, the
pod's values, each quoted by the template layer) and the static runner (``templates/pod_runner.sh``,
the same for every pod, a content-hashed helper the header sources). The state it writes under
``<job_dir>/c/<name>/`` is the contract in docs/internals.md.
"""

from __future__ import annotations

import math
import posixpath
import re
from functools import lru_cache
from importlib import resources

from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.podrunner import templating
from interlink_plugins.core.podrunner.plan import ContainerRun, ProbeRun, RunPlan

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_POLICIES = ("Never", "OnFailure", "Always")
_PROBE_KINDS = ("startup", "readiness", "liveness")
_REASON = re.compile(r"[A-Z][A-Za-z]{0,63}")
STATIC_RUNNER = "pod_runner.sh"
"""The static part of the pod runner, a helper (core/podrunner/helpers.py)."""
MIN_LOG_BYTES = 4096
"""The smallest log cap (the runner keeps 256 bytes of it for the truncation marker)."""


def render_runner(plan: RunPlan) -> str:
    """The pod runner script (bash >= 5) for ``plan``: the header sourcing the static runner from
    ``plan.helper_dir``, or, without one, the header followed by the static runner (self-contained).

    Raises :class:`PodSpecError` (a ``ValueError``) when the plan cannot be run as given.
    """
    header = render_header(plan)
    if plan.helper_dir:
        source = templating.quote_words(["source", posixpath.join(plan.helper_dir, STATIC_RUNNER)])
        return f"{header}# the static runner, the same for every pod\n{source} || exit 1\n"
    return header + static_runner()


@lru_cache(maxsize=1)
def static_runner() -> str:
    """The static part of the pod runner (templates/pod_runner.sh)."""
    return resources.files("interlink_plugins").joinpath("templates", STATIC_RUNNER).read_text()


def render_header(plan: RunPlan) -> str:
    """The per-job header: the plan's values as shell assignments, every value quoted."""
    _check(plan)
    containers = plan.containers
    return templating.render(
        "pod_runner_header.sh.j2",
        plan=plan,
        names=[c.name for c in containers],
        kinds=[c.kind for c in containers],
        # a sidecar restarts like restartPolicy Always, whatever the plan says
        policies=["Always" if c.sidecar else c.restart_policy for c in containers],
        sidecars=[c.sidecar for c in containers],
        images=[c.image for c in containers],
        image_failures=[c.image_failure for c in containers],
        binds=[[word for bind in c.binds for word in bind.to_json()] for c in containers],
        backoff_initial_us=_microseconds(plan.backoff_initial_seconds),
        backoff_max_us=_microseconds(plan.backoff_max_seconds),
        log_max_bytes=plan.log_max_bytes,
    )


def _microseconds(seconds: float) -> int:
    return max(1, round(seconds * 1_000_000))


def _check(plan: RunPlan) -> None:
    """Refuse plans the runner cannot carry out safely (names become paths, keys become variables)."""
    seen: set[str] = set()
    for index, c in enumerate(plan.containers):
        _check_container(index, c)
        if c.name in seen:
            raise PodSpecError(f"containers[{index}].name", f"duplicate container name {c.name!r}")
        seen.add(c.name)
    for key, _value in plan.runner_env:
        if not _ENV_NAME.fullmatch(key):
            raise PodSpecError("runner_env", f"not a shell variable name: {key!r}")
    if isinstance(plan.grace_seconds, bool) or not isinstance(plan.grace_seconds, int):
        raise PodSpecError("grace_seconds", f"must be an integer, got {plan.grace_seconds!r}")
    if plan.grace_seconds < 0:
        raise PodSpecError("grace_seconds", f"must be >= 0, got {plan.grace_seconds}")
    for field, seconds in (
        ("backoff_initial_seconds", plan.backoff_initial_seconds),
        ("backoff_max_seconds", plan.backoff_max_seconds),
    ):
        if not math.isfinite(seconds) or seconds <= 0:
            raise PodSpecError(field, f"must be a positive number of seconds, got {seconds!r}")
    if isinstance(plan.log_max_bytes, bool) or not isinstance(plan.log_max_bytes, int):
        raise PodSpecError("log_max_bytes", f"must be an integer, got {plan.log_max_bytes!r}")
    if plan.log_max_bytes and plan.log_max_bytes < MIN_LOG_BYTES:
        raise PodSpecError("log_max_bytes", f"must be 0 (no cap) or >= {MIN_LOG_BYTES}, got {plan.log_max_bytes}")
    if not plan.job_dir:
        raise PodSpecError("job_dir", "empty job directory")
    for text in (plan.job_dir, plan.runner_path, plan.helper_dir, *plan.prologue, *plan.wrapper):
        if "\0" in text:
            raise PodSpecError("job", "NUL byte in the job dir, PATH, prologue or wrapper")


def _check_container(index: int, c: ContainerRun) -> None:
    where = f"containers[{index}]"
    if not _DNS_LABEL.fullmatch(c.name):
        raise PodSpecError(f"{where}.name", f"not a DNS label: {c.name!r}")
    if c.kind not in ("init", "main"):
        raise PodSpecError(f"{where}.kind", f"unknown kind {c.kind!r}")
    if c.restart_policy not in _POLICIES:
        raise PodSpecError(f"{where}.restartPolicy", f"unknown restart policy {c.restart_policy!r}")
    if c.sidecar and c.kind != "init":
        raise PodSpecError(f"{where}.restartPolicy", "only an init container can be a sidecar")
    if c.kind == "init" and not c.sidecar and c.restart_policy == "Always":
        raise PodSpecError(f"{where}.restartPolicy", "Always on an init container makes it a sidecar")
    if not _REASON.fullmatch(c.image_failure):
        raise PodSpecError(f"{where}.image", f"not a waiting reason: {c.image_failure!r}")
    if not c.argv:
        raise PodSpecError(f"{where}.command", "empty command")
    bind_words = tuple(word for bind in c.binds for word in bind.to_json())
    for words in (c.argv, c.post_start_argv, c.pre_stop_argv, c.cleanup_argv, c.image_argv, (c.image,), bind_words):
        if any("\0" in word for word in words):
            raise PodSpecError(f"{where}.command", "NUL byte in an argument")
    seen: set[str] = set()
    for probe in c.probes:
        _check_probe(where, probe)
        if probe.kind in seen:
            raise PodSpecError(f"{where}.{probe.kind}Probe", "only one probe of each kind")
        seen.add(probe.kind)


def _check_probe(where: str, probe: ProbeRun) -> None:
    field = f"{where}.{probe.kind}Probe"
    if probe.kind not in _PROBE_KINDS:
        raise PodSpecError(f"{where}.probes", f"unknown probe kind {probe.kind!r}")
    if not probe.argv or any("\0" in word for word in probe.argv):
        raise PodSpecError(field, "empty probe command or NUL byte in it")
    for name, value, minimum in (
        ("initialDelaySeconds", probe.initial_delay_seconds, 0),
        ("periodSeconds", probe.period_seconds, 1),
        ("timeoutSeconds", probe.timeout_seconds, 1),
        ("successThreshold", probe.success_threshold, 1),
        ("failureThreshold", probe.failure_threshold, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value > 10**6:
            raise PodSpecError(f"{field}.{name}", f"must be an integer >= {minimum}, got {value!r}")
    grace = probe.grace_seconds
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int) or grace < 0):
        raise PodSpecError(f"{field}.terminationGracePeriodSeconds", f"must be an integer >= 0, got {grace!r}")
