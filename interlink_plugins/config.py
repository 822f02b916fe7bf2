"""Plugin configuration: the common keys (``Config``) plus a section per backend, registered by its package.

The file stays flat. Each section's table of ``FieldSpec`` is the single source of truth of its keys: it
parses, validates, documents (``interlink-plugin config-reference``) and lists the keys that are known; a
backend's values are stored in its own frozen settings dataclass (``Config.section``). An unknown key is
a warning naming it; a known key with a bad value stops start-up naming key and value.
"""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import logging
import os
import pwd
import re
import shlex
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from interlink_plugins.core.errors import ConfigError
from interlink_plugins.core.model.quantity import memory_bytes
from interlink_plugins.core.podrunner.render import MIN_LOG_BYTES
from interlink_plugins.core.policy.engine import (
    SINGULARITY_OPTIONS,
    PolicySection,
    PolicyViolation,
    parse_options,
    policy_key_docs,
    policy_keys,
)
from interlink_plugins.filemodes import readable_by_others

log = logging.getLogger(__name__)

RUNTIMES = ("apptainer", "singularity", "podman", "none")
_SHELL_CHARS = re.compile(r"[|&;<>()$`\\\n*?{}\[\]~]")
SettingsT = TypeVar("SettingsT")


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class Config:
    """The common keys, and each backend's settings (``section``)."""

    backend: str = "slurm"  # a Go plugin's SlurmConfig.yaml names no Backend: it is read as the Go plugin reads it
    container_runtime: str = "apptainer"
    data_root: Path = Path("/var/lib/interlink/jobs")
    state_dir: Path = Path("/var/lib/interlink-plugin")
    sidecar_port: int = 4000
    bind_address: str = "127.0.0.1"
    socket: str = ""
    metrics_address: str = ""
    instance_id: str = "default"
    podman: tuple[str, ...] = ("podman",)
    apptainer: tuple[str, ...] = ("apptainer",)
    image_prefix: str = ""
    pull_policy: str = ""
    poll_interval: float = 5.0
    command_timeout: float = 30.0
    submit_deadline: float = 900.0
    grace_period_cap: float = 60.0
    restart_backoff_initial: float = 10.0
    restart_backoff_max: float = 300.0
    max_container_log_bytes: int = 1 << 30
    max_volume_files: int = 4096
    max_volume_bytes: int = 64 << 20
    enable_probes: bool = False
    retention_days: float = 30.0
    default_cpus: int = 1
    default_memory_mib: int = 1024
    taints: tuple[Taint, ...] = ()
    max_cpus: int = 0
    max_memory_mib: int = 0
    job_environment: Mapping[str, str] = field(default_factory=dict)
    job_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    log_level: str = "INFO"
    log_format: str = "json"
    # SSH runner: commands, files and logs on a login node reached over SSH
    ssh_host: str = ""
    ssh_port: int = 22
    ssh_user: str = ""
    ssh_key_file: str = ""
    ssh_certificate_file: str = ""
    ssh_known_hosts: str = ""
    ssh_jump_host: str = ""
    ssh_pool_size: int = 2
    ssh_max_sessions: int = 10
    ssh_connect_timeout: float = 10.0
    data_transfer: str = "shared"
    # apptainer / singularity
    apptainer_cache_dir: str = ""
    image_overrides: Mapping[str, str] = field(default_factory=dict)
    registry_credentials: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    apptainer_options: tuple[str, ...] = ("--containall",)
    apptainer_fallback: str = "singularity"
    # OpenTelemetry tracing: off unless an endpoint is set
    tracing_endpoint: str = ""
    tracing_service_name: str = ""
    tracing_sample_ratio: float = 1.0
    # who may call the API (the kernel identifies the caller), and what one caller can hold at once
    allowed_client_uids: tuple[int, ...] = ()
    allowed_client_gids: tuple[int, ...] = ()
    socket_group: int | None = None
    allow_network_bind: bool = False
    max_connections: int = 512
    request_read_timeout: float = 30.0
    max_follow_streams: int = 128
    # the Go plugin's key, read as it reads it
    command_prefix: str = ""
    policy_raw: Mapping[str, Any] = field(default_factory=dict)
    # each backend's settings (its section's keys), by settings type: read them with section()
    sections: Mapping[type[Any], object] = field(default_factory=dict)

    @property
    def state_db(self) -> Path:
        return self.state_dir / f"state-{self.instance_id}.sqlite"

    def section(self, kind: type[SettingsT]) -> SettingsT:
        """A backend's settings, typed: the values of its section's keys (the section's defaults when this
        config was built without that section). TypeError if what is stored is not a ``kind``."""
        found = self.sections.get(kind)
        if found is None:
            return kind()
        if not isinstance(found, kind):
            raise TypeError(f"config section {kind.__name__}: holds a {type(found).__name__}")
        return found


# --- value parsers -----------------------------------------------------------------------


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return str(value)


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        text = _str(key, value).strip().lower()
        if text not in options:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(options)}")
        return text

    return parse


