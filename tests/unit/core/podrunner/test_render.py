"""The pod runner, tested by RUNNING the rendered bash script in a temporary job dir."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.podrunner.plan import ContainerRun, RunPlan
from interlink_plugins.core.podrunner.render import render_runner

RUN_TIMEOUT = 30
TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"
CRI_LINE = re.compile(rf"({TS}) (stdout|stderr) F (.*)")


# ---------------------------------------------------------------------------------------------
# helpers


def sh(script: str, *args: str) -> tuple[str, ...]:
    """argv running a bash snippet; paths travel as $1.. (never inside the snippet)."""
    return ("bash", "-c", script, "container", *args)


def main(name: str, argv: tuple[str, ...], policy: str = "Never", **kw: object) -> ContainerRun:
    return ContainerRun(name=name, kind="main", argv=argv, restart_policy=policy, **kw)  # type: ignore[arg-type]


def init(name: str, argv: tuple[str, ...], policy: str = "Never", **kw: object) -> ContainerRun:
    return ContainerRun(name=name, kind="init", argv=argv, restart_policy=policy, **kw)  # type: ignore[arg-type]


def sidecar(name: str, argv: tuple[str, ...], **kw: object) -> ContainerRun:
    return ContainerRun(name=name, kind="init", argv=argv, restart_policy="Always", sidecar=True, **kw)  # type: ignore[arg-type]


def plan_for(job_dir: Path, *containers: ContainerRun, **kw: object) -> RunPlan:
    options: dict[str, object] = {"grace_seconds": 1, "backoff_initial_seconds": 0.1, "backoff_max_seconds": 0.2}
    options.update(kw)
    return RunPlan(job_dir=str(job_dir), containers=containers, **options)  # type: ignore[arg-type]


def write_runner(plan: RunPlan) -> Path:
    job_dir = Path(plan.job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    script = job_dir / "pod-runner.sh"
    script.write_text(render_runner(plan))
    return script


def run_pod(plan: RunPlan, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run the pod to its end (cwd = job dir, like the backends' --chdir)."""
    script = write_runner(plan)
    return subprocess.run(
        ["bash", str(script)], cwd=plan.job_dir, capture_output=True, text=True, timeout=timeout,
        start_new_session=True,
    )


@pytest.fixture
def start_pod() -> Iterator[Callable[[RunPlan], subprocess.Popen[str]]]:
    """Start a pod runner in the background; killed (with its group) at teardown if still there."""
    started: list[subprocess.Popen[str]] = []

    def start(plan: RunPlan) -> subprocess.Popen[str]:
        script = write_runner(plan)
        proc = subprocess.Popen(
            ["bash", str(script)], cwd=plan.job_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=RUN_TIMEOUT)


def state(job_dir: Path | str, name: str, file: str) -> str | None:
    path = Path(job_dir) / "c" / name / file
    return path.read_text().rstrip("\n") if path.exists() else None


def pod_exit(job_dir: Path | str) -> str | None:
    path = Path(job_dir) / "pod.exit"
    return path.read_text().rstrip("\n") if path.exists() else None


def log_lines(job_dir: Path | str, name: str, file: str = "log") -> list[tuple[str, str, str]]:
    """(timestamp, stream, text) of every CRI line; fails on a line that is not CRI."""
    text = (Path(job_dir) / "c" / name / file).read_text()
    assert text.endswith("\n") or text == ""
    lines = []
    for line in text.split("\n")[:-1]:
        match = CRI_LINE.fullmatch(line)
        assert match, f"not a CRI log line: {line!r}"
        lines.append((match[1], match[2], match[3]))
    return lines


def texts(job_dir: Path | str, name: str, stream: str, file: str = "log") -> list[str]:
    return [text for _, s, text in log_lines(job_dir, name, file) if s == stream]


