"""Uids: a pod runs as a uid its namespace may use, never as root by accident, and only our jobs are ours.

A REAL root plugin (AllowRootJobs: false, the default) submits REAL SLURM jobs; the attacks are pods
that ask for root, for no uid at all, for a flavor that runs as another tenant's uid, and a local user
who plants a job carrying the plugin's comment so that a state-less restart adopts it. The allowed
paths run a real job as the unprivileged uid the policy names. The tenant test runs two namespaces as
two uids and has a pod of one read the other's job dir (and, as a control, shows what one shared uid
gives away).
"""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import PluginProcess, exit_codes
from tests.podfactory import container, pod_body, secret
from tests.security.conftest import open_path_to

pytestmark = pytest.mark.e2e

USER_A, UID_A = "ilsec-ua", 4321
USER_B, UID_B = "ilsec-ub", 4322
PLANTER, UID_PLANTER = "ilsec-planter", 4323
FLAVOR = "slurm-job.vk.io/flavor"


@pytest.fixture
def users(job_user: Callable[[str, int], int]) -> tuple[int, int, int]:
    return job_user(USER_A, UID_A), job_user(USER_B, UID_B), job_user(PLANTER, UID_PLANTER)


@pytest.fixture
def root_plugin(plugin_factory: Callable[..., PluginProcess],
                users: tuple[int, int, int]) -> Iterator[Callable[..., PluginProcess]]:
    """Root plugins with AllowRootJobs false; namespace team-a may run as USER_A, team-b as USER_B. The data
    root is outside /tmp/pytest-of-root (0700) so the jobs' uids can reach their job dirs."""
    base = Path(tempfile.mkdtemp(prefix="il-sec-uids-", dir="/tmp"))
    open_path_to(base)
    made: list[PluginProcess] = []

    def make(**config: Any) -> PluginProcess:
        workdir = base / f"plugin{len(made)}"
        workdir.mkdir(mode=0o711)
        settings: dict[str, Any] = {
            "AllowRootJobs": False,
            "NamespacePolicy": {"team-a": {"Users": [USER_A], "Flavors": ["svc-a"]},
                                "team-b": {"Users": [USER_B]}},
            "Flavors": {"svc-a": {"UID": UID_A}, "svc-b": {"UID": UID_B}, "pub": {"UID": UID_B, "Public": True}},
            "LogFormat": "text",
            **config,
        }
        made.append(plugin_factory(workdir=workdir, **settings))
        return made[-1]

    yield make
    for plugin in made:
        plugin.stop()
    for user in (USER_A, USER_B, PLANTER):
        subprocess.run(["scancel", "-u", user], capture_output=True, timeout=30)
    subprocess.run(["rm", "-rf", "--", str(base)], capture_output=True, timeout=120)


def whoami_pod(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return pod_body(name, [container("c", ["sh", "-c", "id -u"])], namespace=namespace, **extra)


def refused(plugin: PluginProcess, body: dict[str, Any]) -> dict[str, Any]:
    """Create the pod, expecting a 4xx; no job may exist for it afterwards."""
    response = plugin.client.post("/create", json=body)
    assert response.status_code in (403, 422), (response.status_code, response.text)
    comment = f"il:{body['pod']['metadata']['uid']}@{plugin.config['InstanceId']}"
    jobs = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%k"], capture_output=True, text=True,
                          timeout=10).stdout.split()
    assert comment not in jobs
    return {"status": response.status_code, **response.json()}


def ran_as(plugin: PluginProcess, body: dict[str, Any]) -> int:
    plugin.create(body)
    assert exit_codes(plugin.wait_done(body, timeout=90)) == {"c": 0}
    return int(plugin.logs(body, "c").text.strip())


def test_run_as_root_is_refused(root_plugin: Callable[..., PluginProcess]) -> None:
    """Attack: `runAsUser: 0` (the root plugin's own uid, which skipped the Users check and ran as root).
    Defence: uid 0 only with AllowRootJobs; and the plugin's own uid needs the namespace's Users too."""
    plugin = root_plugin()
    answer = refused(plugin, whoami_pod("root", "team-a", securityContext={"runAsUser": 0}))
    assert answer["status"] == 403 and "spec.securityContext.runAsUser" in str(answer), answer
    assert "root" in str(answer)
    relaxed = root_plugin(AllowRootJobs=True)  # root allowed: still a uid team-a's Users do not list
    answer = refused(relaxed, whoami_pod("root2", "team-a", securityContext={"runAsUser": 0}))
    assert answer["status"] == 403 and "may not run as user '0'" in str(answer), answer


