"""Command line: `serve`, `render`, `check`, `pods`, `config-reference`, `field-reference`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sqlite3
import sys
from pathlib import Path

from interlink_plugins import __version__, redact, tracing
from interlink_plugins.backends import (
    DEFAULT_CONFIG_HELP,
    backend_probe,
    config_reference_markdown,
    default_config_path,
    job_uid_summary,
    load_config,
    make_backend,
    policy_from_config,
    reloaded_config,
)
from interlink_plugins.config import Config
from interlink_plugins.core.commands.local import CommandRunner, LocalRunner
from interlink_plugins.core.errors import BackendUnavailable, ConfigError, PodSpecError
from interlink_plugins.core.policy.engine import AdminPolicy, PolicyViolation
from interlink_plugins.core.records.state import SCHEMA_VERSION, StateSchemaError, StateStore, state_summary
from interlink_plugins.core.runtimes.containers import configured_binary
from interlink_plugins.exitcodes import ExitCode, UserError, help_table
from interlink_plugins.filemodes import TRAVERSE_ONLY, make_dirs, restrict_umask, secure_state, writable_by_others
from interlink_plugins.logsetup import setup_logging
from interlink_plugins.manifest import ManifestError, PodInput, read_pod_input
from interlink_plugins.metrics import MeteredRunner, Metrics

log = logging.getLogger("interlink_plugins")


def _load(path: str) -> tuple[Config, AdminPolicy]:
    try:
        config, warnings = load_config(Path(path))
        policy = policy_from_config(config.policy_raw)
    except ConfigError as exc:
        raise UserError(ExitCode.CONFIG, f"config error: {exc}") from None
    setup_logging(config.log_level, config.log_format)
    for warning in warnings:
        log.warning("%s", warning)
    return config, policy


def cmd_serve(args: argparse.Namespace) -> int:
    from interlink_plugins.api import listener
    from interlink_plugins.api.app import create_app
    from interlink_plugins.api.metrics_listener import ListenError, bind_metrics_socket
    from interlink_plugins.core.service import PluginService

    restrict_umask()  # what the plugin creates is its own; the commands it runs get 022 back (core/commands/local.py)
    config, policy = _load(args.config)
    try:  # before anything else is made: a socket others can swap, or a network bind, stops start-up here
        listeners = listener.open_listeners(config)
    except ConfigError as exc:
        raise UserError(ExitCode.CONFIG, f"cannot serve: {exc}") from None
    try:
        tracing.setup(config)  # off unless TracingEndpoint / OTEL_EXPORTER_OTLP_ENDPOINT; flushed at exit (<= 2 s)
    except SystemExit as exc:  # on, but the SDK is missing: a config problem
        raise UserError(ExitCode.CONFIG, str(exc)) from None
    if not _remote_data_root(config):
        _usable_dir(config.data_root, "DataRootFolder", TRAVERSE_ONLY)
        loose = writable_by_others(config.data_root, "DataRootFolder")
        if loose:
            log.warning("%s", loose)
    metrics = Metrics(config.backend)
    backend = make_backend(config, MeteredRunner(_command_runner(config), metrics), policy)
    service = PluginService(config, backend, _open_state(config), metrics=metrics)
    try:
        metrics_socket = bind_metrics_socket(config.metrics_address) if config.metrics_address else None
    except ListenError as exc:
        raise UserError(ExitCode.UNAVAILABLE, str(exc)) from None
    def reload() -> None:
        """SIGHUP: re-read flavors, policy and taints; keys that need a restart keep their value."""
        try:
            fresh, fresh_policy = _load(args.config)
        except UserError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        service.reconfigure(reloaded_config(service.config, fresh), fresh_policy)
        log.info("reloaded flavors, policy and taints from %s", args.config)

    app = create_app(service, on_reload=reload, metrics_socket=metrics_socket)
    for each in listeners:
        log.info("serving %s backend on %s", config.backend, each.where)
    listener.serve(app, config, listeners)
    return 0


def _usable_dir(path: Path, key: str, mode: int) -> None:
    """Create the directory (missing parts with `mode`) if needed; one line naming key, path and reason
    when it cannot be used."""
    try:
        make_dirs(path, mode)
    except OSError as exc:
        raise UserError(ExitCode.CANTCREAT, f"{key} {path} cannot be created: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(ExitCode.CANTCREAT, f"{key} {path} is not writable by uid {os.getuid()}")


def _open_state(config: Config) -> StateStore:
    _usable_dir(config.state_dir, "StateDir", 0o700)
    try:
        secure_state(config.state_dir, config.state_db)  # 0700 dir, 0600 DB, before the DB is opened
    except ConfigError as exc:
        raise UserError(ExitCode.CANTCREAT, str(exc)) from None
    try:
        return StateStore(config.state_db)
    except StateSchemaError as exc:
        raise UserError(ExitCode.DATAERR, str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise UserError(ExitCode.CANTCREAT, f"state {config.state_db} cannot be opened: {exc}") from None


def _command_runner(config: Config) -> CommandRunner:
    """Where scheduler commands run: here, or on SshHost over the SSH pool."""
    if config.ssh_host:
        from interlink_plugins.core.commands.ssh import ssh_runner

        return ssh_runner(config)
    return LocalRunner()


def _remote_data_root(config: Config) -> bool:
    """The data root exists only on the login node (DataTransfer: sftp)."""
    return bool(config.ssh_host) and config.data_transfer == "sftp"


def cmd_render(args: argparse.Namespace) -> int:
    config, policy = _load(args.config)
    from interlink_plugins.core.model.pod import parse_create_body
    from interlink_plugins.core.model.podfields import Facts, check_pod

    given = _render_input(Path(args.pod))
    # the job is rendered from a pod and config whose env values and secrets are placeholders
    backend = make_backend(redact.redacted_config(config), LocalRunner(), policy)
    try:
        pod = parse_create_body(given.body)
        fields = check_pod(pod.raw, Facts.of(config))
        fields.raise_refused()
        prepared = backend.prepare(redact.redacted_pod(pod), write=False)
    except (PodSpecError, PolicyViolation) as exc:
        raise UserError(ExitCode.DATAERR, f"refused: {exc}") from None
    if given.origin:
        print(f"# {given.origin}")
    # a manifest's Secrets too (also where env values came from them)
    secrets = redact.secret_values(pod, config) + [value.decode(errors="replace") for value in given.secret_values]
    if args.body:
        print(redact.mask(json.dumps(redact.redacted_body(given.body), indent=2), secrets))
        return 0
    for finding in fields.warned:
        print(f"# not honoured by the {config.backend} backend (the pod runs without it): {finding}")
    print(f"# job directory: {prepared.job_dir}")
    print(redact.mask(f"# submit: {json.dumps(list(prepared.submit.get('argv', [])))}", secrets))
    for line in redact.env_summary(pod):
        print(line)
    from interlink_plugins.api.listener import describe_exposure
    from interlink_plugins.core.podrunner.jobdir import describe_volume_limits

    for _ok, line in describe_exposure(config):
        print(f"# {line}")
    print(f"# {job_uid_summary(config, os.geteuid())}")
    print(f"# {describe_volume_limits(config)}")
    for name, text in prepared.files.items():
        print(f"\n# ---- {name} ----")
        print(redact.mask(text, secrets), end="" if text.endswith("\n") else "\n")
    return 0


def _render_input(path: Path) -> PodInput:
    """interLink's create body from a create body, a v1.Pod, or a Kubernetes manifest (resolved)."""
    try:
        return read_pod_input(path)
    except OSError as exc:
        raise UserError(ExitCode.NOINPUT, f"cannot read {path}: {exc.strerror or exc}") from None
    except ManifestError as exc:
        raise UserError(ExitCode.DATAERR, f"{path}: {exc}") from None


