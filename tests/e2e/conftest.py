"""e2e fixtures: a real plugin process against the real local SLURM cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import PluginProcess


@pytest.fixture
def plugin_factory(tmp_path: Path, slurm_cluster: dict[str, str], podman_ready: None) -> Iterator[Callable[..., PluginProcess]]:
    started: list[PluginProcess] = []

    def make(runtime: str = "none", workdir: Path | None = None, **config: Any) -> PluginProcess:
        workdir = workdir or tmp_path / f"plugin{len(started)}"
        workdir.mkdir(parents=True, exist_ok=True)
        process = PluginProcess(
            workdir,
            {"Backend": "slurm", "ContainerRuntime": runtime, "InstanceId": f"t{len(started)}-{tmp_path.name[-12:]}",
             **config},
            env={"SLURM_CONF": slurm_cluster["SLURM_CONF"]},
        )
        started.append(process)
        return process.start()

    yield make
    for process in started:
        process.stop()


@pytest.fixture
def plugin(plugin_factory: Callable[..., PluginProcess]) -> PluginProcess:
    return plugin_factory()