def _runtime(key: str, value: Any) -> str:
    text = _str(key, value).strip().lower()
    if text == "enroot":
        raise ConfigError(
            f"{key}: 'enroot' is not supported (its runtime could not be tested against a real enroot and was "
            f"removed); use one of {', '.join(RUNTIMES)}"
        )
    return _choice(RUNTIMES)(key, value)


def _int(key: str, value: Any) -> int:
    try:
        number = int(str(value))
    except ValueError as exc:
        raise ConfigError(f"{key}: expected an integer, got {value!r}") from exc
    if number < 0:
        raise ConfigError(f"{key}: must be >= 0, got {value!r}")
    return number


def _seconds(key: str, value: Any) -> float:
    try:
        number = float(str(value).removesuffix("s"))
    except ValueError as exc:
        raise ConfigError(f"{key}: expected seconds, got {value!r}") from exc
    if number <= 0:
        raise ConfigError(f"{key}: must be > 0, got {value!r}")
    return number


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off", ""):
        return False
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _path(key: str, value: Any) -> Path:
    text = _str(key, value)
    if not text:
        raise ConfigError(f"{key}: must not be empty")
    return Path(text).expanduser().absolute()


def _argv(key: str, value: Any) -> tuple[str, ...]:
    """A command path, possibly with a prefix ("ssh login sbatch" is refused: use the SSH runner)."""
    text = _str(key, value).strip()
    if _SHELL_CHARS.search(text):
        raise ConfigError(
            f"{key}: {value!r} needs a shell; give a plain command (argv prefix), "
            "and use the SSH runner for remote clusters"
        )
    try:
        words = tuple(shlex.split(text))
    except ValueError as exc:
        raise ConfigError(f"{key}: {value!r}: {exc}") from exc
    if not words:
        raise ConfigError(f"{key}: must not be empty")
    return words


def _optional_path(key: str, value: Any) -> str:
    text = _str(key, value).strip()
    return str(Path(text).expanduser().absolute()) if text else ""


def _optional_argv(key: str, value: Any) -> tuple[str, ...]:
    return _argv(key, value) if _str(key, value).strip() else ()


def _socket(key: str, value: Any) -> str:
    text = _str(key, value).strip()
    if text and not text.startswith("unix://"):
        raise ConfigError(f"{key}: {value!r} must start with unix://")
    return text.removeprefix("unix://")


