"""Tests for core/logs/reader.py: CRI parsing, read_log selection, follow_log streaming, bounded memory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlink_plugins.core.logs import reader as logs
from interlink_plugins.core.logs.reader import CriRecord, LogOptions, follow_log, parse_cri_line, read_log

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


def ts(sec: int) -> str:
    """Timestamp `sec` seconds after T0, with nanoseconds (the runner's format)."""
    return (T0 + timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%S") + ".000000001Z"


def rec(sec: int, text: bytes | str, stream: str = "stdout", tag: str = "F") -> bytes:
    body = text.encode() if isinstance(text, str) else text
    return f"{ts(sec)} {stream} {tag} ".encode() + body + b"\n"


def write(path: Path, *records: bytes) -> Path:
    path.write_bytes(b"".join(records))
    return path


@pytest.fixture
def five(tmp_path: Path) -> Path:
    return write(tmp_path / "log", *(rec(i, f"line{i}") for i in range(5)))


# --- parse_cri_line -------------------------------------------------------------------------


def test_parse_full_record() -> None:
    r = parse_cri_line(b"2024-05-01T10:00:00.123456789Z stdout F hello world\n")
    assert r == CriRecord(
        time=datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC),
        timestamp="2024-05-01T10:00:00.123456789Z",
        stream="stdout",
        partial=False,
        text=b"hello world",
    )


def test_parse_partial_stderr_and_empty_text() -> None:
    r = parse_cri_line(b"2024-05-01T10:00:00Z stderr P \n")
    assert r is not None
    assert (r.stream, r.partial, r.text, r.time) == ("stderr", True, b"", T0)
    r = parse_cri_line(b"2024-05-01T10:00:00Z stdout F")  # no space, no text
    assert r is not None
    assert (r.stream, r.partial, r.text) == ("stdout", False, b"")


def test_parse_offset_and_tag_extension() -> None:
    r = parse_cri_line(b"2024-05-01T12:00:00.5+02:00 stdout F:x y\r")
    assert r is not None
    assert r.time == T0 + timedelta(microseconds=500000)
    assert r.timestamp == "2024-05-01T12:00:00.5+02:00"
    assert r.text == b"y\r"


@pytest.mark.parametrize(
    "line",
    [
        b"just some text",
        b"2024-05-01T10:00:00Z stdin F text",
        b"2024-05-01T10:00:00Z stdout X text",
        b"2024-13-01T10:00:00Z stdout F text",
        b"2024-05-01 10:00:00Z stdout F text",
        b"yesterday stdout F text",
        b"\xff\xfe\x00 binary",
    ],
)
def test_parse_malformed_is_raw_text(line: bytes) -> None:
    assert parse_cri_line(line + b"\n") == CriRecord(None, "", "", False, line)


def test_parse_empty_line() -> None:
    assert parse_cri_line(b"") is None
    assert parse_cri_line(b"\n") is None


# --- read_log: selection ----------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert read_log(tmp_path / "nope", LogOptions()) == b""
    assert read_log(tmp_path / "nope", LogOptions(tail=3, limit_bytes=5)) == b""


def test_all_lines(five: Path) -> None:
    assert read_log(five, LogOptions()) == b"line0\nline1\nline2\nline3\nline4\n"


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (0, b""),
        (1, b"line4\n"),
        (3, b"line2\nline3\nline4\n"),
        (5, b"line0\nline1\nline2\nline3\nline4\n"),
        (100, b"line0\nline1\nline2\nline3\nline4\n"),
        (-1, b"line0\nline1\nline2\nline3\nline4\n"),
    ],
)
def test_tail(five: Path, tail: int, expected: bytes) -> None:
    assert read_log(five, LogOptions(tail=tail)) == expected


def test_limit_bytes_cuts(five: Path) -> None:
    assert read_log(five, LogOptions(limit_bytes=8)) == b"line0\nli"
    assert read_log(five, LogOptions(limit_bytes=6)) == b"line0\n"
    assert read_log(five, LogOptions(limit_bytes=10_000)) == b"line0\nline1\nline2\nline3\nline4\n"
    assert read_log(five, LogOptions(limit_bytes=0)) == b""


