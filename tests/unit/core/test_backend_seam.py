"""The declared seam between the service and a backend (core/backend.py).

The service calls every Scheduler, ContainerStateSource and LogSource method unconditionally: a hook a
backend does not need has its documented default (BackendDefaults), never a getattr/hasattr probe. A
batch backend picks each record's runner-state source once (state_source) and never overrides the
per-container methods themselves.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import interlink_plugins
from interlink_plugins.backends import BACKENDS
from interlink_plugins.core import backend as seam
from interlink_plugins.core.batch import BatchBackend
from interlink_plugins.core.podrunner.statefiles import BySource
from interlink_plugins.htcondor.backend import HTCondorBackend
from interlink_plugins.podman.backend import PodmanBackend
from interlink_plugins.slurm.backend import SlurmBackend
from interlink_plugins.slurm.remote import RemoteSlurmBackend

PACKAGE = Path(interlink_plugins.__file__).parent


def _service_modules() -> list[Path]:
    """Every module of the package outside the backends' own packages (wherever the service's parts live)."""
    return sorted(path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).parts[0] not in BACKENDS)


def _probes(path: Path) -> list[str]:
    """getattr/hasattr calls whose object is a backend (an expression naming `backend`)."""
    tree = ast.parse(path.read_text(), str(path))
    hits = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                and node.args and "backend" in ast.unparse(node.args[0]).lower()):
            hits.append(f"{path.parent.name}/{path.name}:{node.lineno}: {ast.unparse(node)}")
    return hits


def test_the_service_never_probes_a_backend() -> None:
    modules = _service_modules()
    assert any(path.parent.name == "service" for path in modules)  # the scan sees the service
    probes = [hit for path in modules for hit in _probes(path)]
    assert probes == [], "declare the hook in core/backend.py (with its default in BackendDefaults):\n" + "\n".join(
        probes
    )


def test_the_scan_finds_a_probe(tmp_path: Path) -> None:
    planted = tmp_path / "service.py"
    planted.write_text("def f(self):\n    return getattr(self.backend, 'fetch_log', None)\n")
    assert _probes(planted) == [f"{tmp_path.name}/service.py:2: getattr(self.backend, 'fetch_log', None)"]


def _members(protocol: type) -> set[str]:
    names = {name for name, value in vars(protocol).items() if not name.startswith("_") and callable(value)}
    return names | set(getattr(protocol, "__annotations__", {}))


@pytest.mark.parametrize("backend", [SlurmBackend, RemoteSlurmBackend, HTCondorBackend, PodmanBackend])
def test_every_backend_has_every_declared_member(backend: type) -> None:
    declared = _members(seam.Scheduler) | _members(seam.ContainerStateSource) | _members(seam.LogSource)
    assert declared >= {"prepare", "submit", "find_job", "query", "query_finished", "cancel", "adopt", "resources",
                        "cleanup", "container_snapshot", "files_version", "container_started", "runner_finished",
                        "log_file", "fetch_log", "keep_log_fresh", "open_log_feed", "prefetch_files", "remote_logs"}
    missing = sorted(name for name in declared if not hasattr(backend, name))
    assert missing == []
    for name in declared - {"remote_logs"}:
        is_async = inspect.iscoroutinefunction(getattr(seam.Backend, name))
        assert inspect.iscoroutinefunction(getattr(backend, name)) == is_async, name


PER_RECORD = ("container_snapshot", "files_version", "log_file", "container_started", "runner_finished")


@pytest.mark.parametrize("backend", [SlurmBackend, RemoteSlurmBackend, HTCondorBackend])
def test_batch_backends_choose_the_source_once_per_record(backend: type) -> None:
    """The per-container methods are BySource's: a backend names the record's source (state_source) and
    does not override them (the Go layout, the SFTP mirror and HTCondor's chirp are sources)."""
    assert issubclass(backend, BatchBackend)
    for klass in backend.__mro__:
        if klass is BySource:
            break
        overridden = sorted(set(PER_RECORD) & set(vars(klass)))
        assert overridden == [], f"{klass.__name__} overrides {overridden}: return a source from state_source"
