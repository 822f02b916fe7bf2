"""Container logs: CRI log files read and followed with `kubectl logs` semantics.

The runner writes one file per container run (``c/<name>/log``, the previous run in ``log.prev``)
in CRI format, one record a line::

    <RFC3339Nano timestamp> stdout|stderr F|P <text>\\n

``P`` marks a partial line, continued by the next record of the same stream. Output is the
container's text: records joined into logical lines, each ending with ``\\n``, bytes untouched.
Selection order: since (write time) -> tail -> limit_bytes (a prefix, may cut a line).

Memory stays bounded whatever the file size and whatever the request: files are read and served in
blocks (``iter_log``); Tail reads a window at the end of the file, grown until it holds N lines, and
keeps them while they fit in ``TAIL_MEMORY_BYTES``; a bigger tail (``Tail=10^9``) is counted in that
pass and streamed by a second one from where it starts. A single line is held at most up to
``MAX_LINE_BYTES`` (a longer logical line is served as several lines of that size). Blocks made only
of the runner's own records (fixed-width F headers) skip the parser.

The file is in a directory the job controls: it is opened through core/safefs (no symlink followed, a
regular file only, opened without blocking) and read only in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import FileIO
from pathlib import Path

from interlink_plugins.core import safefs

__all__ = ["CriRecord", "LogOptions", "follow_log", "iter_log", "parse_cri_line", "read_log"]

BLOCK_BYTES = 1 << 20
"""Bytes read per read() call; in follow mode, per step between two yields to the event loop."""
PIECE_BYTES = 1 << 20
"""A physical line longer than this is processed in pieces (continuations of one record); > a header."""
MAX_LINE_BYTES = 16 << 20
"""A logical line (P records joined) longer than this is served as several lines."""
TAIL_WINDOW_BYTES = 1 << 20
"""Tail first reads this much from the end of the file (at least 256 bytes a line), then 4x more."""
SCAN_BYTES = 64 << 10
"""Bytes read per step when looking backwards for a line start (Tail reads from the end)."""
MAX_BACK_BYTES = 4 << 20
"""How far back Tail looks for a start outside any P line of the other stream."""
TAIL_MEMORY_BYTES = 8 << 20
"""A Tail answer up to this size is gathered in one pass; a bigger one is streamed by a second pass."""

LogSource = Path | safefs.Location
"""Where a log is: a Location below a trusted root (a job dir), or a Path (its parent trusted)."""

_TS = re.compile(rb"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)")
# A block made only of complete F lines (the common case) is split by one findall into (ts, text).
_F_LINES = re.compile(
    rb"^(\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:[Zz]|[+-]\d\d:\d\d))"
    rb" std(?:out|err) F(?::[^ \n]*)?(?: ([^\n]*))?$",
    re.MULTILINE,
)
_STDOUT = b"stdout"
_STDERR = b"stderr"

# (timestamp as written, stream, partial, text); timestamp and stream are b"" for a malformed line.
_Rec = tuple[bytes, bytes, bool, bytes]
# A logical line: (timestamp of its first record, text without the final newline).
_Line = tuple[bytes, bytes]


@dataclass(frozen=True)
class LogOptions:
    """What to serve from a log; None / False mean unset (the caller maps the wire's zero values)."""

    tail: int | None = None
    """Last N lines (0 = none; negative = all)."""
    limit_bytes: int | None = None
    """First N bytes of the selection (kubectl --limit-bytes); also bounds a follow stream."""
    timestamps: bool = False
    """Prefix each line with its RFC3339Nano write time (as written) and a space."""
    since: datetime | None = None
    """Lines written at or after this time (aware; a naive value is taken as UTC)."""
    follow: bool = False


@dataclass(frozen=True)
class CriRecord:
    """One line of a CRI log file."""

    time: datetime | None
    """Write time, aware UTC, truncated to microseconds; None for a malformed line."""
    timestamp: str
    """Write time as written (nanoseconds kept), for output; "" for a malformed line."""
    stream: str
    """"stdout" or "stderr"; "" for a malformed line."""
    partial: bool
    """True for a P record (the line continues in the next record of the same stream)."""
    text: bytes
    """The text; for a malformed line, the whole line."""


def _split(line: bytes) -> _Rec:
    """Split a physical line (no trailing newline); the timestamp is checked by syntax only."""
    parts = line.split(b" ", 3)
    if len(parts) >= 3:
        ts, stream, tag = parts[0], parts[1], parts[2]
        if stream in (_STDOUT, _STDERR) and _TS.fullmatch(ts) is not None:
            flag = tag if len(tag) == 1 else tag.split(b":", 1)[0]
            if flag == b"F" or flag == b"P":
                return ts, stream, flag == b"P", parts[3] if len(parts) == 4 else b""
    return b"", b"", False, line


def _parse_time(ts: bytes) -> datetime | None:
    """RFC3339(Nano) timestamp -> aware UTC datetime (microseconds), None if invalid."""
    m = _TS.fullmatch(ts)
    if m is None:
        return None
    frac = m[7] or b""
    try:
        t = datetime(
            int(m[1]),
            int(m[2]),
            int(m[3]),
            int(m[4]),
            int(m[5]),
            int(m[6]),
            int(frac[:6].ljust(6, b"0")) if frac else 0,
            tzinfo=UTC,
        )
        off = m[8]
        if off not in (b"Z", b"z"):
            delta = timedelta(hours=int(off[1:3]), minutes=int(off[4:6]))
            t = t - delta if off[:1] == b"+" else t + delta
    except (ValueError, OverflowError):
        return None
    return t


def parse_cri_line(line: bytes) -> CriRecord | None:
    """Parse one CRI line (a final "\\n" is dropped); None for an empty line.

    A malformed line is returned as a raw text record (time None, stream "", the whole line as text).
    """
    if line.endswith(b"\n"):
        line = line[:-1]
    if not line:
        return None
    ts, stream, partial, text = _split(line)
    t = _parse_time(ts) if stream else None
    if t is None:
        return CriRecord(None, "", "", False, line)
    return CriRecord(t, ts.decode("ascii"), stream.decode("ascii"), partial, text)


@dataclass
class _Pending:
    ts: bytes
    parts: list[bytes] = field(default_factory=list)
    size: int = 0


class _Assembler:
    """Turns physical lines (or pieces of long ones) into logical lines.

    P records are joined with the following records of the same stream; a malformed line is a
    complete line of its own and takes the timestamp of the record before it (b"" if none).
    """

    def __init__(self) -> None:
        self._pending: dict[bytes, _Pending] = {}
        self._cont: tuple[bytes, bytes, bool] | None = None
        self.last_ts = b""

    def feed(self, data: bytes, complete: bool, out: list[_Line]) -> None:
        """Add a physical line without its newline (complete) or the next piece of one (not)."""
        if self._cont is None:
            if not data and complete:
                return  # empty physical line: no record
            ts, stream, partial, text = _split(data)
            if stream:
                self.last_ts = ts
            else:
                ts = self.last_ts
        else:
            (ts, stream, partial), text = self._cont, data
        if complete:
            self._cont = None
        else:
            self._cont = (ts, stream, partial)
            partial = True
        pend = self._pending.get(stream)
        if pend is None:
            if not partial:
                out.append((ts, text))
                return
            pend = self._pending[stream] = _Pending(ts)
        pend.parts.append(text)
        pend.size += len(text)
        if not partial or pend.size >= MAX_LINE_BYTES:
            del self._pending[stream]
            out.append((pend.ts, b"".join(pend.parts)))

    def busy(self) -> bool:
        """True while a P line or a long physical line is unfinished."""
        return bool(self._pending) or self._cont is not None

    def flush(self, out: list[_Line]) -> None:
        """End of the file: unfinished lines are served as complete, oldest first."""
        self._cont = None
        for pend in self._pending.values():
            out.append((pend.ts, b"".join(pend.parts)))
        self._pending.clear()


_DIGITS = bytes.maketrans(b"0123456789", b"9" * 10)
_RUNNER_HEADERS = (b"\n9999-99-99T99:99:99.999999999Z stdout F ", b"\n9999-99-99T99:99:99.999999999Z stderr F ")
_HEADER = re.compile(rb"\n.{40}", re.DOTALL)


def _runner_block(body: bytes, stamps: bool, since: bytes | None = None) -> bytes | None:
    """Lines that all start with the runner's own 40-byte F header (digits checked by shape), rendered
    at C speed (about 3x the general parser); None for anything else. ``since``: the same fixed-width
    UTC text, compared as bytes (what the parser does with the time, without parsing it)."""
    data = b"\n" + body
    shape = data.translate(_DIGITS)
    if shape.count(_RUNNER_HEADERS[0]) + shape.count(_RUNNER_HEADERS[1]) != data.count(b"\n"):
        return None
    if since is None and not stamps:
        return _HEADER.sub(b"\n", data)[1:] + b"\n"
    lines = body.split(b"\n")
    if since is not None:
        lines = [line for line in lines if line[:30] >= since]
    if stamps:
        return b"".join([line[:31] + line[40:] + b"\n" for line in lines])
    return b"".join([line[40:] + b"\n" for line in lines])


class _Reader:
    """An open log file read in blocks; an incomplete last line is kept until it is completed."""

    def __init__(self, f: FileIO) -> None:
        self.f = f
        self.asm = _Assembler()
        self._carry = b""
        self.end: int | None = None  # read no further than this offset (a second pass of a tail)
        st = os.fstat(f.fileno())
        self.ident = (st.st_dev, st.st_ino)

    def restart(self, offset: int, last_ts: bytes) -> None:
        """Read again from ``offset`` (a line start) with a fresh assembler."""
        self.f.seek(offset)
        self.asm = _Assembler()
        self.asm.last_ts = last_ts
        self._carry = b""

    def _take(self) -> tuple[int, bytes | None]:
        """Read one block: (bytes read, the complete lines it ends without the last newline, or None)."""
        size = BLOCK_BYTES if self.end is None else min(BLOCK_BYTES, max(0, self.end - self.f.tell()))
        block = self.f.read(size) if size else b""
        if not block:
            return 0, None
        data = self._carry + block if self._carry else block
        cut = data.rfind(b"\n")
        if cut < 0:
            self._carry = data
            return len(block), None
        body, self._carry = data[:cut], data[cut + 1 :]
        return len(block), body

    def _parse(self, body: bytes, out: list[_Line]) -> None:
        asm = self.asm
        recs = None if asm.busy() else _F_LINES.findall(body)
        if recs and len(recs) == body.count(b"\n") + 1:
            out.extend(recs)  # fast path: every line is a well-formed F record
            asm.last_ts = recs[-1][0]
        else:
            feed = asm.feed
            for line in body.split(b"\n"):
                feed(line, True, out)

    def _long_carry(self, out: list[_Line]) -> None:
        if len(self._carry) >= PIECE_BYTES:
            self.asm.feed(self._carry, False, out)
            self._carry = b""

    def read(self, out: list[_Line]) -> int:
        """Read one block, append the lines it completes; returns the bytes read (0 at EOF)."""
        n, body = self._take()
        if body is not None:
            self._parse(body, out)
        self._long_carry(out)
        return n

    def read_rendered(self, render: _Render) -> tuple[int, bytes]:
        """read() and render() in one step: (bytes read, the output)."""
        n, body = self._take()
        lines: list[_Line] = []
        head = b""
        if body is not None:
            fast = None if self.asm.busy() else _runner_block(body, render.stamps, render.since_key)
            if fast is None:
                self._parse(body, lines)
            else:
                head = fast
                self.asm.last_ts = body[body.rfind(b"\n") + 1 :][:30]
        self._long_carry(lines)
        rest = render(lines)
        return n, head + b"".join(rest) if rest else head

    def finish(self, out: list[_Line]) -> None:
        """No more data will come: serve the incomplete last line and unfinished P lines."""
        if self._carry:
            self.asm.feed(self._carry, True, out)
            self._carry = b""
        self.asm.flush(out)

    def replaced(self, source: LogSource) -> bool:
        """True when the log is gone, is another file (rotation) or was truncated below our position."""
        st = safefs.lstat(_location(source))
        if st is None:
            return True
        return (st.st_dev, st.st_ino) != self.ident or st.st_size < self.f.tell()


class _Render:
    """Applies since and timestamps to logical lines and adds the newline."""

    def __init__(self, opts: LogOptions) -> None:
        since = opts.since
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        self.since = since
        self.stamps = opts.timestamps
        # since as the runner writes times (UTC, fixed width: byte order is time order; ns below us kept)
        self.since_key = None if since is None else since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z").encode()
        self._ts = b"\0"
        self._time: datetime | None = None

    def __call__(self, lines: Iterable[_Line]) -> list[bytes]:
        since, stamps = self.since, self.stamps
        if since is None and not stamps:
            return [text + b"\n" for _, text in lines]
        out: list[bytes] = []
        for ts, text in lines:
            if since is not None:
                if ts != self._ts:
                    self._ts, self._time = ts, _parse_time(ts)
                if self._time is None or self._time < since:
                    continue
            out.append(ts + b" " + text + b"\n" if stamps and ts else text + b"\n")
        return out


def _location(source: LogSource) -> safefs.Location:
    if isinstance(source, safefs.Location):
        return source
    return safefs.Location(source.parent, (source.name,))


def _open(source: LogSource | FileIO) -> _Reader | None:
    """The log opened safely (blocking; None when it does not exist; safefs.Refused when it is not a
    regular file)."""
    f = source if isinstance(source, FileIO) else safefs.open_file(_location(source))
    if f is None:
        return None
    try:
        return _Reader(f)
    except BaseException:
        f.close()
        raise


def _line_start(fd: int, pos: int) -> int:
    """The start of the physical line holding byte ``pos`` (0, or just after a newline)."""
    end = pos
    while end > 0:
        size = min(SCAN_BYTES, end)
        cut = os.pread(fd, size, end - size).rfind(b"\n")
        if cut >= 0:
            return end - size + cut + 1
        end -= size
    return 0


def _lines_back(fd: int, end: int) -> list[tuple[int, bytes]]:
    """(start, line or its first bytes) of the lines just before ``end`` (a line start > 0), last first."""
    size = min(SCAN_BYTES, end)
    base = end - size
    block = os.pread(fd, size, base)
    first = block.find(b"\n")
    if base > 0 and first == size - 1:  # the block is inside one long line
        start = _line_start(fd, end - 1)
        return [(start, os.pread(fd, 64, start).split(b"\n", 1)[0])]
    lo = first + 1 if base > 0 else 0
    out = []
    start = base + lo
    for line in block[lo : size - 1].split(b"\n"):
        out.append((start, line))
        start += len(line) + 1
    out.reverse()
    return out


def _clean_start(fd: int, pos: int) -> tuple[int, bytes]:
    """A line start at or before ``pos`` where no P line of either stream is open, and the timestamp of
    the record before it (what a malformed line there takes). Looks back at most MAX_BACK_BYTES (a
    stream that is silent that long is taken as closed)."""
    off = end = _line_start(fd, pos)
    need = {_STDOUT, _STDERR}
    last_ts = b""
    while end > 0 and need and off - end <= MAX_BACK_BYTES:
        for start, line in _lines_back(fd, end):
            end = start
            ts, stream, partial, _text = _split(line)
            if not stream:
                continue
            if not last_ts:
                last_ts = ts
            if stream in need:
                if partial:  # its line goes on after: start with it
                    off, last_ts = start, b""
                else:
                    need.discard(stream)
                    if not need:
                        break
    return off, last_ts


def _tail(reader: _Reader, count: int, render: _Render, *, finish: bool) -> Generator[bytes, None, None]:
    """The last ``count`` selected lines, from a window at the end of the file grown until it holds them.

    They are kept in memory while they fit in TAIL_MEMORY_BYTES; a bigger answer is only counted, then
    streamed by a second pass over the same bytes. ``finish``: the unfinished last line counts (a read);
    else it is kept for what comes next (a follow). The reader is left where the answer ends.
    """
    fd = reader.f.fileno()
    size = os.fstat(fd).st_size
    window = max(TAIL_WINDOW_BYTES, count * 256)
    while True:
        start, last_ts = _clean_start(fd, max(0, size - window))
        reader.restart(start, last_ts)
        kept: deque[bytes] | None = deque()
        held = total = 0
        while True:
            lines: list[_Line] = []
            done = reader.read(lines) == 0
            if done and finish:
                reader.finish(lines)
            selected = render(lines)
            total += len(selected)
            if kept is not None and count:
                for line in selected:
                    if len(kept) == count:
                        held -= len(kept.popleft())
                    kept.append(line)
                    held += len(line)
                if held > TAIL_MEMORY_BYTES:
                    kept = None  # too big to hold: counted now, streamed below
            if done:
                break
        if total >= count or start == 0:
            break
        window *= 4
    if kept is not None:
        if kept:
            yield b"".join(kept)
        return
    yield from _replay(reader, start, last_ts, skip=max(0, total - count), finish=finish, render=render)


def _replay(
    reader: _Reader, start: int, last_ts: bytes, *, skip: int, finish: bool, render: _Render
) -> Generator[bytes, None, None]:
    """The selection from ``start`` to where the reader stopped, its first ``skip`` lines left out."""
    reader.end = reader.f.tell()
    reader.restart(start, last_ts)
    try:
        while True:
            lines: list[_Line] = []
            done = reader.read(lines) == 0
            if done and finish:
                reader.finish(lines)
            selected = render(lines)
            if skip:
                dropped = min(skip, len(selected))
                selected, skip = selected[dropped:], skip - dropped
            if selected:
                yield b"".join(selected)
            if done:
                return
    finally:
        reader.end = None


def _limited(chunks: Iterable[bytes], limit: int | None) -> Generator[bytes, None, None]:
    """The chunks, cut after ``limit`` bytes in all."""
    for chunk in chunks:
        if limit is not None:
            if len(chunk) >= limit:
                yield chunk[:limit]
                return
            limit -= len(chunk)
        yield chunk


def _whole(reader: _Reader, render: _Render) -> Generator[bytes, None, None]:
    eof = False
    while not eof:
        n, chunk = reader.read_rendered(render)
        if n == 0:
            lines: list[_Line] = []
            reader.finish(lines)
            chunk += b"".join(render(lines))
            eof = True
        if chunk:
            yield chunk


def iter_log(source: LogSource | FileIO, opts: LogOptions) -> Generator[bytes, None, None]:
    """The selected part of a log file in chunks of about a block (a missing file gives nothing).

    Blocking (a worker thread). ``source`` may be a file already opened through safefs (it is closed
    here). Memory is bounded by a block (and TAIL_MEMORY_BYTES): a 1 GB log is served as it is read.
    """
    limit = opts.limit_bytes
    if opts.tail == 0 or (limit is not None and limit <= 0):
        if isinstance(source, FileIO):
            source.close()
        return
    reader = _open(source)
    if reader is None:
        return
    render = _Render(opts)
    with reader.f:
        if opts.tail is not None and opts.tail > 0:
            yield from _limited(_tail(reader, opts.tail, render, finish=True), limit)
        else:
            yield from _limited(_whole(reader, render), limit)


def read_log(source: LogSource, opts: LogOptions) -> bytes:
    """The selected part of a log file (a missing file gives b"")."""
    return b"".join(iter_log(source, opts))


async def _in_thread(chunks: Generator[bytes, None, None]) -> AsyncGenerator[bytes, None]:
    """A blocking generator driven from a worker thread, one chunk at a time."""
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield chunk


def _drain(reader: _Reader, render: _Render, source: LogSource) -> tuple[int, bytes, bool]:
    """One block of what was appended (bytes read, the output, whether the file was replaced and
    the old one is drained). Blocking: a worker thread."""
    n, chunk = reader.read_rendered(render)
    if n == 0 and reader.replaced(source):
        lines: list[_Line] = []
        reader.finish(lines)  # drained: the old file is complete
        return 0, chunk + b"".join(render(lines)), True
    return n, chunk, False


@dataclass
class _Budget:
    """What is left of limit_bytes (None: no limit)."""

    left: int | None

    @property
    def spent(self) -> bool:
        return self.left is not None and self.left <= 0

    def clip(self, chunk: bytes) -> bytes:
        """The part of ``chunk`` the budget allows, taken from it."""
        if self.left is None:
            return chunk
        chunk = chunk[: self.left]
        self.left -= len(chunk)
        return chunk


class _Follow:
    """One follow stream's reading: the open log (None until it exists, and after a rotation), the
    budget, and what the last round read."""

    def __init__(self, source: LogSource, render: _Render, budget: _Budget, reader: _Reader | None) -> None:
        self.source = source
        self.render = render
        self.budget = budget
        self.reader = reader
        self.got = 0  # bytes read by the last round
        self.rotated = False  # the last round drained a rotated file and closed it

    async def begin_round(self) -> bool:
        """A round begins: nothing read yet, the log opened if it is not (in a worker thread). False when
        the log is not a regular file."""
        self.got, self.rotated = 0, False
        if self.reader is None:
            try:
                self.reader = await asyncio.to_thread(_open, self.source)
            except safefs.Refused:
                return False
        return True

    async def read(self, tail: int | None) -> AsyncGenerator[bytes, None]:
        """One round: the last ``tail`` lines (if given), then what was appended, block by block, until a
        read brings nothing; a rotated file is drained and closed. Stops once the budget is spent."""
        reader = self.reader
        if reader is None:
            return
        if tail is not None:
            async for chunk in _in_thread(_tail(reader, tail, self.render, finish=False)):
                yield self.budget.clip(chunk)
                if self.budget.spent:
                    return
        while True:
            n, chunk, self.rotated = await asyncio.to_thread(_drain, reader, self.render, self.source)
            self.got += n
            if chunk:
                yield self.budget.clip(chunk)
                if self.budget.spent:
                    return
            if self.rotated:
                reader.f.close()
                self.reader = None
            if n == 0:
                return

    def rest(self) -> bytes:
        """The lines still held (an incomplete last line), as the stream ends."""
        if self.reader is None:
            return b""
        lines: list[_Line] = []
        self.reader.finish(lines)
        return self.budget.clip(b"".join(self.render(lines)))

    def close(self) -> None:
        if self.reader is not None:
            self.reader.f.close()


async def _answer(finished: Callable[[], bool | Awaitable[bool]]) -> bool:
    """``finished``'s answer, awaited when it is a coroutine function's."""
    done = finished()
    return done if isinstance(done, bool) else await done


async def follow_log(
    source: LogSource,
    opts: LogOptions,
    *,
    finished: Callable[[], bool | Awaitable[bool]],
    poll_seconds: float = 0.2,
    linger_seconds: float = 1.0,
    first: FileIO | None = None,
) -> AsyncGenerator[bytes, None]:
    """Yield the initial selection, then new lines as they are appended, until the container ends.

    Waits for a file that does not exist yet; follows a rotation (the file moved away and a new
    one created: the old one is drained, the new one read from its start). Once ``finished()``
    is true the file is read again and the stream ends when a read brings nothing new or
    ``linger_seconds`` have passed. ``limit_bytes`` bounds the total streamed. Every open, stat and
    read runs in a worker thread: the event loop never touches the file. A log replaced by what is
    not a regular file (a FIFO, a symlink) ends the stream. ``first``: the log already opened.
    ``finished`` may be a coroutine function (a copy of a remote log is finished once it has caught up).
    """
    budget = _Budget(opts.limit_bytes)
    if budget.spent:
        if first is not None:
            first.close()
        return
    follow = _Follow(source, _Render(opts), budget, None if first is None else _Reader(first))
    tail = opts.tail if opts.tail is not None and opts.tail >= 0 else None  # the initial selection is a tail
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    try:
        while True:
            if await _answer(finished) and deadline is None:
                deadline = loop.time() + linger_seconds
            if not await follow.begin_round():
                return
            if follow.reader is not None:
                async with aclosing(follow.read(tail)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                tail = None
                if budget.spent:
                    return
            if follow.rotated:
                continue  # open the new file now
            if deadline is not None and (follow.got == 0 or loop.time() >= deadline):
                if rest := follow.rest():
                    yield rest
                return
            await asyncio.sleep(poll_seconds)
    finally:
        follow.close()
