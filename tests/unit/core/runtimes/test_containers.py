"""Container runtimes: argv structure, and for `none` and `podman` the argv RUN for real.

Byte-exactness is checked on what the process itself receives: /proc/self/environ and the
argv printed by the program, compared as bytes. apptainer and singularity do not run on
this machine; their argv is executed against STAND-IN binaries (scripts named like the runtime
that only record their argv and environment) to prove the values reach the runtime unchanged.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from interlink_plugins.core.errors import ConfigError, PodSpecError
from interlink_plugins.core.model.expand import env_map, expand_k8s
from interlink_plugins.core.model.pod import Container, ContainerResources, EnvVar
from interlink_plugins.core.runtimes.containers import (
    APPTAINER_HELPER_NAME,
    NS_EXEC_NAME,
    PODMAN_SECRETS_NAME,
    RUNTIMES,
    ApptainerSettings,
    ContainerArgv,
    RuntimeContext,
    apptainer_image,
    cached_sif_name,
    container_name,
    helper_files,
    image_registry,
    podman_pull_policy,
    process_argv,
    runtime_for,
)
from interlink_plugins.core.runtimes.podmanenv import secret_name
from interlink_plugins.core.volumes.mounts import Mount

BUSYBOX = "localhost/busybox:latest"
ENTRY_IMAGE = "localhost/busybox-entry:latest"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# prints its own argv (after -c) NUL-separated; no '$' so that expansion leaves it alone
PY_ARGV = "import os,sys;sys.stdout.buffer.write(b''.join(os.fsencode(a)+b'\\0' for a in sys.argv[1:]))"
SH_ARGV = 'for a; do printf "%s\\0" "$a"; done'

HAS_PODMAN = shutil.which("podman") is not None
HAS_BWRAP = shutil.which("bwrap") is not None
needs_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap (bwrap) is not installed")


def make_container(
    *,
    name: str = "c1",
    image: str = BUSYBOX,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    env: Sequence[tuple[str, str]] = (),
    working_dir: str = "",
    pull: str = "Never",
    run_as_user: int | None = None,
    run_as_group: int | None = None,
) -> Container:
    return Container(
        name=name,
        kind="main",
        image=image,
        command=None if command is None else tuple(command),
        args=None if args is None else tuple(args),
        env=tuple(EnvVar(n, v) for n, v in env),
        working_dir=working_dir,
        volume_mounts=(),
        resources=ContainerResources(),
        image_pull_policy=pull,
        restart_policy=None,
        run_as_user=run_as_user,
        run_as_group=run_as_group,
        ports=(),
        probes={},
        lifecycle={},
    )


def make_ctx(container: Container, job_dir: Path | str = "/jobs/ns-uid", **kw: Any) -> RuntimeContext:
    defaults: dict[str, Any] = {
        "mounts": (),
        "env": container.env,
        "job_dir": str(job_dir),
        "pod_uid": "uid-" + uuid.uuid4().hex[:12],
        "pod_namespace": "default",
        "pod_name": "pod",
        "instance": "test",
        "container_index": 0,
    }
    defaults.update(kw)
    return RuntimeContext(container=container, **defaults)


def run(argv: Sequence[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def none_argv(ctx: RuntimeContext) -> list[str]:
    """The runtime 'none' argv, with its private files (the env file) written as the job dir would hold them."""
    spec = runtime_for("none").argv(ctx)
    for path, content in spec.files:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(content)
    return list(spec.argv)


def environ_of(output: bytes) -> dict[bytes, bytes]:
    entries = [e for e in output.split(b"\0") if e]
    return dict(e.split(b"=", 1) for e in entries)


def argv_of(output: bytes) -> list[bytes]:
    assert output.endswith(b"\0") or output == b""
    return output.split(b"\0")[:-1]


def b(text: str) -> bytes:
    return os.fsencode(text)


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    """A job dir with the static helpers installed, as the backend does."""
    d = tmp_path / "job"
    d.mkdir()
    for name, content in helper_files().items():
        (d / name).write_text(content)
        (d / name).chmod(0o755)
    return d


@pytest.fixture(scope="module")
def podman_images() -> None:
    if not HAS_PODMAN:
        pytest.skip("podman is not installed")
    if (
        run(["podman", "image", "exists", BUSYBOX]).returncode
        or run(["podman", "image", "exists", ENTRY_IMAGE]).returncode
    ):
        root = Path(__file__).resolve().parents[4]
        result = run(["bash", str(root / "podman" / "podman-setup.sh")], timeout=600)
        assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------------------
# strategies

# Kubernetes env names: C identifiers plus '.' and '-' ([-._a-zA-Z][-._a-zA-Z0-9]*)
env_names = st.from_regex(r"\A[-._a-zA-Z][-._a-zA-Z0-9]{0,12}\Z")
# any text a JSON string can carry to us and a process can receive: no NUL, no lone surrogate
any_text = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30)
nasty = st.sampled_from(
    ["$(touch CANARY)", "`touch CANARY`", "; touch CANARY", "' ; touch CANARY ; '", '" ; touch CANARY ; "',
     "\n touch CANARY\n", "$(VAR)", "$$(VAR)", "a=b", "-x", "--", "\\", "é€😀", " spaced out ", "*", "~", ""]
)  # fmt: skip
values = st.one_of(any_text, nasty)
env_lists = st.lists(st.tuples(env_names, values), max_size=6)
arg_lists = st.lists(values, max_size=6)


PODMAN_CANARY = Path("/tmp/il-canary-podman-runtime-test")


def canary_free(text: str, canary: Path) -> str:
    return text.replace("CANARY", str(canary))


# ------------------------------------------------------------------------------------------------
# registry, helpers, expansion


def test_registry_names() -> None:
    assert set(RUNTIMES) == {"none", "podman", "apptainer", "singularity"}
    for name in RUNTIMES:
        assert runtime_for(name).name == name
    with pytest.raises(ConfigError, match="docker"):
        runtime_for("docker")


def test_process_argv_expands_command_and_args_only() -> None:
    c = make_container(command=["echo", "$(A)", "$$(A)"], args=["$(B)", "$(NOPE)"], env=[("A", "x"), ("B", "$(A)")])
    assert process_argv(c, env_map(c.env)) == (["echo", "x", "$(A)"], ["$(A)", "$(NOPE)"])
    assert process_argv(make_container(), {}) == (None, None)


def test_helper_files_are_static() -> None:
    files = helper_files()
    assert set(files) == {NS_EXEC_NAME, APPTAINER_HELPER_NAME, PODMAN_SECRETS_NAME}
    assert "eval" not in files[APPTAINER_HELPER_NAME]
    assert files[NS_EXEC_NAME].startswith("#!/usr/bin/env bash")
    assert "eval" not in files[NS_EXEC_NAME].replace("evaluated", "")
    assert "eval" not in files[PODMAN_SECRETS_NAME]


def test_container_name_is_podman_safe() -> None:
    ctx = make_ctx(make_container(name="web"), pod_uid="1234-abcd", instance="site a/b")
    assert container_name(ctx) == "il-site-a-b-1234-abcd-web"


# ------------------------------------------------------------------------------------------------
# none: argv structure


def test_none_requires_command() -> None:
    ctx = make_ctx(make_container(args=["x"]), container_index=2)
    with pytest.raises(PodSpecError) as err:
        runtime_for("none").argv(ctx)
    assert err.value.field == "spec.containers[2].command"
    assert "image entrypoint" in err.value.message


def test_none_env_goes_through_a_private_file_never_argv() -> None:
    ctx = make_ctx(make_container(command=["/bin/echo", "$(A)"], env=[("A", "1"), ("B", "2"), ("A", "3")]))
    spec = runtime_for("none").argv(ctx)
    env_file = "/jobs/ns-uid/c/c1/env.nul"
    assert spec.argv == ("bash", "/jobs/ns-uid/ns-exec.sh", "--env-file", env_file, "--", "/bin/echo", "3")
    assert spec.files == ((env_file, f"A=3\0B=2\0PATH={DEFAULT_PATH}\0".encode()),)


def test_none_pod_path_wins_and_ns_exec_words() -> None:
    mounts = (Mount("/jobs/x/deep", "/a/b/c"), Mount("/jobs/x/vol", "/a", read_only=True))
    ctx = make_ctx(
        make_container(command=["ls"], env=[("PATH", "/opt/bin")], working_dir="/w"), mounts=mounts, binary="/opt/bwrap"
    )
    argv = runtime_for("none").argv(ctx).argv
    assert argv == (
        "bash", "/jobs/ns-uid/ns-exec.sh", "--bwrap", "/opt/bwrap", "--env-file", "/jobs/ns-uid/c/c1/env.nul",
        "--ro", "/jobs/x/vol", "/a", "--rw", "/jobs/x/deep", "/a/b/c", "--chdir", "/w", "--", "ls",
    )  # fmt: skip
    assert runtime_for("none").argv(ctx).files[0][1] == b"PATH=/opt/bin\0"


def test_none_refuses_program_name_with_equals_and_options() -> None:
    with pytest.raises(PodSpecError, match="'='"):
        runtime_for("none").argv(make_ctx(make_container(command=["a=b"])))
    with pytest.raises(PodSpecError, match="options"):
        runtime_for("none").argv(make_ctx(make_container(command=["ls"]), extra_options=("--x",)))


def test_none_exec_argv_uses_same_environment() -> None:
    ctx = make_ctx(make_container(command=["sleep", "9"], env=[("A", "1")]))
    assert runtime_for("none").exec_argv(ctx, ["/bin/true"]) == (
        "bash", "/jobs/ns-uid/ns-exec.sh", "--env-file", "/jobs/ns-uid/c/c1/env.nul", "--", "/bin/true",
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# none: RUN for real


def _none_expected_env(env: Sequence[tuple[str, str]]) -> dict[bytes, bytes]:
    final = env_map(EnvVar(n, v) for n, v in env)
    final.setdefault("PATH", DEFAULT_PATH)
    return {b(k): b(v) for k, v in final.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=env_lists)
@example(env=[("A.b-c", "x\ny=z"), ("-lead", "$(touch CANARY)"), ("_", "`touch CANARY`'\""), ("PATH", "/nope")])
@example(env=[("SHLVL", "x"), ("IFS", "-"), ("RANDOM", "7"), ("SECONDS", "x"), ("BASH_ENV", "/nope"), ("UID", "u"),
              ("POSIXLY_CORRECT", "1"), ("SHELLOPTS", "s"), ("LD_PRELOAD", ""), ("OPTIND", "o")])
def test_none_env_reaches_process_byte_exact(env: list[tuple[str, str]], job_dir: Path) -> None:
    canary = job_dir / "canary"
    env = [(n, canary_free(v, canary)) for n, v in env]
    ctx = make_ctx(make_container(command=["/bin/cat", "/proc/self/environ"], env=env), job_dir)
    argv = none_argv(ctx)
    assert not any("=" in word and word.split("=", 1)[1] for word in argv if word.split("=", 1)[0] in dict(env)), argv
    result = run(argv, timeout=20)
    assert result.returncode == 0, result.stderr
    assert environ_of(result.stdout) == _none_expected_env(env)
    assert not canary.exists()


def test_none_env_values_never_sit_in_an_argv(job_dir: Path, tmp_path: Path) -> None:
    """Values of identifier names reach the process through ns-exec's own environment: env(1), the
    last program before the command, sees only the names bash cannot export (and their values)."""
    rec = tmp_path / "env.argv"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "env").write_text(f"#!/bin/sh\n# stand-in for env(1): records its argv\nprintf '%s\\0' \"$@\" > {rec}\n"
                                 'exec /usr/bin/env "$@"\n')
    (bin_dir / "env").chmod(0o755)
    env = [("TOKEN", "s3cr3t-one"), ("PEM", "a\ns3cr3t-two"), ("my.var", "odd-name-value")]
    ctx = make_ctx(make_container(command=["/bin/cat", "/proc/self/environ"], env=env), job_dir)
    argv = none_argv(ctx)
    result = run(argv, timeout=20, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    seen = rec.read_bytes()
    assert b"s3cr3t" not in seen and argv_of(seen)[:3] == [b"-u", b"SHLVL", b"--"]
    assert b"my.var=odd-name-value" in seen  # not a shell identifier: the one way left is env(1)'s argv
    got = environ_of(result.stdout)  # (the stand-in, a dash script, adds PWD: exactness is tested above)
    assert {k: got.get(k) for k in (b"TOKEN", b"PEM", b"my.var")} == {b(k): b(v) for k, v in env}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command_tail=arg_lists, args=st.one_of(st.none(), arg_lists), env=env_lists)
@example(
    command_tail=["$(VAR)", "$$(VAR)", "$(touch CANARY)"],
    args=["`touch CANARY`", "; touch CANARY"],
    env=[("VAR", "v a l")],
)
def test_none_command_and_args_byte_exact_after_expansion(
    command_tail: list[str], args: list[str] | None, env: list[tuple[str, str]], job_dir: Path
) -> None:
    canary = job_dir / "canary"
    command_tail = [canary_free(w, canary) for w in command_tail]
    args = None if args is None else [canary_free(w, canary) for w in args]
    command = [sys.executable, "-I", "-c", PY_ARGV, *command_tail]
    ctx = make_ctx(make_container(command=command, args=args, env=env), job_dir)
    result = run(none_argv(ctx), timeout=20)
    assert result.returncode == 0, result.stderr
    lookup = env_map(ctx.env)
    expected = [expand_k8s(w, lookup) for w in [*command_tail, *(args or [])]]
    assert argv_of(result.stdout) == [b(w) for w in expected]
    assert not canary.exists()


@needs_bwrap
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=env_lists, args=arg_lists)
@example(env=[("X-y.z", "a\nb=c 'q' \"d\" $(touch CANARY)")], args=["--", "-x", "$(X-y.z)"])
def test_none_through_ns_exec_byte_exact(env: list[tuple[str, str]], args: list[str], job_dir: Path) -> None:
    canary = job_dir / "canary"
    env = [(n, canary_free(v, canary)) for n, v in env]
    args = [canary_free(w, canary) for w in args]
    vol = job_dir / "vol"
    vol.mkdir(exist_ok=True)
    mounts = (Mount(str(vol), "/il-test-ns/vol"),)
    env_ctx = make_ctx(make_container(command=["/bin/cat", "/proc/self/environ"], env=env), job_dir, mounts=mounts)
    result = run(none_argv(env_ctx), timeout=20)
    assert result.returncode == 0, result.stderr
    assert environ_of(result.stdout) == _none_expected_env(env)
    argv_ctx = make_ctx(
        make_container(command=[sys.executable, "-I", "-c", PY_ARGV], args=args, env=env), job_dir, mounts=mounts
    )
    result = run(none_argv(argv_ctx), timeout=20)
    assert result.returncode == 0, result.stderr
    assert argv_of(result.stdout) == [b(expand_k8s(w, env_map(argv_ctx.env))) for w in args]
    assert not canary.exists()
    assert not Path("/il-test-ns").exists()


MOUNT_SCRIPT = r"""
set -u
echo "pwd=$(pwd)"
echo "data=$(cat /data/x/in.txt)"
echo "sa=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)"
echo "conf=$(cat /etc/il-test/conf.yaml)"
echo written > /data/x/out.txt && echo "rw=ok"
if (echo x > /var/run/secrets/kubernetes.io/serviceaccount/new) 2>/dev/null; then echo "ro=WRITABLE"; else echo "ro=refused"; fi
if (echo x > /etc/il-test/conf.yaml) 2>/dev/null; then echo "rofile=WRITABLE"; else echo "rofile=refused"; fi
echo "passwd=$(head -c 5 /etc/passwd)"
"""


@needs_bwrap
def test_none_mounts_readonly_workdir_and_nothing_created_on_host(job_dir: Path) -> None:
    targets = ["/data", "/etc/il-test", "/run/secrets", "/var/run/secrets", "/il-test-wd"]
    for target in targets:
        if os.path.lexists(target):
            pytest.skip(f"{target} exists on this host; the test needs it absent")
    (job_dir / "vol").mkdir()
    (job_dir / "vol" / "in.txt").write_text("volume-data")
    (job_dir / "sa").mkdir()
    (job_dir / "sa" / "token").write_text("tok")
    (job_dir / "conf.yaml").write_text("a: 1")
    mounts = (
        Mount(str(job_dir / "vol"), "/data/x"),
        Mount(str(job_dir / "sa"), "/var/run/secrets/kubernetes.io/serviceaccount", read_only=True),
        Mount(str(job_dir / "conf.yaml"), "/etc/il-test/conf.yaml", read_only=True, is_file=True),
    )
    ctx = make_ctx(
        make_container(command=["/bin/sh", "-c", MOUNT_SCRIPT], working_dir="/il-test-wd/sub"), job_dir, mounts=mounts
    )
    result = run(none_argv(ctx), timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines == [
        "pwd=/il-test-wd/sub", "data=volume-data", "sa=tok", "conf=a: 1", "rw=ok", "ro=refused", "rofile=refused",
        f"passwd={Path('/etc/passwd').read_text()[:5]}",
    ]  # fmt: skip
    assert (job_dir / "vol" / "out.txt").read_text() == "written\n"
    assert not (job_dir / "sa" / "new").exists()
    for target in targets:
        assert not os.path.lexists(target), f"{target} was created on the host"


@needs_bwrap
def test_ns_exec_missing_bwrap_exits_126(job_dir: Path) -> None:
    ctx = make_ctx(
        make_container(command=["/bin/true"]), job_dir, mounts=(Mount(str(job_dir), "/x"),), binary="/nonexistent/bwrap"
    )
    result = run(none_argv(ctx))
    assert result.returncode == 126
    assert b"bubblewrap" in result.stderr and b"not installed" in result.stderr


@needs_bwrap
def test_ns_exec_probe_and_exit_code(job_dir: Path) -> None:
    assert run(["bash", str(job_dir / NS_EXEC_NAME), "--probe"]).returncode == 0
    ctx = make_ctx(make_container(command=["/bin/sh", "-c", "exit 42"], working_dir="/tmp"), job_dir)
    assert run(none_argv(ctx)).returncode == 42


@needs_bwrap
def test_ns_exec_forwards_sigterm_to_the_command(job_dir: Path) -> None:
    script = "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done"
    ctx = make_ctx(make_container(command=["/bin/sh", "-c", script], working_dir="/tmp"), job_dir)
    proc = subprocess.Popen(none_argv(ctx), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 3, err
    assert out == b"got-term\n"


# ------------------------------------------------------------------------------------------------
# podman: argv structure


def test_podman_argv_structure() -> None:
    c = make_container(
        name="web", command=["/bin/echo", "$(A)"], args=["x"], env=[("A", "1")], working_dir="/w",
        run_as_user=1000, run_as_group=100,
    )  # fmt: skip
    mounts = (Mount("/j/v", "/data", read_only=True), Mount("/j/a:b,c", "/x"))
    ctx = make_ctx(
        c,
        pod_uid="u1",
        instance="i1",
        mounts=mounts,
        gpu_devices=("nvidia.com/gpu=0",),
        extra_options=("--shm-size=1g",),
    )
    spec = runtime_for("podman").argv(ctx)
    name = "il-i1-u1-web"
    assert spec.argv == (
        "podman", "run", "--rm", "--replace", f"--name={name}", "--log-driver=none",
        "--label=interlink.eu/pod-uid=u1", "--label=interlink.eu/pod-namespace=default",
        "--label=interlink.eu/pod-name=pod", "--label=interlink.eu/container=web", "--label=interlink.eu/instance=i1",
        "--pull=never", "--network=host",
        "--mount=type=bind,source=/j/v,destination=/data,ro=true", '--mount=type=bind,"source=/j/a:b,c",destination=/x',
        "--env-file=/jobs/ns-uid/c/web/podman.env", "--workdir=/w", "--user=1000:100", "--device=nvidia.com/gpu=0",
        "--shm-size=1g", '--entrypoint=["/bin/echo", "1"]', "--", BUSYBOX, "x",
    )  # fmt: skip
    # the env is a private file: no value in the argv
    assert spec.files == (("/jobs/ns-uid/c/web/podman.env", b"A=1\n"),)
    assert spec.cleanup_argv == ("podman", "rm", "-f", "-t", "0", "--ignore", name)
    assert runtime_for("podman").exec_argv(ctx, ["cat", "/x"]) == (
        "bash", f"{ctx.job_dir}/probe.sh", "podman-exec", "podman", name, "cat", "/x")


def test_podman_values_its_env_file_cannot_carry_become_secrets() -> None:
    env = [("A", "1"), ("PEM", "-----BEGIN-----\nabc\n"), ("CR", "x\r"), ("BIG", "y" * 70000)]
    ctx = make_ctx(make_container(name="web", command=["x"], env=env), pod_uid="u1", instance="i1")
    spec = runtime_for("podman").argv(ctx)
    base = "il-i1-u1-web"
    helper = "/jobs/ns-uid/podman-secrets.sh"
    secrets = [(f"{base}-env{i}", f"/jobs/ns-uid/c/web/env-secret-{i}") for i in range(3)]
    assert spec.argv[:4] == ("bash", helper, "create", "podman")
    assert spec.argv[4:11] == (*(w for pair in secrets for w in pair), "--")
    assert [w for w in spec.argv if w.startswith("--secret=")] == [
        f"--secret={base}-env0,type=env,target=PEM", f"--secret={base}-env1,type=env,target=CR",
        f"--secret={base}-env2,type=env,target=BIG",
    ]  # fmt: skip
    assert dict(spec.files) == {
        "/jobs/ns-uid/c/web/podman.env": b"A=1\n", secrets[0][1]: b"-----BEGIN-----\nabc\n", secrets[1][1]: b"x\r",
        secrets[2][1]: b"y" * 70000,
    }  # fmt: skip
    assert spec.cleanup_argv == ("bash", helper, "remove", "podman", *(n for n, _ in secrets), "--", "podman", "rm",
                                 "-f", "-t", "0", "--ignore", base)  # fmt: skip
    assert not any("abc" in w or "yyyy" in w for w in spec.argv + spec.cleanup_argv)


@pytest.mark.parametrize(
    ("policy", "override", "expected"),
    [
        ("Always", None, "always"), ("IfNotPresent", None, "missing"), ("Never", None, "never"),
        ("Always", "Never", "never"), ("Never", "IfNotPresent", "missing"), ("Never", "newer", "newer"),
    ],
)  # fmt: skip
def test_podman_pull_policy(policy: str, override: str | None, expected: str) -> None:
    assert podman_pull_policy(policy, override) == expected
    ctx = make_ctx(make_container(pull=policy), pull_policy_override=override)
    spec = runtime_for("podman").argv(ctx)
    # the pull is the image step (waiting ContainerCreating / ErrImagePull), podman run never pulls
    assert "--pull=never" in spec.argv
    assert spec.image_argv == ("bash", f"{ctx.job_dir}/probe.sh", "podman-pull", "podman", expected, ctx.container.image)
    assert spec.image_failure == ("ErrImageNeverPull" if expected == "never" else "ErrImagePull")


def test_podman_pull_policy_bad_override() -> None:
    with pytest.raises(ConfigError, match="PullPolicy"):
        podman_pull_policy("Always", "sometimes")


def test_podman_refuses_env_name_with_white_space() -> None:
    with pytest.raises(PodSpecError) as err:
        runtime_for("podman").argv(make_ctx(make_container(env=[("OK", "1"), ("A B", "x")])))
    assert err.value.field == "spec.containers[0].env[1].name"


# ------------------------------------------------------------------------------------------------
# podman: RUN for real


def podman_argv(ctx: RuntimeContext) -> tuple[RuntimeContext, ContainerArgv]:
    """The runtime podman's argv with a real job dir holding its private files and helpers."""
    job = Path(tempfile.mkdtemp(prefix="il-podman-rt-"))
    for name, text in helper_files().items():
        (job / name).write_text(text)
    ctx = dataclasses.replace(ctx, job_dir=str(job))
    spec = runtime_for("podman").argv(ctx)
    for path, content in spec.files:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(content)
    return ctx, spec


