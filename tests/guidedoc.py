"""docs/site-admin-guide.md as test input: its sections, their ```bash, ```yaml and ```text blocks, and running
a bash block as written.

Tests substitute only site-specific names (paths, hosts, ports) given in a map, longest first, so that
the commands stay the guide's own and runs never collide with each other.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "site-admin-guide.md"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sections(text: str | None = None) -> dict[str, str]:
    """Level-2 heading (without '## ') -> the section's body, up to the next level-2 heading."""
    text = GUIDE.read_text() if text is None else text
    found: dict[str, str] = {}
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        found[heading.strip()] = body
    return found


def blocks_of(body: str, lang: str = "bash") -> list[str]:
    """The fenced blocks of one language (```bash by default: the commands), in order."""
    return re.findall(rf"^```{re.escape(lang)}\n(.*?)^```", body, flags=re.S | re.M)


def yaml_blocks(text: str | None = None) -> list[tuple[str, str]]:
    """(section heading, block) for every ```yaml block of the guide."""
    return [(heading, block) for heading, body in sections(text).items() for block in blocks_of(body, "yaml")]


def section_blocks(heading: str) -> list[str]:
    """The ```bash blocks of the section with exactly this heading (KeyError if there is none)."""
    return blocks_of(sections()[heading])


def substitute(script: str, subs: Mapping[str, str]) -> str:
    for old in sorted(subs, key=len, reverse=True):
        script = script.replace(old, subs[old])
    return script


def run_block(block: str, subs: Mapping[str, str], env: Mapping[str, str] | None = None,
              timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """One block under `bash -euo pipefail` with a clean environment; fails the test on a non-zero exit."""
    script = substitute(block, subs)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                            timeout=timeout, env={"PATH": PATH, "HOME": "/root", **(env or {})})
    assert result.returncode == 0, f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result
