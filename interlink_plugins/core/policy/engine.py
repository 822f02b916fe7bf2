"""Admin policy: allow-lists for option annotations, host paths, raw shell and per-namespace choices.

A generic engine: the option tables, annotation keys, config keys and namespace choices of a backend
are a PolicySection its package registers (interlink_plugins/backends.py lists them); the apptainer/
singularity options, a container runtime's, are here.

Option annotations are split with shlex and parsed exactly as the target tool parses them, so every
spelling of an option is seen:

* getopt tools (glibc ``getopt_long``): ``--long=v``, ``--long v``, any unique prefix of a long name
  (``--chd`` is ``--chdir``), ``-s v``, ``-sv``, bundled flags (``-vD/x``), optional values only
  when attached (``--nice=5``, ``-kX``).
* apptainer/singularity (Go ``pflag``): ``--long=v``, ``--long v``, ``-s v``, ``-sv``, ``-s=v``,
  bundled booleans; no abbreviations.

Status codes: an annotation that the tool itself could not parse (unbalanced quotes, unknown or
ambiguous option, missing or unexpected value, positional word, control character) is 422; an
option or value the policy refuses is 403.
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from interlink_plugins.core.errors import ConfigError, PodSpecError

log = logging.getLogger(__name__)

TakesValue = Literal["no", "required", "optional"]
Style = Literal["getopt", "pflag"]
_S = TypeVar("_S")


class PolicyViolation(PodSpecError):
    """An annotation the admin policy refuses; ``field`` is the annotation key."""

    def __init__(self, field: str, message: str, status: int = 403) -> None:
        super().__init__(field, message, status)


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option: canonical long name, short letter, whether it takes a value."""

    long: str
    short: str | None
    takes_value: TakesValue


@dataclass(frozen=True)
class ParsedOption:
    """An option found in an annotation, by canonical long name; ``spelling`` is as written."""

    name: str
    value: str | None
    spelling: str = field(default="", compare=False)


def _table(rows: Iterable[tuple[str, str, str | None, TakesValue]]) -> dict[str, OptionSpec]:
    return {key: OptionSpec(long, short, takes) for key, long, short, takes in rows}