def test_a_pod_without_a_uid_is_refused(root_plugin: Callable[..., PluginProcess]) -> None:
    """Attack: a pod that sets no runAsUser (it ran as root). Defence: 422 naming the field, unless the
    admin gives a DefaultUID (then the job runs as it)."""
    plugin = root_plugin()
    answer = refused(plugin, whoami_pod("nouid", "team-a"))
    assert answer["status"] == 422 and "spec.securityContext.runAsUser" in str(answer), answer
    assert "DefaultUID" in str(answer)
    defaulted = root_plugin(DefaultUID=UID_B)
    assert ran_as(defaulted, whoami_pod("default", "team-a")) == UID_B


def test_a_flavor_runs_as_its_uid_only_for_the_namespaces_allowed_it(
        root_plugin: Callable[..., PluginProcess]) -> None:
    """Attack: a pod of team-a names flavor svc-b, which runs as team-b's uid (it ran as UID_B), and a pod
    of team-b names svc-a. Defence: a flavor with a UID needs NamespacePolicy.<ns>.Flavors and its UID in the
    namespace's Users; Public flavors are for everyone. Allowed paths run a real job as that uid."""
    plugin = root_plugin()
    answer = refused(plugin, whoami_pod("steal", "team-a", annotations={FLAVOR: "svc-b"}))
    assert answer["status"] == 403 and FLAVOR in str(answer) and "svc-b" in str(answer), answer
    answer = refused(plugin, whoami_pod("steal2", "team-b", annotations={FLAVOR: "svc-a"}))
    assert answer["status"] == 403 and "svc-a" in str(answer), answer
    assert ran_as(plugin, whoami_pod("own", "team-a", annotations={FLAVOR: "svc-a"})) == UID_A
    assert ran_as(plugin, whoami_pod("pub", "team-a", annotations={FLAVOR: "pub"})) == UID_B
    assert ran_as(plugin, whoami_pod("user", "team-b", securityContext={"runAsUser": UID_B})) == UID_B


def _state_files(plugin: PluginProcess) -> list[Path]:
    return list(Path(plugin.config["StateDir"]).glob("state-*"))


def test_a_planted_job_with_our_comment_is_not_adopted(root_plugin: Callable[..., PluginProcess]) -> None:
    """Attack: after the plugin lost its state, a local user submits a job carrying the plugin's
    `--comment=il:<pod uid>@<instance>` (and a working dir in the data root) so that the restarted
    plugin adopts it as a pod's job. Defence: a job is adopted only if it runs as a uid the plugin
    submits as; the planted one is ignored and logged, while our own job (running as USER_A) is adopted."""
    plugin = root_plugin()
    ours = pod_body("ours", [container("c", ["sh", "-c", "echo up; sleep 300"])], namespace="team-a",
                    securityContext={"runAsUser": UID_A})
    plugin.create(ours)
    plugin.wait_status(ours, lambda s: "running" in s["containers"][0]["state"], timeout=90)
    forged = str(uuid.uuid4())
    comment = f"il:{forged}@{plugin.config['InstanceId']}"
    workdir = Path(plugin.config["DataRootFolder"]) / f"team-a-{forged}"
    planted = subprocess.run(
        ["runuser", "-u", PLANTER, "--", "sbatch", "--parsable", f"--comment={comment}", f"--chdir={workdir}",
         "--output=/dev/null", "--wrap", "sleep 300"],
        capture_output=True, text=True, timeout=30, cwd="/tmp",
    )
    assert planted.returncode == 0, planted.stderr
    planted_id = planted.stdout.strip().split(";")[0]
    listed = subprocess.run(["squeue", "-h", "-j", planted_id, "-o", "%k|%U"], capture_output=True, text=True,
                            timeout=10).stdout.strip()
    assert listed == f"{comment}|{UID_PLANTER}", listed

    plugin.kill()
    for state in _state_files(plugin):
        state.unlink()
    plugin.start()
    # our job is known again, by its pod uid alone
    plugin.wait_status(ours, lambda s: "running" in s["containers"][0]["state"], timeout=60)
    assert plugin.status(pod_body("x", [container("c", ["true"])], uid=forged)) is None
    log = plugin.log_path.read_text()
    assert "adopted job" in log and ours["pod"]["metadata"]["uid"] in log
    assert f"ignoring job {planted_id}" in log and str(UID_PLANTER) in log, log[-3000:]
    alive = subprocess.run(["squeue", "-h", "-j", planted_id, "-o", "%T"], capture_output=True, text=True,
                           timeout=10).stdout.strip()
    assert alive in ("PENDING", "RUNNING"), alive  # not ours: never cancelled either
    subprocess.run(["scancel", planted_id], capture_output=True, timeout=30)