def parse_ts(text: str) -> datetime:
    assert re.fullmatch(TS, text), text
    return datetime.strptime(text[:26] + "Z", "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def read_pid(path: Path) -> int:
    wait_until(lambda: path.exists() and path.read_text().strip() != "")
    return int(path.read_text())


# ---------------------------------------------------------------------------------------------
# logs, exit codes, files


def test_cri_log_lines_tag_streams_and_keep_text_and_partial_last_line(tmp_path: Path) -> None:
    script = (
        "printf 'out one\\n'; printf 'err one\\n' >&2; printf '  spaced \\\\ back %%s\\t\\n'; printf '\\n';"
        " printf 'err tail' >&2; printf 'tail without newline'"
    )
    job = tmp_path / "job"
    before = datetime.now(UTC)
    result = run_pod(plan_for(job, main("app", sh(script))))
    after = datetime.now(UTC)
    assert result.returncode == 0, result.stdout + result.stderr

    assert texts(job, "app", "stdout") == ["out one", "  spaced \\ back %s\t", "", "tail without newline"]
    assert texts(job, "app", "stderr") == ["err one", "err tail"]
    stamps = [parse_ts(ts) for ts, _, _ in log_lines(job, "app")]
    assert all(before.replace(microsecond=0) <= ts <= after for ts in stamps)
    started, finished = state(job, "app", "started"), state(job, "app", "finished")
    assert started and finished and parse_ts(started) <= parse_ts(finished)
    assert before.replace(microsecond=0) <= parse_ts(started) and parse_ts(finished) <= after
    assert state(job, "app", "exit") == "0"
    for absent in ("restarts", "last", "waiting", "reason", "log.prev"):
        assert state(job, "app", absent) is None, absent
    assert pod_exit(job) == "0"
    leftovers = [p.name for p in (job / "c" / "app").iterdir() if p.name.startswith(".") or ".tmp." in p.name]
    assert leftovers == []


def test_exit_codes_and_pod_exit_is_the_maximum(tmp_path: Path) -> None:
    job = tmp_path / "job"
    plan = plan_for(job, main("ok", sh("exit 0")), main("seven", sh("exit 7")), main("big", sh("exit 42")))
    result = run_pod(plan)
    assert result.returncode == 42
    assert [state(job, n, "exit") for n in ("ok", "seven", "big")] == ["0", "7", "42"]
    assert pod_exit(job) == "42"
    assert state(job, "seven", "reason") is None


def test_main_containers_run_in_parallel(tmp_path: Path) -> None:
    # each one waits for the other to be up: sequential runs would time out and exit 1
    rendezvous = 'touch "$1.up"; for i in $(seq 200); do [ -e "$2.up" ] && exit 0; sleep 0.02; done; exit 1'
    job = tmp_path / "job"
    plan = plan_for(job, main("a", sh(rendezvous, "a", "b")), main("b", sh(rendezvous, "b", "a")))
    result = run_pod(plan)
    assert result.returncode == 0, result.stderr
    assert state(job, "a", "exit") == "0" and state(job, "b", "exit") == "0"


def test_container_stdin_is_dev_null_and_default_signals(tmp_path: Path) -> None:
    job = tmp_path / "job"
    script = 'read -r line; echo "read=$? line=$line"; grep -E "^SigIgn" /proc/$$/status'
    result = run_pod(plan_for(job, main("app", sh(script))))
    assert result.returncode == 0
    out = texts(job, "app", "stdout")
    assert out[0] == "read=1 line="
    assert out[1].split() == ["SigIgn:", "0000000000000000"]


def test_argv0_with_equals_sign_runs(tmp_path: Path) -> None:
    tool_dir = tmp_path / "a=b"
    tool_dir.mkdir()
    tool = tool_dir / "tool"
    tool.write_text("#!/bin/sh\necho tool ran \"$@\"\n")
    tool.chmod(0o755)
    job = tmp_path / "job"
    result = run_pod(plan_for(job, main("app", (str(tool), "x=1"))))
    assert result.returncode == 0
    assert texts(job, "app", "stdout") == ["tool ran x=1"]


def test_missing_command_exits_127(tmp_path: Path) -> None:
    job = tmp_path / "job"
    result = run_pod(plan_for(job, main("app", ("/nonexistent/command",))))
    assert result.returncode == 127
    assert state(job, "app", "exit") == "127"
    assert texts(job, "app", "stderr")


# ---------------------------------------------------------------------------------------------
# init containers


def test_init_containers_run_in_order_and_stop_at_the_first_failure(tmp_path: Path) -> None:
    job = tmp_path / "job"
    order = 'echo "$1" >> order'
    plan = plan_for(
        job,
        init("first", sh(order + "; sleep 0.2", "first")),
        init("second", sh(order + "; exit 4", "second")),
        init("third", sh(order, "third")),
        main("app", sh(order, "app")),
        main("other", sh(order, "other")),
    )
    result = run_pod(plan)
    assert result.returncode == 4
    assert (job / "order").read_text() == "first\nsecond\n"
    first_finished, second_started = state(job, "first", "finished"), state(job, "second", "started")
    assert first_finished and second_started and parse_ts(first_finished) <= parse_ts(second_started)
    assert state(job, "second", "exit") == "4"
    assert state(job, "second", "restarts") is None
    for name in ("third", "app", "other"):
        assert state(job, name, "exit") == "1"
        assert state(job, name, "reason") == "InitContainerFailed init container second exited 4"
        assert state(job, name, "started") == state(job, name, "finished") is not None
        assert state(job, name, "waiting") is None
    assert pod_exit(job) == "4"


def test_sidecars_stop_when_an_init_container_fails(tmp_path: Path) -> None:
    job = tmp_path / "job"
    plan = plan_for(
        job,
        sidecar("proxy", sh("touch proxy.up; exec sleep 30")),
        init("setup", sh('for i in $(seq 300); do [ -e proxy.up ] && exit 3; sleep 0.01; done')),
        sidecar("late", sh("touch late.ran; exec sleep 30")),
        main("app", sh("touch app.ran")),
    )
    result = run_pod(plan)
    assert result.returncode == 3
    assert state(job, "proxy", "exit") == "0"
    assert state(job, "proxy", "reason") == "Completed sidecar stopped because an init container failed"
    for name in ("late", "app"):
        assert state(job, name, "reason") == "InitContainerFailed init container setup exited 3"
    assert not (job / "late.ran").exists() and not (job / "app.ran").exists()
    assert pod_exit(job) == "3"


def test_init_container_on_failure_restarts_then_the_main_containers_run(tmp_path: Path) -> None:
    job = tmp_path / "job"
    flaky = '[ -e tried ] && exit 0; touch tried; exit 1'
    plan = plan_for(job, init("setup", sh(flaky), "OnFailure"), main("app", sh("echo main ran")))
    result = run_pod(plan)
    assert result.returncode == 0
    assert state(job, "setup", "restarts") == "1" and state(job, "setup", "exit") == "0"
    assert texts(job, "app", "stdout") == ["main ran"]


# ---------------------------------------------------------------------------------------------
# restart policies


COUNTER = 'n=$(cat "$1" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$1"; echo "run $n"; echo "err $n" >&2'


def test_on_failure_restarts_until_success_with_state_and_previous_log(tmp_path: Path) -> None:
    job = tmp_path / "job"
    plan = plan_for(job, main("app", sh(COUNTER + '; [ "$n" -ge 3 ]', "count"), "OnFailure"),
                    backoff_initial_seconds=0.1, backoff_max_seconds=0.3)
    result = run_pod(plan)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (job / "count").read_text() == "3\n"
    assert state(job, "app", "exit") == "0"
    assert state(job, "app", "restarts") == "2"
    assert state(job, "app", "waiting") is None
    last = state(job, "app", "last")
    assert last is not None and re.fullmatch(rf"1 ({TS}) ({TS})", last)
    last_started, last_finished = last.split()[1:]
    assert texts(job, "app", "stdout") == ["run 3"] and texts(job, "app", "stderr") == ["err 3"]
    assert texts(job, "app", "stdout", "log.prev") == ["run 2"]
    started = state(job, "app", "started")
    assert started is not None
    # the second back-off doubled: 0.2 s between the end of run 2 and the start of run 3
    assert (parse_ts(started) - parse_ts(last_finished)).total_seconds() >= 0.19
    assert parse_ts(last_started) <= parse_ts(last_finished)


def test_never_does_not_restart(tmp_path: Path) -> None:
    job = tmp_path / "job"
    result = run_pod(plan_for(job, main("app", sh(COUNTER + "; exit 3", "count"), "Never")))
    assert result.returncode == 3
    assert (job / "count").read_text() == "1\n"
    assert state(job, "app", "restarts") is None and state(job, "app", "last") is None
    assert state(job, "app", "exit") == "3"


def test_always_restarts_with_doubling_capped_back_off(
    tmp_path: Path, start_pod: Callable[[RunPlan], subprocess.Popen[str]]
) -> None:
    job = tmp_path / "job"
    plan = plan_for(job, main("app", sh(COUNTER, "count"), "Always"),
                    backoff_initial_seconds=0.1, backoff_max_seconds=0.3)
    proc = start_pod(plan)
    seen: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and int(state(job, "app", "restarts") or 0) < 5:
        waiting = state(job, "app", "waiting")
        if waiting and waiting.startswith("CrashLoopBackOff") and (not seen or seen[-1] != waiting):
            seen.append(waiting)
        time.sleep(0.005)
    assert proc.poll() is None, "an Always container keeps the pod running"
    message = "CrashLoopBackOff back-off {}s restarting failed container app"
    assert seen[:3] == [message.format("0.1"), message.format("0.2"), message.format("0.3")]
    assert set(seen[3:]) <= {message.format("0.3")}
    last = state(job, "app", "last")
    assert last is not None and last.startswith("0 ")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=RUN_TIMEOUT)
    assert state(job, "app", "waiting") is None
    assert state(job, "app", "exit") in ("0", "143")
    assert pod_exit(job) == state(job, "app", "exit")