def podman_run(ctx: RuntimeContext, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    ctx, spec = podman_argv(ctx)
    try:
        return run(spec.argv, timeout=timeout)
    finally:
        run(spec.cleanup_argv, timeout=30)
        shutil.rmtree(ctx.job_dir, ignore_errors=True)


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (None, None, b"entry default-cmd\n"),
        (None, ["a b", "$(V)"], b"entry a b v\n"),
        (["/bin/echo", "cmd-only"], None, b"cmd-only\n"),
        (["/bin/echo"], ["both", "$$(V)"], b"both $(V)\n"),
    ],
)
def test_podman_entrypoint_and_cmd_semantics(
    podman_images: None, command: list[str] | None, args: list[str] | None, expected: bytes
) -> None:
    ctx = make_ctx(make_container(image=ENTRY_IMAGE, command=command, args=args, env=[("V", "v")]))
    result = podman_run(ctx)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


@settings(max_examples=8, deadline=None)
@given(env=env_lists)
@example(env=[("A.b-c", "x\ny=z \"q\" 'r' `touch CANARY` $(touch CANARY)"), ("-lead", "é€😀\t\\")])
@example(env=[("CR", "ends\r"), ("BIG", "z" * 70000), ("NL", "\n"), ("PLAIN", " a=b ")])
def test_podman_env_byte_exact(podman_images: None, env: list[tuple[str, str]]) -> None:
    env = [(n, canary_free(v, PODMAN_CANARY)) for n, v in env]
    ctx = make_ctx(make_container(command=["/bin/cat", "/proc/self/environ"], env=env))
    result = podman_run(ctx)
    assert result.returncode == 0, result.stderr
    seen = environ_of(result.stdout)
    for name, value in env_map(ctx.env).items():
        assert seen[b(name)] == b(value)
    assert not PODMAN_CANARY.exists()


