"""Core knows no backend: no backend name, scheduler command, option table or annotation key of a backend
in the code of interlink_plugins/core (identifiers and string literals; comments and docstrings may say
which backends use a piece of core). What a backend adds is registered by its package: its policy section
(slurm/policy.py, htcondor/policy.py), its column of the pod field table (*/fields.py: its verdicts and its
own words for a field), its display name."""

from __future__ import annotations

import re
from pathlib import Path

from bench.arch_numbers import code_tokens

CORE = Path(__file__).resolve().parents[2] / "interlink_plugins" / "core"

# backend names, their commands and option tables, and the annotation keys of backends (<backend>-job.vk.io)
BACKEND_WORDS = re.compile(r"slurm|sbatch|srun|squeue|sacct|scancel|sinfo|scontrol|condor|schedd|classad|-job\.vk\.io",
                           re.IGNORECASE)
PODMAN = re.compile(r"podman", re.IGNORECASE)

# podman is also a container runtime (ContainerRuntime podman, inside SLURM and HTCondor jobs): the modules
# of that runtime may name it
RUNTIME_MODULES = {
    "runtimes/containers.py": "the container runtimes, ContainerRuntime podman among them",
    "runtimes/podmanenv.py": "the env file and secrets of ContainerRuntime podman",
    "model/imageref.py": "the image references ContainerRuntime podman accepts",
}


def _hits(path: Path) -> list[str]:
    found = []
    name = path.relative_to(CORE).as_posix()
    for token in code_tokens(path.read_text()):
        text = token.string
        if BACKEND_WORDS.search(text) or (name not in RUNTIME_MODULES and PODMAN.search(text)):
            found.append(f"{path.relative_to(CORE.parent.parent)}:{token.start[0]}: {text[:80]}")
    return found


def test_core_names_no_backend() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 20
    hits = [hit for path in files for hit in _hits(path)]
    assert hits == [], "backend knowledge in core (register it from the backend's package):\n" + "\n".join(hits)


# outside core, the modules every backend goes through that name none either: the command line asks the
# registered sections (backends.py) for what is a backend's (its checks, the default config's help)
NO_BACKEND_OUTSIDE_CORE = ("cli.py",)


def test_the_command_line_names_no_backend() -> None:
    package = CORE.parent
    hits = [hit for name in NO_BACKEND_OUTSIDE_CORE for hit in _hits_in(package / name)]
    assert hits == [], "backend knowledge in the command line (register it from the backend's package):\n" + \
        "\n".join(hits)


def test_the_exempt_modules_exist() -> None:
    for name in RUNTIME_MODULES:
        assert (CORE / name).is_file(), name


def test_the_scan_sees_code_and_skips_comments(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""SLURM in a docstring."""\n# sbatch in a comment\nKEY = "slurm-job.vk.io/flags"\n'
                      'squeue_argv = ()\n')
    assert [hit.split(": ", 1)[1] for hit in _hits_in(sample)] == ['"slurm-job.vk.io/flags"', "squeue_argv"]


def _hits_in(path: Path) -> list[str]:
    """_hits for a file outside core (the test of the scan itself)."""
    return [f"{path.name}:{token.start[0]}: {token.string}" for token in code_tokens(path.read_text())
            if BACKEND_WORDS.search(token.string) or PODMAN.search(token.string)]
