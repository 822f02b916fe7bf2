"""The runner's log stamping (perl, and the bash fallback when perl is not on the job's PATH),
tested by RUNNING the rendered runner with containers that write to stdout and stderr."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest

from interlink_plugins.core.logs.reader import LogOptions, read_log
from tests.unit.core.podrunner.test_render import (
    main,
    parse_ts,
    plan_for,
    read_pid,
    run_pod,
    sh,
    start_pod,
    wait_until,
)

__all__ = ["start_pod"]  # the fixture, imported for the tests below

HEADER = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}000Z) (stdout|stderr) ([FP]) ")
MARKER = b"[pod-runner] log truncated: MaxContainerLogBytes"
# every byte but NUL and newline, and a line of invalid UTF-8
ODD_BYTES = bytes(b for b in range(1, 256) if b != 10) + b"\n\xff\xfe\xc3(\r\n  \t \\n %s $x\n"


@pytest.fixture(params=["perl", "bash"])
def stamper(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The job's PATH: the system's, or the same commands without perl (the bash fallback)."""
    if request.param == "perl":
        return "/usr/bin:/bin"
    bin_dir = tmp_path_factory.mktemp("noperl")
    for entry in Path("/usr/bin").iterdir():
        if not entry.name.startswith("perl"):
            (bin_dir / entry.name).symlink_to(entry)
    return str(bin_dir)


