"""Annotations turned into the RunPlan: runtime options and mounts, image-root, MPI launcher flags,
probes and hooks, raw shell, jobScript."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from interlink_plugins.backends import parse_config, policy_from_config
from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.pod import parse_create_body
from interlink_plugins.core.podrunner.jobdir import build_run_plan, write_job_files
from interlink_plugins.core.podrunner.plan import RunPlan
from interlink_plugins.core.policy.annotations import mpi_launch_words, split_mesh
from interlink_plugins.slurm.settings import SlurmSettings
from tests.podfactory import container, pod_body


def plan(tmp_path: Path, body: dict[str, Any], *, write: bool = False, **raw: Any) -> RunPlan:
    raw = {"ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs"), **raw}
    config, _ = parse_config(raw, environ={})
    return build_run_plan(parse_create_body(body), tmp_path / "jobs" / "j", config,
                          policy_from_config(config.policy_raw), write=write,
                          mpi_launcher=config.section(SlurmSettings).mpi_launcher)


# --- runtime options ----------------------------------------------------------------------------


def test_singularity_mounts_then_options_with_legacy_names(tmp_path: Path) -> None:
    body = pod_body("p", [container("c", ["true"])], annotations={
        "job.vk.io/singularity-mounts": "--bind /cvmfs/sw:/sw",
        "slurm-job.vk.io/singularity-options": "--nv --cleanenv",
    })
    argv = plan(tmp_path, body, ContainerRuntime="apptainer", AllowedHostPaths=["/cvmfs"]).containers[0].argv
    assert argv.index("--bind=/cvmfs/sw:/sw") < argv.index("--nv") < argv.index("--cleanenv")
    with pytest.raises(PodSpecError) as info:
        plan(tmp_path, body, ContainerRuntime="apptainer")
    assert info.value.status == 403 and info.value.field == "metadata.annotations[job.vk.io/singularity-mounts]"


@pytest.mark.parametrize(
    ("root", "image", "expected"),
    [("docker://reg.example.org/", "app:1", "docker://reg.example.org/app:1"),
     ("/cvmfs/unpacked.cern.ch/", "library/x:1", "/cvmfs/unpacked.cern.ch/library/x:1"),
     ("oras://ghcr.io/o/", "x:1", "oras://ghcr.io/o/x:1")],
)  # fmt: skip
def test_image_root_prefixes_the_image(tmp_path: Path, root: str, image: str, expected: str) -> None:
    body = pod_body("p", [container("c", ["true"], image=image)], annotations={"slurm-job.vk.io/image-root": root})
    argv = plan(tmp_path, body, ContainerRuntime="apptainer").containers[0].argv
    assert argv[6] == expected and argv[argv.index(expected) - 1] == ""  # IMAGE after SIF ("": no conversion)


@pytest.mark.parametrize(
    ("root", "image"),
    [("--bind=/etc:/", "x"), ("-B/etc:/x ", "x"), ("docker://a b/", "x"), ("relative/dir/", "x"),
     ("docker://--x/", "busybox"), ("docker://reg.io/\n", "x")],
)
def test_image_root_is_never_an_option(tmp_path: Path, root: str, image: str) -> None:
    body = pod_body("p", [container("c", ["true"], image=image)], annotations={"job.vk.io/image-root": root})
    with pytest.raises(PodSpecError) as info:
        plan(tmp_path, body, ContainerRuntime="apptainer")
    assert info.value.status == 422
    assert info.value.field in ("metadata.annotations[job.vk.io/image-root]", "spec.containers[0].image")


def test_runtime_annotations_of_another_runtime_are_ignored(tmp_path: Path) -> None:
    body = pod_body("p", [container("c", ["true"])], annotations={"slurm-job.vk.io/singularity-options": "--nv"})
    assert plan(tmp_path, body).containers[0].argv[-1] == "true"


# --- MPI ----------------------------------------------------------------------------------------


def test_mpi_flags_with_srun_are_allow_listed(tmp_path: Path) -> None:
    policy = policy_from_config({})
    launcher = ("srun", "--export=ALL")
    field = "metadata.annotations[slurm-job.vk.io/mpi-flags]"
    assert mpi_launch_words(policy, "", launcher, field=field) == list(launcher)
    assert mpi_launch_words(policy, "true", launcher, field=field) == list(launcher)
    assert mpi_launch_words(policy, "--mpi=pmix -l --cpu-bind cores", launcher, field=field) == [
        "srun", "--export=ALL", "--mpi=pmix", "--label", "--cpu-bind=cores"]
    for text in ("--export=NONE", "--export-f=/x", "--task-prolog=/x", "-o /etc/passwd", "--uid 0", "--chdir=/"):
        with pytest.raises(PodSpecError) as info:
            mpi_launch_words(policy, text, launcher, field=field)
        assert info.value.status == 403, text
    with pytest.raises(PodSpecError) as info:
        mpi_launch_words(policy, "-np 4", ("mpiexec",), field=field)
    assert info.value.status == 403 and "AllowRawShell" in info.value.message
    raw = policy_from_config({"AllowRawShell": True})
    assert mpi_launch_words(raw, "--bind-to core", ("mpiexec", "-np", "@NTASKS@"), field=field) == [
        "mpiexec", "-np", "@NTASKS@", "--bind-to", "core"]


def test_mpi_wraps_main_containers_only_and_false_turns_it_off(tmp_path: Path) -> None:
    body = pod_body("p", [container("c", ["app"])], init_containers=[container("i", ["setup"])],
                    annotations={"slurm-job.vk.io/mpi-flags": "-l"})
    init, main = plan(tmp_path, body).containers
    assert init.argv[-1] == "setup" and "mpi.sh" not in " ".join(init.argv)
    assert main.argv[:6] == ("bash", str(tmp_path / "jobs" / "j" / "mpi.sh"), "launch", "srun", "--export=ALL",
                             "--label")
    assert main.argv[6:8] == ("--il-task", "none") and main.argv[-1] == "app"
    body["pod"]["metadata"]["annotations"]["slurm-job.vk.io/mpi-flags"] = "false"
    off = plan(tmp_path, body).containers[1].argv
    assert off[-1] == "app" and not any(word.endswith("mpi.sh") for word in off)
    body["pod"]["metadata"]["annotations"]["slurm-job.vk.io/mpi-flags"] = ""
    with pytest.raises(PodSpecError):
        plan(tmp_path, body, ContainerRuntime="podman")


# --- raw shell, mesh, jobScript -----------------------------------------------------------------


def test_split_mesh_takes_the_heredoc_out_of_pre_exec() -> None:
    text = "echo a\ncat <<'EOFMESH' > $TMPDIR/mesh.sh\n#!/bin/bash\nx\nEOFMESHNOT\nEOFMESH\necho b\n"
    assert split_mesh(text) == ("echo a\necho b\n", "#!/bin/bash\nx\nEOFMESHNOT\n")
    assert split_mesh("echo plain") == ("echo plain", None)
    unclosed = "cat <<'EOFMESH' > $TMPDIR/mesh.sh\n#!/bin/bash\n"
    assert split_mesh(unclosed) == (unclosed, None)


def test_raw_shell_in_the_go_plugins_order_with_the_mesh_wrapper(tmp_path: Path) -> None:
    mesh = "cat <<'EOFMESH' > $TMPDIR/mesh.sh\n#!/bin/bash\nexec \"$@\"\nEOFMESH\n"
    annotations = {"interlink.eu/wstunnel-client-commands": "wstunnel &", "slurm-job.vk.io/pre-exec": mesh + "hi",
                   "interlink.eu/pod-ip": "10.0.0.9"}
    body = pod_body("p", [container("c", ["true"])], annotations=annotations)
    with pytest.raises(PodSpecError) as info:
        plan(tmp_path, body)
    assert info.value.field == "metadata.annotations[interlink.eu/wstunnel-client-commands]"
    result = plan(tmp_path, body, write=True, AllowRawShell=True)
    job_dir = tmp_path / "jobs" / "j"
    assert result.prologue[:2] == ("wstunnel &", "hi") and result.wrapper == (str(job_dir / "mesh.sh"),)
    assert ("POD_IP", "10.0.0.9") in result.runner_env
    config, _ = parse_config({"ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs")}, environ={})
    files = write_job_files(parse_create_body(body), job_dir, result, config, write=True)
    assert files["mesh.sh"] == '#!/bin/bash\nexec "$@"\n' and (job_dir / "mesh.sh").stat().st_mode & 0o700 == 0o700


def test_job_script_replaces_the_containers(tmp_path: Path) -> None:
    body = pod_body("p", [container("a", ["true"]), container("b", None)], init_containers=[container("i", ["x"])])
    body["jobScript"] = "echo hi\n"
    with pytest.raises(PodSpecError) as info:
        plan(tmp_path, body)
    assert info.value.field == "jobScript" and info.value.status == 403
    result = plan(tmp_path, body, write=True, AllowRawShell=True)
    job_dir = tmp_path / "jobs" / "j"
    assert [(c.name, c.argv) for c in result.containers] == [("jobscript", ("bash", str(job_dir / "jobScript.sh")))]
    config, _ = parse_config({"ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs")}, environ={})
    write_job_files(parse_create_body(body), job_dir, result, config, write=True)
    assert (job_dir / "jobScript.sh").read_text() == "echo hi\n"
    assert {p.name: str(p.readlink()) for p in (job_dir / "c").iterdir() if p.is_symlink()} == {
        "a": "jobscript", "b": "jobscript"}
    assert (job_dir / "c" / "i" / "exit").read_text() == "0\n"  # replaced by the job script: done
    body["jobScript"] = "#!/usr/bin/env python3\nprint(1)\n"
    assert plan(tmp_path, body, AllowRawShell=True).containers[0].argv == (str(job_dir / "jobScript.sh"),)


# --- probes and hooks ---------------------------------------------------------------------------


def probed(**probes: Any) -> dict[str, Any]:
    return pod_body("p", [container("c", ["srv"], ports=[{"name": "web", "containerPort": 8080}], **probes)])


def test_probes_only_with_enable_probes_and_with_kubernetes_defaults(tmp_path: Path) -> None:
    body = probed(readinessProbe={"httpGet": {"port": "web", "path": "health",
                                              "httpHeaders": [{"name": "X-A", "value": "b c"}]}},
                  livenessProbe={"tcpSocket": {"port": 9000, "host": "10.1.1.1"}, "periodSeconds": 5,
                                 "terminationGracePeriodSeconds": 7},
                  startupProbe={"exec": {"command": ["cat", "/tmp/ok"]}, "failureThreshold": 30})
    assert plan(tmp_path, body).containers[0].probes == ()
    probes = {p.kind: p for p in plan(tmp_path, body, EnableProbes=True).containers[0].probes}
    helper = str(tmp_path / "jobs" / "j" / "probe.sh")
    ready = probes["readiness"]
    assert ready.argv == ("bash", helper, "http", "HTTP", "127.0.0.1", "8080", "/health", "X-A: b c")
    assert (ready.period_seconds, ready.timeout_seconds, ready.success_threshold, ready.failure_threshold,
            ready.initial_delay_seconds, ready.grace_seconds) == (10, 1, 1, 3, 0, None)
    live = probes["liveness"]
    assert live.argv == ("bash", helper, "tcp", "10.1.1.1", "9000") and (live.period_seconds, live.grace_seconds) == (5, 7)
    assert probes["startup"].argv[-2:] == ("cat", "/tmp/ok") and probes["startup"].failure_threshold == 30


@pytest.mark.parametrize(
    ("probe", "field"),
    [
        ({"grpc": {"port": 9000}}, "readinessProbe.grpc"),
        ({"httpGet": {"port": "nope"}}, "readinessProbe.httpGet.port"),
        ({"httpGet": {"port": 70000}}, "readinessProbe.httpGet.port"),
        ({"httpGet": {"port": 80, "httpHeaders": [{"name": "Bad Name", "value": "x"}]}},
         "readinessProbe.httpGet.httpHeaders[0].name"),
        ({"httpGet": {"port": 80, "httpHeaders": [{"name": "X", "value": "a\r\nb"}]}},
         "readinessProbe.httpGet.httpHeaders[0].value"),
        ({"tcpSocket": {"port": 80, "host": "a b"}}, "readinessProbe.tcpSocket.host"),
        ({"exec": {"command": []}}, "readinessProbe.exec.command"),
        ({"exec": {"command": ["x"]}, "periodSeconds": 0}, "readinessProbe.periodSeconds"),
        ({}, "readinessProbe"),
    ],
)
def test_bad_probes_are_a_422_naming_the_field(tmp_path: Path, probe: dict[str, Any], field: str) -> None:
    body = probed(readinessProbe={"exec": {"command": ["x"]}, **probe} if probe else {"periodSeconds": 3})
    if "grpc" in probe or "httpGet" in probe or "tcpSocket" in probe:
        body = probed(readinessProbe=probe)
    with pytest.raises(PodSpecError) as info:
        plan(tmp_path, body, EnableProbes=True)
    assert info.value.field == f"spec.containers[0].{field}", info.value


def test_lifecycle_hooks_exec_http_and_sleep(tmp_path: Path) -> None:
    body = probed(lifecycle={"postStart": {"httpGet": {"port": "web", "path": "/warm"}},
                             "preStop": {"sleep": {"seconds": 3}}})
    c = plan(tmp_path, body).containers[0]
    assert c.post_start_argv[2:] == ("http", "HTTP", "127.0.0.1", "8080", "/warm") and c.pre_stop_argv == ("sleep", "3")
    with pytest.raises(PodSpecError) as info:
        plan(tmp_path, probed(lifecycle={"preStop": {"tcpSocket": {"port": 80}}}))
    assert info.value.field == "spec.containers[0].lifecycle.preStop.tcpSocket"
