"""Command line: `serve`, `render`, `check`, `config-reference`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from interlink_plugins import __version__, tracing
from interlink_plugins.backends import make_backend
from interlink_plugins.config import Config, config_reference_markdown, default_config_path, load_config
from interlink_plugins.core.errors import BackendUnavailable, ConfigError, PodSpecError
from interlink_plugins.core.policy import AdminPolicy, PolicyViolation, policy_from_config
from interlink_plugins.core.runner import CommandRunner, LocalRunner
from interlink_plugins.logsetup import setup_logging
from interlink_plugins.metrics import MeteredRunner, Metrics

log = logging.getLogger("interlink_plugins")
# interLink's client keeps idle connections for 120 s: the server must not close them first, or a
# request sent on a connection the server is closing fails (no retry on POST)
KEEP_ALIVE_SECONDS = 125


def _load(path: str) -> tuple[Config, AdminPolicy]:
    try:
        config, warnings = load_config(Path(path))
        policy = policy_from_config(config.policy_raw)
    except ConfigError as exc:
        raise SystemExit(f"config error: {exc}") from None
    setup_logging(config.log_level, config.log_format)
    for warning in warnings:
        log.warning("%s", warning)
    return config, policy


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from interlink_plugins.api.app import create_app
    from interlink_plugins.core.service import PluginService
    from interlink_plugins.core.state import StateStore

    config, policy = _load(args.config)
    tracing.setup(config)  # off unless TracingEndpoint / OTEL_EXPORTER_OTLP_ENDPOINT; flushed at exit (<= 2 s)
    if not _remote_data_root(config):
        config.data_root.mkdir(parents=True, exist_ok=True)
    metrics = Metrics(config.backend)
    backend = make_backend(config, MeteredRunner(_command_runner(config), metrics), policy)
    service = PluginService(config, backend, StateStore(config.state_db), metrics=metrics)
    def reload() -> None:
        """SIGHUP: re-read flavors, policy and taints; keys that need a restart keep their value."""
        try:
            fresh, fresh_policy = _load(args.config)
        except SystemExit as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        updated = dataclasses.replace(
            service.config,
            flavors=fresh.flavors,
            default_flavor=fresh.default_flavor,
            gres_map=fresh.gres_map,
            taints=fresh.taints,
            policy_raw=fresh.policy_raw,
            default_cpus=fresh.default_cpus,
            default_memory_mib=fresh.default_memory_mib,
        )
        service.reconfigure(updated, fresh_policy)
        log.info("reloaded flavors, policy and taints from %s", args.config)

    app = create_app(service, on_reload=reload)
    listen_fds = os.environ.get("LISTEN_FDS", "")
    if listen_fds.isdigit() and int(listen_fds) >= 1 and os.environ.get("LISTEN_PID") == str(os.getpid()):
        log.info("serving %s backend on the socket passed by systemd (fd 3)", config.backend)
        uvicorn.run(app, fd=3, log_level="warning", timeout_graceful_shutdown=5,
                    timeout_keep_alive=KEEP_ALIVE_SECONDS)
        return 0
    if config.socket:
        socket_path = Path(config.socket)
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        if socket_path.is_socket():
            socket_path.unlink()
        log.info("serving %s backend on unix socket %s", config.backend, socket_path)
        uvicorn.run(app, uds=str(socket_path), log_level="warning", timeout_graceful_shutdown=5,
                    timeout_keep_alive=KEEP_ALIVE_SECONDS)
    else:
        log.info("serving %s backend on http://%s:%s", config.backend, config.bind_address, config.sidecar_port)
        uvicorn.run(app, host=config.bind_address, port=config.sidecar_port, log_level="warning",
                    timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_SECONDS)
    return 0


def _command_runner(config: Config) -> CommandRunner:
    """Where scheduler commands run: here, or on SshHost over the SSH pool (issue 6)."""
    if config.ssh_host:
        from interlink_plugins.core.ssh import ssh_runner

        return ssh_runner(config)
    return LocalRunner()


def _remote_data_root(config: Config) -> bool:
    """The data root exists only on the login node (DataTransfer: sftp)."""
    return bool(config.ssh_host) and config.data_transfer == "sftp"


def _mask(text: str, secrets: list[bytes]) -> str:
    for secret in secrets:
        value = secret.decode(errors="replace")
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def cmd_render(args: argparse.Namespace) -> int:
    config, policy = _load(args.config)
    from interlink_plugins.core.pod import parse_create_body

    body: Any = json.loads(Path(args.pod).read_text())
    if isinstance(body, dict) and "pod" not in body and "metadata" in body:
        body = {"pod": body, "container": []}
    backend = make_backend(config, LocalRunner(), policy)
    try:
        pod = parse_create_body(body)
        prepared = backend.prepare(pod, write=False)
    except (PodSpecError, PolicyViolation) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    secrets = [value for data in pod.secrets.values() for value in data.values()]
    secrets += [value for name, data in pod.projected.items() for key, value in data.items() if "token" in key]
    secrets += [password.encode() for _user, password in config.registry_credentials.values()]
    print(f"# job directory: {prepared.job_dir}")
    print(f"# submit: {json.dumps(list(prepared.submit.get('argv', [])))}")
    for name, text in prepared.files.items():
        print(f"\n# ---- {name} ----")
        print(_mask(text, secrets), end="" if text.endswith("\n") else "\n")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config, policy = _load(args.config)
    problems = 0

    def report(ok: bool, what: str) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        print(f"[{'ok' if ok else 'FAIL'}] {what}")

    report(True, f"config {args.config}: backend {config.backend}, runtime {config.container_runtime}")
    if _remote_data_root(config):
        report(True, f"DataRootFolder {config.data_root} is on {config.ssh_host} (DataTransfer: sftp)")
    else:
        config.data_root.mkdir(parents=True, exist_ok=True)
        report(os.access(config.data_root, os.W_OK), f"DataRootFolder {config.data_root} writable")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    report(os.access(config.state_dir, os.W_OK), f"StateDir {config.state_dir} writable")
    runtime_binary = {
        "apptainer": config.apptainer[0], "singularity": config.apptainer[0], "podman": config.podman[0],
        "enroot": config.enroot[0], "none": "bwrap",
    }[config.container_runtime]
    found = shutil.which(runtime_binary)
    if config.container_runtime == "none":
        from interlink_plugins.core.jobdir import host_namespaces_available

        available, why = host_namespaces_available()
        report(available, "private mount namespaces for volumeMounts (bubblewrap)" + ("" if available else f": {why}"))
    elif config.ssh_host:
        report(True, f"runtime binary {runtime_binary}: runs on {config.ssh_host}'s compute nodes (not checked here)")
    else:
        report(found is not None, f"runtime binary {runtime_binary}: {found or 'not found on this host'}")
    if config.backend == "podman" and config.gpu_cdi_map:
        if any(word in ("--remote", "-r") or word.startswith(("--url", "--connection")) for word in config.podman):
            report(True, "GpuCdiMap: CDI specs are on the remote podman's host (not checked here)")
        else:
            from interlink_plugins.podman.cdi import gpu_map_report, scan_specs

            for ok, line in gpu_map_report(config.gpu_cdi_map, scan_specs()):
                report(ok, line)
    backend = make_backend(config, _command_runner(config), policy)
    try:
        resources = asyncio.run(backend.resources())
        report(True, f"backend {config.backend} reachable: {resources.cpus} CPUs, "
               f"{resources.memory_bytes // 2**20} MiB, GPUs {dict(resources.gpus)}")
        if resources.unavailable_reason:
            report(False, resources.unavailable_reason)
    except BackendUnavailable as exc:
        report(False, f"backend {config.backend} unreachable: {exc}")
    return 1 if problems else 0


def cmd_config_reference(_args: argparse.Namespace) -> int:
    sys.stdout.write(config_reference_markdown())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="interlink-plugin", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve interLink's plugin API")
    serve.add_argument(
        "--config",
        help="config file (default, as the Go plugin: $SLURMCONFIGPATH, else /etc/interlink/SlurmConfig.yaml)",
    )
    serve.set_defaults(func=cmd_serve)
    render = sub.add_parser("render", help="print the job a pod would become (secrets masked); submits nothing")
    render.add_argument("pod", help="a create body (RetrievedPodData JSON) or a v1.Pod JSON")
    render.add_argument("--config", required=True)
    render.set_defaults(func=cmd_render)
    check = sub.add_parser("check", help="validate the config, probe the runtime, reach the backend")
    check.add_argument("--config", required=True)
    check.set_defaults(func=cmd_check)
    ref = sub.add_parser("config-reference", help="print the configuration reference (markdown)")
    ref.set_defaults(func=cmd_config_reference)
    args = parser.parse_args(argv)
    if args.command == "serve" and not args.config:
        args.config = str(default_config_path())
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
