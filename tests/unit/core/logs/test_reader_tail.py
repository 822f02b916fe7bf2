"""Tail read from the end of the file (core/logs/reader.py): the same answer as reading the whole file."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta, timezone
from pathlib import Path
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlink_plugins.core.logs import reader as logs
from interlink_plugins.core.logs.reader import LogOptions, follow_log, iter_log, read_log
from tests.unit.core.logs.test_reader import T0, rec

# a record: (second, stream, flag, text); some lines are not CRI at all
_record = st.one_of(
    st.tuples(
        st.integers(0, 20), st.sampled_from(["stdout", "stderr"]), st.sampled_from(["F", "F", "P"]),
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    ),
    st.binary(min_size=1, max_size=30).map(lambda b: b"garbage " + b.replace(b"\n", b"")),
)


def _write(path: Path, records: list[tuple[int, str, str, bytes] | bytes], partial_end: bool) -> None:
    data = b"".join(r + b"\n" if isinstance(r, bytes) else rec(r[0], r[3], r[1], r[2]) for r in records)
    path.write_bytes(data[:-1] if partial_end and data else data)


def _reference(path: Path, opts: LogOptions, tail: int) -> bytes:
    """The last `tail` lines of the whole selection, read from the start."""
    whole = read_log(path, LogOptions(timestamps=opts.timestamps, since=opts.since))
    lines = [line + b"\n" for line in whole.split(b"\n")[:-1]]
    return b"".join(lines[-tail:])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(_record, max_size=60),
    tail=st.integers(1, 30),
    stamps=st.booleans(),
    since=st.none() | st.integers(0, 20),
    partial_end=st.booleans(),
)
def test_tail_from_the_end_equals_tail_of_the_whole_file(
    tmp_path: Path, records: list[tuple[int, str, str, bytes] | bytes], tail: int, stamps: bool,
    since: int | None, partial_end: bool,
) -> None:
    path = tmp_path / "log"
    _write(path, records, partial_end)
    when = None if since is None else T0.replace(second=since)
    opts = LogOptions(tail=tail, timestamps=stamps, since=when)
    expected = _reference(path, opts, tail)
    # tiny windows and scan steps: the window grows, and P lines straddle its start
    with patch.object(logs, "TAIL_WINDOW_BYTES", 50), patch.object(logs, "SCAN_BYTES", 7):
        assert read_log(path, opts) == expected
        with patch.object(logs, "TAIL_MEMORY_BYTES", 0):  # too big to hold: counted, then streamed
            assert read_log(path, opts) == expected

        async def follow() -> bytes:
            out = b""
            async for chunk in follow_log(path, opts, finished=lambda: True, poll_seconds=0.01):
                out += chunk
            return out

        data = path.read_bytes()
        last = {r[1]: r[2] for r in records if not isinstance(r, bytes)}
        if data.endswith(b"\n") and "P" not in last.values():  # else Follow holds the open line to the end
            assert asyncio.run(follow()) == expected
            with patch.object(logs, "TAIL_MEMORY_BYTES", 0):
                assert asyncio.run(follow()) == expected


def test_a_tail_of_a_big_log_reads_only_its_end(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("wb") as f:
        for i in range(300_000):
            f.write(rec(i % 50, f"line {i}"))
    opened: list[int] = []
    real_read = logs._Reader.read

    def counting(self: logs._Reader, out: list[tuple[bytes, bytes]]) -> int:
        n = real_read(self, out)
        opened.append(n)
        return n

    looked_back: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, size: int, offset: int) -> bytes:
        looked_back.append(size)
        return real_pread(fd, size, offset)

    with patch.object(logs._Reader, "read", counting), patch.object(logs.os, "pread", counting_pread):
        assert read_log(path, LogOptions(tail=3)) == b"line 299997\nline 299998\nline 299999\n"
    assert sum(opened) <= 2 * logs.TAIL_WINDOW_BYTES < path.stat().st_size
    # only stdout in this log: the look for an open stderr P line stops after MAX_BACK_BYTES
    assert sum(looked_back) <= logs.MAX_BACK_BYTES + 2 * logs.SCAN_BYTES < path.stat().st_size


def test_a_tail_bigger_than_the_memory_budget_is_streamed(tmp_path: Path) -> None:
    """Tail=10^9: the answer is every line, in chunks of about a block, never gathered in memory."""
    path = tmp_path / "log"
    with path.open("wb") as f:
        for i in range(200_000):
            f.write(rec(i % 50, f"line {i}"))
    with patch.object(logs, "TAIL_MEMORY_BYTES", 1 << 16):
        chunks = list(iter_log(path, LogOptions(tail=10**9)))
        assert b"".join(chunks) == b"".join(f"line {i}\n".encode() for i in range(200_000))
        assert len(chunks) > 1 and max(len(c) for c in chunks) <= logs.BLOCK_BYTES
        assert read_log(path, LogOptions(tail=150_000, limit_bytes=12)) == b"line 50000\nl"


def test_a_full_read_comes_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"".join(rec(0, "x" * 100) for _ in range(30_000)))  # 3.6 MB
    chunks = list(iter_log(path, LogOptions()))
    assert len(chunks) >= 3 and max(map(len, chunks)) <= logs.BLOCK_BYTES
    assert b"".join(chunks) == b"".join([b"x" * 100 + b"\n"] * 30_000)
    assert b"".join(iter_log(path, LogOptions(limit_bytes=1_500_000))) == (b"x" * 100 + b"\n") * 14851 + b"x" * 49


_runner_record = st.tuples(
    st.integers(0, 20), st.sampled_from(["stdout", "stderr"]), st.sampled_from(["F"] * 8 + ["P"]),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(st.one_of(_runner_record, _record), max_size=80),
    stamps=st.booleans(),
    since=st.none() | st.integers(0, 21_000_000),
    limit=st.none() | st.integers(1, 3000),
    partial_end=st.booleans(),
)
def test_the_runner_block_fast_path_serves_what_the_parser_serves(
    tmp_path: Path, records: list[tuple[int, str, str, bytes] | bytes], stamps: bool, since: int | None,
    limit: int | None, partial_end: bool,
) -> None:
    path = tmp_path / "log"
    _write(path, records, partial_end)
    # since in microseconds after T0, given in another time zone
    when = None if since is None else (T0 + timedelta(microseconds=since)).astimezone(timezone(timedelta(hours=2)))
    opts = LogOptions(timestamps=stamps, since=when, limit_bytes=limit)
    with patch.object(logs, "BLOCK_BYTES", 150):  # many blocks: some all runner records, some not
        fast = read_log(path, opts)
        with patch.object(logs, "_runner_block", lambda *args: None):
            assert fast == read_log(path, opts)


def test_the_fast_path_takes_the_runners_records(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(rec(1, "one") + rec(2, "", "stderr") + rec(3, "three"))
    body = path.read_bytes()[:-1]
    assert logs._runner_block(body, False) == b"one\n\nthree\n"
    assert logs._runner_block(body, True) == (
        b"2024-05-01T10:00:01.000000001Z one\n2024-05-01T10:00:02.000000001Z \n2024-05-01T10:00:03.000000001Z three\n"
    )
    assert logs._runner_block(body.replace(b"stderr F", b"stderr P"), False) is None
    assert logs._runner_block(body + b"\nnot a record", False) is None
