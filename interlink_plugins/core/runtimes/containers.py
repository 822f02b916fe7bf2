"""Container runtimes: one small class per runtime turns a container into argv lists.

Every value travels as its own argv word or as an environment entry; nothing is ever given to a
shell. Per runtime:

``none``
    The host userland (the image is ignored). ``env -i`` gives the process exactly the pod's env
    (plus PATH when the pod sets none). Volume mounts and workingDir go through ``ns-exec.sh``
    (installed in the job dir, see :func:`helper_files`), which builds a bubblewrap mount
    namespace at job start so that mount targets are never created on the host.
``podman``
    ``podman run --rm --replace`` with ``--network=host``: every container of a pod, whatever its
    runtime, shares the job's network namespace, which is the pod network (localhost between
    containers, ports on the node), as with apptainer and ``none``. The env goes through a private
    ``--env-file``; a value that podman's line-based file cannot carry byte for byte (a newline, a
    final carriage return, a line of 64 KiB or more) becomes a podman secret of type env, created by
    ``podman-secrets.sh`` from a private file and removed when the run ends: values never sit in argv.
    ``--`` ends the options before the image.
``apptainer`` / ``singularity``
    ``exec`` when the pod sets a command, ``run`` otherwise (keeps the runscript); always
    ``--no-eval``. The container runs through ``apptainer.sh`` in the job dir, which picks the
    binary (the fallback when it is missing), converts images once into ApptainerCacheDir (in a
    private dir per uid, ``uid-<uid>``, so no job runs a SIF another uid wrote) under a lock, gives
    registry credentials to the conversion only, and turns the container's private NUL-separated env
    file into ``APPTAINERENV_<NAME>`` (``SINGULARITYENV_``) entries of its own
    environment: the values never sit in an argv (``ps``) and no shell parses them. Measured with
    apptainer 1.4.5 and ``--no-eval``: these entries give every value byte for byte; apptainer's
    own ``--env-file`` (shell-parsed) does too for shell-quoted values but loses ``PWD`` and
    ``IFS``, so it is not used. A name that is not a shell identifier is refused (422): the
    entries would silently drop the WHOLE env, ``--env-file`` fails. ``HOME`` cannot be set
    (apptainer refuses to override it). Registry credentials are a private docker-style auth file
    that only the conversion reads (``--authfile``): the conversion runs as a prepare step before
    any container starts, and the file is removed right after it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from interlink_plugins.core.errors import ConfigError, PodSpecError
from interlink_plugins.core.model.expand import env_map, expand_k8s
from interlink_plugins.core.model.imageref import check_apptainer_image, check_podman_image
from interlink_plugins.core.model.pod import Container, EnvVar
from interlink_plugins.core.runtimes.podmanenv import podman_env
from interlink_plugins.core.volumes.mounts import Mount

NS_EXEC_NAME = "ns-exec.sh"
PROBE_HELPER = "probe.sh"  # templates/probe.sh, installed in every job dir (core/runtimes/probes.py)
APPTAINER_HELPER_NAME = "apptainer.sh"
PODMAN_SECRETS_NAME = "podman-secrets.sh"
# the runtime that runs a container as another user and group (--user), inside a job of another uid
USER_SWITCHING_RUNTIME = "podman"
REGISTRY_AUTH_DIR = "registry-auth"
# the per-uid part of a SIF path in ApptainerCacheDir: apptainer.sh makes it uid-<the job's uid>, a private dir
CACHE_UID_DIR = "uid-@UID@"

_POD_UID_LABEL = "interlink.eu/pod-uid"
_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_APPTAINER_TRANSPORTS = ("docker-archive:", "docker-daemon:", "oci-archive:", "oci-sif:", "oci:")
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PULL_POLICIES = {
    "always": "always",
    "ifnotpresent": "missing",
    "missing": "missing",
    "never": "never",
    "newer": "newer",
}


@dataclass(frozen=True)
class ApptainerSettings:
    """Site settings of the apptainer/singularity runtime (config keys Apptainer*, ImageOverrides, ...)."""

    options: tuple[str, ...] = ()  # ApptainerOptions, e.g. --containall
    fallback: str = "singularity"  # tried in the job when the binary is not on PATH ("" = none)
    cache_dir: str = ""  # ApptainerCacheDir (as the jobs see it)
    overrides: Mapping[str, str] = field(default_factory=dict)  # image -> SIF / sandbox dir / URI
    # RegistryCredentials: registry host -> (user, password), given to conversions only
    credentials: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeContext:
    """Everything a runtime needs to build the argv of one container."""

    container: Container
    mounts: tuple[Mount, ...]
    env: tuple[EnvVar, ...]  # final env (pod env, plus what the plugin adds)
    job_dir: str  # as the job sees it
    pod_uid: str
    pod_namespace: str
    pod_name: str
    instance: str  # plugin instance id (podman container names, labels)
    image_prefix: str = ""  # apptainer/singularity only (image-root annotation, else ImagePrefix)
    pull_policy_override: str | None = None  # podman: config PullPolicy beats imagePullPolicy
    gpus: int = 0
    gpu_devices: tuple[str, ...] = ()  # podman CDI names, e.g. nvidia.com/gpu=0
    extra_options: tuple[str, ...] = ()  # policy-checked runtime options, inserted as argv words
    binary: str | None = None  # runtime executable (none: the bwrap binary)
    default_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    container_index: int | None = None  # index in spec.containers / spec.initContainers, for errors
    apptainer: ApptainerSettings = field(default_factory=ApptainerSettings)
    helper_dir: str = ""  # where the job finds the static helpers (core/podrunner/helpers.py); "" = the job dir

    @property
    def helpers(self) -> str:
        """The dir holding ns-exec.sh, apptainer.sh, probe.sh, ... as the job sees it."""
        return self.helper_dir or self.job_dir

    def field(self, suffix: str) -> str:
        """The Kubernetes field path of this container plus ``suffix``."""
        if self.container_index is not None:
            base = f"{self.container.field_path}[{self.container_index}]"
        else:
            base = f"{self.container.field_path}[name={self.container.name}]"
        return f"{base}.{suffix}" if suffix else base


@dataclass(frozen=True)
class ContainerArgv:
    """How to run one container.

    ``prepare_argvs`` run once, in order, before the first start (a failure fails the
    container); ``image_argv`` is the kubelet's image step, run before every start (pull or
    convert; a failure keeps the container waiting with ``image_failure`` and is retried with
    back-off); ``argv`` runs the container (again on each restart); ``cleanup_argv`` runs best
    effort after it ended or was killed.
    """

    argv: tuple[str, ...]
    cleanup_argv: tuple[str, ...] = ()
    prepare_argvs: tuple[tuple[str, ...], ...] = ()
    image_argv: tuple[str, ...] = ()
    image_failure: str = "ErrImagePull"  # the waiting reason after a failed image step
    # (path as the job sees it, content): private files the job dir must hold, written mode 0600
    files: tuple[tuple[str, bytes], ...] = ()
    # private files only the image step reads (registry credentials): the image step removes them once
    # it succeeded, the runner when it ends
    credential_files: tuple[tuple[str, bytes], ...] = ()


class Runtime(Protocol):
    name: str
    mpi_tasks: bool  # an MPI launcher may run the container once per task (not with one container per pod)

    def argv(self, ctx: RuntimeContext) -> ContainerArgv: ...

    def exec_argv(self, ctx: RuntimeContext, command: Sequence[str]) -> tuple[str, ...]:
        """Run ``command`` (a hook or probe) in the container's environment."""
        ...


