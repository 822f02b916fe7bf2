"""Plan, then write, on the Podman backend: a prepare plans the job dir once; the dry run shows the plan a
create writes, through core/safefs (private modes, no symlink followed)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from interlink_plugins.backends import parse_config
from interlink_plugins.core.commands.local import CommandResult
from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.pod import parse_create_body
from interlink_plugins.core.podrunner import jobdir
from interlink_plugins.core.policy.engine import AdminPolicy
from interlink_plugins.podman.backend import PodmanBackend
from interlink_plugins.podman.jobfiles import STOP_MARKER
from interlink_plugins.podman.spec import HostFacts
from tests.podfactory import config_map, container, pod_body


class _NoRunner:
    async def run(self, argv: Any, *, timeout: float, stdin: Any = None, env: Any = None) -> CommandResult:
        raise AssertionError(f"no command expected: {argv}")


def _backend(tmp_path: Path) -> PodmanBackend:
    config, _ = parse_config({"Backend": "podman", "DataRootFolder": str(tmp_path / "jobs"), "InstanceId": "t"})
    backend = PodmanBackend(config, _NoRunner(), AdminPolicy())
    backend.host = HostFacts(rootless=False, cgroup_v2=True)
    return backend


def _body() -> dict[str, Any]:
    mounts = [{"name": "cfg", "mountPath": "/cfg"}, {"name": "scratch", "mountPath": "/s"}]
    main = container("c", ["true"], env=[{"name": "GREETING", "value": "hi"}], volumeMounts=mounts)
    return pod_body("p", [main], volumes=[{"name": "cfg", "configMap": {"name": "cm"}},
                                          {"name": "scratch", "emptyDir": {}}],
                    config_maps=[config_map("cm", {"k": "v"})])


@pytest.mark.parametrize("write", [True, False])
def test_a_prepare_plans_the_job_dir_once(tmp_path: Path, write: bool) -> None:
    backend = _backend(tmp_path)
    pod = parse_create_body(_body())
    before = jobdir.PLAN_COUNTER.count
    prepared = backend.prepare(pod, write=write)
    assert jobdir.PLAN_COUNTER.count - before == 1
    assert prepared.job_dir.exists() == write
    assert (pod.uid in backend._prepared) == write


def test_the_dry_run_shows_what_the_create_writes(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    body = _body()
    rendered = backend.prepare(parse_create_body(body), write=False)
    job = rendered.job_dir
    job.mkdir(parents=True)
    (job / STOP_MARKER).write_text("")  # an earlier submission's delete
    created = backend.prepare(parse_create_body(body))
    assert created.files == rendered.files and created.submit == rendered.submit
    assert (job / "pod.json").read_text() == rendered.files["pod.json"]
    assert not (job / STOP_MARKER).exists()
    assert stat.S_IMODE(os.lstat(job).st_mode) == 0o700
    spec = json.loads(rendered.files["pod.json"])["podman"]["containers"][0]
    env_file = next(w.split("=", 1)[1] for w in spec["options"] if w.startswith("--env-file="))
    assert Path(env_file).parent == job / "c" / "c" and b"GREETING=hi" in Path(env_file).read_bytes()
    for private in (job / "pod.json", Path(env_file)):
        assert stat.S_IMODE(os.lstat(private).st_mode) == 0o600
    assert (job / "volumes" / "cfg" / "k").read_bytes() == b"v" and (job / "emptydir" / "scratch").is_dir()


def test_the_writer_follows_no_symlink_planted_in_the_job_dir(tmp_path: Path) -> None:
    """Attack: something that writes in the job dir (a user on the host, a bind below it) replaces ``c`` by a
    symlink to a directory of the plugin's, or makes the job dir itself a symlink. Defence: the writer walks
    through core/safefs: refused, nothing written through the link."""
    backend = _backend(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    body = _body()
    job = backend.prepare(parse_create_body(body), write=False).job_dir
    job.mkdir(parents=True)
    (job / "c").symlink_to(outside)
    with pytest.raises(OSError):
        backend.prepare(parse_create_body(body))
    assert list(outside.iterdir()) == []
    shutil.rmtree(job)
    job.symlink_to(outside)
    with pytest.raises(PodSpecError):
        backend.prepare(parse_create_body(body))
    assert list(outside.iterdir()) == []
