"""The plugin over HTTP against a REAL personal HTCondor pool (htcondor/ scripts), as interLink drives it.

Both data modes: shared (the pool sees DataRootFolder under /tmp) and spool (DataRootFolder under
/var/tmp, which the pool container cannot see: inputs spooled, outputs retrieved).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.kits import HTCondorKit
from tests.harness import PluginProcess, all_terminated, exit_codes, states
from tests.podfactory import config_map, container, pod_body, secret

pytestmark = pytest.mark.e2e


@pytest.fixture
def kit(tmp_path: Path, htcondor_pool: dict[str, str]) -> Iterator[HTCondorKit]:
    made = HTCondorKit(tmp_path / "kit", htcondor_pool)
    yield made
    made.close()


@pytest.fixture
def spool_kit(tmp_path: Path, htcondor_pool: dict[str, str]) -> Iterator[HTCondorKit]:
    made = HTCondorKit(tmp_path / "spool-kit", htcondor_pool, data_mode="spool")
    yield made
    made.close()


def ad(kit: HTCondorKit, job_id: str, *attrs: str) -> dict[str, str]:
    """Attributes of a job, from the queue or the history (condor_q/condor_history inside the pool)."""
    for tool in (["condor_q", "-all"], ["condor_history", "-limit", "1"]):
        out = kit.condor(*tool, job_id, "-json", "-attributes", ",".join(attrs)).stdout.strip()
        if out:
            return dict(json.loads(out)[0])
    return {}


def running(status: dict[str, Any]) -> bool:
    return all("running" in c["state"] for c in status["containers"])


def test_success_identity_logs_and_delete(kit: HTCondorKit) -> None:
    plugin = kit.plugin(HTCondorSchedd="il-htcondor")
    body = pod_body("hello", [container("hello", ["sh", "-c", "echo hello world; echo oops >&2; env | sort"],
                                        env=[{"name": "ONLY", "value": "this"}])])
    uid = body["pod"]["metadata"]["uid"]
    created = plugin.create(body)
    job_id = created["PodJID"]
    assert created["PodUID"] == uid and job_id.endswith(".0")
    status = plugin.wait_done(body, timeout=60)
    term = states(status)["hello"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert f"htcondor job {job_id} on node il-htcondor" in term["message"]
    attrs = ad(kit, job_id, "InterLinkPodUID", "InterLinkInstance", "JobBatchName", "Environment", "Owner", "Cmd")
    assert attrs["InterLinkPodUID"] == uid and attrs["InterLinkInstance"] == plugin.config["InstanceId"]
    assert attrs["JobBatchName"] == "default/hello" and attrs["Owner"] == "condortest"
    assert attrs["Cmd"].endswith("/pod-runner.sh") and not attrs.get("Environment")
    lines = plugin.logs(body, "hello").text.splitlines()
    assert sorted(lines[:2]) == ["hello world", "oops"] or {"hello world", "oops"} <= set(lines)
    env_lines = [line for line in lines if "=" in line]
    assert "ONLY=this" in env_lines and not any(line.startswith(("CONDOR", "_CONDOR_SCRATCH", "SLURM")) for line in env_lines)
    job_dir = Path(plugin.config["DataRootFolder"]) / f"default-{uid}"
    assert oct(job_dir.stat().st_mode & 0o777) == "0o700" and job_dir.stat().st_uid == 2001
    assert plugin.delete(body).status_code == 200
    deadline = time.monotonic() + 20
    while job_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not job_dir.exists() and plugin.status(body) is None
    assert plugin.delete(body).status_code == 200  # idempotent


def test_init_then_parallel_containers_with_exit_codes(kit: HTCondorKit) -> None:
    plugin = kit.plugin()
    mount = [{"name": "work", "mountPath": "/work"}]
    body = pod_body(
        "multi",
        [
            container("a", ["sh", "-c", "echo a-start >> /work/t; sleep 2; echo a-end >> /work/t"], volumeMounts=mount),
            container("b", ["sh", "-c", "echo b-start >> /work/t; sleep 2; cat /work/t; exit 3"], volumeMounts=mount),
        ],
        init_containers=[container("init", ["sh", "-c", "echo init > /work/t"], volumeMounts=mount)],
        volumes=[{"name": "work", "emptyDir": {}}],
    )
    plugin.create(body)
    status = plugin.wait_done(body, timeout=60)
    assert exit_codes(status) == {"init": 0, "a": 0, "b": 3}
    assert states(status)["b"]["terminated"]["reason"] == "Error"
    trace = plugin.logs(body, "b").text.splitlines()
    assert trace[0] == "init" and {"a-start", "b-start"} <= set(trace[1:3])  # both started before either ended


def test_configmap_and_secret_volumes(kit: HTCondorKit) -> None:
    _volumes_pod(kit.plugin())


def _volumes_pod(plugin: PluginProcess) -> None:
    body = pod_body(
        "vols",
        [container("c", ["sh", "-c", "cat /etc/app/conf/app.yaml; stat -c %a /etc/app/conf/app.yaml /s/pw; cat /s/pw"],
                   volumeMounts=[{"name": "cfg", "mountPath": "/etc/app"},
                                 {"name": "sec", "mountPath": "/s", "readOnly": True}])],
        volumes=[{"name": "cfg", "configMap": {"name": "cfg-1", "items": [{"key": "app.yaml", "path": "conf/app.yaml",
                                                                          "mode": 0o600}]}},
                 {"name": "sec", "secret": {"secretName": "sec-1", "defaultMode": 0o400}}],
        config_maps=[config_map("cfg-1", {"app.yaml": "a: 1\n"})],
        secrets=[secret("sec-1", {"pw": b"s3cr3t $(whoami) `id`"})],
    )
    plugin.create(body)
    status = plugin.wait_done(body, timeout=60)
    assert exit_codes(status) == {"c": 0}, plugin.logs(body, "c").text
    assert plugin.logs(body, "c").text == "a: 1\n600\n400\ns3cr3t $(whoami) `id`\n"


def test_resources_accounting_group_and_submit_commands(kit: HTCondorKit) -> None:
    plugin = kit.plugin(NamespacePolicy={"default": {"AccountingGroups": ["group_physics.alice", "group_ops"]}})
    body = pod_body(
        "res",
        [container("a", ["true"], resources={"requests": {"cpu": "500m", "memory": "100Mi"}}),
         container("b", ["true"], resources={"limits": {"cpu": "1200m", "memory": "0.5Gi", "nvidia.com/gpu": "1",
                                                        "ephemeral-storage": "2Gi"}})],
        annotations={"htcondor-job.vk.io/submit-commands": "requirements = false\nrank = Memory",
                     "htcondor-job.vk.io/accounting-group": "group_ops"},
        activeDeadlineSeconds=150,
    )
    job_id = plugin.create(body)["PodJID"]
    attrs = ad(kit, job_id, "RequestCpus", "RequestMemory", "RequestDisk", "RequestGPUs", "AcctGroup",
               "AllowedExecuteDuration", "Requirements", "JobStatus")
    assert attrs["RequestCpus"] == 2 and attrs["RequestMemory"] == 612 and attrs["RequestGPUs"] == 1
    assert attrs["RequestDisk"] == 2 * 1024 * 1024 and attrs["AllowedExecuteDuration"] == 150
    assert attrs["AcctGroup"] == "group_ops" and attrs["JobStatus"] == 1
    # before the first poll the pod is ContainerCreating; the idle job then shows as Pending
    waiting = plugin.wait_status(body, lambda s: s["containers"][0]["state"].get("waiting", {}).get("reason") == "Pending")
    assert "waiting" in waiting["containers"][0]["state"]
    assert plugin.delete(body).status_code == 200
    for extra, field, status in (
        ({"htcondor-job.vk.io/submit-commands": "executable = /bin/sh"}, "submit-commands", 403),
        ({"htcondor-job.vk.io/submit-commands": "+Owner = \"root\""}, "submit-commands", 403),
        # not a policy choice: a submit macro is never valid in a value
        ({"htcondor-job.vk.io/submit-commands": "requirements = $ENV(HOME) == 1"}, "submit-commands", 422),
        ({"htcondor-job.vk.io/submit-commands": "MY.Anything = 1"}, "submit-commands", 403),
        ({"htcondor-job.vk.io/accounting-group": "group_other"}, "accounting-group", 403),
    ):
        refused = pod_body("bad", [container("c", ["true"])], annotations=extra)
        response = plugin.client.post("/create", json=refused)
        assert response.status_code == status, (extra, response.text)
        assert field in response.json()["error"]


def test_hold_by_condor_hold_then_removed_after_held_timeout(kit: HTCondorKit) -> None:
    plugin = kit.plugin()
    body = pod_body("held", [container("c", ["sh", "-c", "echo up; sleep 600"])], terminationGracePeriodSeconds=1)
    job_id = plugin.create(body)["PodJID"]
    plugin.wait_status(body, running, timeout=30)
    assert kit.condor("condor_hold", job_id).returncode == 0
    held = plugin.wait_status(body, lambda s: "waiting" in s["containers"][0]["state"], timeout=30)
    entry = held["containers"][0]
    assert entry["state"]["waiting"]["reason"] == "Held"
    assert "via condor_hold" in entry["state"]["waiting"]["message"] and job_id in entry["state"]["waiting"]["message"]
    assert entry["lastState"]["terminated"]["exitCode"] == 143 and entry["restartCount"] == 1
    status = plugin.wait_done(body, timeout=60)  # HeldTimeout 8 s in the kit's config
    term = states(status)["c"]["terminated"]
    assert term["reason"] == "HeldTimeout" and term["exitCode"] != 0, term
    assert "via condor_hold" in ad(kit, job_id, "LastHoldReason")["LastHoldReason"]


def test_active_deadline_is_deadline_exceeded(kit: HTCondorKit) -> None:
    plugin = kit.plugin()
    body = pod_body("late", [container("c", ["sh", "-c", "echo start; sleep 600"])], activeDeadlineSeconds=4)
    plugin.create(body)
    status = plugin.wait_done(body, timeout=90)
    term = states(status)["c"]["terminated"]
    assert term["reason"] == "DeadlineExceeded" and term["exitCode"] in (137, 143), term
    assert plugin.logs(body, "c").text == "start\n"


def test_delete_running_pod_sends_sigterm_to_every_container(kit: HTCondorKit, tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    witness.mkdir(mode=0o777)
    witness.chmod(0o777)
    plugin = kit.plugin(AllowedHostPaths=[str(witness)])
    trap = "trap 'echo term-$0 > /w/$0; exit 0' TERM; while true; do sleep 0.1; done"
    mounts = [{"name": "w", "mountPath": "/w"}]
    body = pod_body(
        "victim",
        [container("a", ["sh", "-c", trap, "a"], volumeMounts=mounts),
         container("b", ["sh", "-c", trap, "b"], volumeMounts=mounts)],
        volumes=[{"name": "w", "hostPath": {"path": str(witness), "type": "Directory"}}],
        terminationGracePeriodSeconds=5,
    )
    job_id = plugin.create(body)["PodJID"]
    plugin.wait_status(body, running, timeout=30)
    assert plugin.delete(body).status_code == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ((witness / "a").exists() and (witness / "b").exists()):
        time.sleep(0.2)
    assert (witness / "a").read_text() == "term-a\n" and (witness / "b").read_text() == "term-b\n"
    deadline = time.monotonic() + 20
    while kit.job_alive(job_id) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not kit.job_alive(job_id)
    assert "pod deleted by interLink" in ad(kit, job_id, "RemoveReason")["RemoveReason"]


def test_ping_reports_pool_resources(kit: HTCondorKit) -> None:
    plugin = kit.plugin(Taints=[{"Key": "site/htc", "Value": "yes", "Effect": "NoSchedule"}])
    deadline = time.monotonic() + 15
    ping = plugin.ping()
    while "resources" not in ping and time.monotonic() < deadline:
        time.sleep(0.3)
        ping = plugin.ping()
    assert ping["resources"] == {"cpu": "8", "memory": "16000Mi"}  # no GPUs in the pool: no accelerators entry
    assert ping["taints"] == [{"key": "site/htc", "value": "yes", "effect": "NoSchedule"}]


def test_idtokens_authentication(kit: HTCondorKit, tmp_path: Path) -> None:
    token = kit.condor("condor_token_create", "-identity", "condortest@il-pool")
    assert token.returncode == 0, token.stderr
    token_file = tmp_path / "plugin.token"
    token_file.write_text(token.stdout)
    token_file.chmod(0o600)
    plugin = kit.plugin(HTCondorAuth=["IDTOKENS"], HTCondorTokenFile=str(token_file),
                        HTCondorParams={"FILESYSTEM_DOMAIN": "il-pool"})
    body = pod_body("tok", [container("c", ["sh", "-c", "echo via-token"])])
    job_id = plugin.create(body)["PodJID"]
    assert exit_codes(plugin.wait_done(body, timeout=60)) == {"c": 0}
    attrs = ad(kit, job_id, "AuthTokenSubject", "AuthTokenIssuer", "Owner")
    assert attrs["AuthTokenSubject"] == "condortest@il-pool" and attrs["Owner"] == "condortest"
    # a token the pool did not sign: the schedd refuses, the pod waits (BackendUnavailable), ping is tainted
    bad_file = tmp_path / "bad.token"
    bad_file.write_text(token.stdout[:-12] + "AAAAAAAAAAA\n")
    bad = kit.plugin(HTCondorAuth=["IDTOKENS"], HTCondorTokenFile=str(bad_file),
                     HTCondorParams={"FILESYSTEM_DOMAIN": "il-pool"})
    refused = pod_body("tok-bad", [container("c", ["true"])])
    assert bad.create(refused)["PodJID"].startswith("pending-")
    waiting = bad.status(refused)["containers"][0]["state"]["waiting"]
    assert waiting["reason"] == "BackendUnavailable" and "IDTOKENS" in waiting["message"]


def test_spool_mode_volumes_live_state_live_logs_and_retrieve(spool_kit: HTCondorKit) -> None:
    plugin = spool_kit.plugin()
    data_root = plugin.config["DataRootFolder"]
    assert spool_kit.condor("test", "-e", data_root).returncode != 0, "the pool must not see the spool data root"
    script = "for i in 1 2 3 4 5 6; do echo line$i; sleep 1; done; cat /cfg/k; echo shared > /e/f"
    body = pod_body(
        "spooled",
        [container("c", ["sh", "-c", script], volumeMounts=[{"name": "cfg", "mountPath": "/cfg"},
                                                            {"name": "e", "mountPath": "/e"}]),
         container("d", ["sh", "-c", "sleep 2; exit 4"])],
        volumes=[{"name": "cfg", "configMap": {"name": "cm"}}, {"name": "e", "emptyDir": {}}],
        config_maps=[config_map("cm", {"k": "from-configmap"})],
    )
    job_id = plugin.create(body)["PodJID"]
    live = plugin.wait_status(body, running, timeout=40)  # per-container state chirped into the job ad
    assert live["containers"][0]["state"]["running"]["startedAt"]
    deadline = time.monotonic() + 20
    text = ""
    while "line2" not in text and time.monotonic() < deadline:
        response = plugin.logs(body, "c")  # through condor_tail while the job runs
        assert response.status_code == 200, response.text
        text = response.text
        time.sleep(0.5)
    assert text.startswith("line1\nline2\n")
    status = plugin.wait_done(body, timeout=60)
    assert exit_codes(status) == {"c": 0, "d": 4}
    assert plugin.logs(body, "c").text == "line1\nline2\nline3\nline4\nline5\nline6\nfrom-configmap\n"
    job_dir = Path(data_root) / f"default-{body['pod']['metadata']['uid']}"
    assert (job_dir / "c" / "c" / "exit").read_text() == "0\n" and (job_dir / "pod.exit").exists()
    assert ad(spool_kit, job_id, "InterLinkSpool")["InterLinkSpool"] is True
    _volumes_pod(plugin)  # secret modes survive spooling


def test_spool_mode_without_tail_command_says_so(spool_kit: HTCondorKit) -> None:
    plugin = spool_kit.plugin(HTCondorTailCommand="")
    body = pod_body("notail", [container("c", ["sh", "-c", "echo early; sleep 6; echo late"])])
    plugin.create(body)
    plugin.wait_status(body, running, timeout=40)
    response = plugin.logs(body, "c")
    assert response.status_code == 400 and "HTCondorTailCommand" in response.json()["error"]
    plugin.wait_done(body, timeout=60)
    assert plugin.logs(body, "c").text == "early\nlate\n"
    assert all_terminated(plugin.status(body))


def _signal_shadows(kit: HTCondorKit, sig: signal.Signals) -> int:
    """SIGSTOP/SIGCONT the pool's shadows (host pids, from podman top: the pool image has no pkill): a shadow
    that stops answering, as one blocked on a hung shared filesystem, and back. Returns how many."""
    out = subprocess.run(["podman", "top", kit.container, "hpid", "comm"], capture_output=True, text=True,
                         timeout=30, check=True).stdout.splitlines()[1:]
    pids = [int(words[0]) for words in (line.split() for line in out) if words[1:] == ["condor_shadow"]]
    for pid in pids:
        os.kill(pid, sig)
    return len(pids)


def test_a_removal_stuck_behind_a_shadow_that_stopped_answering_is_forced(kit: HTCondorKit) -> None:
    """The graceful Remove of a deleted pod cannot get through a frozen shadow: the job stays Removing. Once
    HTCondor's own SIGKILL should have ended it (job_max_vacate_time = grace + 10 s) and 20 s of slack
    passed, the plugin forgets the job with RemoveX, so the pod does not hang in Terminating for the
    whole job lease. Never earlier: the runner's last steps are not cut short."""
    plugin = kit.plugin(PollInterval=1)
    body = pod_body("stuck", [container("c", ["sh", "-c", "sleep 600"])], terminationGracePeriodSeconds=1)
    job_id = plugin.create(body)["PodJID"]
    plugin.wait_status(body, running, timeout=60)
    try:
        assert _signal_shadows(kit, signal.SIGSTOP) == 1
        assert plugin.delete(body).status_code == 200
        removing_since = time.monotonic()
        deadline = removing_since + 30
        while ad(kit, job_id, "JobStatus").get("JobStatus") != 3 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert ad(kit, job_id, "JobStatus").get("JobStatus") == 3  # Removing, and stuck there
        assert int(ad(kit, job_id, "JobMaxVacateTime")["JobMaxVacateTime"]) == 11
        deadline = removing_since + 120
        while kit.condor("condor_q", "-all", job_id, "-af", "JobStatus").stdout.strip() and \
                time.monotonic() < deadline:
            time.sleep(0.5)
        gone_after = time.monotonic() - removing_since
        assert not kit.condor("condor_q", "-all", job_id, "-af", "JobStatus").stdout.strip(), "still queued"
        assert gone_after >= 11 + 20 - 2, gone_after  # not before job_max_vacate_time and the slack
        assert f"job(s) {job_id} still in removal after job_max_vacate_time: RemoveX" in plugin.log_path.read_text()
        deadline = time.monotonic() + 30
        while plugin.status(body) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert plugin.status(body) is None  # the deleted pod is forgotten once its job is
    finally:
        _signal_shadows(kit, signal.SIGCONT)