def test_limit_bytes_applies_after_tail(five: Path) -> None:
    assert read_log(five, LogOptions(tail=2, limit_bytes=8)) == b"line3\nli"


def test_limit_bytes_counts_timestamps(five: Path) -> None:
    out = read_log(five, LogOptions(timestamps=True, limit_bytes=35))
    assert out == f"{ts(0)} line0\n".encode()[:35]
    assert len(out) == 35


def test_timestamps(five: Path) -> None:
    out = read_log(five, LogOptions(timestamps=True, tail=2))
    assert out == f"{ts(3)} line3\n{ts(4)} line4\n".encode()


def test_timestamps_keep_original_form(tmp_path: Path) -> None:
    p = write(tmp_path / "log", b"2024-05-01T12:00:00.123456789+02:00 stdout F a\n")
    assert read_log(p, LogOptions(timestamps=True)) == b"2024-05-01T12:00:00.123456789+02:00 a\n"


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (T0 - timedelta(days=1), b"line0\nline1\nline2\nline3\nline4\n"),
        (T0 + timedelta(seconds=2), b"line2\nline3\nline4\n"),  # the record at 2 s + 1 ns is kept
        (T0 + timedelta(seconds=2, microseconds=1), b"line3\nline4\n"),
        (T0 + timedelta(seconds=4, microseconds=500), b""),
        (T0 + timedelta(days=1), b""),
    ],
)
def test_since(five: Path, since: datetime, expected: bytes) -> None:
    assert read_log(five, LogOptions(since=since)) == expected


def test_since_other_timezone_and_naive(five: Path) -> None:
    cet = timezone(timedelta(hours=2))
    assert read_log(five, LogOptions(since=datetime(2024, 5, 1, 12, 0, 3, tzinfo=cet))) == b"line3\nline4\n"
    assert read_log(five, LogOptions(since=datetime(2024, 5, 1, 10, 0, 3))) == b"line3\nline4\n"


def test_since_then_tail_then_limit(five: Path) -> None:
    opts = LogOptions(since=T0 + timedelta(seconds=1), tail=2, limit_bytes=3)
    assert read_log(five, opts) == b"lin"
    assert read_log(five, LogOptions(since=T0 + timedelta(seconds=3), tail=5)) == b"line3\nline4\n"


def test_since_with_out_of_order_clock(tmp_path: Path) -> None:
    p = write(tmp_path / "log", rec(5, "late"), rec(1, "early"), rec(6, "later"))
    assert read_log(p, LogOptions(since=T0 + timedelta(seconds=3))) == b"late\nlater\n"


# --- read_log: record assembly ---------------------------------------------------------------


def test_partial_merge_interleaved(tmp_path: Path) -> None:
    p = write(
        tmp_path / "log",
        rec(1, "out-a ", "stdout", "P"),
        rec(2, "err-a ", "stderr", "P"),
        rec(3, "out-b ", "stdout", "P"),
        rec(4, "err-b", "stderr", "F"),
        rec(5, "out-c", "stdout", "F"),
        rec(6, "next", "stdout", "F"),
    )
    assert read_log(p, LogOptions()) == b"err-a err-b\nout-a out-b out-c\nnext\n"
    stamped = read_log(p, LogOptions(timestamps=True))
    assert stamped == f"{ts(2)} err-a err-b\n{ts(1)} out-a out-b out-c\n{ts(6)} next\n".encode()
    assert read_log(p, LogOptions(tail=1)) == b"next\n"
    assert read_log(p, LogOptions(tail=2)) == b"out-a out-b out-c\nnext\n"


def test_since_uses_first_record_of_line(tmp_path: Path) -> None:
    p = write(tmp_path / "log", rec(1, "a", tag="P"), rec(5, "b"), rec(6, "c"))
    assert read_log(p, LogOptions(since=T0 + timedelta(seconds=3))) == b"c\n"
    assert read_log(p, LogOptions(since=T0 + timedelta(seconds=1))) == b"ab\nc\n"


