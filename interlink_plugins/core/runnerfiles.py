"""The per-container view of backends whose jobs run the shared pod runner (SLURM, HTCondor)."""

from __future__ import annotations

from pathlib import Path

from interlink_plugins.core.state import PodRecord
from interlink_plugins.core.status import ContainerFiles, read_pod_files


class RunnerFiles:
    """Reads what pod-runner.sh writes under <job dir>/c/<container>/ (see docs/internals.md)."""

    def container_snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]:
        return read_pod_files(Path(record.job_dir) / "c", record.init_names + record.main_names)

    def log_file(self, record: PodRecord, container: str, *, previous: bool) -> Path:
        return Path(record.job_dir) / "c" / container / ("log.prev" if previous else "log")

    def container_started(self, record: PodRecord, container: str) -> bool:
        directory = Path(record.job_dir) / "c" / container
        return (directory / "started").exists() or (directory / "log").exists()

    def container_exited(self, record: PodRecord, container: str) -> bool:
        return (Path(record.job_dir) / "c" / container / "exit").exists()

    def runner_finished(self, record: PodRecord) -> bool:
        return (Path(record.job_dir) / "pod.exit").exists()
