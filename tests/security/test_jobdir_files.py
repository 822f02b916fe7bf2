"""The plugin never follows a path the job controls (runner state files, logs, layout markers, cleanup).

Every test runs a REAL SLURM job as an unprivileged uid (root plugin, `runAsUser`, namespace policy
`Users`), runtime none: the job owns its job dir and plants there what a hostile pod would. The
plugin under attack is the real plugin process, driven over HTTP.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import PluginProcess, exit_codes, states
from tests.podfactory import container, log_request, pod_body
from tests.security.conftest import open_path_to

pytestmark = pytest.mark.e2e

NAMESPACE = "team-sec"
USER, UID = "ilsec-job", 4311


@pytest.fixture
def attacker(job_user: Callable[[str, int], int]) -> int:
    return job_user(USER, UID)


@pytest.fixture
def root_plugin(plugin_factory: Callable[..., PluginProcess], attacker: int) -> Iterator[Callable[..., PluginProcess]]:
    """A plugin running as root whose namespace NAMESPACE may run jobs as the attacker's uid. Its data root
    is outside /tmp/pytest-of-root, which every pytest session on this machine makes 0700 again."""
    base = Path(tempfile.mkdtemp(prefix="il-sec-jobdir-", dir="/tmp"))
    open_path_to(base)
    made: list[PluginProcess] = []

    def make(**config: Any) -> PluginProcess:
        workdir = base / f"plugin{len(made)}"
        workdir.mkdir(mode=0o711)
        made.append(plugin_factory(workdir=workdir, NamespacePolicy={NAMESPACE: {"Users": [USER]}}, **config))
        return made[-1]

    yield make
    for plugin in made:
        plugin.stop()
    subprocess.run(["scancel", "-u", USER], capture_output=True, timeout=30)
    subprocess.run(["rm", "-rf", "--", str(base)], capture_output=True, timeout=120)  # deep trees: not rmtree


@pytest.fixture
def canary(tmp_path: Path) -> tuple[Path, str]:
    """A root-only file (0600 root) whose content must never come out of the plugin."""
    text = f"CANARY-{secrets.token_hex(8)}"
    path = tmp_path / "root-only"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path, text


def hostile_pod(name: str, script: str, uid: int, **extra: Any) -> dict[str, Any]:
    """A pod whose container runs `script` as `uid`; $JOB is its job dir, $C its container's state dir."""
    return pod_body(name, [container("c", ["sh", "-c", script])], namespace=NAMESPACE,
                    securityContext={"runAsUser": uid}, **extra)


def job_dir(plugin: PluginProcess, body: dict[str, Any]) -> Path:
    return Path(plugin.config["DataRootFolder"]) / f"{NAMESPACE}-{body['pod']['metadata']['uid']}"


def with_paths(plugin: PluginProcess, body: dict[str, Any], script: str) -> dict[str, Any]:
    """The pod's script, with JOB and C set to its own job dir and container state dir."""
    job = job_dir(plugin, body)
    prefix = f"JOB='{job}'; C='{job}/c/c'; "
    body["pod"]["spec"]["containers"][0]["command"][2] = prefix + script
    return body


def launch(plugin: PluginProcess, name: str, script: str, uid: int) -> dict[str, Any]:
    """Create the hostile pod and wait until its job has planted what it plants (it touches $C/.planted)."""
    body = with_paths(plugin, hostile_pod(name, "", uid), script + "; touch \"$C/.planted\"; sleep 600")
    plugin.create(body)
    planted = job_dir(plugin, body) / "c" / "c" / ".planted"
    deadline = time.monotonic() + 90
    while not planted.exists():
        assert time.monotonic() < deadline, f"the job never planted its files: {plugin.status(body)}"
        time.sleep(0.3)
    return body