def process_argv(container: Container, env: Mapping[str, str]) -> tuple[list[str] | None, list[str] | None]:
    """command and args after Kubernetes ``$(VAR)`` expansion (None stays None)."""
    command = None if container.command is None else [expand_k8s(w, env) for w in container.command]
    args = None if container.args is None else [expand_k8s(w, env) for w in container.args]
    return command, args


def helper_files() -> dict[str, str]:
    """Static helpers the backend installs in the job dir (name -> content), mode 0755."""
    templates = resources.files("interlink_plugins").joinpath("templates")
    return {
        NS_EXEC_NAME: templates.joinpath("ns_exec.sh").read_text(),
        APPTAINER_HELPER_NAME: templates.joinpath("apptainer.sh").read_text(),
        PODMAN_SECRETS_NAME: templates.joinpath("podman_secrets.sh").read_text(),
    }


def container_name(ctx: RuntimeContext) -> str:
    """``il-<instance>-<uid>-<container>``: unique per plugin instance, pod and container."""
    instance = _NAME_BAD_CHARS.sub("-", ctx.instance) or "default"
    return f"il-{instance}-{ctx.pod_uid}-{ctx.container.name}"


def _final_env(ctx: RuntimeContext) -> dict[str, str]:
    """The env as the process must see it: in order, later duplicates win."""
    return env_map(ctx.env)