def test_back_off_resets_after_a_long_run(tmp_path: Path) -> None:
    # back-offs 0.1 then 0.2; run 3 lasts longer than 2 x the maximum (0.4 s): the next one is 0.1 again
    job = tmp_path / "job"
    script = COUNTER + '; [ "$n" = 3 ] && sleep 0.9; [ "$n" -ge 4 ]'
    plan = plan_for(job, main("app", sh(script, "count"), "OnFailure"),
                    backoff_initial_seconds=0.1, backoff_max_seconds=0.4)
    assert run_pod(plan).returncode == 0
    last = state(job, "app", "last")
    started = state(job, "app", "started")
    assert last and started
    gap = (parse_ts(started) - parse_ts(last.split()[2])).total_seconds()
    assert 0.09 <= gap < 0.35


# ---------------------------------------------------------------------------------------------
# sidecars


def test_sidecar_runs_beside_the_main_containers_and_is_stopped_afterwards(tmp_path: Path) -> None:
    job = tmp_path / "job"
    wait_for = 'w() { for i in $(seq 300); do [ -e "$1" ] && return 0; sleep 0.01; done; return 1; }; w "$1"'
    plan = plan_for(
        job,
        sidecar("proxy", sh('echo $$ > proxy.pid; touch proxy.up; exec sleep 30')),
        # ignores SIGTERM: killed after the grace period, still recorded as a normal sidecar stop
        sidecar("stubborn", sh('trap "" TERM; echo $$ > stubborn.pid; while :; do sleep 0.05; done')),
        init("setup", sh(wait_for, "proxy.up")),  # the runner did not wait for the sidecar to end
        main("app", sh(wait_for + ' && [ -e "$2" ] && echo saw the sidecar', "proxy.up", "stubborn.pid")),
    )
    result = run_pod(plan)
    assert result.returncode == 0, result.stdout + result.stderr
    assert state(job, "setup", "exit") == "0"
    assert texts(job, "app", "stdout") == ["saw the sidecar"]
    for name in ("proxy", "stubborn"):
        assert state(job, name, "exit") == "0"
        assert state(job, name, "reason") == "Completed sidecar stopped after the main containers finished"
        sidecar_finished, app_finished = state(job, name, "finished"), state(job, "app", "finished")
        assert sidecar_finished and app_finished and parse_ts(app_finished) <= parse_ts(sidecar_finished)
        assert not alive(int((job / f"{name}.pid").read_text()))
    assert pod_exit(job) == "0"