def records(path: Path) -> list[tuple[bytes, bytes, bytes, bytes]]:
    """(timestamp, stream, flag, text) of every line; fails on a line that is not CRI."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    out = []
    for line in data[:-1].split(b"\n"):
        match = HEADER.match(line)
        assert match, f"not a CRI line: {line[:80]!r}"
        out.append((match[1], match[2], match[3], line[match.end() :]))
    return out


def write_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_arbitrary_bytes_streams_and_a_partial_last_line(tmp_path: Path, stamper: str) -> None:
    out = write_file(tmp_path, "out", b"one\n\n" + ODD_BYTES + b"a\0b\nno newline at the end")
    err = write_file(tmp_path, "err", b"err one\nerr tail")
    job = tmp_path / "job"
    script = 'cat -- "$1"; cat -- "$2" >&2'
    result = run_pod(plan_for(job, main("app", sh(script, str(out), str(err))), runner_path=stamper))
    assert result.returncode == 0, result.stderr
    recs = records(job / "c" / "app" / "log")
    assert {flag for _, _, flag, _ in recs} == {b"F"}
    stdout = [text for _, stream, _, text in recs if stream == b"stdout"]
    nul = b"a\0b" if stamper.startswith("/usr/bin") else b"ab"  # bash's read drops NUL bytes
    assert stdout == [b"one", b"", *ODD_BYTES.split(b"\n")[:-1], nul, b"no newline at the end"]
    assert [text for _, stream, _, text in recs if stream == b"stderr"] == [b"err one", b"err tail"]
    for stream in (b"stdout", b"stderr"):
        stamps = [parse_ts(ts.decode()) for ts, s, _, _ in recs if s == stream]
        assert stamps == sorted(stamps)
    # what the plugin serves: the container's bytes, a newline closing the partial last line
    served = read_log(job / "c" / "app" / "log", LogOptions())
    assert served.count(b"\n") == len(recs)


def test_a_long_line_is_kept_whole(tmp_path: Path, stamper: str) -> None:
    """perl writes a line over 1 MiB as CRI partial records of 1 MiB (bash as one F line); the plugin
    serves the line whole either way."""
    line = bytes(range(32, 127)) * 30_000  # 2.85 MB
    src = write_file(tmp_path, "long", line + b"\nshort\n" + line)  # the last one without newline
    job = tmp_path / "job"
    result = run_pod(plan_for(job, main("app", sh('cat -- "$1"', str(src))), runner_path=stamper))
    assert result.returncode == 0, result.stderr
    log = job / "c" / "app" / "log"
    recs = records(log)
    if stamper.startswith("/usr/bin"):
        rest = len(line) - (2 << 20)
        assert [(flag, len(text)) for _, _, flag, text in recs] == [
            (b"P", 1 << 20), (b"P", 1 << 20), (b"F", rest), (b"F", 5), (b"P", 1 << 20), (b"P", 1 << 20), (b"F", rest),
        ]
    else:
        assert [flag for _, _, flag, _ in recs] == [b"F"] * 3
    assert read_log(log, LogOptions()) == line + b"\nshort\n" + line + b"\n"


def test_the_cap_stops_the_log_with_one_marker_and_never_blocks_the_container(tmp_path: Path, stamper: str) -> None:
    cap = 64 << 10
    job = tmp_path / "job"
    script = (
        "i=0; while [ $i -lt 20000 ]; do echo \"out line $i\"; echo \"err line $i\" >&2; i=$((i + 1)); done;"
        " echo finished > \"$1\""
    )
    done = tmp_path / "done"
    plan = plan_for(job, main("app", sh(script, str(done))), runner_path=stamper, log_max_bytes=cap)
    result = run_pod(plan, timeout=120)
    assert result.returncode == 0, result.stderr
    assert done.read_text() == "finished\n"  # the container ran to its end: its output was drained
    log = job / "c" / "app" / "log"
    recs = records(log)
    markers = [rec for rec in recs if rec[3].startswith(MARKER)]
    if stamper.startswith("/usr/bin"):
        assert cap - 300 < log.stat().st_size <= cap
        assert markers == [recs[-1]]
    else:  # each stream counts its own bytes: at most the cap in all
        assert log.stat().st_size <= cap + 300
        assert len(markers) == 2
    assert f"({cap} bytes)".encode() in markers[0][3]
    for stream, word in ((b"stdout", "out"), (b"stderr", "err")):  # each stream: a prefix of its lines
        texts = [text for _, s, _, text in recs if s == stream and not text.startswith(MARKER)]
        if texts:
            assert texts[:-1] == [f"{word} line {i}".encode() for i in range(len(texts) - 1)]
            assert f"{word} line {len(texts) - 1}".encode().startswith(texts[-1])  # perl may cut the last line
    assert len(recs) > 1000


def test_no_cap_at_zero(tmp_path: Path) -> None:
    job = tmp_path / "job"
    script = "i=0; while [ $i -lt 3000 ]; do echo \"a line long enough to pass four kilobytes $i\"; i=$((i + 1)); done"
    result = run_pod(plan_for(job, main("app", sh(script)), log_max_bytes=0))
    assert result.returncode == 0, result.stderr
    recs = records(job / "c" / "app" / "log")
    assert len(recs) == 3000 and not any(MARKER in text for *_, text in recs)


def test_lines_reach_the_file_at_once_and_none_is_lost_on_sigterm(
    tmp_path: Path, stamper: str, start_pod: Callable[..., Popen[str]]
) -> None:
    job = tmp_path / "job"
    pid_file = tmp_path / "pid"
    script = (
        "trap 'echo got TERM; echo bye >&2; exit 3' TERM; echo $$ > \"$1\"; echo first;"
        " while :; do sleep 0.05; done"
    )
    proc = start_pod(plan_for(job, main("app", sh(script, str(pid_file))), runner_path=stamper, grace_seconds=5))
    read_pid(pid_file)
    log = job / "c" / "app" / "log"
    # Follow sees a line while the container still runs (no buffering in the stamper)
    wait_until(lambda: log.exists() and b" stdout F first\n" in log.read_bytes())
    os.killpg(proc.pid, signal.SIGTERM)  # like SLURM: the whole job at once, the log readers too
    proc.communicate(timeout=30)
    texts = [(s, text) for _, s, _, text in records(log)]
    assert texts[0] == (b"stdout", b"first")
    assert (b"stdout", b"got TERM") in texts and (b"stderr", b"bye") in texts  # written after the SIGTERM