# apptainer exec/run (1.x) plus SingularityCE flags, read from cmd/internal/cli/action_flags.go.
# pflag has no optional values: booleans are "no" (they accept an attached =true/=false).
SINGULARITY_OPTIONS: Mapping[str, OptionSpec] = _table(
    [
        ("add-caps", "add-caps", None, "required"),
        ("allow-setuid", "allow-setuid", None, "no"),
        ("app", "app", None, "required"),
        ("apply-cgroups", "apply-cgroups", None, "required"),
        ("authfile", "authfile", None, "required"),
        ("bind", "bind", "B", "required"),
        ("blkio-weight", "blkio-weight", None, "required"),
        ("blkio-weight-device", "blkio-weight-device", None, "required"),
        ("boot", "boot", None, "no"),
        ("cdi", "cdi", None, "no"),
        ("cleanenv", "cleanenv", "e", "no"),
        ("compat", "compat", None, "no"),
        ("contain", "contain", "c", "no"),
        ("containall", "containall", "C", "no"),
        ("containlibs", "containlibs", None, "required"),
        ("cpu-shares", "cpu-shares", None, "required"),
        ("cpus", "cpus", None, "required"),
        ("cpuset-cpus", "cpuset-cpus", None, "required"),
        ("cpuset-mems", "cpuset-mems", None, "required"),
        ("cwd", "pwd", None, "required"),
        ("device", "device", None, "required"),
        ("disable-cache", "disable-cache", None, "no"),
        ("dmtcp-launch", "dmtcp-launch", None, "required"),
        ("dmtcp-restart", "dmtcp-restart", None, "required"),
        ("dns", "dns", None, "required"),
        ("docker-host", "docker-host", None, "required"),
        ("docker-login", "docker-login", None, "no"),
        ("docker-password", "docker-password", None, "required"),
        ("docker-username", "docker-username", None, "required"),
        ("drop-caps", "drop-caps", None, "required"),
        ("env", "env", None, "required"),
        ("env-file", "env-file", None, "required"),
        ("fakeroot", "fakeroot", "f", "no"),
        ("fusemount", "fusemount", None, "required"),
        ("home", "home", "H", "required"),
        ("hostname", "hostname", None, "required"),
        ("ignore-fakeroot-command", "ignore-fakeroot-command", None, "no"),
        ("ignore-subuid", "ignore-subuid", None, "no"),
        ("ignore-userns", "ignore-userns", None, "no"),
        ("ipc", "ipc", "i", "no"),
        ("keep-privs", "keep-privs", None, "no"),
        ("memory", "memory", None, "required"),
        ("memory-reservation", "memory-reservation", None, "required"),
        ("memory-swap", "memory-swap", None, "required"),
        ("mount", "mount", None, "required"),
        ("net", "net", "n", "no"),
        ("network", "network", None, "required"),
        ("network-args", "network-args", None, "required"),
        ("no-eval", "no-eval", None, "no"),
        ("no-home", "no-home", None, "no"),
        ("no-https", "no-https", None, "no"),
        ("no-init", "no-init", None, "no"),
        ("no-mount", "no-mount", None, "required"),
        ("no-nv", "no-nv", None, "no"),
        ("no-oci", "no-oci", None, "no"),
        ("no-pid", "no-pid", None, "no"),
        ("no-privs", "no-privs", None, "no"),
        ("no-rocm", "no-rocm", None, "no"),
        ("no-setgroups", "no-setgroups", None, "no"),
        ("no-umask", "no-umask", None, "no"),
        ("nohttps", "no-https", None, "no"),
        ("nv", "nv", None, "no"),
        ("nvccli", "nvccli", None, "no"),
        ("oci", "oci", None, "no"),
        ("oom-kill-disable", "oom-kill-disable", None, "no"),
        ("overlay", "overlay", "o", "required"),
        ("passphrase", "passphrase", None, "no"),
        ("pem-path", "pem-path", None, "required"),
        ("pid", "pid", "p", "no"),
        ("pids-limit", "pids-limit", None, "required"),
        ("pwd", "pwd", None, "required"),
        ("rocm", "rocm", None, "no"),
        ("scratch", "scratch", "S", "required"),
        ("security", "security", None, "required"),
        ("sharens", "sharens", None, "no"),
        ("sif-fuse", "sif-fuse", None, "no"),
        ("tmpdir", "tmpdir", None, "required"),
        ("underlay", "underlay", None, "no"),
        ("unsquash", "unsquash", None, "no"),
        ("userns", "userns", "u", "no"),
        ("uts", "uts", None, "no"),
        ("vm", "vm", None, "no"),
        ("vm-cpu", "vm-cpu", None, "required"),
        ("vm-err", "vm-err", None, "no"),
        ("vm-ip", "vm-ip", None, "required"),
        ("vm-ram", "vm-ram", None, "required"),
        ("workdir", "workdir", "W", "required"),
        ("writable", "writable", "w", "no"),
        ("writable-tmpfs", "writable-tmpfs", None, "no"),
    ]
)

# bind sources are checked against AllowedHostPaths; the rest stays inside the container.
DEFAULT_SINGULARITY_ALLOW: frozenset[str] = frozenset(
    {
        "bind", "nv", "nvccli", "rocm", "no-nv", "no-rocm", "containall", "contain", "cleanenv",
        "no-home", "writable-tmpfs", "fakeroot", "no-mount", "pwd", "no-init", "no-umask", "no-eval",
        "compat", "userns", "pid", "ipc", "uts", "unsquash", "no-privs", "drop-caps", "app",
        "scratch", "disable-cache",
    }
)  # fmt: skip

