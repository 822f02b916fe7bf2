"""Plan, then write: every batch backend plans a job once, writes it locally (or into an SFTP stage),
and the job's runner runs the static helpers from their content-hashed copy in the data root."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from interlink_plugins.backends import parse_config, policy_from_config
from interlink_plugins.core.commands.local import LocalRunner
from interlink_plugins.core.commands.ssh import SshRunner, SshTarget
from interlink_plugins.core.model.pod import parse_create_body
from interlink_plugins.core.podrunner import jobdir
from interlink_plugins.core.podrunner.helpers import helper_set
from interlink_plugins.htcondor import submit
from interlink_plugins.htcondor.backend import HTCondorBackend
from interlink_plugins.slurm.backend import SlurmBackend
from interlink_plugins.slurm.remote import RemoteSlurmBackend
from tests.podfactory import config_map, container, pod_body


def _config(tmp_path: Path, **raw: Any) -> Any:
    config, _ = parse_config({"ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs"),
                              "StateDir": str(tmp_path / "state"), "InstanceId": "unit", "AllowRootJobs": True,
                              **raw}, environ={})
    return config


def _body() -> dict[str, Any]:
    mount = {"name": "cfg", "mountPath": "/cfg"}
    return pod_body("p", [container("a", ["sh", "-c", "echo hi"], volumeMounts=[mount])],
                    volumes=[{"name": "cfg", "configMap": {"name": "cm"}}], config_maps=[config_map("cm", {"k": "v"})])


def _backends(tmp_path: Path) -> dict[str, Any]:
    slurm = _config(tmp_path / "slurm")
    remote = _config(tmp_path / "remote", SshHost="login.example", SshUser="u", SshKeyFile="/k",
                     SshKnownHosts="/kh", DataTransfer="sftp")
    shared = _config(tmp_path / "shared", Backend="htcondor")
    spool = _config(tmp_path / "spool", Backend="htcondor", HTCondorDataMode="spool")
    ssh = SshRunner(SshTarget(host="login.example", user="u", key_file="/k", known_hosts="/kh"))
    return {
        "slurm": SlurmBackend(slurm, LocalRunner(), policy_from_config({})),
        "slurm-sftp": RemoteSlurmBackend(remote, LocalRunner(), policy_from_config({}), ssh),
        "htcondor-shared": HTCondorBackend(shared, LocalRunner(), policy_from_config({})),
        "htcondor-spool": HTCondorBackend(spool, LocalRunner(), policy_from_config({})),
    }


@pytest.mark.parametrize("name", ["slurm", "slurm-sftp", "htcondor-shared", "htcondor-spool"])
@pytest.mark.parametrize("write", [True, False])
def test_every_backend_plans_a_job_once(tmp_path: Path, name: str, write: bool) -> None:
    backend = _backends(tmp_path)[name]
    before = jobdir.PLAN_COUNTER.count
    prepared = backend.prepare(parse_create_body(_body()), write=write)
    assert jobdir.PLAN_COUNTER.count - before == 1
    assert "pod-runner.sh" in prepared.files and "pod.json" in prepared.files
    if not write:
        return
    where = Path(prepared.submit["stage"]) if name == "slurm-sftp" else prepared.job_dir
    assert (where / "volumes" / "cfg" / "k").read_bytes() == b"v"
    runner = (where / "pod-runner.sh").read_text()
    digest = helper_set().digest
    if name == "htcondor-spool":  # the job sees none of the data root: the helpers travel with it
        assert (where / "ns-exec.sh").is_file() and digest not in runner
        # the spool wrapper is a planned file: written with the rest, shown by render, not spooled
        assert stat.S_IMODE(os.lstat(where / submit.WRAPPER).st_mode) == 0o700
        assert submit.WRAPPER in prepared.files and submit.WRAPPER not in prepared.submit["description"].get(
            "transfer_input_files", "")
    else:  # no per-job copy: the runner sources the data root's copy
        assert not (where / "ns-exec.sh").exists() and not (where / "pod_runner.sh").exists()
        assert f"/helpers/{digest}/pod_runner.sh" in runner
    if name in ("slurm", "htcondor-shared"):
        helpers = prepared.job_dir.parent / "helpers" / digest
        assert stat.S_IMODE(os.lstat(helpers / "pod_runner.sh").st_mode) == 0o555
    if name == "slurm-sftp":
        asyncio.run(backend.ssh.close())


def test_a_planned_job_runs_through_the_data_roots_helpers(tmp_path: Path) -> None:
    """The generated header sources the static runner, which runs the container (runtime none, no
    mounts: ns-exec.sh from the helpers dir) and writes its state: RUN, not compared."""
    config = _config(tmp_path)
    backend = SlurmBackend(config, LocalRunner(), policy_from_config({}))
    prepared = backend.prepare(parse_create_body(pod_body("p", [container("a", ["sh", "-c", "echo hi"])])))
    result = subprocess.run(["bash", str(prepared.job_dir / "pod-runner.sh")], capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr.decode()
    state = prepared.job_dir / "c" / "a"
    assert (state / "exit").read_text().strip() == "0"
    assert " stdout F hi" in (state / "log").read_text()


def test_render_shows_the_plan_without_writing(tmp_path: Path) -> None:
    backend = _backends(tmp_path)["slurm"]
    prepared = backend.prepare(parse_create_body(_body()), write=False)
    assert not prepared.job_dir.exists() and not (prepared.job_dir.parent / "helpers").exists()
    assert {"pod-runner.sh", "pod.json", "ns-exec.sh", "pod_runner.sh"} <= set(prepared.files)