def test_unfinished_partial_at_eof_is_served(tmp_path: Path) -> None:
    p = write(tmp_path / "log", rec(1, "x", tag="P"), rec(2, "done", "stderr"), rec(3, "y", tag="P"))
    assert read_log(p, LogOptions()) == b"done\nxy\n"


def test_last_line_without_newline(tmp_path: Path) -> None:
    p = write(tmp_path / "log", rec(1, "a"), rec(2, "b")[:-1])
    assert read_log(p, LogOptions()) == b"a\nb\n"


def test_malformed_lines_kept(tmp_path: Path) -> None:
    p = write(tmp_path / "log", b"garbage first\n", rec(1, "a"), b"oops: no header\n", rec(5, "b"))
    assert read_log(p, LogOptions()) == b"garbage first\na\noops: no header\nb\n"
    # A malformed line takes the timestamp of the record before it (none for the first).
    stamped = read_log(p, LogOptions(timestamps=True))
    assert stamped == f"garbage first\n{ts(1)} a\n{ts(1)} oops: no header\n{ts(5)} b\n".encode()
    assert read_log(p, LogOptions(since=T0)) == b"a\noops: no header\nb\n"
    assert read_log(p, LogOptions(since=T0 + timedelta(seconds=2))) == b"b\n"


def test_malformed_line_does_not_complete_a_partial(tmp_path: Path) -> None:
    p = write(tmp_path / "log", rec(1, "a", tag="P"), b"junk\n", rec(2, "b"))
    assert read_log(p, LogOptions()) == b"junk\nab\n"


def test_empty_physical_lines_skipped(tmp_path: Path) -> None:
    p = write(tmp_path / "log", rec(1, "a"), b"\n", rec(2, ""), b"\n")
    assert read_log(p, LogOptions()) == b"a\n\n"


def test_arbitrary_bytes_pass_through(tmp_path: Path) -> None:
    texts = [b"\xff\xfe invalid utf-8", b"cr\r", b"nul\x00byte", b"  spaces  ", b"x stdout P y", b"\t"]
    p = write(tmp_path / "log", *(rec(i, t) for i, t in enumerate(texts)))
    assert read_log(p, LogOptions()) == b"".join(t + b"\n" for t in texts)


def test_long_physical_line_in_pieces(tmp_path: Path) -> None:
    big = bytes(range(256)).replace(b"\n", b"") * 40
    p = write(tmp_path / "log", rec(1, "a", tag="P"), rec(2, big), rec(3, "z"), b"junk" + big + b"\n")
    expected = b"a" + big + b"\nz\njunk" + big + b"\n"
    with patch.object(logs, "BLOCK_BYTES", 100), patch.object(logs, "PIECE_BYTES", 64):
        assert read_log(p, LogOptions()) == expected
        assert read_log(p, LogOptions(timestamps=True, tail=2)) == (
            f"{ts(3)} z\n{ts(3)} junk".encode() + big + b"\n"
        )


def test_logical_line_cap(tmp_path: Path) -> None:
    p = write(tmp_path / "log", *(rec(i, "abcd", tag="P") for i in range(5)), rec(5, "e"))
    with patch.object(logs, "MAX_LINE_BYTES", 8):
        assert read_log(p, LogOptions()) == b"abcdabcd\nabcdabcd\nabcde\n"


# --- property: any record mix, any block size, read_log == follow_log == a simple model ---------

_TEXT = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"."))
_RECORD = st.one_of(
    st.tuples(st.sampled_from(["stdout", "stderr"]), st.booleans(), _TEXT),
    st.tuples(st.just(""), st.just(False), _TEXT.map(lambda b: b"#" + b)),  # malformed
)