@settings(max_examples=8, deadline=None)
@given(args=arg_lists, env=env_lists)
@example(args=["$(touch CANARY)", "`id`", "a\nb", "--rm", "$(N)", "$$(N)"], env=[("N", "n n")])
def test_podman_args_byte_exact(podman_images: None, args: list[str], env: list[tuple[str, str]]) -> None:
    args = [canary_free(a, PODMAN_CANARY) for a in args]
    ctx = make_ctx(make_container(command=["/bin/sh", "-c", SH_ARGV, "argv0"], args=args, env=env))
    result = podman_run(ctx)
    assert result.returncode == 0, result.stderr
    lookup = env_map(ctx.env)
    assert argv_of(result.stdout) == [b(expand_k8s(w, lookup)) for w in args]
    assert not PODMAN_CANARY.exists()


def test_podman_mounts_readonly_file_and_workdir(podman_images: None, tmp_path: Path) -> None:
    weird = tmp_path / 'we:ird,pa"th'
    weird.mkdir()
    (weird / "in.txt").write_text("volume-data")
    (tmp_path / "sa").mkdir()
    (tmp_path / "sa" / "token").write_text("tok")
    (tmp_path / "conf.yaml").write_text("a: 1")
    mounts = (
        Mount(str(weird), "/data/x"),
        Mount(str(tmp_path / "sa"), "/var/run/secrets/kubernetes.io/serviceaccount", read_only=True),
        Mount(str(tmp_path / "conf.yaml"), "/etc/il-test/conf.yaml", read_only=True, is_file=True),
    )
    script = MOUNT_SCRIPT.replace('echo "passwd=$(head -c 5 /etc/passwd)"', "")
    # podman 4.3 refuses a missing workdir unless it lies on a mount (runc then creates it there)
    ctx = make_ctx(make_container(command=["/bin/sh", "-c", script], working_dir="/data/x/wd"), mounts=mounts)
    result = podman_run(ctx)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "pwd=/data/x/wd", "data=volume-data", "sa=tok", "conf=a: 1", "rw=ok", "ro=refused", "rofile=refused",
    ]  # fmt: skip
    assert (weird / "out.txt").read_text() == "written\n"