def _expanded(ctx: RuntimeContext) -> tuple[list[str] | None, list[str] | None]:
    return process_argv(ctx.container, _final_env(ctx))


def _env_field(ctx: RuntimeContext, name: str) -> str:
    for index, var in enumerate(ctx.container.env):
        if var.name == name:
            return ctx.field(f"env[{index}]")
    return ctx.field("env")


def _sorted_mounts(mounts: Sequence[Mount]) -> list[Mount]:
    """Parents before children (as CRI runtimes do), otherwise in the given order."""
    return sorted(mounts, key=lambda m: len([p for p in posixpath.normpath(m.target).split("/") if p]))


def _check_target(ctx: RuntimeContext, mount: Mount) -> None:
    if not mount.target.startswith("/") or posixpath.normpath(mount.target) == "/":
        raise PodSpecError(ctx.field("volumeMounts"), f"mount path {mount.target!r} must be absolute, not /")


# ---------------------------------------------------------------------------------------------
# none


ENV_FILE_NAME = "env.nul"
PODMAN_ENV_FILE_NAME = "podman.env"


def env_file_path(ctx: RuntimeContext) -> str:
    """Where the container's env file lives (inside the private job dir)."""
    return posixpath.join(ctx.job_dir, "c", ctx.container.name, ENV_FILE_NAME)


def env_file_bytes(ctx: RuntimeContext) -> bytes:
    """NAME=VALUE records, NUL-separated (values may hold newlines), PATH defaulted."""
    env = _final_env(ctx)
    if "PATH" not in env:
        env["PATH"] = ctx.default_path
    return b"".join(f"{name}={value}".encode() + b"\0" for name, value in env.items())


class NoneRuntime:
    """Host userland; env -i for the env, ns-exec.sh (bubblewrap) for mounts and workingDir."""

    name = "none"
    mpi_tasks = True

    def _prefix(self, ctx: RuntimeContext) -> list[str]:
        if ctx.extra_options:
            raise PodSpecError("metadata.annotations", "runtime 'none' takes no container runtime options")
        wd = ctx.container.working_dir
        words = ["bash", posixpath.join(ctx.helpers, NS_EXEC_NAME)]
        if ctx.binary:
            words += ["--bwrap", ctx.binary]
        # the env goes through a file, never through a long-lived argv (ps on shared nodes)
        words += ["--env-file", env_file_path(ctx)]
        for mount in _sorted_mounts(ctx.mounts):
            _check_target(ctx, mount)
            words += ["--ro" if mount.read_only else "--rw", mount.source, mount.target]
        if wd:
            if not wd.startswith("/"):
                raise PodSpecError(ctx.field("workingDir"), "must be an absolute path for runtime 'none'")
            words += ["--chdir", wd]
        return [*words, "--"]

    def _program(self, ctx: RuntimeContext, words: Sequence[str], where: str) -> list[str]:
        if "=" in words[0]:
            # env(1) takes every leading NAME=VALUE word as an assignment
            raise PodSpecError(ctx.field(where), "runtime 'none' cannot run a program whose name contains '='")
        return list(words)

    def argv(self, ctx: RuntimeContext) -> ContainerArgv:
        command, args = _expanded(ctx)
        if not command:
            raise PodSpecError(
                ctx.field("command"), "is required with runtime 'none' (the host has no image entrypoint)"
            )
        program = self._program(ctx, [*command, *(args or [])], "command[0]")
        return ContainerArgv(argv=(*self._prefix(ctx), *program), files=((env_file_path(ctx), env_file_bytes(ctx)),))

    def exec_argv(self, ctx: RuntimeContext, command: Sequence[str]) -> tuple[str, ...]:
        if not command:
            raise ValueError("exec_argv needs a command")
        program = self._program(ctx, list(command), "lifecycle")
        return (*self._prefix(ctx), *program)


# ---------------------------------------------------------------------------------------------
# podman


def _csv_field(text: str) -> str:
    """One field of podman's --mount CSV (Go encoding/csv): quoted when it needs to be."""
    if any(c in text for c in ',"\r\n') or text[:1].isspace():
        return '"' + text.replace('"', '""') + '"'
    return text