# Refused even when an admin lists them:
# * env, env-file: the environment comes from the pod spec only;
# * host paths the policy cannot check (only --bind sources are checked): mount, home, overlay,
#   workdir, tmpdir, containlibs, apply-cgroups, pem-path, authfile, dmtcp-launch, dmtcp-restart;
# * fusemount: runs a FUSE command (on the host with host:), i.e. raw shell;
# * privilege: security (seccomp/apparmor/selinux, uid:/gid: as root), keep-privs, allow-setuid,
#   add-caps;
# * credentials and prompts: docker-login and passphrase prompt on a terminal the job does not
#   have; docker-username/docker-password would put secrets into pod annotations.
NEVER_ALLOWED_SINGULARITY: frozenset[str] = frozenset(
    {
        "env", "env-file", "mount", "home", "overlay", "workdir", "tmpdir", "containlibs",
        "apply-cgroups", "pem-path", "authfile", "dmtcp-launch", "dmtcp-restart", "fusemount",
        "security", "keep-privs", "allow-setuid", "add-caps", "docker-login", "passphrase",
        "docker-username", "docker-password",
    }
)  # fmt: skip

_PFLAG_BOOLS = frozenset({"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"})
_MAX_SHOWN = 80


def show(text: str) -> str:
    """A token for an error message: repr-quoted, cut when long."""
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN] + "..."
    return repr(text)


def split_words(text: str, *, field: str) -> list[str]:
    """shlex-split (POSIX) an annotation; unbalanced quotes are a 422."""
    if not isinstance(text, str):
        raise PolicyViolation(field, "must be a string", 422)
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        raise PolicyViolation(field, f"cannot split into words: {exc}", 422) from exc


def _short_map(table: Mapping[str, OptionSpec]) -> dict[str, OptionSpec]:
    return {spec.short: spec for key, spec in table.items() if spec.short and key == spec.long}


def _lookup_long(name: str, table: Mapping[str, OptionSpec], *, field: str, token: str, style: Style) -> OptionSpec:
    """Exact long name, else (getopt only) the single option a unique prefix names."""
    spec = table.get(name)
    if spec is not None and name:
        return spec
    if style == "getopt" and name:
        matches = sorted({s.long for key, s in table.items() if key.startswith(name)})
        if len(matches) == 1:
            return table[matches[0]]
        if len(matches) > 1:
            listed = ", ".join("--" + m for m in matches)
            raise PolicyViolation(field, f"option {show(token)} is ambiguous ({listed})", 422)
    raise PolicyViolation(field, f"unknown option {show(token)}", 422)