def test_failing_sidecar_is_restarted_and_excluded_from_pod_exit(tmp_path: Path) -> None:
    job = tmp_path / "job"
    wait_restart = 'for i in $(seq 300); do [ "$(cat count 2>/dev/null)" = 2 ] && exit 0; sleep 0.01; done; exit 1'
    plan = plan_for(job, sidecar("proxy", sh(COUNTER + "; exit 9", "count")), main("app", sh(wait_restart)))
    result = run_pod(plan)
    assert result.returncode == 0
    assert int(state(job, "proxy", "restarts") or 0) >= 1
    assert pod_exit(job) == "0"


# ---------------------------------------------------------------------------------------------
# stopping the pod


def test_sigterm_reaches_every_process_group_then_kill_after_grace(
    tmp_path: Path, start_pod: Callable[[RunPlan], subprocess.Popen[str]]
) -> None:
    job = tmp_path / "job"
    plan = plan_for(
        job,
        main(
            "polite",
            sh('sleep 30 & echo $! > polite.child; echo $$ > polite.pid; wait'),
            post_start_argv=sh("echo post-start hook ran"),
            pre_stop_argv=sh('kill -0 "$(cat polite.pid)" && echo alive-at-pre-stop > polite.prestop'),
            cleanup_argv=sh("touch polite.cleaned"),
        ),
        main(
            "stubborn",
            sh('trap "" TERM; sleep 30 & echo $! > stubborn.child; echo $$ > stubborn.pid; '
               "while :; do sleep 0.05; done"),
            cleanup_argv=sh("touch stubborn.cleaned"),
        ),
        grace_seconds=1,
    )
    proc = start_pod(plan)
    pids = {name: read_pid(job / f"{name}.pid") for name in ("polite", "stubborn")}
    children = {name: read_pid(job / f"{name}.child") for name in ("polite", "stubborn")}
    wait_until(lambda: "post-start hook ran" in texts(job, "polite", "stdout"))
    # the hook printed before it exited: the runner clears ContainerCreating once it has
    wait_until(lambda: state(job, "polite", "waiting") is None)
    for pid in (*pids.values(), *children.values()):
        assert os.getpgid(pid) == pids["polite"] or os.getpgid(pid) == pids["stubborn"]
    assert os.getpgid(pids["polite"]) == pids["polite"] and os.getpgid(children["polite"]) == pids["polite"]

    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    elapsed = time.monotonic() - sent
    assert proc.returncode == 143, out
    assert elapsed >= 1.0, elapsed  # the grace was given; that it ended there is the SIGKILL reason below

    assert state(job, "polite", "exit") == "143"
    assert state(job, "polite", "reason") == "Terminated killed by SIGTERM"
    assert state(job, "stubborn", "exit") == "137"
    assert state(job, "stubborn", "reason") == "Killed SIGKILL after grace period"
    assert (job / "polite.prestop").read_text() == "alive-at-pre-stop\n"
    assert (job / "polite.cleaned").exists() and (job / "stubborn.cleaned").exists()
    everyone = (*pids.values(), *children.values())
    wait_until(lambda: not any(alive(pid) for pid in everyone), timeout=5)
    assert pod_exit(job) == "143"


