"""Job directory assembly: refusals that must happen at create time, before anything is submitted."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from interlink_plugins.backends import parse_config, policy_from_config
from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.pod import parse_create_body
from interlink_plugins.core.podrunner.jobdir import build_run_plan, host_namespaces_available
from tests.podfactory import container, pod_body


def test_volume_mounts_refused_with_runtime_none_when_namespaces_are_impossible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a PATH without bubblewrap: the real probe (ns-exec.sh --probe) fails, as on a host without bwrap
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "mkdir", "cat", "readlink", "dirname", "id"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_dir / tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    host_namespaces_available.cache_clear()
    try:
        config, _ = parse_config({"ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs")}, environ={})
        body = pod_body("p", [container("c", ["true"], volumeMounts=[{"name": "v", "mountPath": "/data"}])],
                        volumes=[{"name": "v", "emptyDir": {}}])
        pod = parse_create_body(body)
        with pytest.raises(PodSpecError) as info:
            build_run_plan(pod, tmp_path / "jobs" / "x", config, policy_from_config({}), write=False)
        assert info.value.field == "spec.containers[0].volumeMounts[0].mountPath"
        assert "/data" in info.value.message
        plain = parse_create_body(pod_body("q", [container("c", ["true"])]))
        plan = build_run_plan(plain, tmp_path / "jobs" / "y", config, policy_from_config({}), write=False)
        assert plan.containers[0].name == "c"
    finally:
        host_namespaces_available.cache_clear()
    monkeypatch.undo()
    assert host_namespaces_available()[0], "bubblewrap is installed here: the probe must pass"


@pytest.mark.skipif(os.geteuid() != 0, reason="a job dir of another uid needs root to make")
def test_an_existing_job_dir_of_another_uid_or_a_symlink_is_never_written_into(tmp_path: Path) -> None:
    """Attack: a job dir left by an earlier pod with this UID (owned by its job's uid, with planted
    symlinks), or a symlink where the job dir goes: /create answers 409, nothing is written there."""
    from interlink_plugins.core.podrunner.jobdir import make_job_dir

    target = tmp_path / "elsewhere"
    target.mkdir()
    data = tmp_path / "data"
    left = data / "ns-left"
    left.mkdir(parents=True)
    (left / "pod-runner.sh").symlink_to(target / "written")
    os.chown(left, 4399, 4399)
    (data / "ns-link").symlink_to(target)
    for job_dir in (left, data / "ns-link"):
        with pytest.raises(PodSpecError) as refused:
            make_job_dir(job_dir)
        assert refused.value.status == 409 and str(job_dir) in refused.value.message
    assert list(target.iterdir()) == []
    make_job_dir(data / "ns-fresh")
    assert oct((data / "ns-fresh").stat().st_mode & 0o777) == "0o700"
    make_job_dir(data / "ns-fresh")  # ours already (a retried create): fine