def _check_value(value: str, *, field: str, spelling: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise PolicyViolation(field, f"control character in the value of {show(spelling)}", 422)


def _bool_value(spec: OptionSpec, value: str, *, field: str, spelling: str) -> str:
    if value not in _PFLAG_BOOLS:
        raise PolicyViolation(field, f"option {show(spelling)} takes no value other than true/false", 422)
    return value


def parse_options(
    text: str, table: Mapping[str, OptionSpec], *, field: str, style: Style = "getopt"
) -> list[ParsedOption]:
    """Parse an option annotation the way the tool would; anything but options is a violation."""
    reader = _OptionReader(split_words(text, field=field), table, field=field, style=style)
    while reader.words:
        word = reader.words.popleft()
        if word == "--":
            raise PolicyViolation(field, "'--' ends the options: positional words are not accepted", 422)
        if word.startswith("--"):
            reader.long_option(word)
        elif word.startswith("-") and word != "-":
            reader.short_options(word)
        else:
            raise PolicyViolation(field, f"unexpected word {show(word)}: only options are accepted", 422)
    return reader.parsed


class _OptionReader:
    """The words of one annotation, read as getopt_long (or pflag) reads a command line."""

    def __init__(self, words: list[str], table: Mapping[str, OptionSpec], *, field: str, style: Style) -> None:
        self.words = deque(words)  # popleft: a hostile annotation of many words stays linear
        self.table = table
        self.shorts = _short_map(table)
        self.field = field
        self.style = style
        self.parsed: list[ParsedOption] = []

    def add(self, spec: OptionSpec, value: str | None, spelling: str) -> None:
        if value is not None:
            _check_value(value, field=self.field, spelling=spelling)
        self.parsed.append(ParsedOption(spec.long, value, spelling))

    def add_next_word(self, spec: OptionSpec, spelling: str) -> None:
        """An option whose value is the next word (``--mem 4G``, ``-c 2``)."""
        if not self.words:
            raise PolicyViolation(self.field, f"option {show(spelling)} needs a value", 422)
        value = self.words.popleft()
        self.add(spec, value, f"{spelling} {value}")

    def long_option(self, word: str) -> None:
        name, eq, attached = word[2:].partition("=")
        spec = _lookup_long(name, self.table, field=self.field, token=word, style=self.style)
        if spec.takes_value == "no":
            if not eq:
                self.add(spec, None, word)
            elif self.style == "pflag":
                self.add(spec, _bool_value(spec, attached, field=self.field, spelling=word), word)
            else:
                raise PolicyViolation(self.field, f"option {show(word)} takes no value", 422)
        elif eq:
            self.add(spec, attached, word)
        elif spec.takes_value == "required":
            self.add_next_word(spec, word)
        else:
            self.add(spec, None, word)

    def short_options(self, word: str) -> None:
        """A cluster of short options (``-N2``, ``-vx``); a value ends it."""
        rest = word[1:]
        while rest:
            spec = self.shorts.get(rest[0])
            if spec is None:
                raise PolicyViolation(self.field, f"unknown option -{rest[0]} in {show(word)}", 422)
            if self.style == "pflag" and len(rest) > 2 and rest[1] == "=":
                value = rest[2:]
                if spec.takes_value == "no":
                    value = _bool_value(spec, value, field=self.field, spelling=word)
                self.add(spec, value, word)
                return
            if spec.takes_value == "no":
                self.add(spec, None, word)
                rest = rest[1:]
            elif len(rest) > 1:
                self.add(spec, rest[1:], word)
                return
            elif spec.takes_value == "required":
                self.add_next_word(spec, word)
                return
            else:
                self.add(spec, None, word)
                return


def check_options(
    parsed: list[ParsedOption],
    allow: Collection[str],
    *,
    field: str,
    never: Collection[str],
) -> None:
    """Raise a 403 naming every option (as written) that is reserved or not in ``allow``."""
    reserved = [p for p in parsed if p.name in never]
    refused = [p for p in parsed if p.name not in never and p.name not in allow]
    problems = [f"{show(p.spelling or p.name)} (--{p.name}) is reserved by the plugin" for p in reserved]
    problems += [f"{show(p.spelling or p.name)} (--{p.name}) is not allowed" for p in refused]
    if problems:
        raise PolicyViolation(field, "; ".join(problems), 403)


def render_option(opt: ParsedOption) -> list[str]:
    """Canonical argv words: ``["--name=value"]`` or ``["--flag"]`` (valid for getopt and pflag tools).

    The words are argv elements: shell-quote them before writing them into a script, and never
    put values with whitespace into directive lines of a batch script.
    """
    if opt.value is None:
        return [f"--{opt.name}"]
    return [f"--{opt.name}={opt.value}"]


@dataclass(frozen=True)
class OptionLanguage:
    """A tool's option table with the allow-lists of the policy: what a pod may pass to that tool."""

    table: Mapping[str, OptionSpec]
    default_allow: frozenset[str]
    never: frozenset[str]
    style: Style = "getopt"

    def parse(self, text: str, allow: Collection[str] | None = None, *, field: str) -> list[ParsedOption]:
        """Parse an annotation as the tool would, then refuse what is reserved or not allowed."""
        parsed = parse_options(text, self.table, field=field, style=self.style)
        check_options(parsed, self.default_allow if allow is None else allow, field=field, never=self.never)
        return parsed


@dataclass(frozen=True)
class PolicySection:
    """What one backend adds to the admin policy, registered by its package.

    ``parse`` turns the section's config keys (``keys``: key -> meaning, for the reference) into its
    settings, kept in ``AdminPolicy.sections`` under ``name`` (absent: the section's defaults).
    ``namespace_keys`` are the NamespacePolicy sub-keys it adds (config key -> choice name).
    ``annotations`` are the annotation keys every backend honours for a role (e.g. PRE_EXEC of
    core.policy.annotations), ``own_annotations`` those only this backend honours; ``launchers`` are the option
    languages of the MPI launchers it knows (by binary name).
    """

    name: str
    title: str
    parse: Callable[[Mapping[str, Any]], object]
    keys: Mapping[str, str] = field(default_factory=dict)
    namespace_keys: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    own_annotations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    launchers: Mapping[str, OptionLanguage] = field(default_factory=dict)


@dataclass(frozen=True)
class NamespacePolicy:
    """What one Kubernetes namespace may choose: unix users, flavors, and the choices backends register
    (``choices``: choice name -> allowed values, the first being the default where a backend says so)."""

    users: tuple[str, ...] = ()  # unix user names or numeric uids, as strings
    flavors: tuple[str, ...] = ()  # flavors carrying a UID this namespace may use (other flavors: any namespace)
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def choice(self, name: str) -> tuple[str, ...]:
        """The allowed values of one registered choice; () when the namespace lists none."""
        return self.choices.get(name, ())


def _same_user(a: str, b: str) -> bool:
    """Names and uids match each other through the local passwd database (best effort)."""
    if a == b:
        return True
    for name, uid in ((a, b), (b, a)):
        if uid.isdigit() and not name.isdigit():
            try:
                if pwd.getpwnam(name).pw_uid == int(uid):
                    return True
            except KeyError:
                continue
    return False


SINGULARITY = OptionLanguage(SINGULARITY_OPTIONS, DEFAULT_SINGULARITY_ALLOW, NEVER_ALLOWED_SINGULARITY, "pflag")


@dataclass(frozen=True)
class AdminPolicy:
    """The admin policy shared by every backend; the default denies everything optional.

    ``sections`` holds each registered backend section's settings by name (a section without config
    keys keeps its defaults and is absent); ``registry`` the sections themselves (declarations, not
    admin choices: not compared).
    """

    allow_raw_shell: bool = False  # pre-exec, mesh, wstunnel scripts
    singularity_allow: frozenset[str] = DEFAULT_SINGULARITY_ALLOW
    allowed_host_paths: tuple[str, ...] = ()
    namespaces: Mapping[str, NamespacePolicy] = field(default_factory=dict)
    default_namespace: NamespacePolicy | None = None  # None: no registered choice, no user
    sections: Mapping[str, object] = field(default_factory=dict)
    registry: tuple[PolicySection, ...] = field(default=(), compare=False)

    def namespace_policy(self, namespace: str) -> NamespacePolicy | None:
        """The namespace's own entry, else the default one, else None."""
        return self.namespaces.get(namespace, self.default_namespace)

    def section(self, name: str, kind: type[_S]) -> _S | None:
        """A registered section's settings when the config set any of its keys, else None (its defaults)."""
        found = self.sections.get(name)
        return found if isinstance(found, kind) else None

    def annotation_keys(self, role: str, backend: str = "") -> tuple[str, ...]:
        """Every annotation key for a role, in registration order: the shared ones of every section, and
        the backend's own."""
        keys: list[str] = []
        for section in self.registry:
            keys += section.annotations.get(role, ())
            if section.name == backend:
                keys += section.own_annotations.get(role, ())
        return tuple(dict.fromkeys(keys))

    def launcher(self, binary: str) -> OptionLanguage | None:
        """The option language of an MPI launcher (by its binary's base name) a section registered."""
        name = binary.rsplit("/", 1)[-1]
        return next((s.launchers[name] for s in self.registry if name in s.launchers), None)

    def singularity_options(self, text: str, *, field: str) -> list[ParsedOption]:
        """Parse and check apptainer/singularity options; bind sources must be allowed host paths."""
        parsed = SINGULARITY.parse(text, self.singularity_allow, field=field)
        for opt in parsed:
            if opt.name == "bind":
                for spec in (opt.value or "").split(","):
                    source = spec.split(":", 1)[0]
                    if not self.host_path_allowed(source):
                        raise PolicyViolation(field, f"{show(opt.spelling)}: host path {show(source)} is not allowed")
        return parsed

    def check_choices(self, parsed: Iterable[ParsedOption], choices: Mapping[str, str], namespace: str, *,
                      field: str) -> None:
        """Each option named in ``choices`` (option -> choice name) may only list values the namespace may use."""
        ns = self.namespace_policy(namespace)
        for opt in parsed:
            name = choices.get(opt.name)
            if name is not None:
                allowed = ns.choice(name) if ns is not None else ()
                for item in (opt.value or "").split(","):
                    if item not in allowed:
                        raise PolicyViolation(
                            field,
                            f"{show(opt.spelling)}: {opt.name} {show(item)} is not allowed for "
                            f"namespace {namespace!r}",
                        )

    def host_path_allowed(self, path: str) -> bool:
        """True when the real path is one of AllowedHostPaths or below one (no prefix tricks)."""
        if not path.startswith("/") or "\x00" in path:
            return False
        real = os.path.realpath(path)
        for root in self.allowed_host_paths:
            base = os.path.realpath(root)
            if real == base or real.startswith(base.rstrip("/") + "/"):
                return True
        return False

    def user_allowed(self, namespace: str, user: str | int) -> bool:
        """True when the namespace may run as this unix user (name or uid)."""
        ns = self.namespace_policy(namespace)
        return ns is not None and any(_same_user(str(user), u) for u in ns.users)

    def check_user(self, namespace: str, user: str | int, *, field: str) -> None:
        """Raise a 403 when the namespace may not run as this unix user."""
        if not self.user_allowed(namespace, user):
            raise PolicyViolation(field, f"namespace {namespace!r} may not run as user {str(user)!r}")

    def submit_uids(self) -> frozenset[int]:
        """Every uid a namespace may run as (names through the local passwd database; unknown names skipped)."""
        found: set[int] = set()
        entries = [*self.namespaces.values(), *([self.default_namespace] if self.default_namespace else [])]
        for user in {u for ns in entries for u in ns.users}:
            if user.isdigit():
                found.add(int(user))
                continue
            try:
                found.add(pwd.getpwnam(user).pw_uid)
            except KeyError:
                continue
        return frozenset(found)

    def check_flavor(self, namespace: str, flavor: str, *, field: str) -> None:
        """Raise a 403 unless the namespace's policy lists this flavor (for flavors that carry a uid)."""
        ns = self.namespace_policy(namespace)
        if ns is None or flavor not in ns.flavors:
            raise PolicyViolation(
                field, f"flavor {flavor!r} runs jobs as its own user: namespace {namespace!r} may not use it"
            )

    def check_raw_shell(self, field: str) -> None:
        """Raise a 403 unless raw-shell annotations are enabled (AllowRawShell)."""
        if not self.allow_raw_shell:
            raise PolicyViolation(field, "raw shell annotations are disabled (AllowRawShell: false)")


# ---------------------------------------------------------------------------------------- config

# the keys of the policy every backend shares (each section adds its own); NamespacePolicy's meaning
# lists the sub-keys the sections register (policy_key_docs)
COMMON_KEYS: Mapping[str, str] = {
    "AllowRawShell": "run raw-shell annotations (pre-exec, interLink mesh/wstunnel) in the job; default false",
    "AllowedSingularityOptions": "apptainer/singularity options a pod may set",
    "AllowedHostPaths": "hostPath volumes and binds only under these paths (default: none)",
    "NamespacePolicy": "namespace -> {%s} a namespace may use (Users: the uids its pods may run as, runAsUser "
    "and flavors' UIDs; Flavors: the flavors with a UID it may use)",
    "DefaultNamespacePolicy": "the same, for namespaces not listed",
}
_NS_KEYS = {"Users": "users", "Flavors": "flavors"}


def policy_keys(sections: Sequence[PolicySection]) -> tuple[str, ...]:
    """Every config key of the policy: the common ones and those of the sections."""
    return (*COMMON_KEYS, *(key for section in sections for key in section.keys))


def policy_key_docs(sections: Sequence[PolicySection]) -> dict[str, str]:
    """The common keys' meanings, NamespacePolicy's naming the sub-keys the sections register."""
    sub_keys = ", ".join([*(key for section in sections for key in section.namespace_keys), *_NS_KEYS])
    return {key: doc % sub_keys if key == "NamespacePolicy" else doc for key, doc in COMMON_KEYS.items()}


def str_list(key: str, raw: Any, *, allow_int: bool = False) -> list[str]:
    """A config list of non-empty strings (numbers too with allow_int); ConfigError names key and value."""
    if not isinstance(raw, list):
        raise ConfigError(f"{key}: expected a list, got {raw!r}")
    out: list[str] = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, (str, int)) or (isinstance(item, int) and not allow_int):
            raise ConfigError(f"{key}: bad value {item!r} (expected a string)")
        text = str(item).strip()
        if not text:
            raise ConfigError(f"{key}: bad value {item!r} (empty)")
        out.append(text)
    return out