def test_sigterm_to_every_process_of_the_job_at_once(
    tmp_path: Path, start_pod: Callable[[RunPlan], subprocess.Popen[str]]
) -> None:
    # like `scancel --full --signal=TERM`: the runner, its helpers and the containers all get it
    job = tmp_path / "job"
    plan = plan_for(
        job,
        sidecar("proxy", sh("echo $$ > proxy.pid; echo proxy up; exec sleep 30")),
        main("app", sh("echo $$ > app.pid; echo app up; trap 'echo got term; exit 143' TERM; "
                       "while :; do sleep 0.05; done")),
        main("worker", sh("echo $$ > worker.pid; echo worker up; exec sleep 30"), "OnFailure"),
    )
    proc = start_pod(plan)
    pids = [read_pid(job / f"{name}.pid") for name in ("proxy", "app", "worker")]
    wait_until(lambda: all(texts(job, name, "stdout") for name in ("proxy", "app", "worker")))
    for pgid in (proc.pid, *pids):
        with contextlib.suppress(ProcessLookupError):  # the runner may have been quicker
            os.killpg(pgid, signal.SIGTERM)
    proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 143
    for name in ("proxy", "app", "worker"):
        assert state(job, name, "exit") == "143", name
        assert state(job, name, "reason") == "Terminated killed by SIGTERM"
        assert state(job, name, "restarts") is None
    # the log readers ignore the signal: everything the containers wrote is kept
    assert texts(job, "app", "stdout") == ["app up", "got term"]
    assert pod_exit(job) == "143"


def test_sigint_during_init_stops_it_and_the_rest_never_starts(
    tmp_path: Path, start_pod: Callable[[RunPlan], subprocess.Popen[str]]
) -> None:
    job = tmp_path / "job"
    plan = plan_for(
        job,
        init("setup", sh("touch setup.up; exec sleep 30")),
        init("later", sh("touch later.ran")),
        main("app", sh("touch app.ran")),
        # a prologue cannot take the runner's signal handling or error mode with it
        prologue=("set -eu", "trap 'echo prologue trap' TERM INT"),
    )
    proc = start_pod(plan)
    wait_until((job / "setup.up").exists)
    assert state(job, "app", "waiting") == "PodInitializing waiting for the init containers"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 143
    assert state(job, "setup", "exit") == "143"
    assert state(job, "setup", "reason") == "Terminated killed by SIGTERM"
    for name in ("later", "app"):
        assert state(job, name, "exit") == "143"
        assert state(job, name, "reason") == "Terminated pod stopped before the container started"
        assert state(job, name, "started") == state(job, name, "finished") is not None
        assert state(job, name, "waiting") is None
    assert not (job / "later.ran").exists() and not (job / "app.ran").exists()
    assert pod_exit(job) == "143"