def _model(records: list[tuple[str, bool, bytes]]) -> bytes:
    out: list[bytes] = []
    pending: dict[str, list[bytes]] = {}
    for stream, partial, text in records:
        if not stream:
            out.append(text)
            continue
        pending.setdefault(stream, []).append(text)
        if not partial:
            out.append(b"".join(pending.pop(stream)))
    out.extend(b"".join(parts) for parts in pending.values())
    return b"".join(line + b"\n" for line in out)


@settings(max_examples=150, deadline=None)
@given(records=st.lists(_RECORD, max_size=25), block=st.sampled_from([1, 2, 7, 64, 1 << 20]))
def test_assembly_matches_model(
    tmp_path_factory: pytest.TempPathFactory, records: list[tuple[str, bool, bytes]], block: int
) -> None:
    path = tmp_path_factory.mktemp("prop") / "log"
    lines = [
        rec(i, text, stream, "P" if partial else "F") if stream else text + b"\n"
        for i, (stream, partial, text) in enumerate(records)
    ]
    write(path, *lines)
    expected = _model(records)
    with patch.object(logs, "BLOCK_BYTES", block), patch.object(logs, "PIECE_BYTES", max(block, 64)):
        assert read_log(path, LogOptions()) == expected
        assert run_follow(path, LogOptions(), lambda: True) == expected


# --- follow_log -------------------------------------------------------------------------------


def run_follow(
    path: Path,
    opts: LogOptions,
    finished: Callable[[], bool],
    *,
    poll: float = 0.01,
    linger: float = 0.5,
) -> bytes:
    async def main() -> bytes:
        gen = follow_log(path, opts, finished=finished, poll_seconds=poll, linger_seconds=linger)
        chunks = [c async for c in gen]
        assert all(chunks), "no empty chunks"
        return b"".join(chunks)

    return asyncio.run(asyncio.wait_for(main(), 10))


class Flag:
    def __init__(self) -> None:
        self.value = False
        self.at: float | None = None

    def set(self) -> None:
        self.value = True
        self.at = time.monotonic()

    def __call__(self) -> bool:
        return self.value


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_follow_finished_file(five: Path) -> None:
    assert run_follow(five, LogOptions(), lambda: True) == read_log(five, LogOptions())
    assert run_follow(five, LogOptions(tail=2, timestamps=True), lambda: True) == (
        f"{ts(3)} line3\n{ts(4)} line4\n".encode()
    )
    assert run_follow(five, LogOptions(tail=0), lambda: True) == b""
    assert run_follow(five, LogOptions(since=T0 + timedelta(seconds=4)), lambda: True) == b"line4\n"


def test_follow_missing_file_and_finished() -> None:
    assert run_follow(Path("/nonexistent/log"), LogOptions(), lambda: True) == b""


def test_follow_with_writer(tmp_path: Path) -> None:
    path = write(tmp_path / "log", rec(0, "first"))
    done = Flag()
    received: list[tuple[float, bytes]] = []

    async def writer() -> None:
        await asyncio.sleep(0.1)
        for i in range(1, 30):
            await asyncio.sleep(0.005)
            append(path, rec(i, f"n{i}"))
        append(path, rec(30, "last"))
        done.set()

    async def main() -> float:
        task = asyncio.create_task(writer())
        async for chunk in follow_log(path, LogOptions(tail=1), finished=done, poll_seconds=0.02):
            received.append((time.monotonic(), chunk))
        await task
        return time.monotonic()

    ended = asyncio.run(asyncio.wait_for(main(), 10))
    out = b"".join(c for _, c in received)
    assert out == b"first\n" + b"".join(f"n{i}\n".encode() for i in range(1, 30)) + b"last\n"
    assert received[0][1] == b"first\n"  # the initial selection comes first, on its own
    assert len(received) > 2  # lines were streamed while written, not at the end
    assert done.at is not None
    assert ended - done.at < 0.5  # drained and closed soon after the container ended


