"""Kubernetes probes and lifecycle handlers turned into argv lists the pod runner runs in the job.

* ``exec``: the runtime's own exec (core.runtimes.containers ``exec_argv``: ``podman exec`` into the running
  container; apptainer starts the command in the container's image and environment; runtime
  ``none`` runs it on the host with the pod's env and mounts).
* ``tcpSocket``: ``probe.sh tcp HOST PORT`` (bash ``/dev/tcp``).
* ``httpGet``: ``probe.sh http SCHEME HOST PORT PATH [HEADER]...`` (curl, else a bash ``/dev/tcp``
  HTTP/1.0 GET); 200-399 is success, as with the kubelet.
* ``sleep`` (lifecycle hooks only): ``sleep N``.

The host defaults to 127.0.0.1: every container of a pod shares the job's network namespace on
the compute node. Named ports resolve through the container's ``ports[].name``.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.pod import Container, Pod
from interlink_plugins.core.podrunner.plan import ProbeKind, ProbeRun
from interlink_plugins.core.runtimes.containers import PROBE_HELPER, Runtime, RuntimeContext

MPI_HELPER = "mpi.sh"
DEFAULT_HOST = "127.0.0.1"
_PROBE_KEYS: Mapping[str, ProbeKind] = {
    "startupProbe": "startup",
    "readinessProbe": "readiness",
    "livenessProbe": "liveness",
}
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOST = re.compile(r"^[A-Za-z0-9.:_-]{1,253}$")


def probe_helper_files() -> dict[str, str]:
    """probe.sh and mpi.sh, installed in the job dir beside ns-exec.sh."""
    templates = resources.files("interlink_plugins").joinpath("templates")
    return {name: templates.joinpath(name).read_text() for name in (PROBE_HELPER, MPI_HELPER)}


def _container_ports(pod: Pod, container: Container) -> dict[str, int]:
    spec = pod.raw.get("spec") or {}
    key = "initContainers" if container.kind == "init" else "containers"
    for entry in spec.get(key) or []:
        if isinstance(entry, dict) and entry.get("name") == container.name:
            ports = {}
            for port in entry.get("ports") or []:
                if isinstance(port, dict) and isinstance(port.get("name"), str):
                    number = port.get("containerPort")
                    if isinstance(number, int) and not isinstance(number, bool):
                        ports[port["name"]] = number
            return ports
    return {}


def _port(value: Any, ports: Mapping[str, int], field: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= 65535:
            return value
        raise PodSpecError(field, f"port {value} is not in 1-65535")
    if isinstance(value, str) and value in ports:
        return ports[value]
    raise PodSpecError(field, f"port {value!r} is neither a number nor the name of one of the container's ports")


def _host(spec: Mapping[str, Any], field: str) -> str:
    host = spec.get("host") or DEFAULT_HOST
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        raise PodSpecError(f"{field}.host", f"{host!r} is not a host name or address")
    return host


def _int(spec: Mapping[str, Any], key: str, default: int, minimum: int, field: str) -> int:
    value = spec.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PodSpecError(f"{field}.{key}", f"must be an integer >= {minimum}")
    return value


def parse_handler(
    handler: Mapping[str, Any], *, field: str, pod: Pod, container: Container, hook: bool
) -> tuple[str, tuple[str, ...]]:
    """One probe or lifecycle handler, validated, as ``(action, words)`` for any backend to run.

    ``exec``: the command; ``http``: scheme, host, port, path, headers ("Name: value");
    ``tcp``: host, port; ``sleep`` (hooks only): seconds."""
    actions = [k for k in ("exec", "httpGet", "tcpSocket", "grpc", "sleep") if handler.get(k) is not None]
    if len(actions) != 1:
        raise PodSpecError(field, "must set exactly one of exec, httpGet, tcpSocket" + (", sleep" if hook else ""))
    action = actions[0]
    spec = handler[action]
    where = f"{field}.{action}"
    if not isinstance(spec, dict):
        raise PodSpecError(where, "must be an object")
    if action == "exec":
        command = spec.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(w, str) for w in command):
            raise PodSpecError(f"{where}.command", "must be a non-empty list of strings")
        if any("\0" in w for w in command):
            raise PodSpecError(f"{where}.command", "contains a NUL byte")
        return "exec", tuple(command)
    if action == "sleep" and hook:
        return "sleep", (str(_int(spec, "seconds", 0, 0, where)),)
    if action == "httpGet":
        ports = _container_ports(pod, container)
        port = _port(spec.get("port"), ports, f"{where}.port")
        scheme = str(spec.get("scheme") or "HTTP").upper()
        if scheme not in ("HTTP", "HTTPS"):
            raise PodSpecError(f"{where}.scheme", f"{scheme!r} is not HTTP or HTTPS")
        path = spec.get("path") or "/"
        if not isinstance(path, str) or any(c in path for c in " \r\n\0"):
            raise PodSpecError(f"{where}.path", f"{path!r} is not a URL path")
        if not path.startswith("/"):
            path = "/" + path
        headers = []
        for index, header in enumerate(spec.get("httpHeaders") or []):
            name = header.get("name") if isinstance(header, dict) else None
            value = header.get("value", "") if isinstance(header, dict) else None
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise PodSpecError(f"{where}.httpHeaders[{index}].name", f"{name!r} is not an HTTP header name")
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                raise PodSpecError(f"{where}.httpHeaders[{index}].value", "must be one line of text")
            headers.append(f"{name}: {value}")
        return "http", (scheme, _host(spec, where), str(port), path, *headers)
    if action == "tcpSocket" and not hook:
        port = _port(spec.get("port"), _container_ports(pod, container), f"{where}.port")
        return "tcp", (_host(spec, where), str(port))
    if action == "tcpSocket":
        raise PodSpecError(where, "tcpSocket is not supported as a lifecycle handler (Kubernetes neither)")
    raise PodSpecError(where, f"{action} {'hooks' if hook else 'probes'} are not supported by this plugin")


def handler_argv(
    handler: Mapping[str, Any],
    *,
    field: str,
    pod: Pod,
    container: Container,
    runtime: Runtime,
    ctx: RuntimeContext,
    job_dir: str,
    hook: bool,
) -> tuple[str, ...]:
    """argv for one probe or lifecycle handler (exactly one of exec/httpGet/tcpSocket/grpc/sleep)."""
    action, words = parse_handler(handler, field=field, pod=pod, container=container, hook=hook)
    if action == "exec":
        return tuple(runtime.exec_argv(ctx, words))
    if action == "sleep":
        return ("sleep", *words)
    return ("bash", posixpath.join(job_dir, PROBE_HELPER), action, *words)


def declared_probes(pod: Pod, container: Container, *, field: str) -> tuple[ProbeRun, ...]:
    """The container's startup, readiness and liveness probes with the Kubernetes defaults; each
    ``argv`` is the neutral ``(action, *words)`` of parse_handler."""
    runs = []
    for key, kind in _PROBE_KEYS.items():
        spec = container.probes.get(key)
        if not spec:
            continue
        where = f"{field}.{key}"
        action, words = parse_handler(spec, field=where, pod=pod, container=container, hook=False)
        success = _int(spec, "successThreshold", 1, 1, where)
        if kind != "readiness" and success != 1:
            raise PodSpecError(f"{where}.successThreshold", "must be 1 for liveness and startup probes")
        grace = spec.get("terminationGracePeriodSeconds")
        runs.append(
            ProbeRun(
                kind=kind,
                argv=(action, *words),
                initial_delay_seconds=_int(spec, "initialDelaySeconds", 0, 0, where),
                period_seconds=_int(spec, "periodSeconds", 10, 1, where),
                timeout_seconds=_int(spec, "timeoutSeconds", 1, 1, where),
                success_threshold=success,
                failure_threshold=_int(spec, "failureThreshold", 3, 1, where),
                grace_seconds=None if grace is None else _int(spec, "terminationGracePeriodSeconds", 0, 1, where),
            )
        )
    return tuple(runs)


def probe_runs(
    pod: Pod, container: Container, *, runtime: Runtime, ctx: RuntimeContext, job_dir: str, field: str
) -> tuple[ProbeRun, ...]:
    """The container's probes (declared_probes) with argv the pod runner runs in the job."""
    helper = posixpath.join(job_dir, PROBE_HELPER)
    runs = []
    for probe in declared_probes(pod, container, field=field):
        action, words = probe.argv[0], probe.argv[1:]
        argv = tuple(runtime.exec_argv(ctx, words)) if action == "exec" else ("bash", helper, action, *words)
        runs.append(dataclasses.replace(probe, argv=argv))
    return tuple(runs)
