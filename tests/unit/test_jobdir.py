"""Job directory assembly: refusals that must happen at create time, before anything is submitted."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from interlink_plugins.config import parse_config
from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.jobdir import build_run_plan, host_namespaces_available
from interlink_plugins.core.pod import parse_create_body
from interlink_plugins.core.policy import policy_from_config
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