def split_host_port(text: str) -> tuple[str, int]:
    """'host:port' or '[v6 address]:port' -> (host, port); ValueError naming what is wrong."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9.-]+):(\d{1,5})", text)
    if not match:
        raise ValueError("expected host:port (or [IPv6]:port)")
    host, port = (match[1], match[2]) if match[1] else (match[3], match[4])
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port} is not between 1 and 65535")
    return host, int(port)


def _host_port(key: str, value: Any) -> str:
    text = _str(key, value).strip()
    if text:
        try:
            split_host_port(text)
        except ValueError as exc:
            raise ConfigError(f"{key}: {value!r}: {exc}") from exc
    return text


def _str_list(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    return tuple(_str(key, item) for item in value)


def _str_map(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return {str(k): _str(f"{key}.{k}", v) for k, v in value.items()}


def _str_list_map(key: str, value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of name to a list, got {value!r}")
    return {str(k): _str_list(f"{key}.{k}", v) for k, v in value.items()}


def _memory_mib(key: str, value: Any) -> int:
    text = _str(key, value).strip()
    if text.upper().endswith(("G", "M", "K", "T")) and not text.endswith("i"):
        # SLURM style: 16G, 32000M mean GiB/MiB (the Go plugin's flavors use these)
        text = text + "i"
    try:
        return -(-memory_bytes(text) // 2**20)
    except ValueError as exc:
        raise ConfigError(f"{key}: {value!r} is not a memory size") from exc


def _byte_size(key: str, value: Any) -> int:
    """A byte size: plain bytes (1048576) or a Kubernetes quantity (1Gi, 500M)."""
    text = _str(key, value).strip()
    try:
        return int(text) if text.isdigit() else memory_bytes(text)
    except ValueError as exc:
        raise ConfigError(f"{key}: {value!r} is not a byte size") from exc


def _log_bytes(key: str, value: Any) -> int:
    """A byte size (1Gi, 500M, 1048576); 0 turns the cap off, anything else must leave room for the marker."""
    number = _byte_size(key, value)
    if number and number < MIN_LOG_BYTES:
        raise ConfigError(f"{key}: must be 0 (no cap) or >= {MIN_LOG_BYTES} bytes, got {value!r}")
    return number


def _positive_bytes(key: str, value: Any) -> int:
    """A byte size (64Mi, 500M, 1048576), at least 1."""
    number = _byte_size(key, value)
    if number < 1:
        raise ConfigError(f"{key}: must be at least 1 byte, got {value!r}")
    return number


def _taints(key: str, value: Any) -> tuple[Taint, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of {{Key, Value, Effect}}, got {value!r}")
    taints = []
    for item in value:
        if not isinstance(item, dict) or not item.get("Key", item.get("key")):
            raise ConfigError(f"{key}: each taint needs Key, got {item!r}")
        effect = str(item.get("Effect", item.get("effect", "NoSchedule")))
        if effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ConfigError(f"{key}: effect {effect!r} is not NoSchedule, PreferNoSchedule or NoExecute")
        taints.append(
            Taint(str(item.get("Key", item.get("key"))), str(item.get("Value", item.get("value", ""))), effect)
        )
    return tuple(taints)


def _uid(key: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    return _int(key, value)


def _days(key: str, value: Any) -> float:
    try:
        number = float(str(value))
    except ValueError as exc:
        raise ConfigError(f"{key}: expected a number of days, got {value!r}") from exc
    if number < 0:
        raise ConfigError(f"{key}: must be >= 0, got {value!r}")
    return number


APPTAINER_OPTIONS = ("containall", "no-home", "cleanenv", "fakeroot", "writable-tmpfs", "contain", "no-init")
DATA_TRANSFERS = ("shared", "sftp")


def _jump_host(key: str, value: Any) -> str:
    """[user@]host[:port] of an SSH bastion."""
    text = _str(key, value).strip()
    if text and not re.fullmatch(r"(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+(?::\d{1,5})?", text):
        raise ConfigError(f"{key}: {value!r} is not [user@]host[:port]")
    return text


def _pool_size(key: str, value: Any) -> int:
    number = _int(key, value)
    if not 1 <= number <= 64:
        raise ConfigError(f"{key}: must be between 1 and 64, got {value!r}")
    return number


def _apptainer_options(key: str, value: Any) -> tuple[str, ...]:
    """{containall: true, no-home: true, ...} or a list of those names -> option words."""
    if isinstance(value, dict):
        names = [str(k) for k, v in value.items() if _bool(f"{key}.{k}", v)]
    else:
        names = list(_str_list(key, value))
    words = []
    for name in names:
        normal = re.sub(r"(?<=[a-z])([A-Z])", r"-\1", name.strip().lstrip("-")).lower().replace("_", "-")
        if normal not in APPTAINER_OPTIONS:
            raise ConfigError(f"{key}: {name!r} is not one of {', '.join(APPTAINER_OPTIONS)}")
        words.append(f"--{normal}")
    return tuple(dict.fromkeys(words))


def _image_overrides(key: str, value: Any) -> dict[str, str]:
    overrides = _str_map(key, value)
    for image, target in overrides.items():
        if not target.startswith("/") and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target):
            raise ConfigError(f"{key}.{image}: {target!r} must be an absolute path (SIF or sandbox dir) or a URI")
    return overrides


def _registry_credentials(key: str, value: Any) -> dict[str, tuple[str, str]]:
    """registry host -> {Username, Password | PasswordFile}; read once at start-up (and on SIGHUP)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of registry to {{Username, Password}}")
    creds: dict[str, tuple[str, str]] = {}
    for registry, spec in value.items():
        where = f"{key}.{registry}"
        if not isinstance(spec, dict) or not spec.get("Username"):
            raise ConfigError(f"{where}: needs Username and Password or PasswordFile")
        if spec.get("PasswordFile"):
            path = Path(_str(f"{where}.PasswordFile", spec["PasswordFile"])).expanduser()
            try:
                password = path.read_text().rstrip("\n")
            except OSError as exc:
                raise ConfigError(f"{where}.PasswordFile: cannot read {path}: {exc.strerror}") from exc
        else:
            password = _str(f"{where}.Password", spec.get("Password", ""))
        if not password or "\n" in password or "\x00" in password:
            raise ConfigError(f"{where}: the password must be one non-empty line")
        host = str(registry).strip().lower()
        if not re.fullmatch(r"[a-z0-9.-]+(?::\d+)?", host):
            raise ConfigError(f"{where}: {registry!r} is not a registry host[:port]")
        creds[host] = (_str(f"{where}.Username", spec["Username"]), password)
    return creds


def _account_id(kind: str) -> Callable[[str, Any], int]:
    """A uid or gid given as a number or as a user/group name (resolved once, at start)."""

    def parse(key: str, value: Any) -> int:
        text = _str(key, value).strip()
        if text.isdigit():
            return int(text)
        try:
            return pwd.getpwnam(text).pw_uid if kind == "user" else grp.getgrnam(text).gr_gid
        except KeyError:
            raise ConfigError(f"{key}: {value!r} is neither a number nor a known {kind} name") from None

    return parse


def _account_ids(kind: str) -> Callable[[str, Any], tuple[int, ...]]:
    one = _account_id(kind)

    def parse(key: str, value: Any) -> tuple[int, ...]:
        items = [value] if isinstance(value, int) and not isinstance(value, bool) else _str_list(key, value)
        return tuple(dict.fromkeys(one(key, item) for item in items))

    return parse


def _optional_group(key: str, value: Any) -> int | None:
    return None if value is None or _str(key, value).strip() == "" else _account_id("group")(key, value)


def _positive_int(key: str, value: Any) -> int:
    number = _int(key, value)
    if number < 1:
        raise ConfigError(f"{key}: must be >= 1, got {value!r}")
    return number


def loopback_host(host: str) -> bool:
    """Whether every address `host` names is a loopback address (127.0.0.0/8, ::1)."""
    if not host.strip():
        return False  # uvicorn's "" is every interface
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(str(entry[4][0]).split("%")[0]).is_loopback for entry in found)