def test_sigterm_during_back_off_ends_the_wait(
    tmp_path: Path, start_pod: Callable[[RunPlan], subprocess.Popen[str]]
) -> None:
    job = tmp_path / "job"
    plan = plan_for(job, main("app", sh("exit 2"), "OnFailure"), backoff_initial_seconds=20,
                    backoff_max_seconds=20)
    proc = start_pod(plan)
    wait_until(lambda: state(job, "app", "waiting") is not None and state(job, "app", "last") is not None)
    assert state(job, "app", "waiting") == "CrashLoopBackOff back-off 20s restarting failed container app"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=5)
    assert state(job, "app", "exit") == "143"
    assert state(job, "app", "reason") == "Terminated pod stopped while the container was waiting to restart"
    assert state(job, "app", "waiting") is None
    assert (state(job, "app", "last") or "").startswith("2 ")


# ---------------------------------------------------------------------------------------------
# prologue, environment


def test_prologue_runs_in_order_with_runner_env_and_path(tmp_path: Path) -> None:
    job = tmp_path / "job"
    plan = plan_for(
        job,
        main("app", sh('echo "$FROM_PROLOGUE|$POD_IP|$TZ|$PATH"')),
        prologue=("echo one >> prologue.out", "export FROM_PROLOGUE=yes", "echo two >> prologue.out"),
        runner_env=(("POD_IP", "10.0.0.7 $(not run)"),),
        runner_path="/usr/bin:/bin",
    )
    result = run_pod(plan)
    assert result.returncode == 0, result.stderr
    assert (job / "prologue.out").read_text() == "one\ntwo\n"
    assert texts(job, "app", "stdout") == ["yes|10.0.0.7 $(not run)|UTC|/usr/bin:/bin"]


def test_prepare_steps_run_as_argv_and_credential_files_are_gone_when_the_runner_ends(tmp_path: Path) -> None:
    """Prepare steps are argv arrays: nothing is evaluated; the credential files only image steps read
    are removed when the runner ends, whatever happened."""
    job = tmp_path / "job"
    job.mkdir()
    auth = job / "registry-auth" / "app.json"
    auth.parent.mkdir()
    auth.write_text("secret")
    canary = job / "canary"
    plan = plan_for(
        job,
        main("app", sh("cat steps.out")),
        prologue=("echo prologue > steps.out",),
        prepare=(("sh", "-c", 'printf "%s|" "$@" >> steps.out; cat "$0" >> steps.out; echo >> steps.out',
                  str(auth), f"$(touch {canary})", "a b;c"),),
        credential_files=(str(auth),),
    )
    result = run_pod(plan)
    assert result.returncode == 0, result.stderr
    assert texts(job, "app", "stdout") == ["prologue", f"$(touch {canary})|a b;c|secret"]
    assert not auth.exists() and not canary.exists()