def cmd_check(args: argparse.Namespace) -> int:
    restrict_umask()
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
        report(*_dir_check(config.data_root, "DataRootFolder", TRAVERSE_ONLY))
        loose = writable_by_others(config.data_root, "DataRootFolder")
        if loose:
            report(False, loose)
    report(*_dir_check(config.state_dir, "StateDir", 0o700))
    try:
        secure_state(config.state_dir, config.state_db)
        report(True, f"StateDir {config.state_dir} mode 0700, state files 0600")
    except ConfigError as exc:
        report(False, str(exc))
    report(*_state_check(config.state_db))
    from interlink_plugins.api.listener import describe_exposure
    from interlink_plugins.core.podrunner.jobdir import describe_volume_limits

    for ok, line in describe_exposure(config):
        report(ok, line)
    report(True, job_uid_summary(config, os.geteuid()))
    report(True, describe_volume_limits(config))
    runtime_binary = (configured_binary(config, config.container_runtime) or ("bwrap",))[0]  # none: bubblewrap
    found = shutil.which(runtime_binary)
    if config.container_runtime == "none":
        from interlink_plugins.core.podrunner.jobdir import host_namespaces_available

        available, why = host_namespaces_available()
        report(available, "private mount namespaces for volumeMounts (bubblewrap)" + ("" if available else f": {why}"))
    elif config.ssh_host:
        report(True, f"runtime binary {runtime_binary}: runs on {config.ssh_host}'s compute nodes (not checked here)")
    else:
        report(found is not None, f"runtime binary {runtime_binary}: {found or 'not found on this host'}")
    for ok, line in backend_probe(config):
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