def _http_url(key: str, value: Any) -> str:
    """An http(s)://host[:port][/path] URL, or empty."""
    text = _str(key, value).strip()
    if text and not re.fullmatch(r"https?://[A-Za-z0-9.\[\]:_-]+(?:/[^\s?#]*)?", text):
        raise ConfigError(f"{key}: {value!r} is not an http:// or https:// URL")
    return text


def _ratio(key: str, value: Any) -> float:
    try:
        number = float(str(value))
    except ValueError as exc:
        raise ConfigError(f"{key}: expected a number between 0 and 1, got {value!r}") from exc
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{key}: must be between 0 and 1, got {value!r}")
    return number


def _shell_text(key: str, value: Any) -> str:
    """Admin-written shell text (may span lines); a NUL byte cannot be in a script."""
    text = _str(key, value)
    if "\x00" in text:
        raise ConfigError(f"{key}: NUL byte in the text")
    return text.strip()


def _singularity_options(key: str, value: Any) -> tuple[str, ...]:
    """The Go plugin's list of apptainer/singularity options, as apptainer reads them: --name[=value] words.

    The Go plugin joins the list into the script with spaces, so an item may hold several words."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(f"{key}: expected a list of options, got {value!r}")
    text = " ".join(_str(key, item) for item in items)
    try:
        parsed = parse_options(text, SINGULARITY_OPTIONS, field=key, style="pflag")
    except PolicyViolation as exc:
        raise ConfigError(str(exc)) from None
    return tuple(f"--{opt.name}" if opt.value is None else f"--{opt.name}={opt.value}" for opt in parsed)


# the value parsers the backends' sections use
parse_argv = _argv
parse_bool = _bool
parse_choice = _choice
parse_int = _int
parse_memory_mib = _memory_mib
parse_optional_argv = _optional_argv
parse_optional_path = _optional_path
parse_seconds = _seconds
parse_singularity_options = _singularity_options
parse_str = _str
parse_str_list = _str_list
parse_str_list_map = _str_list_map
parse_str_map = _str_map
parse_uid = _uid


@dataclass(frozen=True)
class FieldSpec:
    attr: str
    parse: Callable[[str, Any], Any]
    doc: str
    env: str = ""


FIELDS: dict[str, FieldSpec] = {
    "ContainerRuntime": FieldSpec(
        "container_runtime",
        _runtime,
        "How containers run inside the job: apptainer, singularity, podman or none (host userland). enroot is "
        "not supported (no runtime ships untested).",
    ),
    "DataRootFolder": FieldSpec(
        "data_root", _path, "Job directories live here; must be visible from the compute nodes (shared filesystem)."
    ),
    "StateDir": FieldSpec(
        "state_dir",
        _path,
        "Local disk for the SQLite state (never the shared data root: SQLite locking is unsafe on NFS/GPFS).",
    ),
    "SidecarPort": FieldSpec("sidecar_port", _int, "TCP port to serve interLink on.", env="SIDECARPORT"),
    "BindAddress": FieldSpec(
        "bind_address",
        _str,
        "Address to bind the TCP port to: a loopback address (127.0.0.1, ::1, localhost), where callers are "
        "identified by uid; any other address only with AllowNetworkBind.",
    ),
    "Socket": FieldSpec(
        "socket",
        _socket,
        "unix:///path: serve on a unix socket instead of TCP (interLink 0.6.2; SidecarURL unix://...). The "
        "socket is 0600 in a 0700 directory (0660 and 0750 with SocketGroup); a directory others can write "
        "stops start-up.",
    ),
    "SocketGroup": FieldSpec(
        "socket_group",
        _optional_group,
        "Group (name or gid) of the unix socket and of the directory the plugin makes for it: its members can "
        "connect(); only AllowedClientUids/AllowedClientGids get answers. The plugin must be a member (or root).",
    ),
    "AllowedClientUids": FieldSpec(
        "allowed_client_uids",
        _account_ids("user"),
        "Users (uids or names) allowed to call the API besides the plugin's own uid, e.g. interLink's account. "
        "The kernel says who calls: SO_PEERCRED on the unix socket, the socket table on loopback TCP. Others "
        "get 403 and a log line with their uid. Default: the plugin's own uid only.",
    ),
    "AllowedClientGids": FieldSpec(
        "allowed_client_gids",
        _account_ids("group"),
        "Groups (gids or names) whose members may call the API (unix socket: the caller's groups as the kernel "
        "has them; TCP: its account's groups).",
    ),
    "AllowNetworkBind": FieldSpec(
        "allow_network_bind",
        _bool,
        "Allow a non-loopback BindAddress (or systemd TCP socket). Callers on this host are still checked by "
        "uid; callers from other hosts cannot be identified and are let in: firewall the port. Warned at every "
        "start.",
    ),
    "MaxConnections": FieldSpec(
        "max_connections",
        _positive_int,
        "Open connections (or requests in progress) past which new requests get 503 at once (uvicorn's "
        "limit_concurrency); /status is always answered.",
    ),
    "RequestReadTimeout": FieldSpec(
        "request_read_timeout",
        _seconds,
        "A request must arrive whole (headers and body) within this many seconds of its first byte (or of the "
        "connection's start), or the connection is closed (408): slow clients cannot hold connections.",
    ),
    "MaxFollowStreams": FieldSpec(
        "max_follow_streams",
        _positive_int,
        "Log Follow streams open at once; the next one gets 429 until one ends.",
    ),
    "MetricsAddress": FieldSpec(
        "metrics_address",
        _host_port,
        "host:port of a listener that serves only GET /metrics (for Prometheus, e.g. when the API is a unix "
        "socket); empty: off. The API's own /metrics stays. Open it to the Prometheus server only.",
    ),
    "InstanceId": FieldSpec(
        "instance_id", _str, "Distinguishes several plugin instances on one account: each touches only its own jobs."
    ),
    "PodmanPath": FieldSpec("podman", _argv, "podman command (Podman backend, and the podman runtime)."),
    "SingularityPath": FieldSpec("apptainer", _argv, "apptainer or singularity binary.", env="SINGULARITYPATH"),
    "ImagePrefix": FieldSpec(
        "image_prefix", _str, "Prefix for images without a scheme (apptainer/singularity only), e.g. docker://."
    ),
    "PullPolicy": FieldSpec(
        "pull_policy",
        _choice(("", "always", "missing", "never", "newer")),
        "Podman runtime: overrides imagePullPolicy.",
    ),
    "PollInterval": FieldSpec(
        "poll_interval", _seconds, "Seconds between scheduler queries (one query for all tracked jobs)."
    ),
    "CommandTimeout": FieldSpec(
        "command_timeout", _seconds, "Timeout for every scheduler command; the command is killed when it expires."
    ),
    "SubmitDeadline": FieldSpec(
        "submit_deadline",
        _seconds,
        "How long a pod waits for an unreachable backend before it fails with SubmitFailed.",
    ),
    "GracePeriodCap": FieldSpec(
        "grace_period_cap", _seconds, "Upper bound on terminationGracePeriodSeconds honoured by delete."
    ),
    "RestartBackoffInitial": FieldSpec(
        "restart_backoff_initial", _seconds, "restartPolicy back-off start (kubelet: 10 s)."
    ),
    "RestartBackoffMax": FieldSpec("restart_backoff_max", _seconds, "restartPolicy back-off cap (kubelet: 300 s)."),
    "MaxContainerLogBytes": FieldSpec(
        "max_container_log_bytes",
        _log_bytes,
        "Per container run, the log stops just under this size with a marker line; the rest of the output is "
        "read and dropped (the container never blocks). 0: no cap. Default 1Gi.",
    ),
    "MaxVolumeFiles": FieldSpec(
        "max_volume_files",
        _positive_int,
        "Per pod, the files and directories its configMap, secret, projected and downwardAPI volumes may write "
        "into the job dir; a pod with more is refused (422 naming the volume) and nothing is written.",
    ),
    "MaxVolumeBytes": FieldSpec(
        "max_volume_bytes",
        _positive_bytes,
        "Per pod, the bytes those volume files may hold together (64Mi, 1048576); past it the pod is refused "
        "(422) and nothing is written. Default 64Mi.",
    ),
    "EnableProbes": FieldSpec(
        "enable_probes",
        _bool,
        "Run startup/readiness/liveness probes inside the job (Kubernetes semantics; the Go plugin's key).",
    ),
    "RetentionDays": FieldSpec(
        "retention_days",
        _days,
        "Job dirs and logs of finished pods that were never deleted are removed after this many days (0: keep).",
    ),
    "DefaultCPU": FieldSpec("default_cpus", _int, "CPUs for a pod that asks for none (and has no flavor)."),
    "DefaultMemory": FieldSpec(
        "default_memory_mib", _memory_mib, "Memory for a pod that asks for none, e.g. 1G or 1024Mi."
    ),
    "Taints": FieldSpec("taints", _taints, "Taints sent with every ping: [{Key, Value, Effect}]."),
    "MaxCPU": FieldSpec("max_cpus", _int, "Cap on the CPUs reported by the ping (0: no cap)."),
    "MaxMemory": FieldSpec("max_memory_mib", _memory_mib, "Cap on the memory reported by the ping."),
    "JobEnvironment": FieldSpec(
        "job_environment", _str_map, "Variables exported to the job runner (not to containers), e.g. CONTAINERS_CONF."
    ),
    "JobPath": FieldSpec(
        "job_path", _str, "PATH of the job runner (the job gets SLURM's own variables only: --export-file=/dev/null)."
    ),
    "LogLevel": FieldSpec("log_level", _choice(("debug", "info", "warning", "error")), "Plugin log level."),
    "LogFormat": FieldSpec(
        "log_format", _choice(("json", "text")), "json: one JSON object per line with interLink's session id; text."
    ),
    "SshHost": FieldSpec(
        "ssh_host",
        _str,
        "Run every scheduler command on this login node over SSH (empty: on this host). The plugin keeps a "
        "small pool of persistent connections.",
    ),
    "SshPort": FieldSpec("ssh_port", _int, "SSH port of SshHost."),
    "SshUser": FieldSpec("ssh_user", _str, "Remote user (empty: the plugin's own user name); jobs run as this user."),
    "SshKeyFile": FieldSpec(
        "ssh_key_file", _optional_path, "Private key for SshHost (re-read on every reconnect, like the certificate)."
    ),
    "SshCertificateFile": FieldSpec(
        "ssh_certificate_file",
        _optional_path,
        "OpenSSH certificate of SshKeyFile (e.g. a 12 h CINECA certificate), re-read on every reconnect.",
    ),
    "SshKnownHosts": FieldSpec(
        "ssh_known_hosts",
        _optional_path,
        "known_hosts file the host key must be in (default ~/.ssh/known_hosts); an unknown or different key "
        "fails every command and nothing runs.",
    ),
    "SshJumpHost": FieldSpec(
        "ssh_jump_host", _jump_host, "[user@]host[:port] of a bastion to go through (same key and known_hosts)."
    ),
    "SshPoolSize": FieldSpec("ssh_pool_size", _pool_size, "Persistent SSH connections at most (1-64)."),
    "SshMaxSessions": FieldSpec(
        "ssh_max_sessions",
        _pool_size,
        "Channels per connection at most (sshd's MaxSessions, 10 by default); each log Follow holds one.",
    ),
    "SshConnectTimeout": FieldSpec("ssh_connect_timeout", _seconds, "Timeout of one SSH connect + login."),
    "DataTransfer": FieldSpec(
        "data_transfer",
        _choice(DATA_TRANSFERS),
        "With SshHost: shared (DataRootFolder is the same path here and on the cluster) or sftp (it exists only "
        "on the cluster: job files are uploaded over SFTP, runner state read with one command per poll).",
    ),
    "ApptainerCacheDir": FieldSpec(
        "apptainer_cache_dir",
        _str,
        "Shared dir (as the jobs see it) where images that need a conversion (docker://, oras://, archives) "
        "are built once into SIF files, under a lock: pods started together convert an image once. Each uid "
        "gets its own private dir uid-<uid> in it; shared by several uids, make it root's and sticky (1777).",
    ),
    "ImageOverrides": FieldSpec(
        "image_overrides",
        _image_overrides,
        "image -> SIF file, sandbox dir (e.g. unpacked on CVMFS) or URI used instead (apptainer/singularity).",
    ),
    "RegistryCredentials": FieldSpec(
        "registry_credentials",
        _registry_credentials,
        "registry host -> {Username, Password | PasswordFile} for apptainer pulls (interLink sends no "
        "imagePullSecrets); given to the conversion only, as a private auth file (--authfile) removed before any "
        "container starts: never argv, an environment, the batch script, logs or containers.",
    ),
    "ApptainerOptions": FieldSpec(
        "apptainer_options",
        _apptainer_options,
        "Options every apptainer/singularity container gets: {containall, no-home, cleanenv, fakeroot, "
        "writable-tmpfs, contain, no-init: true}; pods add allowed ones with the singularity-options annotation. "
        "Default containall (no host /home, /tmp or environment in the container); the key replaces the "
        "default: {containall: false} turns it off (warned at start).",
    ),
    "ApptainerFallback": FieldSpec(
        "apptainer_fallback",
        _str,
        "Binary tried in the job when the runtime binary is not on the node's PATH (singularity for apptainer; "
        "empty: none).",
    ),
    "TracingEndpoint": FieldSpec(
        "tracing_endpoint",
        _http_url,
        "OTLP/HTTP collector URL for OpenTelemetry traces, e.g. http://collector:4318 (/v1/traces is added to a "
        "URL without a path); empty: off, unless OTEL_EXPORTER_OTLP_ENDPOINT is set (this key wins over it). "
        "Needs the tracing extra: pip install 'interlink-plugins[tracing]'.",
    ),
    "TracingServiceName": FieldSpec(
        "tracing_service_name",
        _str,
        "service.name of the spans (empty: OTEL_SERVICE_NAME, else interlink-plugin-<Backend>).",
    ),
    "TracingSampleRatio": FieldSpec(
        "tracing_sample_ratio",
        _ratio,
        "Share of traces recorded, 0 to 1; a request carrying a traceparent follows its caller's sampling decision.",
    ),
    "CommandPrefix": FieldSpec(
        "command_prefix",
        _shell_text,
        "The Go plugin's key: shell text the job runs before its containers (after POD_IP, before interLink's "
        "wstunnel commands and pre-exec, as the Go plugin places it in job.slurm), e.g. "
        "`export APPTAINER_CACHEDIR=/scratch/cache` or `module load apptainer`. Admin-trusted, in every batch "
        "job (SLURM, HTCondor). It does not prefix sbatch/squeue/scancel (neither does the Go plugin's): "
        "give those SbatchPath and friends.",
    ),
}

@dataclass(frozen=True)
class ConfigSection:
    """A backend's config keys, registered by its package: the YAML stays flat, a section is where keys are
    declared and documented. ``backend`` is the Backend value it serves; ``settings_type`` the frozen
    dataclass its values are stored in (``Config.section``), whose attributes the fields name; ``policy`` is
    its section of the admin policy; ``compat_keys`` are accepted without effect (key -> why); ``adjust``
    folds compatibility keys into the config (returns notes); ``check`` returns warnings or raises
    ConfigError; ``secret_files`` are the keys naming files that hold a secret (key -> attribute);
    ``reloadable`` the attributes SIGHUP re-reads; ``probe`` what `check` reports of this backend's settings
    on this host (ok, line), when it is the configured backend; ``data_root_rule`` what else DataRootFolder
    must not hold with this backend (checked by its ``check``, named in every data-root message)."""

    title: str
    fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    backend: str = ""
    settings_type: type[Any] | None = None
    policy: PolicySection | None = None
    compat_title: str = ""
    compat_keys: Mapping[str, str] = field(default_factory=dict)
    adjust: Callable[[Config, Mapping[str, Any], Mapping[str, str]], tuple[Config, list[str]]] | None = None
    check: Callable[[Config], list[str]] | None = None
    secret_files: Mapping[str, str] = field(default_factory=dict)
    reloadable: tuple[str, ...] = ()
    probe: Callable[[Config], list[tuple[bool, str]]] | None = None
    data_root_rule: str = ""


COMMON = ConfigSection(
    "Common keys",
    FIELDS,
    secret_files={"SshKeyFile": "ssh_key_file"},
    reloadable=("taints", "policy_raw", "default_cpus", "default_memory_mib"),
)


def backend_names(sections: Sequence[ConfigSection]) -> tuple[str, ...]:
    """The Backend values the registered sections serve, in their order."""
    return tuple(dict.fromkeys(section.backend for section in sections if section.backend))


def _common(sections: Sequence[ConfigSection]) -> ConfigSection:
    """The common section, its Backend key choosing among the registered backends."""
    names = backend_names(sections)
    either = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)
    backend = FieldSpec("backend", _choice(names), f"Which scheduler this instance drives: {either}.")
    return dataclasses.replace(COMMON, fields={"Backend": backend, **COMMON.fields})


def all_fields(sections: Sequence[ConfigSection]) -> dict[str, FieldSpec]:
    """Every key of the common section and of the backends' sections."""
    return {key: spec for section in (_common(sections), *sections) for key, spec in section.fields.items()}