def test_failing_prepare_step_fails_every_container_and_still_drops_its_files(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    auth = job / "auth.json"
    auth.write_text("secret")
    plan = plan_for(job, main("app", sh("touch app.ran")), prepare=(("true",), ("sh", "-c", "exit 3")),
                    credential_files=(str(auth),))
    result = run_pod(plan)
    assert result.returncode == 1
    assert state(job, "app", "exit") == "1"
    assert (state(job, "app", "reason") or "").startswith("ErrImagePull preparing the images: step 2 exited 3")
    assert not (job / "app.ran").exists() and not auth.exists()


def test_failing_prologue_fails_every_container(tmp_path: Path) -> None:
    job = tmp_path / "job"
    plan = plan_for(
        job,
        init("setup", sh("touch setup.ran")),
        main("app", sh("touch app.ran")),
        prologue=("true", "f() { return 7; }; f", "touch prologue3.ran"),
    )
    result = run_pod(plan)
    assert result.returncode == 1
    for name in ("setup", "app"):
        assert state(job, name, "exit") == "1"
        assert state(job, name, "reason") == "PreExecFailed prologue command 2 exited 7"
    assert not any((job / f).exists() for f in ("setup.ran", "app.ran", "prologue3.ran"))
    assert pod_exit(job) == "1"


def test_prologue_that_exits_still_records_every_container(tmp_path: Path) -> None:
    job = tmp_path / "job"
    result = run_pod(plan_for(job, main("app", sh("touch app.ran")), prologue=("exit 5",)))
    assert result.returncode == 1
    assert state(job, "app", "reason") == "PreExecFailed prologue command 1 exited the runner with 5"
    assert pod_exit(job) == "1"


# ---------------------------------------------------------------------------------------------
# paths and quoting


def test_job_dir_with_spaces_quotes_and_shell_syntax(tmp_path: Path) -> None:
    job = tmp_path / "job dir 'single' \"double\" $(touch pwned) `touch pwned2` ;&|*"
    plan = plan_for(
        job,
        init("setup", sh("echo setup")),
        sidecar("proxy", sh("exec sleep 30")),
        main("app", sh(COUNTER + '; [ "$n" -ge 2 ]', "count"), "OnFailure"),
    )
    result = run_pod(plan)
    assert result.returncode == 0, result.stdout + result.stderr
    assert texts(job, "setup", "stdout") == ["setup"]
    assert texts(job, "app", "stdout") == ["run 2"] and texts(job, "app", "stdout", "log.prev") == ["run 1"]
    assert state(job, "app", "restarts") == "1"
    assert state(job, "proxy", "exit") == "0"
    assert pod_exit(job) == "0"
    assert not list(tmp_path.rglob("pwned*"))


def test_a_second_attempt_keeps_the_first_as_last_state(tmp_path: Path) -> None:
    job = tmp_path / "job"
    plan = plan_for(job, main("app", sh(COUNTER + '; [ "$n" -ge 2 ]', "count"), "Never"))
    assert run_pod(plan).returncode == 1
    first_started = state(job, "app", "started")
    assert run_pod(plan).returncode == 0  # e.g. the job was requeued
    assert state(job, "app", "restarts") == "1"
    assert (state(job, "app", "last") or "").split()[:2] == ["1", first_started]
    assert texts(job, "app", "stdout", "log.prev") == ["run 1"]
    assert texts(job, "app", "stdout") == ["run 2"]
    assert pod_exit(job) == "0"


ARGV_DUMP = (
    "import os, sys\n"
    "open(sys.argv[1], 'wb').write(b'\\0'.join(os.fsencode(a) for a in sys.argv[2:]))\n"
    "open(sys.argv[1] + '.env', 'wb').write(os.environb.get(b'PROP_VALUE', b'<unset>'))\n"
)
INJECTIONS = [
    "$(touch CANARY)", "`touch CANARY`", "'; touch CANARY; '", '"; touch CANARY; "', "\ntouch CANARY\n",
    "${IFS}touch${IFS}CANARY", "$(touch CANARY)'\"", "\\", "'", '"', "*", "-c", "--", "a=b", "",
    "%s%n", "é ü 中文 🚀", "line1\nline2\r\n",
]
WORDS = st.lists(
    st.one_of(
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24),
        st.sampled_from(INJECTIONS),
    ),
    max_size=6,
)
DIR_NAMES = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00/"), min_size=1, max_size=16),
    st.sampled_from(["$(touch CANARY)", "a b 'c' \"d\"", "`touch CANARY`", "x;touch CANARY"]),
).filter(lambda name: name not in (".", "..") and len(name.encode()) < 100)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=WORDS, value=WORDS.map("".join), dir_name=DIR_NAMES)
def test_any_argv_and_env_value_reach_the_process_byte_for_byte(
    words: list[str], value: str, dir_name: str
) -> None:
    with tempfile.TemporaryDirectory() as root:
        job = Path(root) / dir_name
        plan = plan_for(
            job,
            init("first", (sys.executable, "-c", ARGV_DUMP, "init.out", *words)),
            main("app", (sys.executable, "-c", ARGV_DUMP, "main.out", *words)),
            runner_env=(("PROP_VALUE", value),),
        )
        result = run_pod(plan)
        assert result.returncode == 0, result.stdout + result.stderr
        expected = b"\0".join(word.encode() for word in words)
        assert (job / "init.out").read_bytes() == expected
        assert (job / "main.out").read_bytes() == expected
        assert (job / "main.out.env").read_bytes() == value.encode()
        assert not list(Path(root).rglob("CANARY"))


# ---------------------------------------------------------------------------------------------
# plans the runner refuses


def test_render_refuses_an_empty_job_dir() -> None:
    with pytest.raises(PodSpecError):
        render_runner(RunPlan(job_dir="", containers=(main("a", ("true",)),)))