def _plant(user: str, comment: str, workdir: Path) -> str:
    """A held job of ``user`` that carries ``comment`` and runs in ``workdir``; its job id."""
    planted = subprocess.run(
        ["runuser", "-u", user, "--", "sbatch", "--parsable", f"--comment={comment}", f"--chdir={workdir}",
         "--begin=now+3600", "--output=/dev/null", "--wrap", "sleep 300"],
        capture_output=True, text=True, timeout=30, cwd="/tmp",
    )
    assert planted.returncode == 0, planted.stderr
    return planted.stdout.strip().split(";")[0]


def test_a_tenant_cannot_plant_a_job_for_another_namespaces_pod(root_plugin: Callable[..., PluginProcess]) -> None:
    """Attack: USER_B, a uid team-b's pods run as (so one the plugin submits as), submits a job carrying the
    comment of team-a's running pod and its job dir, so that after a state loss the plugin takes it for the
    pod's job (the pod's status, logs and delete would follow the tenant's job); and one naming a pod that
    does not exist, with a job dir that does not either. Defence: a job is a pod's only if its uid owns the
    pod's job dir (the hand-over gave it to the pod's uid); the planted jobs are logged and left alone."""
    plugin = root_plugin()
    ours = pod_body("ours", [container("c", ["sh", "-c", "echo up; sleep 300"])], namespace="team-a",
                    securityContext={"runAsUser": UID_A})
    real_id = plugin.create(ours)["PodJID"]
    plugin.wait_status(ours, lambda s: "running" in s["containers"][0]["state"], timeout=90)
    instance, data_root = plugin.config["InstanceId"], Path(plugin.config["DataRootFolder"])
    pod_uid, forged = ours["pod"]["metadata"]["uid"], str(uuid.uuid4())
    on_ours = _plant(USER_B, f"il:{pod_uid}@{instance}", data_root / f"team-a-{pod_uid}")
    on_nothing = _plant(USER_B, f"il:{forged}@{instance}", data_root / f"team-b-{forged}")

    plugin.kill()
    for state in _state_files(plugin):
        state.unlink()
    plugin.start()
    status = plugin.wait_status(ours, lambda s: "running" in s["containers"][0]["state"], timeout=60)
    assert status["JID"] == real_id, status  # the pod's own job, not the tenant's
    assert plugin.status(pod_body("x", [container("c", ["true"])], uid=forged, namespace="team-b")) is None
    log = plugin.log_path.read_text()
    assert f"ignoring job {on_ours} of pod {pod_uid}: it runs as uid {UID_B} but its job dir" in log, log[-3000:]
    assert f"belongs to uid {UID_A}" in log
    assert f"ignoring job {on_nothing} of pod {forged}" in log and "is missing" in log
    for job_id in (on_ours, on_nothing):  # not ours: never cancelled either
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        assert state == "PENDING", (job_id, state)
    assert plugin.delete(ours).status_code == 200


TENANT_SCRIPT = (
    'B="$1"; echo "probe"; for f in "$B" "$B/volumes" "$B"/c/c/exit "$B"/c/c/started; do ls "$f" 2>&1; done; '
    'find "$B" -type f -exec cat {} + 2>&1; find "$B" -type f -name token 2>&1; exit 0'
)


