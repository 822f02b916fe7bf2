"""The runner's probes, the mesh wrapper and the job-dir helpers (probe.sh, mpi.sh), tested by RUNNING
them: the generated script in a temporary job dir, the helpers against real local sockets."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from interlink_plugins.core.podrunner.plan import ContainerRun, ProbeRun, RunPlan
from interlink_plugins.core.podrunner.render import render_runner
from interlink_plugins.core.records.status import read_container_files
from interlink_plugins.core.runtimes.probes import probe_helper_files


def sh(script: str, *args: str) -> tuple[str, ...]:
    return ("bash", "-c", script, "container", *args)


def write(job_dir: Path, plan: RunPlan) -> Path:
    job_dir.mkdir(parents=True, exist_ok=True)
    for name, text in probe_helper_files().items():
        (job_dir / name).write_text(text)
    script = job_dir / "pod-runner.sh"
    script.write_text(render_runner(plan))
    return script


@pytest.fixture
def start() -> Iterator[Callable[[RunPlan], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def run(plan: RunPlan) -> subprocess.Popen[str]:
        script = write(Path(plan.job_dir), plan)
        proc = subprocess.Popen(["bash", str(script)], cwd=plan.job_dir, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def plan_for(job_dir: Path, *containers: ContainerRun, **kw: object) -> RunPlan:
    options: dict[str, object] = {"grace_seconds": 1, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 0.4}
    options.update(kw)
    return RunPlan(job_dir=str(job_dir), containers=containers, **options)  # type: ignore[arg-type]


def main(name: str, argv: tuple[str, ...], policy: str = "Never", **kw: object) -> ContainerRun:
    return ContainerRun(name=name, kind="main", argv=argv, restart_policy=policy, **kw)  # type: ignore[arg-type]


def read(job_dir: Path, name: str, file: str) -> str | None:
    path = job_dir / "c" / name / file
    return path.read_text().strip() if path.exists() else None


def wait_for(predicate: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_readiness_moves_only_the_ready_file(tmp_path: Path, start: Callable[[RunPlan], subprocess.Popen[str]]) -> None:
    flag = tmp_path / "ready-flag"
    readiness = ProbeRun("readiness", ("test", "-e", str(flag)), period_seconds=1, failure_threshold=2)
    proc = start(plan_for(tmp_path / "job", main("c", sh("sleep 30"), probes=(readiness,))))
    job = tmp_path / "job"
    wait_for(lambda: read(job, "c", "started") is not None)
    assert read(job, "c", "ready") == "0" and read(job, "c", "startup") is None
    flag.touch()
    wait_for(lambda: read(job, "c", "ready") == "1")
    flag.unlink()
    wait_for(lambda: read(job, "c", "ready") == "0", timeout=10)
    files = read_container_files(job / "c" / "c")
    assert files.ready is False and files.exit_code is None and files.restarts == 0  # still running, not ready
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.mark.parametrize("policy", ["Always", "OnFailure"])
def test_liveness_failure_restarts_the_container_per_restart_policy(
    tmp_path: Path, start: Callable[[RunPlan], subprocess.Popen[str]], policy: str
) -> None:
    """OnFailure restarts it too although it exits 0 on SIGTERM: the kubelet restarts a container its liveness
    probe killed whatever the exit code."""
    job = tmp_path / "job"
    alive = tmp_path / "alive"
    alive.touch()
    liveness = ProbeRun("liveness", ("test", "-e", str(alive)), period_seconds=1, failure_threshold=2)
    pre_stop = sh(f"echo pre-stop >> {tmp_path}/hooks")
    container = main("c", sh("trap 'exit 0' TERM; echo run; while :; do sleep 0.1; done"), policy,
                     probes=(liveness,), pre_stop_argv=pre_stop)
    proc = start(plan_for(job, container))
    wait_for(lambda: read(job, "c", "started") is not None)
    alive.unlink()
    wait_for(lambda: read(job, "c", "restarts") == "1" and read(job, "c", "last") is not None, timeout=15)
    assert (tmp_path / "hooks").read_text() == "pre-stop\n"  # the kubelet runs preStop before a liveness kill
    last = read(job, "c", "last")
    assert last is not None and last.split()[0] == "0"  # the container's own exit code (it trapped TERM)
    alive.touch()
    wait_for(lambda: read(job, "c", "started") is not None)
    time.sleep(2.5)
    assert read(job, "c", "restarts") == "1"  # healthy again: no more restarts
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


def test_failed_liveness_with_restart_never_ends_the_container_unhealthy(
    tmp_path: Path, start: Callable[[RunPlan], subprocess.Popen[str]]
) -> None:
    job = tmp_path / "job"
    liveness = ProbeRun("liveness", ("false",), period_seconds=1, failure_threshold=1, grace_seconds=1)
    proc = start(plan_for(job, main("c", sh("sleep 60"), probes=(liveness,))))
    assert proc.wait(timeout=20) == 143
    files = read_container_files(job / "c" / "c")
    assert files.exit_code == 143 and files.reason is not None
    assert files.reason[0] == "Unhealthy" and files.reason[1].startswith("liveness probe failed 1 times (exit 1")


def test_startup_probe_gates_the_others_and_kills_on_failure(
    tmp_path: Path, start: Callable[[RunPlan], subprocess.Popen[str]]
) -> None:
    job = tmp_path / "job"
    gate = tmp_path / "gate"
    counter = tmp_path / "liveness-runs"
    startup = ProbeRun("startup", ("test", "-e", str(gate)), period_seconds=1, failure_threshold=60)
    liveness = ProbeRun("liveness", sh(f"echo x >> {counter}"), period_seconds=1)
    proc = start(plan_for(job, main("c", sh("sleep 60"), probes=(startup, liveness))))
    wait_for(lambda: read(job, "c", "started") is not None)
    time.sleep(2.2)
    assert read(job, "c", "startup") == "0" and read(job, "c", "ready") == "0" and not counter.exists()
    gate.touch()
    wait_for(lambda: read(job, "c", "startup") == "1")
    assert read(job, "c", "ready") == "1"  # no readiness probe: ready once started
    wait_for(counter.exists)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)

    never = ProbeRun("startup", ("false",), period_seconds=1, failure_threshold=2)
    proc = start(plan_for(tmp_path / "job2", main("c", sh("sleep 60"), probes=(never,))))
    assert proc.wait(timeout=20) == 143
    reason = read(tmp_path / "job2", "c", "reason")
    assert reason is not None and reason.startswith("Unhealthy startup probe failed 2 times")


def test_probe_timeout_counts_as_a_failure(tmp_path: Path, start: Callable[[RunPlan], subprocess.Popen[str]]) -> None:
    slow = ProbeRun("liveness", ("sleep", "10"), period_seconds=1, timeout_seconds=1, failure_threshold=1)
    proc = start(plan_for(tmp_path / "job", main("c", sh("sleep 60"), probes=(slow,))))
    assert proc.wait(timeout=20) == 143
    assert "timed out after 1s" in (read(tmp_path / "job", "c", "reason") or "")


def test_containers_run_inside_the_wrapper(tmp_path: Path, start: Callable[[RunPlan], subprocess.Popen[str]]) -> None:
    job = tmp_path / "job"
    job.mkdir()
    wrapper = job / "mesh.sh"
    wrapper.write_text('#!/bin/bash\necho "wrapped: $*" > wrapper.log\nexport INSIDE_MESH=yes\nexec "$@"\n')
    wrapper.chmod(0o700)
    plan = plan_for(job, main("c", sh('echo "inside=$INSIDE_MESH"; exit 3')), wrapper=(str(wrapper),),
                    prologue=("echo prologue-ran > prologue.log",))
    proc = start(plan)
    assert proc.wait(timeout=20) == 3
    assert (job / "wrapper.log").read_text() == f"wrapped: bash {job}/pod-runner.sh --wrapped\n"
    assert (job / "prologue.log").read_text() == "prologue-ran\n"  # once, outside the wrapper
    assert read(job, "c", "exit") == "3" and (job / "pod.exit").read_text().strip() == "3"
    log = (job / "c" / "c" / "log").read_text()
    assert log.endswith(" stdout F inside=yes\n")

    broken = tmp_path / "job2"
    broken.mkdir()
    (broken / "mesh.sh").write_text("#!/bin/bash\necho no network >&2\nexit 7\n")
    (broken / "mesh.sh").chmod(0o700)
    proc = start(plan_for(broken, main("c", ("true",)), wrapper=(str(broken / "mesh.sh"),)))
    assert proc.wait(timeout=20) == 1
    assert read(broken, "c", "reason") == "PreExecFailed the wrapper " + str(broken / "mesh.sh") + " exited 7 before " \
        "the containers ran"


def test_a_stop_reaches_the_runner_inside_the_wrapper(tmp_path: Path,
                                                     start: Callable[[RunPlan], subprocess.Popen[str]]) -> None:
    job = tmp_path / "job"
    job.mkdir()
    # like interLink's mesh.sh: job control on, the workload in the background, no signal forwarding
    (job / "mesh.sh").write_text('#!/bin/bash\nset -m\n"$@" &\nwait\n')
    (job / "mesh.sh").chmod(0o700)
    proc = start(plan_for(job, main("c", sh("trap 'exit 0' TERM; while :; do sleep 0.1; done")),
                          wrapper=(str(job / "mesh.sh"),)))
    wait_for(lambda: read(job, "c", "started") is not None)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert read(job, "c", "exit") in ("0", "143")
    assert (job / "pod.exit").exists()


# --- helpers --------------------------------------------------------------------------------------


def helper(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(probe_helper_files()[name])
    return path


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = {"/ok": 200, "/redirect": 302, "/missing": 404}.get(self.path.split("?")[0], 500)
        if self.path == "/header" and self.headers.get("X-Token") == "a b":
            code = 204
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()


@pytest.mark.parametrize("with_curl", [True, False])
def test_probe_helper_http_and_tcp(tmp_path: Path, http_port: int, with_curl: bool) -> None:
    probe = helper(tmp_path, "probe.sh")
    env = dict(os.environ)
    if not with_curl:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for tool in ("bash", "cat", "timeout"):
            os.symlink(f"/usr/bin/{tool}" if os.path.exists(f"/usr/bin/{tool}") else f"/bin/{tool}", bin_dir / tool)
        env["PATH"] = str(bin_dir)

    def run(*args: str) -> int:
        return subprocess.run(["/bin/bash", str(probe), *args], env=env, capture_output=True, timeout=20).returncode

    port = str(http_port)
    assert run("http", "HTTP", "127.0.0.1", port, "/ok") == 0
    assert run("http", "HTTP", "127.0.0.1", port, "/redirect") == 0
    assert run("http", "HTTP", "127.0.0.1", port, "/missing") == 1
    assert run("http", "HTTP", "127.0.0.1", port, "/header", "X-Token: a b") == 0
    assert run("http", "HTTP", "127.0.0.1", port, "/header") == 1
    assert run("tcp", "127.0.0.1", port) == 0
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = str(closed.getsockname()[1])
    assert run("tcp", "127.0.0.1", free) == 1
    assert run("http", "HTTP", "127.0.0.1", free, "/") == 1


def test_mpi_helper_passes_the_rank_into_each_runtime(tmp_path: Path) -> None:
    mpi = helper(tmp_path, "mpi.sh")
    rank = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "PMI_RANK": "1", "UNRELATED": "x"}
    env_file = tmp_path / "env.nul"
    env_file.write_bytes(b"A=1\0B=two words\0")
    show = tmp_path / "show.sh"
    show.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\nenv | grep -E "^(APPTAINERENV_|SLURM_|PMI_|A=)" | sort\n')

    def task(runtime: str, *argv: str) -> list[str]:
        out = subprocess.run(["bash", str(mpi), "task", runtime, *argv],
                             env={"PATH": os.environ["PATH"], **rank}, capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    words = task("none", "bash", str(show), "ns-exec.sh", "--env-file", str(env_file), "--", "app")
    copy = Path(words[words.index("--env-file") + 1])
    assert copy.name.startswith("env.nul.task-") and oct(copy.stat().st_mode & 0o777) == "0o600"
    # every task process gets a file of its own: under mpirun all ranks (on every node, beside the
    # same env file) inherit the batch step's SLURM_PROCID, and one rank read another's PMIx server
    again = task("none", "bash", str(show), "ns-exec.sh", "--env-file", str(env_file), "--", "app")
    assert Path(again[again.index("--env-file") + 1]) != copy and copy.exists()
    # the node a task runs on (multi-node MPI: each rank is on another node)
    node = subprocess.run(["bash", str(mpi), "task", "none", "bash", str(show), "--env-file", str(env_file), "--", "x"],
                          env={"PATH": os.environ["PATH"], "SLURMD_NODENAME": "n2"}, capture_output=True, text=True,
                          timeout=20).stdout.splitlines()
    assert b"SLURMD_NODENAME=n2" in Path(node[node.index("--env-file") + 1]).read_bytes().split(b"\0")
    records = copy.read_bytes().split(b"\0")
    assert records[:2] == [b"A=1", b"B=two words"] and b"SLURM_PROCID=1" in records and b"UNRELATED=x" not in records
    # apptainer: env APPTAINERENV_NAME=VALUE... apptainer exec ...
    apptainer = task("apptainer", "env", "APPTAINERENV_A=1", "bash", str(show), "apptainer", "exec", "img")
    assert apptainer[:3] == ["apptainer", "exec", "img"]
    assert "APPTAINERENV_SLURM_PROCID=1" in apptainer and "APPTAINERENV_PMI_RANK=1" in apptainer
    # apptainer through the job dir's apptainer.sh: the env file (4th argument) gets the rank
    launcher = tmp_path / "apptainer.sh"
    launcher.write_text(show.read_text())
    through = task("apptainer", "bash", str(launcher), "apptainer", "", str(env_file), "", "img", "exec", "--", "x")
    assert through[:2] == ["apptainer", ""] and through[2].startswith(str(env_file) + ".task-")
    assert b"PMI_RANK=1" in Path(through[2]).read_bytes().split(b"\0")
    launched = subprocess.run(
        ["bash", str(mpi), "launch", "bash", str(show), "-n", "@NTASKS@", "--il-task", "none", "x"],
        env={"PATH": os.environ["PATH"], "SLURM_NTASKS": "4"}, capture_output=True, text=True, timeout=20,
    ).stdout.splitlines()
    assert launched[:7] == ["-n", "4", "bash", str(mpi), "task", "none", "x"]
