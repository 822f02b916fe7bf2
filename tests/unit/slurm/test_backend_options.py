"""sbatch argv assembly: precedence, flavors (defaults, GPU auto-selection), namespace policy, users.

Unit-level on purpose: what squeue cannot show without slurmdbd (the QoS) and the many combinations
are checked here on the argv; tests/e2e/test_slurm_parity.py proves the main paths on real SLURM.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from interlink_plugins.backends import parse_config, policy_from_config
from interlink_plugins.config import ConfigError
from interlink_plugins.core.commands.local import CommandResult
from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.pod import parse_create_body
from interlink_plugins.slurm.backend import SlurmBackend, gpu_flavor
from interlink_plugins.slurm.settings import Flavor
from tests.podfactory import container, pod_body


class NoRunner:
    async def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None) -> CommandResult:
        raise AssertionError(f"no command expected: {argv}")


def backend(tmp_path: Path, **raw: Any) -> SlurmBackend:
    raw = {"ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs"), "AllowRootJobs": True, **raw}
    config, _ = parse_config(raw, environ={})
    return SlurmBackend(config, NoRunner(), policy_from_config(config.policy_raw))  # type: ignore[arg-type]


def options(b: SlurmBackend, body: dict[str, Any]) -> dict[str, str | None]:
    return {o.name: o.value for o in b._sbatch_options(parse_create_body(body))}


def pod(annotations: dict[str, str] | None = None, namespace: str = "default", **kw: Any) -> dict[str, Any]:
    resources = kw.pop("resources", {})
    return pod_body("p", [container("c", ["true"], resources=resources)], annotations=annotations,
                    namespace=namespace, **kw)


def test_precedence_pod_resources_over_flags_over_flavor_over_default(tmp_path: Path) -> None:
    b = backend(tmp_path, DefaultCPU=2, DefaultMemory="3G",
                Flavors={"f": {"CPUDefault": 4, "MemoryDefault": "8G", "SlurmFlags": ["-t 10", "--qos=low"]}},
                DefaultNamespacePolicy={"QOS": ["low", "high"]})
    plain = options(b, pod())
    assert (plain["cpus-per-task"], plain["mem"]) == ("2", "3072")
    flavored = options(b, pod({"slurm-job.vk.io/flavor": "f"}))
    assert (flavored["cpus-per-task"], flavored["mem"], flavored["time"], flavored["qos"]) == ("4", "8192", "10", "low")
    flagged = options(b, pod({"slurm-job.vk.io/flavor": "f", "slurm-job.vk.io/flags": "-c 6 --qos high -t 5"}))
    assert (flagged["cpus-per-task"], flagged["qos"], flagged["time"]) == ("6", "high", "5")
    resourced = options(b, pod({"slurm-job.vk.io/flavor": "f", "slurm-job.vk.io/flags": "-c 6 --mem=1G"},
                               resources={"limits": {"cpu": "1500m", "memory": "100Mi"}}))
    assert (resourced["cpus-per-task"], resourced["mem"]) == ("2", "100")


def test_a_memory_option_replaces_every_lower_memory_option(tmp_path: Path) -> None:
    b = backend(tmp_path, Flavors={"f": {"MemoryDefault": "8G"}}, DefaultFlavor="f")
    per_cpu = options(b, pod({"slurm-job.vk.io/flags": "--mem-per-cpu=500"}))
    assert per_cpu.get("mem-per-cpu") == "500" and "mem" not in per_cpu
    pod_memory = options(b, pod({"slurm-job.vk.io/flags": "--mem-per-cpu=500"},
                                resources={"requests": {"memory": "1Gi"}}))
    assert pod_memory["mem"] == "1024" and "mem-per-cpu" not in pod_memory


def test_flavor_without_defaults_falls_back_to_the_config_defaults(tmp_path: Path) -> None:
    b = backend(tmp_path, DefaultCPU=3, DefaultMemory="2G", Flavors={"p": {"SlurmFlags": ["-p low"]}})
    chosen = options(b, pod({"slurm-job.vk.io/flavor": "p"}))
    assert (chosen["cpus-per-task"], chosen["mem"], chosen["partition"]) == ("3", "2048", "low")


def test_gpu_flavor_selection_is_deterministic_and_prefers_an_exact_count() -> None:
    def flavor(name: str, *flags: str) -> Flavor:
        return Flavor(name, None, None, tuple(flags))

    flavors = {
        "cpu": flavor("cpu", "-p cpu"),
        "b-gpu": flavor("b-gpu", "--gres=gpu:a100:4"),
        "a-gpu": flavor("a-gpu", "--gres=gpu:4"),
        "gpu-two": flavor("gpu-two", "--gpus=2"),
        "named-gpu": flavor("named-gpu"),  # a name with gpu but no GPU flags: only an exact match could pick it
    }
    assert gpu_flavor(flavors, 2) is flavors["gpu-two"]
    assert gpu_flavor(flavors, 4) is flavors["a-gpu"]  # two exact matches: the first name in sorted order
    assert gpu_flavor(flavors, 3) is flavors["a-gpu"]  # no exact match: the first flavor with GPU flags
    assert gpu_flavor({"cpu": flavors["cpu"], "named-gpu": flavors["named-gpu"]}, 1) is None
    for _ in range(5):
        assert gpu_flavor(dict(reversed(list(flavors.items()))), 4) is flavors["a-gpu"]


def test_gpu_pods_pick_the_gpu_flavor_and_the_explicit_flavor_wins(tmp_path: Path) -> None:
    b = backend(tmp_path, Flavors={"cpu": {"SlurmFlags": ["-p cpu"]}, "gpu": {"SlurmFlags": ["--gres=gpu:1", "-p gpu"]}},
                DefaultFlavor="cpu")
    gpu_pod = options(b, pod(resources={"limits": {"nvidia.com/gpu": "1"}}))
    assert (gpu_pod["partition"], gpu_pod["gres"]) == ("gpu", "gpu:1")
    assert options(b, pod())["partition"] == "cpu"
    explicit = options(b, pod({"slurm-job.vk.io/flavor": "cpu"}, resources={"limits": {"nvidia.com/gpu": "1"}}))
    assert (explicit["partition"], explicit["gres"]) == ("cpu", "gpu:1")  # pod resources still give the GPUs
    with pytest.raises(PodSpecError) as info:
        options(b, pod({"job.vk.io/flavor": "nope"}))
    assert info.value.field == "metadata.annotations[job.vk.io/flavor]" and "cpu, gpu" in info.value.message


def test_mig_and_other_extended_resources_through_the_gres_map(tmp_path: Path) -> None:
    b = backend(tmp_path, GresMap={"nvidia.com/mig-1g.10gb": "gpu:a100_1g.10gb", "example.com/fpga": "fpga"})
    mixed = options(b, pod(resources={"limits": {"nvidia.com/mig-1g.10gb": "2", "example.com/fpga": "1"}}))
    assert mixed["gres"] == "fpga:1,gpu:a100_1g.10gb:2"
    b2 = backend(tmp_path, GresMap={"nvidia.com/mig-1g.5gb": "gpu"})
    summed = options(b2, pod(resources={"limits": {"nvidia.com/mig-1g.5gb": "1", "nvidia.com/gpu": "1"}}))
    assert summed["gres"] == "gpu:2"
    with pytest.raises(PodSpecError) as info:
        options(b, pod(resources={"limits": {"nvidia.com/mig-3g.20gb": "1"}}))
    assert info.value.status == 422 and "GresMap" in info.value.message


def test_namespace_defaults_and_flavor_choices_follow_the_namespace_policy(tmp_path: Path) -> None:
    b = backend(
        tmp_path,
        NamespacePolicy={"cineca": {"Accounts": ["IscrC_proj", "other"], "QOS": ["normal"], "Partitions": ["boost"]},
                         "free": {"Users": ["nobody"]}},
        Flavors={"dcgp": {"SlurmFlags": ["-p dcgp"]}, "boost": {"SlurmFlags": ["--partition=boost", "-A other"]}},
    )
    default = options(b, pod(namespace="cineca"))
    assert (default["account"], default["qos"], default["partition"]) == ("IscrC_proj", "normal", "boost")
    assert options(b, pod({"slurm-job.vk.io/flavor": "boost"}, namespace="cineca"))["account"] == "other"
    with pytest.raises(PodSpecError) as info:
        options(b, pod({"slurm-job.vk.io/flavor": "dcgp"}, namespace="cineca"))
    assert info.value.status == 403 and "Flavors.dcgp sets partition 'dcgp'" in info.value.message
    # a namespace whose policy lists no partitions keeps the flavor's (the admin wrote both)
    assert options(b, pod({"slurm-job.vk.io/flavor": "dcgp"}, namespace="free"))["partition"] == "dcgp"
    assert "account" not in options(b, pod(namespace="elsewhere"))


def test_run_as_user_needs_the_namespace_policy_default_uid_does_not(tmp_path: Path) -> None:
    user = pwd.getpwnam("nobody")
    b = backend(tmp_path, NamespacePolicy={"team": {"Users": ["nobody"], "Flavors": ["as-daemon"]}},
                DefaultUID=user.pw_uid, Flavors={"as-daemon": {"UID": 1}})
    allowed = options(b, pod(namespace="team", securityContext={"runAsUser": user.pw_uid}))
    assert (allowed["uid"], allowed["gid"]) == (str(user.pw_uid), str(user.pw_gid))
    with pytest.raises(PodSpecError) as info:
        options(b, pod(namespace="other", securityContext={"runAsUser": user.pw_uid}))
    assert info.value.status == 403 and info.value.field == "spec.securityContext.runAsUser"
    body = pod(namespace="other")
    body["pod"]["spec"]["containers"][0]["securityContext"] = {"runAsUser": 4242}
    with pytest.raises(PodSpecError) as info:
        options(b, body)
    assert info.value.field == "spec.containers[0].securityContext.runAsUser"
    body = pod_body("p", [container("a", ["true"], securityContext={"runAsUser": 1}),
                          container("b", ["true"], securityContext={"runAsUser": 2})])
    with pytest.raises(PodSpecError) as info:
        options(b, body)
    assert info.value.status == 422 and info.value.field == "spec.containers[1].securityContext.runAsUser"
    assert options(b, pod(namespace="other"))["uid"] == str(user.pw_uid)  # DefaultUID: the admin's choice
    # the plugin's own uid is a uid like any other: the namespace's Users decide
    with pytest.raises(PodSpecError) as info:
        options(backend(tmp_path), pod(securityContext={"runAsUser": os.geteuid()}))
    assert info.value.status == 403 and info.value.field == "spec.securityContext.runAsUser"
    own = options(backend(tmp_path, DefaultNamespacePolicy={"Users": [str(os.geteuid())]}),
                  pod(securityContext={"runAsUser": os.geteuid()}))
    assert "uid" not in own  # allowed, and what happens anyway: no --uid


def test_a_flavor_with_a_uid_is_for_the_namespaces_allowed_it_unless_public(tmp_path: Path) -> None:
    user = pwd.getpwnam("nobody")
    b = backend(tmp_path, AllowRootJobs=False,
                NamespacePolicy={"team": {"Users": ["nobody"], "Flavors": ["private", "not-theirs"]},
                                 "listed": {"Users": [], "Flavors": ["private"]}},
                Flavors={"private": {"UID": user.pw_uid}, "not-theirs": {"UID": 1},
                         "shared": {"UID": 2, "Public": True}, "plain": {"CPUDefault": 2}})
    flavor = "slurm-job.vk.io/flavor"
    assert options(b, pod({flavor: "private"}, namespace="team"))["uid"] == str(user.pw_uid)
    for namespace in ("other", "default"):  # not listed in the flavor's namespaces
        with pytest.raises(PodSpecError) as info:
            options(b, pod({flavor: "private"}, namespace=namespace, securityContext={"runAsUser": user.pw_uid}))
        assert info.value.status == 403 and info.value.field == f"metadata.annotations[{flavor}]"
    with pytest.raises(PodSpecError) as info:  # listed, but its uid is not one of the namespace's Users
        options(b, pod({flavor: "private"}, namespace="listed"))
    assert info.value.status == 403 and "runs as uid" in info.value.message
    with pytest.raises(PodSpecError) as info:
        options(b, pod({flavor: "not-theirs"}, namespace="team"))
    assert info.value.status == 403 and "may not run as user '1'" in info.value.message
    assert options(b, pod({flavor: "shared"}, namespace="anyone"))["uid"] == "2"  # Public: the admin's choice
    # a flavor without a UID is anyone's, and a root plugin still needs a uid for the pod
    with pytest.raises(PodSpecError) as info:
        options(b, pod({flavor: "plain"}, namespace="team"))
    assert info.value.status == 422 and info.value.field == "spec.securityContext.runAsUser"


def test_a_root_plugin_never_runs_a_job_as_root_unless_allowed(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the rules for a root plugin")
    strict = backend(tmp_path, AllowRootJobs=False, DefaultNamespacePolicy={"Users": ["0", "root", "nobody"]})
    with pytest.raises(PodSpecError) as info:
        options(strict, pod(securityContext={"runAsUser": 0}))
    assert info.value.status == 403 and "jobs never run as root" in info.value.message
    with pytest.raises(PodSpecError) as info:
        options(strict, pod())
    assert info.value.status == 422 and info.value.field == "spec.securityContext.runAsUser"
    assert "DefaultUID" in info.value.message
    assert options(strict, pod(securityContext={"runAsUser": 65534}))["uid"] == "65534"
    relaxed = backend(tmp_path, AllowRootJobs=True, DefaultNamespacePolicy={"Users": ["0"]})
    assert "uid" not in options(relaxed, pod(securityContext={"runAsUser": 0}))
    assert "uid" not in options(relaxed, pod())
    with pytest.raises(ConfigError, match="DefaultUID: 0 would run jobs as root"):
        backend(tmp_path, AllowRootJobs=False, DefaultUID=0)
    with pytest.raises(ConfigError, match=r"Flavors\.f\.UID: 0"):
        backend(tmp_path, AllowRootJobs=False, Flavors={"f": {"UID": 0}})
    # the uids whose jobs a state-less restart may adopt: the ones the config can submit as, root only if allowed
    assert strict.submit_uids() == {65534}
    both = backend(tmp_path, DefaultUID=7, Flavors={"f": {"UID": 8}}, NamespacePolicy={"a": {"Users": ["nobody"]}})
    assert both.submit_uids() == {0, 7, 8, 65534}


def test_argv_has_the_job_identity_and_requeue_switch(tmp_path: Path) -> None:
    b = backend(tmp_path, Requeue=True)
    prepared = b.prepare(parse_create_body(pod()), write=False)
    argv = prepared.submit["argv"]
    assert "--requeue" in argv and "--no-requeue" not in argv and "--export-file=/dev/null" in argv
    assert argv[-1].endswith("/pod-runner.sh")


def test_job_dir_belongs_to_the_job_user_with_group_access(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    user = pwd.getpwnam("nobody")
    b = backend(tmp_path, DefaultUID=user.pw_uid)
    body = pod_body("p", [container("c", ["true"])], volumes=[{"name": "s", "emptyDir": {}}])
    body["pod"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "s", "mountPath": "/s"}]
    prepared = b.prepare(parse_create_body(body))
    job_dir = prepared.job_dir
    assert (job_dir.stat().st_uid, job_dir.stat().st_gid) == (user.pw_uid, os.getegid())
    assert oct(job_dir.stat().st_mode & 0o777) == "0o750"
    assert all(path.lstat().st_uid == user.pw_uid for path in job_dir.rglob("*"))


def test_mpi_pods_get_the_configured_launcher_from_the_slurm_section(tmp_path: Path) -> None:
    """The launcher is a SLURM setting: the backend hands it to the job's plan (core reads no backend key)."""
    body = pod({"slurm-job.vk.io/mpi-flags": "-l"})
    default = backend(tmp_path).prepare(parse_create_body(body), write=False)
    assert any("srun --export=ALL --label" in " ".join(text.split()) for text in default.files.values())
    launcher = backend(tmp_path, MpiLauncher="mpirun -np @NTASKS@", AllowRawShell=True)
    mpirun = launcher.prepare(parse_create_body(body), write=False)
    assert any("mpirun -np @NTASKS@ -l" in " ".join(text.split()) for text in mpirun.files.values())
