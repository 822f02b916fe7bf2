"""The pod-field table and its walker: refused fields are a 422 naming the path, warned ones are named in
the status and the log, defaults and what interLink adds to every pod are neither."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from interlink_plugins.backends import FIELD_COLUMNS
from interlink_plugins.cli import main
from interlink_plugins.core.backend import JobInfo
from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.pod import parse_create_body
from interlink_plugins.core.model.podfields import (
    CONDITIONS,
    FIELDS,
    MAX_FINDINGS,
    UNKNOWN_NOTE,
    Facts,
    FieldReport,
    check_pod,
    field_reference_markdown,
    splice_docs,
)
from interlink_plugins.core.records.lifecycle import Lifecycle
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.records.status import (
    ContainerFiles,
    StatusContext,
    build_pod_status,
    submit_failed_status,
    with_field_notes,
)
from tests.kubelet.cases import CASES
from tests.kubelet.resolve import pods_from_manifests
from tests.podfactory import container, pod_body

BACKENDS = tuple(column.name for column in FIELD_COLUMNS)
ROOT = Path(__file__).resolve().parents[4]
DOC = ROOT / "docs" / "kubelet-parity.md"

# the Kubernetes API reference (v1.30, plus pod-level resources of 1.32): the table must name every one
PODSPEC_FIELDS = {
    "activeDeadlineSeconds", "affinity", "automountServiceAccountToken", "containers", "dnsConfig", "dnsPolicy",
    "enableServiceLinks", "ephemeralContainers", "hostAliases", "hostIPC", "hostNetwork", "hostPID", "hostUsers",
    "hostname", "imagePullSecrets", "initContainers", "nodeName", "nodeSelector", "os", "overhead",
    "preemptionPolicy", "priority", "priorityClassName", "readinessGates", "resourceClaims", "resources",
    "restartPolicy", "runtimeClassName", "schedulerName", "schedulingGates", "securityContext", "serviceAccount",
    "serviceAccountName", "setHostnameAsFQDN", "shareProcessNamespace", "subdomain", "terminationGracePeriodSeconds",
    "tolerations", "topologySpreadConstraints", "volumes",
}  # fmt: skip
CONTAINER_FIELDS = {
    "args", "command", "env", "envFrom", "image", "imagePullPolicy", "lifecycle", "livenessProbe", "name", "ports",
    "readinessProbe", "resizePolicy", "resources", "restartPolicy", "securityContext", "startupProbe", "stdin",
    "stdinOnce", "terminationMessagePath", "terminationMessagePolicy", "tty", "volumeDevices", "volumeMounts",
    "workingDir",
}  # fmt: skip
SECURITY_FIELDS = {
    "allowPrivilegeEscalation", "appArmorProfile", "capabilities", "privileged", "procMount",
    "readOnlyRootFilesystem", "runAsGroup", "runAsNonRoot", "runAsUser", "seLinuxOptions", "seccompProfile",
    "windowsOptions",
}  # fmt: skip
VOLUME_SOURCES = {
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap", "csi", "downwardAPI",
    "emptyDir", "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs", "hostPath",
    "image", "iscsi", "nfs", "persistentVolumeClaim", "photonPersistentDisk", "portworxVolume", "projected",
    "quobyte", "rbd", "scaleIO", "secret", "storageos", "vsphereVolume",
}  # fmt: skip


def facts(backend: str, *, probes: bool = True, runtime: str = "podman") -> Facts:
    return Facts(backend, probes, runtime)


def body_with(containers: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body = pod_body("p", containers or [container("c", ["true"])])
    body["pod"]["spec"].update(spec)
    return body


def report(body: dict[str, Any], backend: str, **kw: Any) -> FieldReport:
    return check_pod(parse_create_body(body).raw, facts(backend, **kw))


def test_the_table_names_every_field_of_the_api_reference() -> None:
    assert set(FIELDS["PodSpec"]) == PODSPEC_FIELDS
    assert set(FIELDS["Container"]) == CONTAINER_FIELDS
    assert set(FIELDS["SecurityContext"]) == SECURITY_FIELDS
    assert set(FIELDS["Volume"]) == VOLUME_SOURCES | {"name"}
    for kind, table in FIELDS.items():
        for name, rule in table.items():
            codes = "".join(column.code(kind, name, rule) for column in FIELD_COLUMNS)
            assert len(codes) == len(BACKENDS) and set(codes) <= set("HRW"), (kind, name)
            assert not rule.sub or rule.sub in FIELDS, (kind, name, rule.sub)
            assert not rule.when or rule.when in CONDITIONS, (kind, name)
            assert codes == "HHH" or rule.note, f"{kind}.{name}: a refusal says why"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_kubelet_suite_pods_as_interlink_sends_them_are_neither_refused_nor_warned(backend: str) -> None:
    """Every field the API server and interLink 0.6.2's virtual kubelet add (tolerations, nodeName, the
    kube-api-access volume, dnsPolicy, priority, terminationMessagePath, probes' defaults...) is fine; the one
    warning these pods get is emptyDir.sizeLimit, which no backend enforces."""
    seen = 0
    for case in CASES:
        for template in pods_from_manifests(case.documents()):
            result = check_pod(template.body()["pod"], facts(backend))
            assert result.refused == (), (case.key, result.refused)
            assert {w.path.rpartition(".")[2] for w in result.warned} <= {"sizeLimit"}, (case.key, result.warned)
            seen += 1
    assert seen >= 17


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_at_their_kubernetes_default_are_not_used(backend: str) -> None:
    c = container("c", ["true"], stdin=False, tty=False, terminationMessagePath="/dev/termination-log",
                  terminationMessagePolicy="File", securityContext={"privileged": False, "procMount": "Default",
                                                                    "allowPrivilegeEscalation": True},
                  ports=[{"containerPort": 80, "protocol": "TCP"}],
                  resizePolicy=[{"resourceName": "cpu", "restartPolicy": "NotRequired"}],
                  volumeMounts=[{"name": "v", "mountPath": "/v", "mountPropagation": "None",
                                 "recursiveReadOnly": "Disabled"}])
    body = body_with([c], hostNetwork=False, hostPID=False, hostIPC=False, shareProcessNamespace=False,
                     dnsPolicy="ClusterFirst", enableServiceLinks=True, priority=0, hostUsers=True,
                     preemptionPolicy="PreemptLowerPriority", schedulerName="default-scheduler", os={"name": "linux"},
                     securityContext={}, dnsConfig=None, tolerations=[{"key": "virtual-node.interlink/no-schedule",
                                                                       "operator": "Exists"}],
                     volumes=[{"name": "v", "emptyDir": {}}])
    result = report(body, backend)
    assert result.refused == () and result.warned == ()


@pytest.mark.parametrize(
    ("backends", "change", "path"),
    [
        (("slurm", "htcondor"), {"ports": [{"containerPort": 80, "hostPort": 8080}]},
         "spec.containers[0].ports[0].hostPort"),
        (BACKENDS, {"securityContext": {"privileged": True}}, "spec.containers[0].securityContext.privileged"),
        (BACKENDS, {"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}},
         "spec.containers[0].securityContext.capabilities.add"),
        (BACKENDS, {"volumeDevices": [{"name": "b", "devicePath": "/dev/xvda"}]}, "spec.containers[0].volumeDevices"),
        (BACKENDS, {"resources": {"claims": [{"name": "gpu"}]}}, "spec.containers[0].resources.claims"),
        (BACKENDS, {"readinessProbe": {"grpc": {"port": 9000}}}, "spec.containers[0].readinessProbe.grpc"),
        (BACKENDS, {"lifecycle": {"preStop": {"tcpSocket": {"port": 80}}}},
         "spec.containers[0].lifecycle.preStop.tcpSocket"),
    ],
)
def test_a_refused_container_field_is_a_422_naming_its_path(
    backends: tuple[str, ...], change: dict[str, Any], path: str
) -> None:
    body = body_with([container("c", ["true"], **change)])
    for backend in BACKENDS:
        result = report(body, backend)
        if backend not in backends:
            assert result.refused == ()
            continue
        assert [f.path for f in result.refused] == [path]
        with pytest.raises(PodSpecError) as info:
            result.raise_refused()
        assert info.value.field == path and info.value.status == 422
        assert f"the {backend} backend refuses this pod" in info.value.message


@pytest.mark.parametrize(
    ("spec", "path", "refused_on"),
    [
        ({"hostPID": True}, "spec.hostPID", BACKENDS),
        ({"hostIPC": True}, "spec.hostIPC", BACKENDS),
        ({"hostNetwork": True}, "spec.hostNetwork", ("podman",)),
        ({"shareProcessNamespace": True}, "spec.shareProcessNamespace", BACKENDS),
        ({"os": {"name": "windows"}}, "spec.os.name", BACKENDS),
        ({"securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}},
         "spec.securityContext.sysctls", BACKENDS),
        ({"resourceClaims": [{"name": "gpu"}]}, "spec.resourceClaims", BACKENDS),
    ],
)
def test_a_refused_pod_field_is_a_422_naming_its_path(
    spec: dict[str, Any], path: str, refused_on: tuple[str, ...]
) -> None:
    for backend in BACKENDS:
        result = report(body_with(**spec), backend)
        assert [f.path for f in result.refused] == ([path] if backend in refused_on else [])


def test_host_network_is_refused_on_podman_unless_its_pod_network_is_the_host() -> None:
    raw = parse_create_body(body_with(hostNetwork=True)).raw
    assert check_pod(raw, Facts("podman", pod_network="host")) == FieldReport("podman")
    refused = check_pod(raw, Facts("podman", pod_network="slirp4netns")).refused
    assert [(f.path, f.note) for f in refused] == [("spec.hostNetwork",
                                                    "a Podman pod's network is the admin's PodmanPodNetwork")]


def test_a_finding_says_what_its_own_backend_does_the_docs_what_each_does() -> None:
    """A backend's words for a field (its */fields.py) reach its findings; the docs' note names each backend."""
    limits = {"example.com/fpga": "1", "ephemeral-storage": "1Gi"}
    body = body_with([container("c", ["true"], resources={"limits": limits})], hostname="h")
    assert [(f.path, f.note) for f in report(body, "htcondor").refused] == [
        ("spec.containers[0].resources.limits[example.com/fpga]", "HTCondor has no equivalent")]
    podman = {f.path: f.note for f in report(body, "podman").warned}
    assert podman == {"spec.containers[0].resources.limits[ephemeral-storage]": "podman does not limit it",
                      "spec.hostname": "the hostname is the pod's name"}
    assert {f.path: f.note for f in report(body, "slurm").warned} == {"spec.hostname": "the hostname is the node's"}
    docs = field_reference_markdown(FIELD_COLUMNS)
    assert ("| `cpu` | honoured | honoured | honoured | the job's CPUs (SLURM, HTCondor); --cpus and --cpu-shares "
            "(Podman) |") in docs


def test_every_refused_field_is_named_in_the_one_error() -> None:
    body = body_with([container("c", ["true"], securityContext={"privileged": True})], hostPID=True)
    with pytest.raises(PodSpecError) as info:
        report(body, "podman").raise_refused()
    both = {"spec.hostPID", "spec.containers[0].securityContext.privileged"}
    assert info.value.field in both
    (other,) = both - {info.value.field}
    assert f"also refused: {other} (" in info.value.message


def test_an_unsupported_volume_type_is_refused_naming_it() -> None:
    raw = body_with(volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "x"}}])["pod"]
    result = check_pod(raw, facts("slurm"))  # (the parser refuses it first as well)
    assert [f.path for f in result.refused] == ["spec.volumes[0].persistentVolumeClaim"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_warned_fields_name_their_path_and_the_containers_they_concern(backend: str) -> None:
    containers = [
        container("a", ["true"], stdin=True, volumeMounts=[{"name": "mem", "mountPath": "/m"}]),
        container("b", ["true"]),
    ]
    body = body_with(containers, dnsConfig={"nameservers": ["1.1.1.1"]}, readinessGates=[{"conditionType": "x"}],
                     topologySpreadConstraints=[{"maxSkew": 1}], priorityClassName="high",
                     volumes=[{"name": "mem", "emptyDir": {"medium": "Memory"}}])
    body["pod"]["spec"]["initContainers"] = [container("i", ["true"], tty=True)]
    result = report(body, backend)
    assert result.refused == ()
    paths = [f.path for f in result.warned]
    assert paths == ["spec.containers[0].stdin", "spec.dnsConfig", "spec.initContainers[0].tty",
                     "spec.priorityClassName", "spec.readinessGates", "spec.topologySpreadConstraints",
                     "spec.volumes[0].emptyDir.medium"]
    notes = result.by_container
    assert [n.split(" (")[0] for n in notes["a"]] == ["spec.containers[0].stdin", "spec.dnsConfig",
                                                       "spec.priorityClassName", "spec.readinessGates",
                                                       "spec.topologySpreadConstraints",
                                                       "spec.volumes[0].emptyDir.medium"]
    assert [n.split(" (")[0] for n in notes["b"]] == ["spec.dnsConfig", "spec.priorityClassName",
                                                       "spec.readinessGates", "spec.topologySpreadConstraints"]
    assert [n.split(" (")[0] for n in notes["i"]] == ["spec.dnsConfig", "spec.initContainers[0].tty",
                                                       "spec.priorityClassName", "spec.readinessGates",
                                                       "spec.topologySpreadConstraints"]
    assert "spec.dnsConfig (the node's resolver configuration is used)" in result.log_line()
    assert result.log_line().startswith(f"fields not honoured by the {backend} backend (the pod runs without them): ")


def test_a_field_the_table_does_not_know_is_warned_with_its_path_never_refused() -> None:
    body = body_with([container("c", ["true"], futureField={"x": 1}, securityContext={"newKnob": True})],
                     hostnameOverride="x")
    result = report(body, "slurm")
    assert result.refused == ()
    assert [(f.path, f.note) for f in result.warned] == [
        ("spec.containers[0].futureField", UNKNOWN_NOTE),
        ("spec.containers[0].securityContext.newKnob", UNKNOWN_NOTE),
        ("spec.hostnameOverride", UNKNOWN_NOTE),
    ]


def test_a_hostile_field_name_reaches_the_log_and_the_status_escaped_and_short() -> None:
    """Attack: unknown keys with a newline (a forged log line), a megabyte name, and thousands of them."""
    extra = {"x\nINFO forged line": 1, "k" * 1_000_000: 1, **{f"unknown{i}": 1 for i in range(5000)}}
    body = body_with([container("c", ["true"], **extra)])
    result = report(body, "slurm")
    line = result.log_line()
    assert "\n" not in line and len(line) < 5000
    assert '"x\\nINFO forged line"' in line
    assert len(result.warned) == MAX_FINDINGS + 1 and str(result.warned[-1]) == "... (4982 more fields)"
    assert max(len(note) for note in result.by_container["c"]) < 200


def test_probes_are_warned_on_batch_backends_without_enable_probes() -> None:
    probe = {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 10}
    body = body_with([container("c", ["true"], livenessProbe=probe, readinessProbe=probe)])
    for backend in ("slurm", "htcondor"):
        result = report(body, backend, probes=False)
        assert [(f.path, f.note) for f in result.warned] == [
            ("spec.containers[0].livenessProbe", "probes run only with EnableProbes: true"),
            ("spec.containers[0].readinessProbe", "probes run only with EnableProbes: true"),
        ]
        assert report(body, backend, probes=True).warned == ()
    assert report(body, "podman", probes=False).warned == ()  # the Podman backend runs them itself


def test_run_as_user_and_group_follow_what_each_backend_and_runtime_do() -> None:
    body = body_with([container("c", ["true"], imagePullPolicy="IfNotPresent",
                                securityContext={"runAsUser": 1000, "runAsGroup": 1000})])
    assert report(body, "slurm", runtime="apptainer").warned[0].path == "spec.containers[0].securityContext.runAsGroup"
    assert len(report(body, "slurm", runtime="apptainer").warned) == 1  # the job's user: honoured on SLURM
    assert [f.path for f in report(body, "htcondor", runtime="apptainer").warned] == [
        "spec.containers[0].securityContext.runAsGroup", "spec.containers[0].securityContext.runAsUser"]
    assert "only ContainerRuntime podman" in report(body, "htcondor", runtime="apptainer").warned[1].note
    for backend in BACKENDS:
        assert report(body, backend, runtime="podman").warned == ()
    alone = body_with([container("c", ["true"])], securityContext={"runAsGroup": 1000})
    for backend in BACKENDS:
        result = report(alone, backend)
        assert [f.path for f in result.warned] == ["spec.securityContext.runAsGroup"]
        assert "only together with runAsUser" in result.warned[0].note


def test_runtime_apptainer_warns_a_pull_policy_other_than_if_not_present() -> None:
    for policy, warned in (("Always", True), ("Never", True), ("IfNotPresent", False)):
        body = body_with([container("c", ["true"], imagePullPolicy=policy)])
        for backend in ("slurm", "htcondor"):
            paths = [f.path for f in report(body, backend, runtime="apptainer").warned]
            assert paths == (["spec.containers[0].imagePullPolicy"] if warned else [])
            assert report(body, backend, runtime="podman").warned == ()
            assert report(body, backend, runtime="none").warned == ()
        assert report(body, "podman", runtime="apptainer").warned == ()


def test_resource_names_are_checked_one_by_one() -> None:
    resources = {"limits": {"cpu": "1", "memory": "1Gi", "hugepages-2Mi": "2Mi", "ephemeral-storage": "1Gi"}}
    body = body_with([container("c", ["true"], resources=resources)])
    assert [f.path for f in report(body, "slurm").warned] == ["spec.containers[0].resources.limits[hugepages-2Mi]"]
    assert [f.path for f in report(body, "podman").warned] == [
        "spec.containers[0].resources.limits[ephemeral-storage]", "spec.containers[0].resources.limits[hugepages-2Mi]"]


def test_an_extended_resource_is_refused_on_htcondor_and_left_to_the_maps_elsewhere() -> None:
    body = body_with([container("c", ["true"], resources={"limits": {"example.com/fpga": "1"}})])
    assert [f.path for f in report(body, "htcondor").refused] == ["spec.containers[0].resources.limits[example.com/fpga]"]
    assert report(body, "slurm").refused == () and report(body, "podman").refused == ()


def test_a_pod_that_is_not_an_object_has_nothing_to_report() -> None:
    assert check_pod({"spec": "x"}, facts("slurm")) == FieldReport("slurm")
    malformed = {"spec": {"containers": "x", "volumes": [1], "securityContext": [], "os": 3}}
    assert check_pod(malformed, facts("slurm")).refused == ()
    deep: Any = "leaf"
    for _ in range(5000):  # far past Python's recursion limit: walked without recursing into it
        deep = [deep]
    nested = {"spec": {"volumes": [{"name": "v", "projected": {"sources": deep}}], "tolerations": deep}}
    assert check_pod(nested, facts("podman")) == FieldReport("podman")


# ----------------------------------------------------------------------------------------- status


def _record(notes: dict[str, list[str]]) -> PodRecord:
    return PodRecord(uid="u1", namespace="default", name="p", job_dir="/x", init_names=["i"], main_names=["a", "b"],
                     job_id="7", phase="submitted", lifecycle=Lifecycle(field_notes=notes))


def test_the_notes_are_in_the_waiting_and_terminated_messages_of_the_containers_they_concern() -> None:
    record = _record({"a": ["spec.dnsConfig (the node's resolver configuration is used)"]})
    waiting = with_field_notes(
        build_pod_status(StatusContext(record, JobInfo("7", "PENDING", active=True), "SLURM"), {}, {}), record, "slurm")
    message = waiting["containers"][0]["state"]["waiting"]["message"]
    assert message.endswith("; fields not honoured by the slurm backend: spec.dnsConfig (the node's resolver "
                            "configuration is used)")
    assert "fields not honoured" not in json.dumps(waiting["containers"][1])
    assert "fields not honoured" not in json.dumps(waiting["initContainers"][0])
    files = {"i": ContainerFiles(started="t", finished="t", exit_code=0), "a": ContainerFiles(started="t"),
             "b": ContainerFiles(started="t")}
    running = with_field_notes(build_pod_status(
        StatusContext(record, JobInfo("7", "RUNNING", active=True, running=True), "SLURM"), files, {}), record, "slurm")
    assert running["containers"][0]["state"] == {"running": {"startedAt": "t"}}  # no message in a running state
    done = {name: ContainerFiles(started="t", finished="t", exit_code=0) for name in ("i", "a", "b")}
    ended = with_field_notes(
        build_pod_status(StatusContext(record, JobInfo("7", "COMPLETED", active=False), "SLURM"), done, {}), record,
        "slurm")
    assert "fields not honoured" not in json.dumps(build_pod_status(
        StatusContext(record, JobInfo("7", "COMPLETED", active=False), "SLURM"), done, {}))  # what is logged from
    assert "fields not honoured by the slurm backend: spec.dnsConfig" in ended["containers"][0]["state"][
        "terminated"]["message"]
    record.last_error = "sbatch: error"
    failed = with_field_notes(submit_failed_status(record, {}, "slurm"), record, "slurm")
    assert "fields not honoured" in failed["containers"][0]["state"]["terminated"]["message"]


# ------------------------------------------------------------------------------------------- docs


def test_the_docs_hold_the_generated_reference() -> None:
    text = DOC.read_text()
    assert splice_docs(text, FIELD_COLUMNS) == text, "run: interlink-plugin field-reference --update docs/kubelet-parity.md"
    assert field_reference_markdown(FIELD_COLUMNS) in text


def test_field_reference_command_prints_and_updates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["field-reference"]) == 0
    assert capsys.readouterr().out == field_reference_markdown(FIELD_COLUMNS)
    doc = tmp_path / "doc.md"
    doc.write_text("# title\n\nintro\n")
    assert main(["field-reference", "--update", str(doc)]) == 0
    first = doc.read_text()
    assert first.startswith("# title\n\nintro\n\n<!-- BEGIN field-reference")
    assert main(["field-reference", "--update", str(doc)]) == 0
    assert doc.read_text() == first


def _render(tmp_path: Path, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text(f"Backend: slurm\nDataRootFolder: {tmp_path}/data\nStateDir: {tmp_path}/state\n"
                      "DefaultUID: 65534\n")  # a root render refuses a pod with no uid otherwise
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps(body))
    return subprocess.run([sys.executable, "-m", "interlink_plugins.cli", "render", str(pod), "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_render_shows_the_warnings_and_the_refusal_a_pod_would_get(tmp_path: Path) -> None:
    warned = copy.deepcopy(body_with(dnsConfig={"nameservers": ["1.1.1.1"]}))
    result = _render(tmp_path, warned)
    assert result.returncode == 0, result.stderr
    assert ("# not honoured by the slurm backend (the pod runs without it): spec.dnsConfig (the node's resolver "
            "configuration is used)") in result.stdout
    refused = body_with([container("c", ["true"], ports=[{"containerPort": 80, "hostPort": 80}])])
    result = _render(tmp_path, refused)
    assert result.returncode == 65
    assert "refused: spec.containers[0].ports[0].hostPort:" in result.stderr