def policy_sections(sections: Sequence[ConfigSection]) -> tuple[PolicySection, ...]:
    return tuple(section.policy for section in sections if section.policy is not None)


def _settings(config: Config, section: ConfigSection) -> Any:
    """Where a section's values are stored: the backend's settings, or the Config for the common keys."""
    return config if section.settings_type is None else config.section(section.settings_type)


def _parsed(
    raw: Mapping[str, Any], sections: Sequence[ConfigSection], environ: Mapping[str, str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The parsed values of every section (common first), by attribute; and the warnings of the keys."""
    every = (_common(sections), *sections)
    owner = {key: (index, spec) for index, section in enumerate(every) for key, spec in section.fields.items()}
    policy = policy_keys(policy_sections(sections))
    compat = {key: why for section in every for key, why in section.compat_keys.items()}
    warnings: list[str] = []
    values: list[dict[str, Any]] = [{} for _ in every]
    for key, value in raw.items():
        if key in owner:
            index, spec = owner[key]
            values[index][spec.attr] = spec.parse(key, value)
        elif key in policy:
            continue
        elif key in compat:
            warnings.append(f"config key {key!r} is accepted for compatibility, without effect: {compat[key]}")
        else:
            warnings.append(f"unknown config key {key!r} ignored")
    for index, spec in owner.values():
        if spec.env and environ.get(spec.env):
            values[index][spec.attr] = spec.parse(spec.env, environ[spec.env])
    return values, warnings


def parse_config(
    raw: Mapping[str, Any], sections: Sequence[ConfigSection], *, environ: Mapping[str, str] | None = None
) -> tuple[Config, list[str]]:
    """Build a Config from the common keys and the backends' sections; returns (config, warnings). Raises
    ConfigError for bad values."""
    environ = os.environ if environ is None else environ
    values, warnings = _parsed(raw, sections, environ)
    common = values[0]
    common.setdefault("instance_id", "default")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", str(common["instance_id"])):
        raise ConfigError(f"InstanceId: {common['instance_id']!r} must be 1-32 of [A-Za-z0-9_.-]")
    common["policy_raw"] = {key: raw[key] for key in policy_keys(policy_sections(sections)) if key in raw}
    common["sections"] = {section.settings_type: section.settings_type(**parsed)
                          for section, parsed in zip(sections, values[1:], strict=True) if section.settings_type}
    config = Config(**common)
    every = (COMMON, *sections)
    for section in every:
        if section.adjust is not None:
            config, notes = section.adjust(config, raw, environ)
            warnings += notes
    for section in every:
        if section.check is not None:
            warnings += section.check(config)
    if config.container_runtime in ("apptainer", "singularity") and "--containall" not in config.apptainer_options:
        warnings.append("ApptainerOptions without containall: containers see the host's /home and /tmp and "
                        "inherit the job's environment")
    root = str(config.data_root)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in root):
        raise ConfigError(data_root_problem(root, sections))
    if config.restart_backoff_max < config.restart_backoff_initial:
        raise ConfigError("RestartBackoffMax: must be >= RestartBackoffInitial")
    if not config.socket and not config.allow_network_bind and not loopback_host(config.bind_address):
        raise ConfigError(
            f"BindAddress: {config.bind_address!r} is not a loopback address: every host that reaches it could "
            "run jobs as the plugin's user. Use a unix Socket (or an SSH tunnel to it), or set AllowNetworkBind: "
            "true and firewall the port"
        )
    return config, warnings


def reloaded(current: Config, fresh: Config, sections: Sequence[ConfigSection]) -> Config:
    """``current`` with the keys SIGHUP re-reads taken from ``fresh`` (each section's ``reloadable``); the
    keys that need a restart keep their value."""
    stored = dict(current.sections)
    for section in sections:
        kind = section.settings_type
        if kind is not None and section.reloadable:
            taken = {attr: getattr(fresh.section(kind), attr) for attr in section.reloadable}
            stored[kind] = dataclasses.replace(current.section(kind), **taken)
    return dataclasses.replace(current, sections=stored, **{attr: getattr(fresh, attr) for attr in COMMON.reloadable})


def data_root_problem(root: str, sections: Sequence[ConfigSection]) -> str:
    """Job dirs are named in line-based state files (and in what a backend's rule says, e.g. a description
    where `$` is a macro)."""
    rules = "".join(f" (nor {section.data_root_rule} with {section.title})" for section in sections
                    if section.data_root_rule)
    return f"DataRootFolder: {root!r} must not hold control characters{rules}"


def load_config(path: Path, sections: Sequence[ConfigSection]) -> tuple[Config, list[str]]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {yaml_problem(exc)}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: top level must be a mapping")
    config, warnings = parse_config(raw, sections)
    for what, secret_file in _secret_files(path, raw, config, sections):
        warning = readable_by_others(secret_file, what)
        if warning:
            warnings.append(warning)
    return config, warnings


def _secret_files(
    path: Path, raw: Mapping[str, Any], config: Config, sections: Sequence[ConfigSection]
) -> list[tuple[str, Path]]:
    """The config file and every file it names that holds a key, token or password."""
    files = [("config file", path)]
    named = [(key, str(getattr(_settings(config, section), attr))) for section in (COMMON, *sections)
             for key, attr in section.secret_files.items()]
    files += [(key, Path(value)) for key, value in named if value]
    registries = raw.get("RegistryCredentials")
    for registry, spec in (registries.items() if isinstance(registries, dict) else ()):
        if isinstance(spec, dict) and spec.get("PasswordFile"):
            files.append((f"RegistryCredentials.{registry}.PasswordFile", Path(str(spec["PasswordFile"])).expanduser()))
    return files


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line error as one line: where, and what."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1} column {mark.column + 1}: {problem}" if mark is not None else problem


def default_instance_id() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:32] or "default"


def _key_table(fields: Mapping[str, FieldSpec], defaults: Any) -> list[str]:
    lines = ["| key | env override | default | meaning |", "| --- | --- | --- | --- |"]
    for key, spec in fields.items():
        default = getattr(defaults, spec.attr)
        if isinstance(default, tuple):
            default = " ".join(str(d) for d in default)
        elif isinstance(default, dict):
            default = "{}" if not default else str(default)
        lines.append(f"| `{key}` | {spec.env or ''} | `{default}` | {spec.doc} |")
    return lines


def _meaning_table(rows: Mapping[str, str], first: str) -> list[str]:
    return [f"| key | {first} |", "| --- | --- |", *(f"| `{key}` | {text} |" for key, text in rows.items())]


def config_reference_markdown(sections: Sequence[ConfigSection]) -> str:
    """The config reference, one section per heading (docs/config-reference.md is checked against it)."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `interlink-plugin config-reference` from the config sections: the common keys",
        "(`interlink_plugins/config.py`, `interlink_plugins/core/policy/engine.py`) and each backend's own",
        "(`interlink_plugins/<backend>/settings.py`, `interlink_plugins/<backend>/policy.py`); a test keeps",
        "this file in step with the code. The file is flat: a backend's keys sit at the top level like the",
        "common ones. Unknown keys are warnings; a bad value stops start-up.",
    ]
    policies = policy_sections(sections)
    common_policy = policy_key_docs(policies)
    common = _common(sections)
    for section in (common, *sections):
        lines += ["", f"## {section.title}", ""]
        if section.fields:
            lines += _key_table(section.fields, _settings(Config(), section))
        policy = common_policy if section is common else section.policy.keys if section.policy else {}
        if policy:
            lines += ["", "### Admin policy keys" if section is common else f"### Admin policy keys ({section.title})",
                      "", *_meaning_table(policy, "meaning")]
        if section.compat_keys:
            lines += ["", f"### {section.compat_title}", "", *_meaning_table(section.compat_keys, "why")]
    return "\n".join(lines) + "\n"
