"""Which working directory a job carrying our comment may claim as a pod's job dir at adoption."""

from __future__ import annotations

from pathlib import Path

from interlink_plugins.slurm.backend import _is_pod_job_dir

ROOT = Path("/var/lib/interlink/jobs")
UID = "8172d6c7-bf42-4013-ac9e-9982fdd31052"


def test_only_the_pods_own_job_dir_directly_in_the_data_root() -> None:
    assert _is_pod_job_dir(f"{ROOT}/team-a-{UID}", UID, ROOT)
    assert _is_pod_job_dir(f"{ROOT}/team-a-{UID}/", UID, ROOT)
    assert _is_pod_job_dir(f"{ROOT}/team-a_x1", "x1", ROOT)  # a uid that is not a UUID


def test_a_planted_working_directory_is_not_a_job_dir() -> None:
    # a job of a uid the plugin submits as could --chdir anywhere: the data root's parent (cleanup would
    # remove what it takes for the job dir), another pod's dir, a dir below a job dir, one outside
    for work_dir in (f"{ROOT}/..", f"{ROOT}/.", str(ROOT), f"{ROOT}/team-a-{UID[:-1]}0", f"{ROOT}/{UID}",
                     f"{ROOT}/-{UID}", f"{ROOT}/team-a-{UID}/c", f"/tmp/team-a-{UID}", "", "/"):
        assert not _is_pod_job_dir(work_dir, UID, ROOT), work_dir