def test_podman_rm_and_cleanup(podman_images: None) -> None:
    ctx, spec = podman_argv(make_ctx(make_container(command=["/bin/sh", "-c", "exit 3"], env=[("M", "a\nb")])))
    name = container_name(ctx)
    assert run(spec.argv).returncode == 3  # the container's exit status, through podman-secrets.sh
    assert run(["podman", "container", "exists", name]).returncode == 1  # --rm removed it
    assert run(["podman", "secret", "inspect", f"{name}-env0"]).returncode != 0  # and the run its env secret
    # a running container: cleanup removes it and ends `podman run`; its env secret goes with it
    secret = f"{name}-env0"
    _ctx, sleeper = podman_argv(
        make_ctx(make_container(command=["/bin/sleep", "60"], env=[("M", "a\nb")]), pod_uid=ctx.pod_uid)
    )
    proc = subprocess.Popen(list(sleeper.argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while run(["podman", "container", "exists", name]).returncode != 0:
            assert time.monotonic() < deadline, "container never started"
            time.sleep(0.1)
        assert run(["podman", "secret", "inspect", secret]).returncode == 0
        assert run(sleeper.cleanup_argv, timeout=30).returncode == 0
        proc.wait(timeout=20)
        assert run(["podman", "secret", "inspect", secret]).returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert run(["podman", "container", "exists", name]).returncode == 1
    assert run(sleeper.cleanup_argv, timeout=30).returncode == 0  # idempotent


def test_podman_pull_never_does_not_pull(podman_images: None) -> None:
    ctx = make_ctx(make_container(image="localhost/il-no-such-image:1", command=["/bin/true"]))
    started = time.monotonic()
    result = podman_run(ctx, timeout=30)
    assert result.returncode != 0
    assert time.monotonic() - started < 10


# ------------------------------------------------------------------------------------------------
# apptainer / singularity


@pytest.mark.parametrize(
    ("image", "prefix", "expected"),
    [
        ("busybox:1", "docker://", "docker://busybox:1"),
        ("reg.io/a/b:1", "oras://", "oras://reg.io/a/b:1"),
        ("docker://busybox", "docker://", "docker://busybox"),
        ("library://x/y", "docker://", "library://x/y"),
        ("/shared/img.sif", "docker://", "/shared/img.sif"),
        ("docker-archive:/x.tar", "docker://", "docker-archive:/x.tar"),
        ("busybox", "", "busybox"),
    ],
)
def test_apptainer_image_prefix(image: str, prefix: str, expected: str) -> None:
    assert apptainer_image(image, prefix) == expected


def test_apptainer_exec_argv_structure() -> None:
    c = make_container(
        image="img", command=["/bin/x", "$(A)"], args=["y z"], env=[("A", "1"), ("B", "q'\n")], working_dir="/w"
    )
    mounts = (Mount("/j/v", "/data"), Mount("/j/s", "/sec", read_only=True))
    settings = ApptainerSettings(options=("--cleanenv",))
    ctx = make_ctx(c, mounts=mounts, gpus=1, extra_options=("--contain",), image_prefix="docker://", apptainer=settings)
    spec = runtime_for("apptainer").argv(ctx)
    assert spec.argv == (
        "bash", "/jobs/ns-uid/apptainer.sh", "apptainer", "singularity", "/jobs/ns-uid/c/c1/env.nul", "",
        "docker://img", "exec", "--no-eval", "--nv", "--contain", "--cleanenv",
        "--bind", "/j/v:/data", "--bind", "/j/s:/sec:ro", "--pwd=/w", "--", "/bin/x", "1", "y z",
    )  # fmt: skip
    # the env never sits in the argv: it is a private NUL-separated file
    assert spec.files == (("/jobs/ns-uid/c/c1/env.nul", b"A=1\0B=q'\n\0"),)


def test_apptainer_run_keeps_runscript_and_singularity_binary() -> None:
    ctx = make_ctx(make_container(image="/i.sif", args=["a"], env=[("X", "1")]), binary="/opt/bin/singularity")
    argv = runtime_for("singularity").argv(ctx).argv
    assert argv[2:] == ("/opt/bin/singularity", "apptainer", "/jobs/ns-uid/c/c1/env.nul", "", "/i.sif", "run",
                        "--no-eval", "--", "a")  # fmt: skip
    no_args = runtime_for("apptainer").argv(make_ctx(make_container(image="/i.sif"))).argv
    assert no_args[2:] == ("apptainer", "singularity", "/jobs/ns-uid/c/c1/env.nul", "", "/i.sif", "run", "--no-eval",
                           "--")  # fmt: skip
    hook = runtime_for("apptainer").exec_argv(ctx, ["cat", "/x"])
    assert hook[2:] == ("/opt/bin/singularity", "singularity", "/jobs/ns-uid/c/c1/env.nul", "", "/i.sif", "exec",
                        "--no-eval", "--", "cat", "/x")  # fmt: skip


@pytest.mark.parametrize(
    ("image", "settings", "expected"),
    [
        ("busybox", ApptainerSettings(), ("docker://busybox", "")),
        ("busybox", ApptainerSettings(overrides={"busybox": "/cvmfs/unpacked/busybox"}), ("/cvmfs/unpacked/busybox", "")),
        ("/x/bb.sif", ApptainerSettings(cache_dir="/cache"), ("/x/bb.sif", "")),
        ("busybox:1", ApptainerSettings(cache_dir="/cache"), ("docker://busybox:1", "/cache/uid-@UID@/" + cached_sif_name("docker://busybox:1"))),
        ("docker-archive:/s/bb.tar", ApptainerSettings(cache_dir="/c"), ("docker-archive:/s/bb.tar", "/c/uid-@UID@/" + cached_sif_name("docker-archive:/s/bb.tar"))),
        ("reg.io/a:1", ApptainerSettings(credentials={"reg.io": ("u", "p")}),
         ("docker://reg.io/a:1", "/jobs/ns-uid/images/" + cached_sif_name("docker://reg.io/a:1"))),
        ("other.io/a:1", ApptainerSettings(credentials={"reg.io": ("u", "p")}), ("docker://other.io/a:1", "")),
    ],
)  # fmt: skip
def test_apptainer_image_resolution(image: str, settings: ApptainerSettings, expected: tuple[str, str]) -> None:
    ctx = make_ctx(make_container(image=image, command=["x"]), apptainer=settings)
    runtime = runtime_for("apptainer")
    assert isinstance(runtime, type(runtime_for("singularity")))
    assert runtime.image(ctx) == expected  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("image", "registry"),
    [("busybox", "docker.io"), ("docker://library/x:1", "docker.io"), ("reg.io:5000/a/b", "reg.io:5000"),
     ("localhost/x", "localhost"), ("oras://reg.io/x", ""), ("/x.sif", ""), ("docker-archive:/x.tar", "")],
)  # fmt: skip
def test_image_registry(image: str, registry: str) -> None:
    assert image_registry(image) == registry


def test_cached_sif_names_differ_per_reference() -> None:
    assert cached_sif_name("docker://a:1") != cached_sif_name("docker://a:2")
    assert cached_sif_name("docker://a:1").endswith(".sif") and "/" not in cached_sif_name("docker://x/y/z:1")


@pytest.mark.parametrize("name", ["A.b-c", "-x", "a-b"])
def test_apptainer_refuses_names_that_are_not_identifiers(name: str) -> None:
    # APPTAINERENV_A.b-c makes apptainer 1.4.5 drop the WHOLE env ("invalid var name"): refused instead
    ctx = make_ctx(make_container(command=["x"], env=[("OK", "1"), (name, "v")]))
    with pytest.raises(PodSpecError) as err:
        runtime_for("apptainer").argv(ctx)
    assert err.value.field == "spec.containers[0].env[1].name"


@pytest.mark.parametrize("path", ["/j/a,b", "/j/a:b"])
def test_apptainer_refuses_unbindable_paths(path: str) -> None:
    for mount in (Mount(path, "/data"), Mount("/j/v", path)):
        with pytest.raises(PodSpecError) as err:
            runtime_for("apptainer").argv(make_ctx(make_container(command=["x"]), mounts=(mount,)))
        assert err.value.field == "spec.containers[0].volumeMounts"


def write_stand_in(bin_dir: Path, name: str) -> Path:
    """A STAND-IN for a runtime binary: records argv and environment (NUL-separated), runs nothing."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(
        "#!/bin/sh\n"
        f"# stand-in for {name} in tests: records its argv and environment only\n"
        "out=$STANDIN_OUT\n"
        'printf "%s\\0" "$@" > "$out.argv"\n'
        'cat /proc/$$/environ > "$out.env"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=env_lists, args=arg_lists)
@example(env=[("A.b-c", "x\ny=z \"q\" 'r' `touch CANARY` $(touch CANARY)")], args=["$(A.b-c)", "--no-eval"])
def test_apptainer_values_reach_stand_in_byte_exact(
    env: list[tuple[str, str]], args: list[str], tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    env = [(n.replace(".", "_").replace("-", "_"), canary_free(v, canary)) for n, v in env]
    args = [canary_free(a, canary) for a in args]
    stand_in = write_stand_in(tmp_path / "bin", "apptainer")
    job = tmp_path / "job"
    job.mkdir(exist_ok=True)
    (job / APPTAINER_HELPER_NAME).write_text(helper_files()[APPTAINER_HELPER_NAME])
    out = tmp_path / "rec"
    ctx = make_ctx(make_container(image="/i.sif", command=["/bin/prog"], args=args, env=env), job_dir=job,
                   binary=str(stand_in))  # fmt: skip
    spec = runtime_for("apptainer").argv(ctx)
    for path, content in spec.files:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(content)
    result = run(spec.argv, timeout=20, env={"PATH": "/usr/bin:/bin", "STANDIN_OUT": str(out)})
    assert result.returncode == 0, result.stderr
    lookup = env_map(ctx.env)
    assert argv_of(out.with_suffix(".argv").read_bytes()) == [
        b"exec",
        b"--no-eval",
        b"--",
        b"/i.sif",
        b"/bin/prog",
        *(b(expand_k8s(a, lookup)) for a in args),
    ]
    seen = environ_of(out.with_suffix(".env").read_bytes())
    for name, value in lookup.items():
        assert seen[b"APPTAINERENV_" + b(name)] == b(value)
    assert not canary.exists()


def test_apptainer_helper_falls_back_and_renames_the_env(tmp_path: Path) -> None:
    """apptainer missing on the node: singularity runs, and the env arrives as SINGULARITYENV_."""
    stand_in = write_stand_in(tmp_path / "bin", "singularity")
    job = tmp_path / "job"
    job.mkdir()
    (job / APPTAINER_HELPER_NAME).write_text(helper_files()[APPTAINER_HELPER_NAME])
    ctx = make_ctx(make_container(image="/i.sif", command=["x"], env=[("V", "a\nb $(c)")]), job_dir=job)
    spec = runtime_for("apptainer").argv(ctx)
    for path, content in spec.files:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(content)
    out = tmp_path / "rec"
    result = run(spec.argv, timeout=20, env={"PATH": f"{stand_in.parent}:/usr/bin:/bin", "STANDIN_OUT": str(out)})
    assert result.returncode == 0, result.stderr
    seen = environ_of(out.with_suffix(".env").read_bytes())
    assert seen[b"SINGULARITYENV_V"] == b"a\nb $(c)" and b"APPTAINERENV_V" not in seen
    missing = run(spec.argv, timeout=20, env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode == 127 and b"neither 'apptainer' nor 'singularity'" in missing.stderr


def test_apptainer_helper_converts_once_under_a_lock(tmp_path: Path) -> None:
    """Four containers start together with one image: one conversion, `--` before the image."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apptainer"
    fake.write_text(
        "#!/bin/bash\n"
        "# stand-in for apptainer: `build -F -- OUT REF` sleeps, records its argv, writes OUT; other verbs record\n"
        'if [[ $1 == build ]]; then sleep 0.5; printf "%s\\0" "$@" >> "$REC.build.argv"; echo sif > "$4"; exit 0; fi\n'
        'printf "%s\\0" "$@" > "$REC.$$.argv"\n'
    )
    fake.chmod(0o755)
    job = tmp_path / "job"
    job.mkdir()
    (job / APPTAINER_HELPER_NAME).write_text(helper_files()[APPTAINER_HELPER_NAME])
    settings = ApptainerSettings(cache_dir=str(tmp_path / "cache"))
    ctx = make_ctx(make_container(image="reg.io/app:1", command=["x"]), job_dir=job, apptainer=settings)
    spec = runtime_for("apptainer").argv(ctx)
    assert spec.prepare_argvs == () and spec.credential_files == ()  # no credentials: no auth file
    for path, content in spec.files:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(content)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "REC": str(tmp_path / "rec")}
    procs = [subprocess.Popen(list(spec.argv), env=env, stderr=subprocess.PIPE) for _ in range(4)]
    for proc in procs:
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    mine = tmp_path / "cache" / f"uid-{os.geteuid()}"  # the job's private dir of the shared cache
    assert (mine.stat().st_uid, mine.stat().st_mode & 0o777) == (os.geteuid(), 0o700)
    builds = (mine / "builds.log").read_text().splitlines()
    assert len(builds) == 1 and "docker://reg.io/app:1" in builds[0]
    build = argv_of((tmp_path / "rec.build.argv").read_bytes())
    assert build[:3] == [b"build", b"-F", b"--"] and build[-1] == b"docker://reg.io/app:1"
    runs = sorted(tmp_path.glob("rec.*[0-9].argv"))
    assert len(runs) == 4
    for argv_file in runs:
        words = argv_of(argv_file.read_bytes())
        sif = spec.argv[5].replace("/uid-@UID@/", f"/uid-{os.geteuid()}/")
        assert words[2:4] == [b"--", b(sif)]  # the cached SIF, not the reference, after `--`