def option_names(key: str, raw: Any, language: OptionLanguage) -> frozenset[str]:
    """A config list of options (long names, --long or -s) as canonical long names; reserved ones refused."""
    shorts = _short_map(language.table)
    names: set[str] = set()
    for item in str_list(key, raw):
        if len(item) == 2 and item[0] == "-" and item[1] in shorts:
            spec: OptionSpec | None = shorts[item[1]]
        else:
            spec = language.table.get(item.removeprefix("--"))
        if spec is None:
            raise ConfigError(f"{key}: bad value {item!r} (unknown option)")
        if spec.long in language.never:
            raise ConfigError(f"{key}: bad value {item!r} (reserved by the plugin, never allowed)")
        names.add(spec.long)
    return frozenset(names)


def _namespace_policy(key: str, raw: Any, choice_keys: Mapping[str, str]) -> NamespacePolicy:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {raw!r}")
    values: dict[str, tuple[str, ...]] = {}
    choices: dict[str, tuple[str, ...]] = {}
    for sub, value in raw.items():
        attr = _NS_KEYS.get(sub)
        choice = choice_keys.get(sub)
        if attr is None and choice is None:
            log.warning("unknown config key %s.%s ignored", key, sub)
            continue
        items = tuple(str_list(f"{key}.{sub}", value, allow_int=(attr == "users")))
        if attr is not None:
            values[attr] = items
        elif choice is not None:
            choices[choice] = items
    return NamespacePolicy(**values, choices=choices)


