"""The per-container view of backends whose jobs run the shared pod runner (SLURM, HTCondor)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from interlink_plugins.core.state import PodRecord
from interlink_plugins.core.status import ContainerFiles, read_pod_files

# A directory changed more recently than this is not trusted to have a distinct mtime for its next
# change (file systems with coarse timestamps: NFS, some GPFS setups), so its files are re-read.
SETTLE_NS = 1_000_000_000


class RunnerFiles:
    """Reads what pod-runner.sh writes under <job dir>/c/<container>/ (see docs/internals.md)."""

    def container_snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]:
        return read_pod_files(Path(record.job_dir) / "c", record.init_names + record.main_names)

    def files_version(self, record: PodRecord) -> tuple[int, ...] | None:
        """A cheap change token for the runner's state files, or None when it cannot be trusted.

        The runner writes every state file by rename and removes them with rm (pod-runner.sh `put`),
        so each change moves the mtime of the container dir (or, for pod.exit, of the job dir): a
        few stat calls tell whether the nine files per container need reading again.
        """
        job_dir = Path(record.job_dir)
        files = job_dir / "c"
        stamps = []
        for directory in (job_dir, files, *(files / name for name in record.init_names + record.main_names)):
            try:
                stamps.append(os.stat(directory).st_mtime_ns)
            except OSError:
                stamps.append(-1)
        if time.time_ns() - max(stamps) < SETTLE_NS:
            return None
        return tuple(stamps)

    def log_file(self, record: PodRecord, container: str, *, previous: bool) -> Path:
        return Path(record.job_dir) / "c" / container / ("log.prev" if previous else "log")

    def container_started(self, record: PodRecord, container: str) -> bool:
        directory = Path(record.job_dir) / "c" / container
        return (directory / "started").exists() or (directory / "log").exists()

    def container_exited(self, record: PodRecord, container: str) -> bool:
        return (Path(record.job_dir) / "c" / container / "exit").exists()

    def runner_finished(self, record: PodRecord) -> bool:
        return (Path(record.job_dir) / "pod.exit").exists()
