"""docs/site-admin-guide.md: every command of its install-and-first-run section, run as written."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.harness import ROOT

pytestmark = pytest.mark.e2e
GUIDE = ROOT / "docs" / "site-admin-guide.md"


def guide_blocks() -> list[str]:
    text = GUIDE.read_text()
    section = text.split("## Install and first run", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def test_the_guide_section_has_the_commands_we_test() -> None:
    blocks = guide_blocks()
    assert len(blocks) == 4
    assert any("interlink-plugin check" in b for b in blocks) and any("interlink-plugin serve" in b for b in blocks)


def test_every_command_of_the_guide_runs(slurm_cluster: dict[str, str]) -> None:
    outputs = []
    for block in guide_blocks():
        script = block.replace("/path/to/interlink-plugins", str(ROOT))
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                                timeout=900, env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                                  "SLURM_CONF": slurm_cluster["SLURM_CONF"], "HOME": "/root"})
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout)
    check, render, ping = outputs[1], outputs[2], outputs[3]
    assert "[ok] backend slurm reachable" in check and "FAIL" not in check
    assert "--export-file=/dev/null" in render and "pod-runner.sh" in render
    answer = json.loads(ping.strip().splitlines()[-1])
    assert answer["status"] == "ok"
    Path("/etc/interlink/plugin-slurm.yaml").unlink()
