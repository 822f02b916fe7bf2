"""A container that writes a lot of log, on the real local SLURM cluster (runtime none): the runner keeps
up, the plugin serves the whole log, Tail, Bytes and Follow in bounded memory, and MaxContainerLogBytes
stops the file with a marker line (the CI-sized version of bench/bench_logs.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import PluginProcess, exit_codes
from tests.podfactory import container, log_request, pod_body

pytestmark = pytest.mark.e2e

LINE = b"a fairly long log line to fill the disk quickly"
MB = 60
SIZE = MB * 1_000_000 + 20  # not a multiple of the line: the log ends with a partial line


def proc_kib(plugin: PluginProcess, key: str) -> int:
    """VmRSS or VmHWM (the peak RSS since the plugin started) of the plugin process, in KiB."""
    assert plugin.proc is not None
    for line in Path(f"/proc/{plugin.proc.pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key}")


def chatty(name: str, size: int) -> dict[str, Any]:
    script = f"yes '{LINE.decode()}' | head -c {size}"
    return pod_body(name, [container("c", ["sh", "-c", script])])




def streamed(plugin: PluginProcess, body: dict[str, Any], **opts: Any) -> Iterator[bytes]:
    with plugin.client.stream("GET", "/getLogs", json=log_request(body, **opts), timeout=300) as response:
        assert response.status_code == 200
        yield from response.iter_bytes()


def check_lines(chunks: Iterator[bytes]) -> tuple[int, bytes]:
    """Every line but the last is LINE; returns (bytes seen, the last line) without keeping the log."""
    size, carry, last = 0, b"", b""
    for chunk in chunks:
        size += len(chunk)
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        if lines:
            assert last in (b"", LINE) and set(lines[:-1]) <= {LINE}, "a line of the log came back changed"
            last = lines[-1]
    assert carry == b""
    return size, last


def test_a_big_log_is_served_whole_and_in_bounded_memory(plugin_factory: Callable[..., PluginProcess]) -> None:
    plugin = plugin_factory()
    body = chatty("volume", SIZE)
    plugin.create(body)
    assert exit_codes(plugin.wait_done(body, timeout=600)) == {"c": 0}
    peak_before = proc_kib(plugin, "VmHWM")

    size, last = check_lines(streamed(plugin, body))
    assert size == SIZE + 1  # the runner closes the last partial line with a newline
    assert LINE.startswith(last) and last != LINE
    tail = plugin.logs(body, "c", Tail=3).content.split(b"\n")
    assert tail[:2] == [LINE, LINE] and tail[2] == last and tail[3:] == [b""]
    assert plugin.logs(body, "c", Bytes=1000).content == ((LINE + b"\n") * 30)[:1000]
    size, _ = check_lines(streamed(plugin, body, Follow=True))  # the container ended: the stream ends
    assert size == SIZE + 1
    stamped = b"".join(streamed(plugin, body, Tail=2, Timestamps=True)).split(b"\n")
    assert stamped[0].endswith(b"Z " + LINE) and len(stamped) == 3

    grown_mib = (proc_kib(plugin, "VmHWM") - peak_before) / 1024
    assert grown_mib < MB / 2, f"serving a {MB} MB log raised the plugin's peak RSS by {grown_mib:.0f} MiB"
    assert plugin.ping()["status"] == "ok"


def test_the_log_cap_truncates_with_a_marker_and_the_container_runs_on(
    plugin_factory: Callable[..., PluginProcess],
) -> None:
    plugin = plugin_factory(MaxContainerLogBytes="4Mi")
    body = chatty("capped", 50_000_000)
    plugin.create(body)
    assert exit_codes(plugin.wait_done(body, timeout=600)) == {"c": 0}  # never blocked on its output
    log = plugin.logs(body, "c").content
    lines = log.split(b"\n")
    assert lines[-1] == b"" and lines[-2].startswith(b"[pod-runner] log truncated: MaxContainerLogBytes (4194304 bytes)")
    assert set(lines[:-3]) == {LINE} and LINE.startswith(lines[-3])
    job_log = next((plugin.workdir / "jobs").glob("*/c/c/log"))
    assert 4 * 2**20 - 300 < job_log.stat().st_size <= 4 * 2**20
    assert plugin.logs(body, "c", Tail=1).content == lines[-2] + b"\n"