def test_apptainer_credentials_reach_only_the_conversion_through_a_removed_auth_file(tmp_path: Path) -> None:
    """Registry credentials: a private auth file (--authfile) for the image step's conversion, removed
    once it succeeded; never an argv or an environment of the build or the container."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apptainer"
    fake.write_text(
        "#!/bin/bash\n"
        "# stand-in for apptainer: build records argv, env and the auth file it was given\n"
        'if [[ $1 == build ]]; then printf "%s\\0" "$@" > "$REC.build.argv"; cat /proc/$$/environ > "$REC.build.env"\n'
        '  cp -- "$4" "$REC.auth"; echo sif > "${@: -2:1}"; exit 0; fi\n'
        'printf "%s\\0" "$@" > "$REC.run.argv"; cat /proc/$$/environ > "$REC.run.env"\n'
    )
    fake.chmod(0o755)
    job = tmp_path / "job"
    job.mkdir()
    (job / APPTAINER_HELPER_NAME).write_text(helper_files()[APPTAINER_HELPER_NAME])
    settings = ApptainerSettings(credentials={"reg.io": ("robot", "s3cr3t pass")})
    ctx = make_ctx(make_container(image="reg.io/app:1", command=["x"]), job_dir=job, apptainer=settings)
    spec = runtime_for("apptainer").argv(ctx)
    ((auth_path, auth),) = spec.credential_files
    assert auth_path == f"{job}/registry-auth/c1.json"
    assert b"s3cr3t" not in b"\0".join(b(w) for w in spec.image_argv)
    assert b"s3cr3t" not in b"\0".join(b(w) for w in spec.argv)
    for path, content in (*spec.files, *spec.credential_files):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(content)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "REC": str(tmp_path / "rec")}
    assert spec.prepare_argvs == ()
    assert run(spec.image_argv, env=env).returncode == 0
    assert not Path(auth_path).exists()  # removed by the conversion step itself
    build = argv_of((tmp_path / "rec.build.argv").read_bytes())
    assert build[:5] == [b"build", b"-F", b"--authfile", b(auth_path), b"--"]
    token = json.loads((tmp_path / "rec.auth").read_bytes())["auths"]["reg.io"]["auth"]
    assert base64.b64decode(token) == b"robot:s3cr3t pass"
    assert b"s3cr3t" not in (tmp_path / "rec.build.env").read_bytes()
    assert run(spec.argv, env=env).returncode == 0
    assert argv_of((tmp_path / "rec.run.argv").read_bytes())[2:4] == [b"--", b(spec.argv[5])]
    assert b"s3cr3t" not in (tmp_path / "rec.run.env").read_bytes()
    # a second conversion step (another container, same image) finds the SIF and drops its file too
    Path(auth_path).write_bytes(auth)
    assert run(spec.image_argv, env=env).returncode == 0 and not Path(auth_path).exists()


@pytest.mark.parametrize("instance", ["i1", "kp-let-slurm0-a-long-instance-id", "x" * 80])
def test_podman_secret_names_are_names_podman_takes(instance: str) -> None:
    """podman refuses a secret name over 64 characters (or not starting/ending with a letter or digit): a long
    instance id, pod uid and container name still give one, unique per container and value, the uid readable."""
    uid = "f67f2a14-8b4f-4e87-ab77-cf5f8f3d2aa6"
    names = {secret_name(f"il-{instance}-{uid}-{container}", index)
             for container in ("quote-tester", "quote-tester2") for index in range(12)}
    assert len(names) == 24
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}[A-Za-z0-9]", name), name
        assert uid in name
