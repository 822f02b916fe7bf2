"""Injection corpus, written once and parametrised by backend and runtime.

Every user string that reaches a script or a command line is tried with shell metacharacters that
would create a file in a canary directory the job can see. Positive control: every value must also
reach the container byte for byte, so a plugin that refused or mangled everything would fail.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kits import KIT_NAMES, BackendKit, open_kit
from tests.harness import exit_codes
from tests.podfactory import config_map, container, pod_body

pytestmark = pytest.mark.e2e


def corpus(canary: Path) -> list[str]:
    c = str(canary)
    return [
        f"$(touch {c}/dollar-paren)",
        f"`touch {c}/backtick`",
        f"; touch {c}/semicolon",
        f"&& touch {c}/and",
        f"| touch {c}/pipe",
        f"' ; touch {c}/single-quote ; '",
        f'" ; touch {c}/double-quote ; "',
        f"\n touch {c}/newline \n",
        f"${{IFS}}touch${{IFS}}{c}/ifs",
        f"$'\\x74ouch' {c}/ansi-c",
        f"<(touch {c}/procsub)",
        f"> {c}/redirect",
        "-rf --no-preserve-root",
        "--help",
        "%s%n%x",
        "\\\\\\'\\\"",
        "ümlaut ✓ 日本 \u202e",
        " leading and trailing ",
        "tab\there\rcarriage",
        "*",
        "~root",
        "",
        f"$(({c}))",
        "{a,b}",
        "!!",
    ]


@pytest.fixture(params=KIT_NAMES)
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendKit]:
    yield from open_kit(request, tmp_path, request.param, podman_remote=False)


@pytest.mark.parametrize("runtime", ["none", "podman"])
def test_injection_corpus_reaches_the_container_byte_exact_and_never_executes(
    kit: BackendKit, runtime: str, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    canary.mkdir(mode=0o777)
    plugin = kit.plugin(runtime=runtime, AllowedHostPaths=[str(canary)])
    words = corpus(canary)
    env = [{"name": f"V{i}", "value": w} for i, w in enumerate(words)]
    names = " ".join(f"V{i}" for i in range(len(words)))
    script = (
        'for a in "$@"; do printf "A:"; printf %s "$a" | base64 | tr -d "\\n"; echo; done; '
        f'for n in {names}; do eval "v=\\${{$n}}"; printf "E:"; printf %s "$v" | base64 | tr -d "\\n"; echo; done; '
        'for f in /cfg/*; do printf "F:"; printf %s "${f#/cfg/}" | base64 | tr -d "\\n"; printf ":"; '
        'base64 < "$f" | tr -d "\\n"; echo; done'
    )
    keys = {f"k{i}": w for i, w in enumerate(words)}
    keys.update({"file with spaces 'q' \"d\" $(x)": "content", "-leading-dash": "d"})
    body = pod_body(
        f"inj-{uuid.uuid4().hex[:6]}",
        [container("c", ["sh", "-c", script, "sh"], args=words, env=env,
                   volumeMounts=[{"name": "cfg", "mountPath": "/cfg"},
                                 {"name": "canary", "mountPath": "/canary-seen"},
                                 {"name": "spaced", "mountPath": "/a dir/with 'quotes' $(x)"}],
                   workingDir="/a dir/with 'quotes' $(x)")],
        volumes=[{"name": "cfg", "configMap": {"name": "inj"}},
                 {"name": "canary", "hostPath": {"path": str(canary), "type": "Directory"}},
                 {"name": "spaced", "emptyDir": {}}],
        config_maps=[config_map("inj", keys)],
        annotations={"slurm-job.vk.io/flags": f"--job-name='$(touch {canary}/jobname)'"} if kit.name == "slurm" else {},
    )
    plugin.create(body)
    status = plugin.wait_done(body, timeout=120)
    assert exit_codes(status) == {"c": 0}, plugin.logs(body, "c").text
    lines = plugin.logs(body, "c").text.splitlines()
    got_args = [base64.b64decode(line[2:]).decode() for line in lines if line.startswith("A:")]
    got_env = [base64.b64decode(line[2:]).decode() for line in lines if line.startswith("E:")]
    got_files = {
        base64.b64decode(line[2:].split(":")[0]).decode(): base64.b64decode(line[2:].split(":")[1]).decode()
        for line in lines if line.startswith("F:")
    }
    assert got_args == words
    assert got_env == words
    assert got_files == keys
    assert list(canary.iterdir()) == [], f"injection executed: {list(canary.iterdir())}"
