"""The kubelet-parity suite's own machinery: manifests resolved as interLink 0.6.2 does, its phase rule."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from tests.kubelet.cases import CASES, LogCheck
from tests.kubelet.driver import CaseFailure, match_log
from tests.kubelet.resolve import SERVICE_ACCOUNT_DIR, pods_from_manifests
from tests.kubelet.vkphase import ProtocolError, VKPod

MANIFESTS: list[dict[str, Any]] = [
    {"kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "from-cm", "LEVEL": "debug"}},
    {"kind": "Secret", "metadata": {"name": "sec"}, "stringData": {"pw": "s3cret"}},
    {"kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {
        "restartPolicy": "Never",
        "initContainers": [{"name": "init", "image": "busybox:1.36", "command": ["true"]}],
        "containers": [
            {"name": "main", "image": "python:alpine", "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "P_"}],
             "env": [{"name": "A", "value": "x"}, {"name": "B", "value": "$(A)-$(NOPE)-$$(A)"},
                     {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                     {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
             "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}, {"name": "down", "mountPath": "/down"}]},
            {"name": "other", "image": "busybox", "volumeMounts": [{"name": "sv", "mountPath": "/s"}]}],
        "volumes": [{"name": "cfg", "configMap": {"name": "cm"}}, {"name": "sv", "secret": {"secretName": "sec"}},
                    {"name": "down", "downwardAPI": {"items": [{"path": "labels",
                                                                 "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}},
    {"kind": "Job", "metadata": {"name": "job"}, "spec": {"backoffLimit": 2, "template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1.36", "command": ["false"]}]}}}},
]


def _templates() -> dict[str, Any]:
    return {t.name: t for t in pods_from_manifests(MANIFESTS)}


def test_every_container_mounts_the_service_account_volume_and_gets_its_projected_map() -> None:
    body = _templates()["p"].body()
    volumes = {v["name"]: v for v in body["pod"]["spec"]["volumes"]}
    sa = [name for name in volumes if re.fullmatch(r"kube-api-access-[bcdfghjklmnpqrstvwxz2456789]{5}", name)]
    assert len(sa) == 1
    spec = body["pod"]["spec"]
    for c in spec["initContainers"] + spec["containers"]:
        assert {"name": sa[0], "readOnly": True, "mountPath": SERVICE_ACCOUNT_DIR} in c["volumeMounts"]
    for entry in body["container"]:
        maps = {m["metadata"]["name"]: m["data"] for m in entry["projectedvolumemaps"]}
        assert maps[sa[0]]["ca.crt"].startswith("-----BEGIN CERTIFICATE-----\n")
        assert maps[sa[0]]["namespace"] == "default"
        assert maps[sa[0]]["token"].count(".") == 2
    assert [e["name"] for e in body["container"]] == ["init", "main", "other"]


def test_env_is_resolved_into_plain_values_and_envfrom_is_gone() -> None:
    body = _templates()["p"].body()
    main = body["pod"]["spec"]["containers"][1 - 1]
    assert "envFrom" not in main
    env = {e["name"]: e["value"] for e in main["env"]}
    assert all(set(e) == {"name", "value"} for e in main["env"])
    assert env["A"] == "x" and env["B"] == "x-$(NOPE)-$(A)" and env["S"] == "s3cret" and env["N"] == "p"
    assert env["P_k"] == "from-cm" and env["P_LEVEL"] == "debug"
    assert env["KUBERNETES_SERVICE_HOST"]


def test_volume_data_goes_only_to_the_containers_that_mount_it() -> None:
    body = _templates()["p"].body()
    entries = {e["name"]: e for e in body["container"]}
    assert entries["init"]["configMaps"] is None and entries["init"]["secrets"] is None
    assert [m["metadata"]["name"] for m in entries["main"]["configMaps"]] == ["cm"]
    assert entries["main"]["secrets"] is None
    assert base64.b64decode(entries["other"]["secrets"][0]["data"]["pw"]) == b"s3cret"
    assert all(e["emptyDirs"] is None for e in entries.values())


def test_downward_api_volume_becomes_projected() -> None:
    body = _templates()["p"].body()
    down = next(v for v in body["pod"]["spec"]["volumes"] if v["name"] == "down")
    assert "downwardAPI" not in down and down["projected"]["sources"][0]["downwardAPI"]["items"]
    main = next(e for e in body["container"] if e["name"] == "main")
    maps = {m["metadata"]["name"]: m["data"] for m in main["projectedvolumemaps"]}
    assert maps["down"] == {"labels": 'a="b"\n'}


def test_a_job_makes_a_new_pod_per_attempt_named_after_it() -> None:
    job = _templates()["job"]
    assert job.attempts == 3
    names = {job.body(i)["pod"]["metadata"]["name"] for i in range(3)}
    uids = {job.body(i)["pod"]["metadata"]["uid"] for i in range(3)}
    assert len(names) == 3 and len(uids) == 3
    assert all(re.fullmatch(r"job-[bcdfghjklmnpqrstvwxz2456789]{5}", n) for n in names)
    meta = job.body()["pod"]["metadata"]
    assert meta["labels"]["job-name"] == "job" and meta["ownerReferences"][0]["kind"] == "Job"


def test_api_server_defaults() -> None:
    body = _templates()["p"].body()
    spec = body["pod"]["spec"]
    policies = {c["name"]: c["imagePullPolicy"] for c in spec["containers"]}
    assert policies == {"main": "IfNotPresent", "other": "Always"}  # a tag, no tag
    assert next(v for v in spec["volumes"] if v["name"] == "cfg")["configMap"]["defaultMode"] == 420
    assert body["pod"]["status"]["podIP"] == "127.0.0.1" and body["pod"]["status"]["phase"] == "Pending"


def _entry(name: str, state: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "state": state}


RUN = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
WAIT = {"waiting": {"reason": "ContainerCreating"}}


def _done(code: int) -> dict[str, Any]:
    return {"terminated": {"exitCode": code}}


def test_phase_stays_pending_after_an_init_failure_while_main_containers_wait() -> None:
    vk = VKPod(init_names=("init",), names=("main",))
    status = {"initContainers": [_entry("init", _done(1))], "containers": [_entry("main", WAIT)]}
    assert vk.apply(status) == "Pending"
    status["containers"] = [_entry("main", _done(1))]
    assert vk.apply(status) == "Failed"


def test_phase_running_is_kept_and_success_needs_every_container_terminated() -> None:
    vk = VKPod(init_names=(), names=("a", "b"))
    assert vk.apply({"containers": [_entry("a", RUN), _entry("b", WAIT)]}) == "Running"
    assert vk.apply({"containers": [_entry("a", WAIT), _entry("b", WAIT)]}) == "Running"
    assert vk.apply({"containers": [_entry("a", _done(0)), _entry("b", RUN)]}) == "Running"
    assert vk.apply({"containers": [_entry("a", _done(0)), _entry("b", _done(0))]}) == "Succeeded"
    assert vk.apply({"containers": [_entry("a", _done(1)), _entry("b", _done(0))]}) == "Succeeded"  # final


def test_phase_init_running_keeps_the_pod_pending() -> None:
    vk = VKPod(init_names=("i",), names=("m",))
    assert vk.apply({"initContainers": [_entry("i", RUN)], "containers": [_entry("m", RUN)]}) == "Pending"


def test_a_status_missing_a_container_is_a_protocol_error() -> None:
    vk = VKPod(init_names=(), names=("a", "b"))
    with pytest.raises(ProtocolError):
        vk.apply({"containers": [_entry("a", RUN)]})


def test_log_operators() -> None:
    log = "hello\nhello world\n"
    assert match_log(LogCheck("p", "c", "^hello"), log) is None
    assert match_log(LogCheck("p", "c", "nope"), log)
    assert match_log(LogCheck("p", "c", "^hello", "CountAtLeast", 3), log)
    with pytest.raises(CaseFailure):
        match_log(LogCheck("p", "c", "hello", "CountAtMost", 1), log)
    assert match_log(LogCheck("p", "c", r"hello (\w+)", "Is", "world"), log) is None


def test_every_case_resolves_and_names_vk_test_set_templates() -> None:
    covered = set()
    for case in CASES:
        covered |= set(case.covers)
        for template in pods_from_manifests(case.documents()):
            assert template.name in case.phases, (case.key, template.name)
            template.body()
        for check in case.logs:
            re.compile(check.regex)
    assert {"000", "010", "020", "030", "040", "050", "060", "065", "080", "085", "086", "090", "095", "100", "105",
            "110", "115", "120", "120-init", "080-downward"} <= covered


def test_a_case_listening_on_the_host_gets_a_free_port_per_run() -> None:
    """SLURM and HTCondor pods share the host's network: the probes case must not depend on 8080 being free."""
    probes = next(case for case in CASES if case.key == "probes")
    assert probes.host_ports == (8080,)
    (template,) = pods_from_manifests(probes.documents({8080: 41234}))
    (c,) = template.body()["pod"]["spec"]["containers"]
    assert c["ports"][0]["containerPort"] == 41234 and {"name": "PROBE_PORT", "value": "41234"} in c["env"]
    assert {c[kind]["httpGet"]["port"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")} == {41234}
    assert "8080" not in json.dumps(template.body())