@pytest.mark.parametrize(
    "containers, options",
    [
        ((main("Bad_Name", ("true",)),), {}),
        ((main("../x", ("true",)),), {}),
        ((main("", ("true",)),), {}),
        ((main("a", ("true",)), main("a", ("true",))), {}),
        ((main("a", ()),), {}),
        ((main("a", ("tr\0ue",)),), {}),
        ((init("a", ("true",), "Always"),), {}),
        ((ContainerRun("a", "main", ("true",), "Always", sidecar=True),), {}),
        ((main("a", ("true",)),), {"runner_env": (("BAD-KEY", "x"),)}),
        ((main("a", ("true",)),), {"runner_env": (("$(x)", "x"),)}),
        ((main("a", ("true",)),), {"grace_seconds": -1}),
        ((main("a", ("true",)),), {"backoff_initial_seconds": 0}),
        ((main("a", ("true",)),), {"backoff_max_seconds": float("nan")}),
    ],
)
def test_render_refuses_plans_it_cannot_run_safely(
    tmp_path: Path, containers: tuple[ContainerRun, ...], options: dict[str, object]
) -> None:
    with pytest.raises(PodSpecError):
        render_runner(plan_for(tmp_path, *containers, **options))


def test_empty_pod_exits_zero(tmp_path: Path) -> None:
    job = tmp_path / "job"
    assert run_pod(plan_for(job)).returncode == 0
    assert pod_exit(job) == "0"


# ---------------------------------------------------------------------------------------------
# the image step (the kubelet's pull before a start)


def _wait_for(path: Path, pattern: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            text = path.read_text()
            if re.search(pattern, text):
                return text
        time.sleep(0.05)
    raise AssertionError(f"{path} never matched {pattern!r}: {text!r}")


def test_image_step_waits_container_creating_then_runs(tmp_path: Path, start_pod: Callable[[RunPlan], subprocess.Popen[str]]) -> None:
    gate = tmp_path / "gate"
    pull = sh('while [ ! -e "$1" ]; do sleep 0.05; done; echo pulled', str(gate))
    plan = plan_for(tmp_path / "job", main("c", sh("echo running"), image_argv=pull, image="registry.example/app:1"))
    proc = start_pod(plan)
    state = tmp_path / "job" / "c" / "c"
    assert _wait_for(state / "waiting", "^ContainerCreating pulling image registry.example/app:1$")
    assert not (state / "started").exists()  # never running while the image is fetched
    gate.touch()
    proc.wait(RUN_TIMEOUT)
    assert (state / "exit").read_text().strip() == "0"
    assert "running" in (state / "log").read_text() and "pulled" not in (state / "log").read_text()


def test_image_step_failure_waits_err_image_pull_then_back_off_and_retries(
    tmp_path: Path, start_pod: Callable[[RunPlan], subprocess.Popen[str]]
) -> None:
    count = tmp_path / "count"
    # fails twice with the registry's message, then succeeds
    pull = sh('echo x >> "$1"; [ "$(wc -l < "$1")" -ge 3 ] && exit 0; echo "unauthorized: authentication required" >&2; exit 1',
              str(count))
    plan = plan_for(tmp_path / "job", main("c", sh("echo ran"), image_argv=pull, image="r.example/app:1"),
                    backoff_initial_seconds=0.5, backoff_max_seconds=1)
    proc = start_pod(plan)
    state = tmp_path / "job" / "c" / "c"
    text = _wait_for(state / "waiting", "^ErrImagePull ")
    assert text.strip() == "ErrImagePull pulling image r.example/app:1: unauthorized: authentication required"
    assert _wait_for(state / "waiting", r"^ImagePullBackOff Back-off 0\.5s pulling image r\.example/app:1: unauthorized")
    assert not (state / "started").exists()
    proc.wait(RUN_TIMEOUT)
    assert count.read_text().count("x") == 3
    assert (state / "exit").read_text().strip() == "0"


def test_a_stop_during_the_image_step_ends_the_container_without_running_it(
    tmp_path: Path, start_pod: Callable[[RunPlan], subprocess.Popen[str]]
) -> None:
    plan = plan_for(tmp_path / "job", main("c", sh("echo ran"), image_argv=sh("sleep 30"), image="r.example/app:1"))
    proc = start_pod(plan)
    state = tmp_path / "job" / "c" / "c"
    _wait_for(state / "waiting", "^ContainerCreating ")
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(RUN_TIMEOUT)
    assert (state / "exit").read_text().strip() != "0"
    assert not (state / "log").exists() or "ran" not in (state / "log").read_text()