def _dir_check(path: Path, key: str, mode: int) -> tuple[bool, str]:
    try:
        _usable_dir(path, key, mode)
    except UserError as exc:
        return False, str(exc)
    return True, f"{key} {path} writable"


def _state_check(path: Path) -> tuple[bool, str]:
    """The state's schema against this version's (read-only: a running plugin may hold it)."""
    if not path.exists():
        return True, f"state {path}: none yet (created at the first start)"
    try:
        version, pods = state_summary(path)
    except sqlite3.Error as exc:
        return False, f"state {path} cannot be read: {exc}"
    if version is None:
        return True, f"state {path}: empty"
    if version > SCHEMA_VERSION:
        return False, (f"state {path}: schema {version}, newer than this plugin ({SCHEMA_VERSION}): install that "
                       "version again or restore the state backup taken before the upgrade")
    later = f" (migrated to {SCHEMA_VERSION} at the next start)" if version < SCHEMA_VERSION else ""
    return True, f"state {path}: schema {version}{later}, {pods} pod{'' if pods == 1 else 's'} tracked"


def cmd_pods(args: argparse.Namespace) -> int:
    from interlink_plugins.podlist import pod_rows, pods_json, pods_table

    config, _policy = _load(args.config)
    if not config.state_db.exists():
        print(f"# no state at {config.state_db}: this instance has tracked no pod yet", file=sys.stderr)
    try:
        rows = pod_rows(config.state_db)
    except StateSchemaError as exc:
        raise UserError(ExitCode.DATAERR, str(exc)) from None
    except sqlite3.Error as exc:
        raise UserError(ExitCode.CANTCREAT, f"state {config.state_db} cannot be read: {exc}") from None
    sys.stdout.write(pods_json(rows) if args.json else pods_table(rows))
    return 0


def cmd_field_reference(args: argparse.Namespace) -> int:
    from interlink_plugins.backends import FIELD_COLUMNS
    from interlink_plugins.core.model.podfields import field_reference_markdown, splice_docs

    if not args.update:
        sys.stdout.write(field_reference_markdown(FIELD_COLUMNS))
        return 0
    path = Path(args.update)
    try:
        path.write_text(splice_docs(path.read_text(), FIELD_COLUMNS))
    except OSError as exc:
        raise UserError(ExitCode.CANTCREAT, f"cannot update {path}: {exc.strerror or exc}") from None
    return 0


def cmd_config_reference(_args: argparse.Namespace) -> int:
    sys.stdout.write(config_reference_markdown())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="interlink-plugin", description=__doc__, epilog=help_table(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve interLink's plugin API")
    serve.add_argument(
        "--config",
        help=f"config file (default, as the Go plugin: {DEFAULT_CONFIG_HELP})",
    )
    serve.set_defaults(func=cmd_serve)
    render = sub.add_parser("render", help="print the job a pod would become (secrets masked); submits nothing")
    render.add_argument("pod", help="a Kubernetes manifest (Pod or Job, YAML or JSON, with the ConfigMaps and Secrets "
                        "it uses in the same file), or what interLink sends: a create body or a v1.Pod JSON")
    render.add_argument("--config", required=True)
    render.add_argument("--body", action="store_true",
                        help="print the create body interLink would send (secrets masked) instead of the job")
    render.set_defaults(func=cmd_render)
    check = sub.add_parser("check", help="validate the config, probe the runtime, reach the backend")
    check.add_argument("--config", required=True)
    check.set_defaults(func=cmd_check)
    pods = sub.add_parser("pods", help="list the pods this instance tracks, from its state (read-only)")
    pods.add_argument("--config", required=True)
    pods.add_argument("--json", action="store_true", help="one JSON object per pod, in a list")
    pods.set_defaults(func=cmd_pods)
    ref = sub.add_parser("config-reference", help="print the configuration reference (markdown)")
    ref.set_defaults(func=cmd_config_reference)
    fields = sub.add_parser("field-reference", help="print what each backend does with every pod field (markdown)")
    fields.add_argument("--update", metavar="DOC", help="replace the generated section of DOC (docs/kubelet-parity.md)")
    fields.set_defaults(func=cmd_field_reference)
    args = parser.parse_args(argv)
    if args.command == "serve" and not args.config:
        args.config = str(default_config_path())
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"interlink-plugin: {exc}", file=sys.stderr)
        return int(exc.code)
    except BrokenPipeError:  # `render ... | head`: the reader stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