def _tenant_pods(victim_ns: str, reader_ns: str, victim_uid: int, reader_uid: int,
                 token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    victim = pod_body(
        "victim", [container("c", ["sh", "-c", "sleep 300"],
                             volumeMounts=[{"name": "sec", "mountPath": "/etc/sec", "readOnly": True}])],
        namespace=victim_ns, securityContext={"runAsUser": victim_uid},
        volumes=[{"name": "sec", "secret": {"secretName": "tok"}}],
        secrets=[secret("tok", {"token": token.encode()}, namespace=victim_ns)],
    )
    reader = pod_body("reader", [container("c", ["sh", "-c", TENANT_SCRIPT, "reader"])], namespace=reader_ns,
                      securityContext={"runAsUser": reader_uid})
    return victim, reader


def _read_across(plugin: PluginProcess, victim: dict[str, Any], reader: dict[str, Any]) -> str:
    plugin.create(victim)
    plugin.wait_status(victim, lambda s: "running" in s["containers"][0]["state"], timeout=90)
    victim_dir = Path(plugin.config["DataRootFolder"]) / f"{victim['pod']['metadata']['namespace']}-" \
                                                        f"{victim['pod']['metadata']['uid']}"
    assert victim_dir.is_dir()
    reader["pod"]["spec"]["containers"][0]["command"].append(str(victim_dir))
    plugin.create(reader)
    assert exit_codes(plugin.wait_done(reader, timeout=90)) == {"c": 0}
    text = plugin.logs(reader, "c").text
    assert text.startswith("probe"), text  # the reader ran and reported
    plugin.delete(victim)
    return text


def test_a_tenant_cannot_read_another_namespaces_job_dir(root_plugin: Callable[..., PluginProcess]) -> None:
    """Attack: a pod of namespace team-a reads team-b's job dir (its Secret volume, its runner state).
    Defence: with per-namespace uids each job dir belongs to its job's uid (0750, group: the plugin's), so
    the other tenant gets `Permission denied`. Control: when both namespaces share one uid the same pod
    reads the secret (what the threat model says about one uid for all namespaces)."""
    plugin = root_plugin()
    token = f"tenant-secret-{uuid.uuid4().hex}"
    victim, reader = _tenant_pods("team-b", "team-a", UID_B, UID_A, token)
    text = _read_across(plugin, victim, reader)
    assert token not in text, text
    assert "Permission denied" in text, text

    shared = root_plugin(NamespacePolicy={"team-a": {"Users": [USER_A]}, "team-b": {"Users": [USER_A]}})
    victim, reader = _tenant_pods("team-b", "team-a", UID_A, UID_A, token)
    assert token in _read_across(shared, victim, reader)


STAND_IN = """#!/bin/bash
# stand-in for apptainer: `build -F -- OUT REF` writes OUT; `exec ... -- SIF ...` prints what it runs
if [[ $1 == build ]]; then echo "built by $(id -u)" > "$4"; exit 0; fi
while (($#)) && [[ $1 != -- ]]; do shift; done
echo "ran $2: $(cat -- "$2")"
"""


def test_the_image_cache_is_private_per_uid(tmp_path: Path, users: tuple[int, int, int]) -> None:
    """Attack: the shared ApptainerCacheDir was one dir every job wrote; a job of uid A writes (or pre-creates
    the dir of) the SIF that a job of uid B converts, and B runs A's image. Defence: apptainer.sh converts
    into uid-<uid>, a dir that must be the job's own and private, in a cache root owned by root (or the
    job's uid) and sticky where others may write it; otherwise it refuses to run."""
    from interlink_plugins.core.runtimes.containers import APPTAINER_HELPER_NAME, cached_sif_name, helper_files

    base = Path(tempfile.mkdtemp(prefix="il-sec-cache-", dir="/tmp"))
    try:
        open_path_to(base)
        base.chmod(0o755)
        (base / "bin").mkdir(mode=0o755)
        (base / "bin" / "apptainer").write_text(STAND_IN)
        (base / "bin" / "apptainer").chmod(0o755)
        helper = base / APPTAINER_HELPER_NAME
        helper.write_text(helper_files()[APPTAINER_HELPER_NAME])
        helper.chmod(0o644)
        cache = base / "cache"
        cache.mkdir()
        cache.chmod(0o1777)  # as the guide makes it: root's, sticky, like /tmp
        image = "docker://reg.io/app:1"
        sif = f"{cache}/uid-@UID@/{cached_sif_name(image)}"

        def run(user: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["runuser", "-u", user, "--", "env", f"PATH={base / 'bin'}:/usr/bin:/bin", "bash", str(helper),
                 "apptainer", "", "", sif, image, "exec", "--", "true"],
                capture_output=True, text=True, timeout=30, cwd="/tmp",
            )

        # uid A plants uid B's cache dir, with a poisoned SIF in it
        planted = cache / f"uid-{UID_B}"
        subprocess.run(["runuser", "-u", USER_A, "--", "mkdir", "-m", "0755", str(planted)], check=True, timeout=30)
        subprocess.run(["runuser", "-u", USER_A, "--", "sh", "-c", f"echo POISON > '{planted}/{cached_sif_name(image)}'"],
                       check=True, timeout=30)
        refused = run(USER_B)
        assert refused.returncode == 1 and "not a private dir of uid" in refused.stderr, refused
        assert "POISON" not in refused.stdout
        subprocess.run(["rm", "-rf", "--", str(planted)], check=True, timeout=30)
        # B's own conversion goes into B's private dir; A can neither read nor replace it
        ran = run(USER_B)
        assert ran.returncode == 0 and f"built by {UID_B}" in ran.stdout and f"/uid-{UID_B}/" in ran.stdout, ran
        assert (planted.stat().st_uid, planted.stat().st_mode & 0o777) == (UID_B, 0o700)
        swap = subprocess.run(["runuser", "-u", USER_A, "--", "mv", str(planted), f"{cache}/gone"],
                              capture_output=True, text=True, timeout=30)
        assert swap.returncode != 0, swap  # sticky root: only B (or root) may rename B's dir
        # a cache root another uid owns (and could empty) is refused
        (base / "theirs").mkdir()
        subprocess.run(["chown", USER_A, str(base / "theirs")], check=True, timeout=30)
        (base / "theirs").chmod(0o777)
        sif = f"{base}/theirs/uid-@UID@/{cached_sif_name(image)}"
        refused = run(USER_B)
        assert refused.returncode == 1 and "must be owned by root or uid" in refused.stderr, refused
    finally:
        subprocess.run(["rm", "-rf", "--", str(base)], capture_output=True, timeout=60)


def test_htcondor_adopts_only_jobs_of_its_own_identity(tmp_path: Path, htcondor_pool: dict[str, str]) -> None:
    """Attack: another identity of the pool (a second local account submitting to the same schedd) queues a
    job with our `InterLinkInstance` and a pod uid, so that a state-less restart adopts it. Defence: a job is
    adopted only if its Owner is the identity the schedd maps this plugin to (a WRITE ping); the planted job
    is ignored and logged, ours is adopted."""
    from tests.e2e.kits import HTCondorKit

    kit = HTCondorKit(tmp_path / "kit", htcondor_pool)
    plugin = kit.plugin()
    ours = pod_body("ours", [container("c", ["sh", "-c", "echo up; sleep 300"])], terminationGracePeriodSeconds=1)
    plugin.create(ours)
    plugin.wait_status(ours, lambda s: "running" in s["containers"][0]["state"], timeout=120)
    forged = str(uuid.uuid4())
    description = (
        "executable = /bin/sleep\narguments = 300\ninitialdir = /tmp\nhold = true\n"
        f'+InterLinkInstance = "{plugin.config["InstanceId"]}"\n+InterLinkPodUID = "{forged}"\n'
        f'+InterLinkJobDir = "{plugin.config["DataRootFolder"]}/default-{forged}"\nqueue\n'
    )
    planted = subprocess.run(["podman", "exec", "-i", "-u", "nobody", htcondor_pool["name"], "condor_submit", "-"],
                             input=description, capture_output=True, text=True, timeout=60)
    assert planted.returncode == 0, planted.stdout + planted.stderr
    owners = kit.condor("condor_q", "-all", "-af", "Owner", "InterLinkPodUID").stdout
    assert f"nobody {forged}" in owners, owners
    try:
        plugin.kill()
        for state in _state_files(plugin):
            state.unlink()
        plugin.start()
        plugin.wait_status(ours, lambda s: "running" in s["containers"][0]["state"], timeout=90)
        assert plugin.status(pod_body("x", [container("c", ["true"])], uid=forged)) is None
        log = plugin.log_path.read_text()
        assert "ignoring job" in log and forged in log and "'nobody'" in log, log[-3000:]
        plugin.delete(ours)
    finally:
        kit.condor("condor_rm", "-constraint", f'InterLinkPodUID == "{forged}"')
        plugin.stop()