def peak_rss_kib(plugin: PluginProcess) -> int:
    assert plugin.proc is not None
    for line in Path(f"/proc/{plugin.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def restart(plugin: PluginProcess) -> None:
    plugin.kill(signal.SIGTERM)
    plugin.start()


def test_symlinked_state_files_and_logs_never_show_a_root_only_file(
    root_plugin: Callable[..., PluginProcess], attacker: int, canary: tuple[Path, str]
) -> None:
    """Attack: the job replaces its `reason`, `log` and `log.prev` with symlinks to a 0600 root file and
    writes `exit`; a root plugin reading them by path returned the file through /status and /getLogs."""
    secret_path, secret = canary
    plugin = root_plugin()
    body = launch(plugin, "symlinks", f"ln -sf '{secret_path}' \"$C/reason\"; rm -f \"$C/log\"; "
                  f"ln -s '{secret_path}' \"$C/log\"; ln -s '{secret_path}' \"$C/log.prev\"; "
                  "echo 1 > \"$C/exit.new\"; mv \"$C/exit.new\" \"$C/exit\"", attacker)
    status = plugin.wait_status(body, lambda s: "terminated" in states(s)["c"], timeout=30)
    assert exit_codes(status) == {"c": 1}
    assert secret not in str(status)
    message = states(status)["c"]["terminated"]["message"]
    assert "reason" in message and "symlink" in message, message  # the refusal is reported
    for opts in ({}, {"Previous": True}, {"Tail": 5}, {"Follow": True}):
        answer = plugin.logs(body, "c", **opts)
        assert secret not in answer.text, opts
        assert 400 <= answer.status_code < 500 and "symlink" in answer.text, (opts, answer.status_code, answer.text)
    assert secret not in plugin.log_path.read_text()


def test_a_fifo_exit_file_never_stalls_the_poll_of_other_pods(
    root_plugin: Callable[..., PluginProcess], attacker: int
) -> None:
    """Attack: the job replaces its `exit` with a FIFO; reading it blocked the poller (every pod's status
    frozen until a restart). Another pod must still run to its end and the FIFO be reported."""
    plugin = root_plugin()
    hostile = launch(plugin, "fifo-exit", "rm -f \"$C/exit\"; mkfifo \"$C/exit\"", attacker)
    time.sleep(3)  # a few polls meet the FIFO
    bystander = pod_body("bystander", [container("c", ["sh", "-c", "echo fine"])])
    plugin.create(bystander)
    assert exit_codes(plugin.wait_done(bystander, timeout=60)) == {"c": 0}
    assert plugin.logs(bystander, "c").text == "fine\n"
    reported = plugin.wait_status(hostile, lambda s: "FIFO" in str(s), timeout=20)
    waiting = states(reported)["c"]["waiting"]  # its state is unknown: never shown running
    assert waiting["reason"] == "RunnerFilesRefused" and "exit (a FIFO)" in waiting["message"], waiting
    assert "FIFO" in plugin.log_path.read_text()


def test_a_fifo_log_followed_never_freezes_the_event_loop(
    root_plugin: Callable[..., PluginProcess], attacker: int
) -> None:
    """Attack: the job replaces its `log` with a FIFO and the log is followed; opening it on the event loop
    froze the plugin (/healthz and the ping timed out). Both must answer within a second meanwhile."""
    plugin = root_plugin()
    body = launch(plugin, "fifo-log", "rm -f \"$C/log\"; mkfifo \"$C/log\"", attacker)
    answers: list[httpx.Response | Exception] = []

    def follow() -> None:
        try:
            with httpx.Client(base_url=plugin.client.base_url, timeout=15) as client:
                answers.append(client.request("GET", "/getLogs", json=log_request(body, "c", Follow=True)))
        except Exception as exc:
            answers.append(exc)

    threads = [threading.Thread(target=follow, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    for _ in range(10):
        started = time.monotonic()
        assert plugin.client.get("/healthz", timeout=1).status_code == 200
        assert plugin.client.request("GET", "/status", json=[], timeout=1).json()["status"] == "ok"
        assert time.monotonic() - started < 1.5
        time.sleep(0.2)
    for thread in threads:
        thread.join(timeout=20)
    for answer in answers:
        assert isinstance(answer, httpx.Response), answer
        assert 400 <= answer.status_code < 500 and "FIFO" in answer.text, answer.text


def test_a_huge_sparse_reason_costs_no_memory(root_plugin: Callable[..., PluginProcess], attacker: int) -> None:
    """Attack: the job writes `exit` and a 300 MB sparse `reason`; the plugin read it whole (616 MiB RSS)."""
    plugin = root_plugin()
    before = peak_rss_kib(plugin)
    body = launch(plugin, "sparse", "echo 1 > \"$C/exit.new\"; truncate -s 300M \"$C/reason\"; "
                  "mv \"$C/exit.new\" \"$C/exit\"", attacker)
    status = plugin.wait_status(body, lambda s: "terminated" in states(s)["c"], timeout=30)
    assert exit_codes(status) == {"c": 1}
    assert len(str(status)) < 64_000
    for _ in range(3):
        plugin.status(body)
        time.sleep(1.2)
    grown = (peak_rss_kib(plugin) - before) / 1024
    assert grown < 48, f"a 300 MB reason file raised the plugin's peak RSS by {grown:.0f} MiB"


def test_a_huge_tail_is_served_in_bounded_memory(root_plugin: Callable[..., PluginProcess], attacker: int) -> None:
    """Attack: `Tail=10^9` on a big log; the plugin kept every line in memory (993 MiB for 385 MB)."""
    plugin = root_plugin()
    line = b"2026-01-01T00:00:00.000000000Z stdout F " + b"x" * 60 + b"\n"
    count = 2_500_000  # 250 MB of log
    body = launch(plugin, "tail", f"yes '{line[:-1].decode()}' | head -n {count} > \"$C/log.new\"; "
                  "mv \"$C/log.new\" \"$C/log\"", attacker)
    before = peak_rss_kib(plugin)
    size = lines = 0
    with plugin.client.stream("GET", "/getLogs", json=log_request(body, "c", Tail=10**9), timeout=300) as answer:
        assert answer.status_code == 200
        for chunk in answer.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
    assert lines == count and size == count * 61
    tail = plugin.logs(body, "c", Tail=2).content
    assert tail == b"x" * 60 + b"\n" + b"x" * 60 + b"\n"
    grown = (peak_rss_kib(plugin) - before) / 1024
    assert grown < 64, f"Tail=10^9 on a 250 MB log raised the plugin's peak RSS by {grown:.0f} MiB"


def test_planted_go_markers_never_turn_our_job_dir_into_a_go_dir(
    root_plugin: Callable[..., PluginProcess], attacker: int, tmp_path: Path
) -> None:
    """Attack: the job deletes pod-runner.sh and plants the Go plugin's marker files, a `run-c.out` and
    `.il-logs/` symlinks to root-owned files; after a restart the root plugin took the dir for a Go-plugin
    dir and appended the job's text to one target and truncated the other (slurm/migrate.py sync)."""
    append_target, trunc_target = tmp_path / "root-append", tmp_path / "root-trunc"
    for target in (append_target, trunc_target):
        target.write_text("root-owned content\n")
        target.chmod(0o644)
    plugin = root_plugin()
    body = launch(plugin, "go-markers", "cd \"$JOB\" && rm -f pod-runner.sh && echo 1 > JobID.jid && "
                  "echo x > PodUID.uid && echo ns > PodNamespace.ns && echo 'ATTACKER TEXT' > run-c.out && "
                  f"mkdir -p .il-logs && ln -s '{append_target}' .il-logs/c.log && "
                  f"ln -s '{trunc_target}' .il-logs/c.offset.tmp", attacker)
    restart(plugin)
    plugin.wait_status(body, lambda s: "running" in states(s)["c"], timeout=30)
    for _ in range(4):
        plugin.logs(body, "c")
        plugin.status(body)
        time.sleep(1.2)
    assert append_target.read_text() == "root-owned content\n"
    assert trunc_target.read_text() == "root-owned content\n"
    assert "running" in states(plugin.status(body) or {})["c"]  # still our layout: our runner's files


def test_symlinked_subdirs_survive_delete_and_retention(
    root_plugin: Callable[..., PluginProcess], attacker: int, tmp_path: Path
) -> None:
    """Attack: before its job dir is removed, the job replaces subdirs with symlinks to a root-owned dir,
    nests a 1500-deep tree (a recursive removal ran out of stack: the job dir stayed and every poll failed
    at the delete) and locks a subdir (mode 000); removing the job dir must remove its symlinks, never what
    they point to, and still remove everything the job made (on delete and on retention)."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("keep me\n")
    plant = (
        f"rm -rf \"$JOB/volumes\"; ln -s '{precious}' \"$JOB/volumes\"; ln -s '{precious}' \"$JOB/c/link\"; "
        "mkdir -p \"$JOB/locked/inner\" && touch \"$JOB/locked/inner/f\" && chmod 000 \"$JOB/locked/inner\" \"$JOB/locked\"; "
        "cd \"$JOB\" && i=0; while [ $i -lt 1500 ]; do mkdir d && cd d || exit 1; i=$((i+1)); done; "
        f"ln -s '{precious}' up"
    )
    plugin = root_plugin()
    deleted = launch(plugin, "delete-me", plant, attacker)
    assert plugin.delete(deleted).status_code == 200
    gone = job_dir(plugin, deleted)
    deadline = time.monotonic() + 60
    while gone.exists():
        assert time.monotonic() < deadline, f"job dir never removed: {sorted(p.name for p in gone.iterdir())}"
        time.sleep(0.5)
    assert (precious / "keep").read_text() == "keep me\n"

    expiring = with_paths(plugin, hostile_pod("expire-me", "", attacker), plant + "; exit 0")
    plugin.create(expiring)
    plugin.wait_done(expiring, timeout=60)
    plugin.kill(signal.SIGTERM)
    plugin.config["RetentionDays"] = 1e-5  # under a second: swept at the next start
    plugin.start()
    expired = job_dir(plugin, expiring)
    deadline = time.monotonic() + 30
    while expired.exists():
        assert time.monotonic() < deadline, "job dir never expired"
        time.sleep(0.5)
    assert (precious / "keep").read_text() == "keep me\n"
    assert sorted(p.name for p in precious.iterdir()) == ["keep"]


def test_a_deep_tree_in_a_job_dir_never_stops_the_poller(
    root_plugin: Callable[..., PluginProcess], attacker: int
) -> None:
    """Attack: the job nests 1500 directories in its job dir; the data-root usage walk (metrics) recursed
    into it, raised RecursionError out of the poll loop and stopped every pod's status for good."""
    plugin = root_plugin()
    launch(plugin, "deep-tree", "cd \"$JOB\" && i=0; while [ $i -lt 1500 ]; do mkdir d && cd d || exit 1; "
           "i=$((i+1)); done", attacker)
    restart(plugin)  # the usage walk runs at start, then every 5 minutes
    bystander = pod_body("after-walk", [container("c", ["sh", "-c", "echo still-polled"])])
    plugin.create(bystander)
    assert exit_codes(plugin.wait_done(bystander, timeout=60)) == {"c": 0}
    time.sleep(2)
    usage = plugin.client.get("/metrics").text
    assert "data_root_used_bytes" in usage and "poll failed" not in plugin.log_path.read_text()