def podman_pull_policy(image_pull_policy: str, override: str | None = None) -> str:
    """podman's --pull value: the config override if set, else the container's imagePullPolicy."""
    source = override if override else image_pull_policy
    value = _PULL_POLICIES.get(source.strip().lower())
    if value is None:
        if override:
            raise ConfigError(f"PullPolicy: {override!r} is not one of Always, IfNotPresent, Never")
        raise ValueError(f"imagePullPolicy {image_pull_policy!r} is not one of Always, IfNotPresent, Never")
    return value


def podman_env_file_path(ctx: RuntimeContext) -> str:
    return posixpath.join(ctx.job_dir, "c", ctx.container.name, PODMAN_ENV_FILE_NAME)


class PodmanRuntime:
    """``podman run`` per container, removed when it ends."""

    name = "podman"
    mpi_tasks = False

    def _binary(self, ctx: RuntimeContext) -> str:
        return ctx.binary or "podman"

    def argv(self, ctx: RuntimeContext) -> ContainerArgv:
        c = ctx.container
        check_podman_image(c.image, ctx.field("image"))
        name = container_name(ctx)
        binary = self._binary(ctx)
        words = [
            binary, "run", "--rm", "--replace", f"--name={name}", "--log-driver=none",
            f"--label={_POD_UID_LABEL}={ctx.pod_uid}",
            f"--label=interlink.eu/pod-namespace={ctx.pod_namespace}",
            f"--label=interlink.eu/pod-name={ctx.pod_name}",
            f"--label=interlink.eu/container={c.name}",
            f"--label=interlink.eu/instance={ctx.instance}",
            "--pull=never",  # the image step below fetched it, per the pull policy
            "--network=host",
        ]  # fmt: skip
        for mount in _sorted_mounts(ctx.mounts):
            _check_target(ctx, mount)
            spec = ["type=bind", f"source={mount.source}", f"destination={mount.target}"]
            if mount.read_only:
                spec.append("ro=true")
            words.append("--mount=" + ",".join(_csv_field(f) for f in spec))
        env = podman_env(_final_env(ctx), name, lambda var: _env_field(ctx, var))
        env_path = podman_env_file_path(ctx)
        files: list[tuple[str, bytes]] = [(env_path, env.env_file)]
        words.append(f"--env-file={env_path}")
        secret_files: list[str] = []
        for index, (secret, variable, value) in enumerate(env.secrets):
            path = posixpath.join(ctx.job_dir, "c", c.name, f"env-secret-{index}")
            files.append((path, value))
            secret_files += [secret, path]
            words.append(f"--secret={secret},type=env,target={variable}")
        if c.working_dir:
            words.append(f"--workdir={c.working_dir}")
        if c.run_as_user is not None:
            group = f":{c.run_as_group}" if c.run_as_group is not None else ""
            words.append(f"--user={c.run_as_user}{group}")
        words += [f"--device={device}" for device in ctx.gpu_devices]
        words += ctx.extra_options
        command, args = _expanded(ctx)
        if command:
            # a JSON array: podman splits nothing, every element stays one argv word
            words.append("--entrypoint=" + json.dumps(command))
        words += ["--", c.image, *(args or [])]
        cleanup: tuple[str, ...] = (binary, "rm", "-f", "-t", "0", "--ignore", name)
        if secret_files:
            secrets_helper = posixpath.join(ctx.helpers, PODMAN_SECRETS_NAME)
            # the secrets exist from just before the run until it ends (podman reads them at start);
            # the cleanup after a stop removes them too
            words = ["bash", secrets_helper, "create", binary, *secret_files, "--", *words]
            cleanup = ("bash", secrets_helper, "remove", binary, *secret_files[::2], "--", *cleanup)
        policy = podman_pull_policy(c.image_pull_policy, ctx.pull_policy_override)
        probe_helper = posixpath.join(ctx.helpers, PROBE_HELPER)
        return ContainerArgv(
            argv=tuple(words), cleanup_argv=cleanup, files=tuple(files),
            image_argv=("bash", probe_helper, "podman-pull", binary, policy, c.image),
            image_failure="ErrImageNeverPull" if policy == "never" else "ErrImagePull",
        )

    def exec_argv(self, ctx: RuntimeContext, command: Sequence[str]) -> tuple[str, ...]:
        """``podman exec`` once the container runs (a postStart hook starts right after ``podman run``)."""
        if not command:
            raise ValueError("exec_argv needs a command")
        helper = posixpath.join(ctx.helpers, PROBE_HELPER)
        return ("bash", helper, "podman-exec", self._binary(ctx), container_name(ctx), *command)