def test_follow_waits_for_file(tmp_path: Path) -> None:
    path = tmp_path / "log"
    done = Flag()

    async def writer() -> None:
        await asyncio.sleep(0.1)
        write(path, rec(1, "hello"))
        await asyncio.sleep(0.1)
        append(path, rec(2, "bye"))
        done.set()

    async def main() -> bytes:
        task = asyncio.create_task(writer())
        out = [c async for c in follow_log(path, LogOptions(), finished=done, poll_seconds=0.02)]
        await task
        return b"".join(out)

    assert asyncio.run(asyncio.wait_for(main(), 10)) == b"hello\nbye\n"


def test_follow_incomplete_and_partial_lines_not_split(tmp_path: Path) -> None:
    path = write(tmp_path / "log", rec(1, "he", tag="P"))
    done = Flag()
    chunks: list[bytes] = []

    async def writer() -> None:
        await asyncio.sleep(0.1)
        append(path, rec(2, "llo")[:-3])  # a write cut in the middle of a record
        await asyncio.sleep(0.1)
        append(path, rec(2, "llo")[-3:])
        await asyncio.sleep(0.1)
        append(path, rec(3, "tail without newline")[:-1])
        done.set()

    async def main() -> None:
        task = asyncio.create_task(writer())
        async for c in follow_log(path, LogOptions(), finished=done, poll_seconds=0.02):
            chunks.append(c)
        await task

    asyncio.run(asyncio.wait_for(main(), 10))
    assert chunks == [b"hello\n", b"tail without newline\n"]


def test_follow_rotation(tmp_path: Path) -> None:
    path = write(tmp_path / "log", rec(0, "run1-a"))
    done = Flag()

    async def writer() -> None:
        await asyncio.sleep(0.05)
        append(path, rec(1, "run1-b") + rec(2, "run1-unfinished", tag="P"))
        await asyncio.sleep(0.05)
        path.rename(tmp_path / "log.prev")  # restart: the runner moves the log away...
        await asyncio.sleep(0.1)
        write(path, rec(3, "run2-a"))  # ...and the new run starts a new file
        await asyncio.sleep(0.05)
        append(path, rec(4, "run2-b"))
        done.set()

    async def main() -> bytes:
        task = asyncio.create_task(writer())
        out = [c async for c in follow_log(path, LogOptions(), finished=done, poll_seconds=0.01)]
        await task
        return b"".join(out)

    out = asyncio.run(asyncio.wait_for(main(), 10))
    assert out == b"run1-a\nrun1-b\nrun1-unfinished\nrun2-a\nrun2-b\n"


def test_follow_rotation_quick_replace(tmp_path: Path) -> None:
    """The new file appears before the follower notices the old one is gone."""
    path = write(tmp_path / "log", rec(0, "old"))
    done = Flag()

    async def writer() -> None:
        await asyncio.sleep(0.1)
        append(path, rec(1, "old-last"))
        path.rename(tmp_path / "log.prev")
        write(path, rec(2, "new"))
        await asyncio.sleep(0.1)
        done.set()

    async def main() -> bytes:
        task = asyncio.create_task(writer())
        out = [c async for c in follow_log(path, LogOptions(), finished=done, poll_seconds=0.05)]
        await task
        return b"".join(out)

    assert asyncio.run(asyncio.wait_for(main(), 10)) == b"old\nold-last\nnew\n"


def test_follow_truncation_restarts_from_top(tmp_path: Path) -> None:
    path = write(tmp_path / "log", rec(0, "aaaaaaaaaaaaaaaa"))
    done = Flag()

    async def writer() -> None:
        await asyncio.sleep(0.1)
        write(path, rec(1, "b"))  # same inode, shorter
        await asyncio.sleep(0.1)
        done.set()

    async def main() -> bytes:
        task = asyncio.create_task(writer())
        out = [c async for c in follow_log(path, LogOptions(), finished=done, poll_seconds=0.02)]
        await task
        return b"".join(out)

    assert asyncio.run(asyncio.wait_for(main(), 10)) == b"aaaaaaaaaaaaaaaa\nb\n"


