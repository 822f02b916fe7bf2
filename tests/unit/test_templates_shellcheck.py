"""shellcheck over every static script the plugin ships (the pod runner's static part and the job
helpers): a finding fails the test. Exclusions live in the scripts, each with its reason."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

TEMPLATES = Path(str(resources.files("interlink_plugins").joinpath("templates")))
STATIC = sorted(path for path in TEMPLATES.iterdir() if path.suffix == ".sh")
_DISABLE = re.compile(r"#\s*shellcheck\s+disable=")


def test_every_helper_is_checked() -> None:
    names = {path.name for path in STATIC}
    assert {"pod_runner.sh", "ns_exec.sh", "apptainer.sh", "probe.sh", "mpi.sh", "podman_secrets.sh"} <= names


@pytest.mark.parametrize("script", STATIC, ids=lambda path: path.name)
def test_shellcheck_finds_nothing(script: Path) -> None:
    binary = shutil.which("shellcheck")
    if binary is None:
        pytest.fail("shellcheck is not installed (Debian package shellcheck; tests/run-all.sh installs it)")
    result = subprocess.run([binary, "--shell=bash", "--severity=style", "--format=gcc", str(script)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", STATIC, ids=lambda path: path.name)
def test_every_exclusion_says_why(script: Path) -> None:
    lines = script.read_text().splitlines()
    for index, line in enumerate(lines):
        if not _DISABLE.search(line):
            continue
        reason = line.split("#", 2)[-1] if line.count("#") >= 2 else ""
        following = lines[index + 1] if index + 1 < len(lines) else ""
        assert reason.strip() or following.lstrip().startswith("#"), f"{script.name}:{index + 1}: no reason given"