# ---------------------------------------------------------------------------------------------
# apptainer / singularity


def apptainer_image(image: str, prefix: str) -> str:
    """Add ``prefix`` unless the image is an absolute path or already names a transport."""
    if not prefix or image.startswith("/") or _SCHEME.match(image) or image.startswith(_APPTAINER_TRANSPORTS):
        return image
    return prefix + image


def needs_conversion(image: str) -> bool:
    """True for references apptainer turns into a SIF first (registries, archives); False for files/dirs."""
    return not image.startswith("/")


def image_registry(image: str) -> str:
    """The registry host of a docker:// (or bare) reference, lower case; "" for other transports."""
    rest = image
    if image.startswith("docker://"):
        rest = image[len("docker://") :]
    elif _SCHEME.match(image) or image.startswith("/") or image.startswith(_APPTAINER_TRANSPORTS):
        return ""
    first, sep, _ = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return "docker.io"


def cached_sif_name(image: str) -> str:
    """File name of the SIF an image converts to in the cache: readable prefix + hash of the reference."""
    digest = hashlib.sha256(image.encode()).hexdigest()[:24]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", image.split("://", 1)[-1])[-60:].strip("._") or "image"
    return f"{readable}-{digest}.sif"


class ApptainerRuntime:
    """``apptainer exec|run --no-eval`` through ``apptainer.sh`` (env prefix APPTAINERENV_ or SINGULARITYENV_)."""

    mpi_tasks = True

    def __init__(self, name: str = "apptainer", env_prefix: str = "APPTAINERENV_") -> None:
        self.name = name
        self.env_prefix = env_prefix  # what the binary reads; apptainer.sh picks it by the binary it finds

    def _env_file(self, ctx: RuntimeContext) -> tuple[str, bytes]:
        """The container's env as NAME=VALUE records, NUL-separated (values may hold newlines)."""
        env = _final_env(ctx)
        for name in env:
            if not _C_IDENTIFIER.fullmatch(name):
                # apptainer would drop the whole env (APPTAINERENV_) or fail (--env-file): refuse it
                raise PodSpecError(
                    f"{_env_field(ctx, name)}.name", f"{self.name} can only pass names that are shell identifiers"
                )
        content = b"".join(f"{name}={value}".encode() + b"\0" for name, value in env.items())
        return env_file_path(ctx), content

    def _options(self, ctx: RuntimeContext) -> list[str]:
        words = ["--no-eval"]
        if ctx.gpus > 0:
            words.append("--nv")
        words += ctx.extra_options
        words += [w for w in ctx.apptainer.options if w not in words]
        for mount in _sorted_mounts(ctx.mounts):
            _check_target(ctx, mount)
            for path in (mount.source, mount.target):
                if "," in path or ":" in path:
                    raise PodSpecError(
                        ctx.field("volumeMounts"),
                        f"{self.name} cannot bind {path!r}: its --bind syntax cannot express ',' or ':'",
                    )
            words += ["--bind", f"{mount.source}:{mount.target}" + (":ro" if mount.read_only else "")]
        if ctx.container.working_dir:
            words.append(f"--pwd={ctx.container.working_dir}")  # one word: never two that could split
        return words

    def _binary(self, ctx: RuntimeContext) -> str:
        binary = ctx.binary or self.name
        if "=" in binary:
            raise ConfigError(f"runtime binary {binary!r} must not contain '='")
        return binary

    def image(self, ctx: RuntimeContext) -> tuple[str, str]:
        """(image reference, SIF path to convert it into or "") for the container."""
        settings = ctx.apptainer
        image = settings.overrides.get(ctx.container.image)
        if image is None:
            image = apptainer_image(ctx.container.image, ctx.image_prefix or "docker://")
            check_apptainer_image(image, ctx.field("image"))
        if not needs_conversion(image):
            return image, ""
        if settings.cache_dir:
            # one private dir per uid: a job can never plant a SIF that a job of another uid then runs
            return image, posixpath.join(settings.cache_dir, CACHE_UID_DIR, cached_sif_name(image))
        if image_registry(image) in settings.credentials:
            # credentials reach only a conversion: into the job dir when no shared cache is configured
            return image, posixpath.join(ctx.job_dir, "images", cached_sif_name(image))
        return image, ""

    def _launch(self, ctx: RuntimeContext, verb: str, program: Sequence[str]) -> tuple[str, ...]:
        image, sif = self.image(ctx)
        helper = posixpath.join(ctx.helpers, APPTAINER_HELPER_NAME)
        env_file = self._env_file(ctx)[0]
        return (
            "bash", helper, self._binary(ctx), self._fallback(ctx), env_file, sif, image, verb, *self._options(ctx),
            "--", *program,
        )  # fmt: skip

    def _fallback(self, ctx: RuntimeContext) -> str:
        fallback = ctx.apptainer.fallback
        if fallback == self.name or fallback == self._binary(ctx):
            fallback = "apptainer" if self.name == "singularity" else ""
        return fallback

    def _credentialed_conversion(self, ctx: RuntimeContext) -> tuple[tuple[str, ...], tuple[str, bytes]] | None:
        """(image step, private auth file) when the image comes from a registry with credentials.

        The step converts the image with the auth file and removes the file once the conversion
        succeeded (the runner removes it when it ends), so it never outlives the need for it."""
        image, sif = self.image(ctx)
        found = ctx.apptainer.credentials.get(image_registry(image)) if sif else None
        if not found:
            return None
        auth_file = posixpath.join(ctx.job_dir, REGISTRY_AUTH_DIR, f"{ctx.container.name}.json")
        step = ("bash", posixpath.join(ctx.helpers, APPTAINER_HELPER_NAME), "--convert", self._binary(ctx),
                self._fallback(ctx), auth_file, sif, image)  # fmt: skip
        return step, (auth_file, registry_auth_json(image_registry(image), *found))

    def argv(self, ctx: RuntimeContext) -> ContainerArgv:
        command, args = _expanded(ctx)
        verb = "exec" if command else "run"
        _image, sif = self.image(ctx)
        # a conversion into a SIF is the image step: waiting ContainerCreating meanwhile, ErrImagePull
        # then ImagePullBackOff after a failure; with registry credentials it reads a private auth file
        conversion = self._credentialed_conversion(ctx)
        credential_files: tuple[tuple[str, bytes], ...]
        if conversion:
            image_argv, credential_files = conversion[0], (conversion[1],)
        else:
            image_argv, credential_files = (self._launch(ctx, "convert", []) if sif else ()), ()
        return ContainerArgv(
            argv=self._launch(ctx, verb, [*(command or []), *(args or [])]),
            files=(self._env_file(ctx),),
            image_argv=image_argv,
            credential_files=credential_files,
        )

    def exec_argv(self, ctx: RuntimeContext, command: Sequence[str]) -> tuple[str, ...]:
        if not command:
            raise ValueError("exec_argv needs a command")
        return self._launch(ctx, "exec", command)