def test_follow_limit_bytes_ends_early(tmp_path: Path) -> None:
    path = write(tmp_path / "log", rec(0, "0123456789"))

    async def writer() -> None:
        for i in range(1, 1000):
            await asyncio.sleep(0.01)
            append(path, rec(i, "abcdefghij"))

    async def main() -> bytes:
        task = asyncio.create_task(writer())
        out = [c async for c in follow_log(path, LogOptions(limit_bytes=25), finished=lambda: False)]
        task.cancel()
        return b"".join(out)

    start = time.monotonic()
    assert asyncio.run(asyncio.wait_for(main(), 10)) == b"0123456789\nabcdefghij\nabc"
    assert time.monotonic() - start < 3
    # The initial selection alone can reach the limit, too.
    assert run_follow(path, LogOptions(limit_bytes=4, tail=1), lambda: False) == b"abcd"


def test_follow_stops_within_linger(tmp_path: Path) -> None:
    """A file still growing after the container ended does not keep the stream open."""
    path = write(tmp_path / "log", rec(0, "x"))

    async def writer() -> None:
        i = 0
        while True:
            i += 1
            append(path, rec(i, "more"))
            await asyncio.sleep(0.005)

    async def main() -> float:
        task = asyncio.create_task(writer())
        start = time.monotonic()
        async for _ in follow_log(
            path, LogOptions(), finished=lambda: True, poll_seconds=0.01, linger_seconds=0.3
        ):
            pass
        task.cancel()
        return time.monotonic() - start

    assert asyncio.run(asyncio.wait_for(main(), 10)) < 1.0


def test_follow_close_early(five: Path) -> None:
    async def main() -> bytes:
        gen = follow_log(five, LogOptions(), finished=lambda: False, poll_seconds=0.01)
        first = await anext(gen)
        await gen.aclose()
        return first

    assert asyncio.run(main()) == read_log(five, LogOptions())


def test_follow_does_not_block_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "log"
    block = rec(1, "y" * 60) * 10_000
    with path.open("wb") as f:
        for _ in range(40):  # ~40 MB
            f.write(block)
        f.write(rec(2, "end"))
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async def main() -> int:
        task = asyncio.create_task(ticker())
        size = 0
        async for c in follow_log(path, LogOptions(), finished=lambda: True, poll_seconds=0.01):
            size += len(c)
        task.cancel()
        return size

    # the whole file (a Tail reads only the end of it): blocks parsed in a thread, the loop ticks on
    assert asyncio.run(main()) == 40 * 10_000 * 61 + 4
    assert len(gaps) > 5
    assert max(gaps) < 0.5


# --- memory -----------------------------------------------------------------------------------

_MEASURE = textwrap.dedent(
    """
    import resource, sys, time
    from pathlib import Path
    from interlink_plugins.core.logs.reader import LogOptions, read_log
    path = Path(sys.argv[1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    out = read_log(path, LogOptions(tail=10))
    took = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stdout.buffer.write(b"%d %f\\n" % (after - before, took) + out)
    """
)


@pytest.mark.slow
def test_tail_of_200mb_log_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    line = rec(1, "x" * 100)
    # Mostly F records, and a P/F pair from both streams every 1000 lines (the slow path).
    block = (line * 999 + rec(2, "p ", "stderr", "P") + rec(3, "q")) * 10 + rec(4, "r", "stderr")
    size = 0
    with path.open("wb") as f:
        while size < 200 * 2**20:
            f.write(block)
            size += len(block)
        f.write(rec(5, "half ", tag="P"))
        f.write(b"".join(rec(6 + i, f"tail{i}") for i in range(10)))
    assert path.stat().st_size >= 200 * 2**20
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(logs.__file__).parents[2])},
    )
    head, _, out = proc.stdout.partition(b"\n")
    rss_kib, took = head.split()
    assert out == b"half tail0\n" + b"".join(f"tail{i}\n".encode() for i in range(1, 10))
    assert int(rss_kib) < 50 * 1024, f"max RSS grew by {int(rss_kib) // 1024} MiB"
    assert float(took) < 25