def policy_from_config(raw: Mapping[str, Any], sections: Sequence[PolicySection]) -> AdminPolicy:
    """Build the AdminPolicy from config keys with the registered sections (every backend's: a section left
    out would leave its keys unread, its defaults in force); a bad value raises ConfigError naming key and
    value."""
    allow_raw = raw.get("AllowRawShell", False)
    if not isinstance(allow_raw, bool):
        raise ConfigError(f"AllowRawShell: bad value {allow_raw!r} (expected true or false)")

    singularity_allow = DEFAULT_SINGULARITY_ALLOW
    if "AllowedSingularityOptions" in raw:
        singularity_allow = option_names("AllowedSingularityOptions", raw["AllowedSingularityOptions"], SINGULARITY)

    host_paths: tuple[str, ...] = ()
    if "AllowedHostPaths" in raw:
        paths = str_list("AllowedHostPaths", raw["AllowedHostPaths"])
        for path in paths:
            if not path.startswith("/") or "\x00" in path:
                raise ConfigError(f"AllowedHostPaths: bad value {path!r} (expected an absolute path)")
        host_paths = tuple(os.path.normpath(p) for p in paths)

    choice_keys = {key: name for section in sections for key, name in section.namespace_keys.items()}
    namespaces: dict[str, NamespacePolicy] = {}
    ns_raw = raw.get("NamespacePolicy", {})
    if ns_raw is None:
        ns_raw = {}
    if not isinstance(ns_raw, Mapping):
        raise ConfigError(f"NamespacePolicy: expected a mapping, got {ns_raw!r}")
    for ns, entry in ns_raw.items():
        if not isinstance(ns, str) or not ns:
            raise ConfigError(f"NamespacePolicy: bad namespace name {ns!r}")
        namespaces[ns] = _namespace_policy(f"NamespacePolicy.{ns}", entry, choice_keys)

    default_ns = None
    if raw.get("DefaultNamespacePolicy") is not None:
        default_ns = _namespace_policy("DefaultNamespacePolicy", raw["DefaultNamespacePolicy"], choice_keys)

    settings = {section.name: section.parse(raw) for section in sections if any(key in raw for key in section.keys)}
    return AdminPolicy(
        allow_raw_shell=allow_raw,
        singularity_allow=singularity_allow,
        allowed_host_paths=host_paths,
        namespaces=namespaces,
        default_namespace=default_ns,
        sections=settings,
        registry=tuple(sections),
    )