def apptainer_settings(config: Any) -> ApptainerSettings:
    """The runtime settings from the plugin config (duck-typed: core must not import config)."""
    return ApptainerSettings(
        options=tuple(config.apptainer_options),
        fallback=str(config.apptainer_fallback),
        cache_dir=str(config.apptainer_cache_dir),
        overrides=dict(config.image_overrides),
        credentials=dict(config.registry_credentials),
    )


def registry_auth_json(registry: str, user: str, password: str) -> bytes:
    """A docker-style auth file (``--authfile``) holding one registry's credentials."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    keys = [registry, "https://index.docker.io/v1/"] if registry == "docker.io" else [registry]
    return json.dumps({"auths": {key: {"auth": token} for key in keys}}).encode()


RUNTIMES: Mapping[str, Callable[[], Runtime]] = {
    "none": NoneRuntime,
    "podman": PodmanRuntime,
    "apptainer": ApptainerRuntime,
    "singularity": lambda: ApptainerRuntime("singularity", "SINGULARITYENV_"),
}


def configured_binary(config: Any, name: str) -> tuple[str, ...]:
    """The config's argv for a runtime's binary (SingularityPath for apptainer and singularity, PodmanPath); ()
    for a runtime without one."""
    binaries: dict[str, tuple[str, ...]] = {"apptainer": config.apptainer, "singularity": config.apptainer,
                                            "podman": config.podman}
    return binaries.get(name, ())


def runtime_for(name: str) -> Runtime:
    """The runtime registered under ``name`` (ConfigError naming the choices otherwise)."""
    try:
        factory = RUNTIMES[name]
    except KeyError:
        raise ConfigError(f"ContainerRuntime: {name!r} is not one of {', '.join(RUNTIMES)}") from None
    return factory()
