"""Names and values are what Kubernetes allows: attacks through the pod's identity and strings.

- A newline in `metadata.name` ended the HTCondor submit command it was in and started another
  (`universe = local`: the job ran on the access point); `$ENV(HOME)` was expanded by the submit
  language. Defence: name/namespace/uid/keys validated as the apiserver does (422 naming the field),
  and every submit command checked for `$` and control characters before it reaches the schedd.
- A lone surrogate (`"\\ud800"`) in any string of the body: a 500 and a half-written job dir.
  Defence: 422 naming the field, nothing under the data root.
- `(tenant-b, <uid>)` and `(tenant, b-<uid>)` shared one job dir (the second pod wrote into the
  first's). Defence: an injective job dir name.
- A 1.5 MB body wrote 100k files to the shared file system. Defence: MaxVolumeFiles/MaxVolumeBytes,
  422 naming the volume, nothing written.

Run the htcondor cases under `flock /tmp/il-htcondor.lock`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.kits import KIT_NAMES, BackendKit, HTCondorKit, open_kit
from tests.harness import PluginProcess, exit_codes
from tests.podfactory import config_map, container, pod_body, secret, status_pod

pytestmark = pytest.mark.e2e
S = "\ud800"  # a lone surrogate: json.dumps sends it as the escape "\ud800"


@pytest.fixture(params=KIT_NAMES)
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendKit]:
    yield from open_kit(request, tmp_path, request.param, podman_remote=False)


def plugin_of(kit: BackendKit, **config: Any) -> PluginProcess:
    return kit.plugin(runtime="podman" if kit.name == "podman" else "none", **config)


def everything_pod() -> dict[str, Any]:
    """A pod with a string in every kind of field the plugin reads."""
    body = pod_body(
        "strings",
        [container("c", ["sh", "-c", "true"], args=["a"], env=[{"name": "E", "value": "v"}], workingDir="/tmp",
                   volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}, {"name": "sec", "mountPath": "/sec"}],
                   resources={"limits": {"cpu": "100m", "memory": "64Mi"}})],
        volumes=[{"name": "cfg", "configMap": {"name": "cm"}}, {"name": "sec", "secret": {"secretName": "s"}}],
        config_maps=[config_map("cm", {"k": "v"})],
        secrets=[secret("s", {"p": b"x"})],
        annotations={"example.com/note": "n"},
    )
    body["jobScript"] = ""
    return body


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        target = body
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    return apply


def _rename_key(path: tuple[Any, ...], old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        target = body
        for part in path:
            target = target[part]
        target[new] = target.pop(old)
    return apply


C0 = ("pod", "spec", "containers", 0)
SURROGATE_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("name", _set(("pod", "metadata", "name"), f"x{S}"), "pod.metadata.name"),
    ("namespace", _set(("pod", "metadata", "namespace"), f"x{S}"), "pod.metadata.namespace"),
    ("uid", _set(("pod", "metadata", "uid"), f"{uuid.uuid4()}{S}"), "pod.metadata.uid"),
    ("label value", _set(("pod", "metadata", "labels", "app"), f"x{S}"), "pod.metadata.labels.app"),
    ("annotation key", _rename_key(("pod", "metadata", "annotations"), "example.com/note", f"k{S}"),
     "pod.metadata.annotations.k\\ud800"),
    ("annotation value", _set(("pod", "metadata", "annotations", "example.com/note"), f"{S}"),
     "pod.metadata.annotations.example.com/note"),
    ("container name", _set((*C0, "name"), f"c{S}"), "pod.spec.containers[0].name"),
    ("image", _set((*C0, "image"), f"busybox{S}"), "pod.spec.containers[0].image"),
    ("command", _set((*C0, "command", 2), f"echo {S}"), "pod.spec.containers[0].command[2]"),
    ("args", _set((*C0, "args", 0), S), "pod.spec.containers[0].args[0]"),
    ("env name", _set((*C0, "env", 0, "name"), f"E{S}"), "pod.spec.containers[0].env[0].name"),
    ("env value", _set((*C0, "env", 0, "value"), f"v{S}"), "pod.spec.containers[0].env[0].value"),
    ("workingDir", _set((*C0, "workingDir"), f"/tmp/{S}"), "pod.spec.containers[0].workingDir"),
    ("mountPath", _set((*C0, "volumeMounts", 0, "mountPath"), f"/cfg{S}"),
     "pod.spec.containers[0].volumeMounts[0].mountPath"),
    ("cpu quantity", _set((*C0, "resources", "limits", "cpu"), f"1{S}"), "pod.spec.containers[0].resources.limits.cpu"),
    ("volume name", _set(("pod", "spec", "volumes", 0, "name"), f"cfg{S}"), "pod.spec.volumes[0].name"),
    ("restartPolicy", _set(("pod", "spec", "restartPolicy"), f"Never{S}"), "pod.spec.restartPolicy"),
    ("configMap value", _set(("container", 0, "configMaps", 0, "data", "k"), f"v{S}"),
     "container[0].configMaps[0].data.k"),
    ("configMap key", _rename_key(("container", 0, "configMaps", 0, "data"), "k", f"k{S}"),
     "container[0].configMaps[0].data.k\\ud800"),
    ("secret value", _set(("container", 0, "secrets", 0, "data", "p"), f"eA=={S}"), "container[0].secrets[0].data.p"),
    ("jobScript", _set(("jobScript",), f"#!/bin/sh\necho {S}\n"), "jobScript"),
]


def entries(plugin: PluginProcess) -> list[str]:
    """The data root's job dirs (the shared static helpers, core/podrunner/helpers.py, are no pod's)."""
    root = Path(plugin.config["DataRootFolder"])
    return sorted(p.name for p in root.iterdir() if p.name != "helpers") if root.exists() else []


def post_raw(plugin: PluginProcess, path: str, body: Any, method: str = "POST") -> Any:
    """json.dumps sends a lone surrogate as its \\u escape, as a hostile client can."""
    return plugin.client.request(method, path, content=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})


def test_lone_surrogates_in_every_kind_of_string_are_422_and_leave_nothing(kit: BackendKit) -> None:
    """Attack: `\\ud800` in each kind of string of a create body (identity, keys, values, image,
    argv, env, paths, quantities, volume contents, jobScript), and in /status and /delete bodies.
    Today: 500 and a partial job dir. Defence: 422 naming the field; the data root stays empty."""
    plugin = plugin_of(kit)
    for what, mutate, field in SURROGATE_CASES:
        body = everything_pod()
        mutate(body)
        response = post_raw(plugin, "/create", body)
        assert response.status_code == 422, (what, response.status_code, response.text)
        assert response.json()["field"] == field, (what, response.json())
        assert entries(plugin) == [], (what, entries(plugin))
    ref = status_pod(everything_pod())
    ref["metadata"]["name"] = f"x{S}"
    for path, method in (("/delete", "POST"), ("/status", "GET")):
        response = post_raw(plugin, path, ref if path == "/delete" else [ref], method)
        assert response.status_code == 422, (path, response.text)
    # positive control: the same pod without the surrogate runs
    body = everything_pod()
    plugin.create(body)
    assert exit_codes(plugin.wait_done(body, timeout=120)) == {"c": 0}


def test_colliding_namespace_and_uid_pairs_get_their_own_job_dirs(kit: BackendKit) -> None:
    """Attack: pod B in namespace `tenant` with uid `b-<U>` where pod A is (`tenant-b`, `<U>`): both
    were `tenant-b-<U>`, B wrote its files into A's job dir. Defence: two dirs, each with its pod."""
    plugin = plugin_of(kit)
    base = str(uuid.uuid4())
    first = pod_body("a", [container("c", ["sh", "-c", "echo first"])], namespace="tenant-b", uid=base)
    second = pod_body("b", [container("c", ["sh", "-c", "echo second"])], namespace="tenant", uid=f"b-{base}")
    plugin.create(first)
    plugin.create(second)
    assert len(entries(plugin)) == 2, entries(plugin)
    for body, word in ((first, "first"), (second, "second")):
        assert exit_codes(plugin.wait_done(body, timeout=120)) == {"c": 0}
        assert plugin.logs(body, "c").text.strip().splitlines()[-1] == word
    root = Path(plugin.config["DataRootFolder"])
    owners = {json.loads((root / name / "pod.json").read_text())["uid"] for name in entries(plugin)}
    assert owners == {base, f"b-{base}"}


def test_a_hundred_thousand_volume_files_are_refused_before_any_is_written(kit: BackendKit) -> None:
    """Attack: a 1.5 MB body whose configMap has 100k keys (100k files on the shared FS), and two
    600 KiB values past MaxVolumeBytes 1Mi. Defence: 422 naming spec.volumes[0]; zero files written."""
    plugin = plugin_of(kit, MaxVolumeBytes="1Mi")
    many = {f"k{i}": "x" for i in range(100_000)}
    mount = [{"name": "cfg", "mountPath": "/cfg"}]
    body = pod_body("many", [container("c", ["true"], volumeMounts=mount)],
                    volumes=[{"name": "cfg", "configMap": {"name": "many"}}], config_maps=[config_map("many", many)])
    assert len(json.dumps(body)) < 2_000_000
    response = plugin.client.post("/create", json=body, timeout=120)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "spec.volumes[0]" and "MaxVolumeFiles" in response.json()["error"]
    assert entries(plugin) == []
    big = {"a": "x" * 600 * 1024, "b": "y" * 600 * 1024}
    body = pod_body("big", [container("c", ["true"], volumeMounts=mount)],
                    volumes=[{"name": "cfg", "configMap": {"name": "big"}}], config_maps=[config_map("big", big)])
    response = plugin.client.post("/create", json=body)
    assert response.status_code == 422 and "MaxVolumeBytes" in response.json()["error"], response.text
    assert entries(plugin) == []


# --- HTCondor: the real pool ------------------------------------------------------------------------

@pytest.fixture
def condor(tmp_path: Path, htcondor_pool: dict[str, str]) -> Iterator[HTCondorKit]:
    made = HTCondorKit(tmp_path / "kit", htcondor_pool)
    yield made
    made.close()


INJECTED = "x\nuniverse = local\n+Injected = true\nexecutable = /bin/touch"


def _refused_cases() -> list[tuple[str, Callable[[dict[str, Any]], None], str, int]]:
    return [
        ("name newline", _set(("pod", "metadata", "name"), INJECTED), "metadata.name", 422),
        ("name $ENV", _set(("pod", "metadata", "name"), "x$ENV(HOME)"), "metadata.name", 422),
        ("name trailing newline", _set(("pod", "metadata", "name"), "x\n"), "metadata.name", 422),
        ("namespace", _set(("pod", "metadata", "namespace"), INJECTED), "metadata.namespace", 422),
        ("uid", _set(("pod", "metadata", "uid"), "u\n+Injected = true"), "metadata.uid", 422),
        ("container name", _set((*C0, "name"), "c\n"), "spec.containers[0].name", 422),
        ("label key", _set(("pod", "metadata", "labels"), {"k\nuniverse = local": "v"}),
         "metadata.labels[k\nuniverse = local]", 422),
        ("submit command $ENV", _set(("pod", "metadata", "annotations"),
                                     {"htcondor-job.vk.io/submit-commands": "rank = $ENV(HOME)"}),
         "metadata.annotations[htcondor-job.vk.io/submit-commands]", 422),
        ("submit command universe", _set(("pod", "metadata", "annotations"),
                                         {"htcondor-job.vk.io/submit-commands": "rank = 1\nuniverse = local"}),
         "metadata.annotations[htcondor-job.vk.io/submit-commands]", 403),
    ]


def test_htcondor_submit_injection_through_the_pod_is_refused_or_harmless(condor: HTCondorKit) -> None:
    """Attack on the real pool: newline, `$ENV(HOME)` and `universe = local` in name, namespace, uid,
    container name, label keys, submit commands (refused: 422/403 naming the field, no job, no job
    dir), and in label values, annotation values and env values (harmless: the job runs in the vanilla
    universe, its ClassAd has no injected attribute, the env value reaches the container verbatim)."""
    plugin = condor.plugin(HTCondorSchedd="il-htcondor")
    for what, mutate, field, status in _refused_cases():
        body = pod_body("inj", [container("c", ["true"])])
        mutate(body)
        response = plugin.client.post("/create", json=body)
        assert response.status_code == status, (what, response.text)
        assert response.json()["field"] == field, (what, response.json())
        uid = body["pod"]["metadata"]["uid"]
        if "\n" not in uid:
            assert condor.jobs_for(plugin, uid) == [], what
        assert entries(plugin) == [], (what, entries(plugin))
    body = pod_body("harmless", [container("c", ["sh", "-c", 'printf "%s" "$V"'],
                                           env=[{"name": "V", "value": f"$ENV(HOME)\n{INJECTED}"}])],
                    annotations={"example.com/note": INJECTED, "example.com/macro": "$ENV(HOME)"})
    body["pod"]["metadata"]["labels"]["app"] = INJECTED
    job_id = plugin.create(body)["PodJID"]
    assert exit_codes(plugin.wait_done(body, timeout=120)) == {"c": 0}
    assert plugin.logs(body, "c").text.rstrip("\n").endswith(f"$ENV(HOME)\n{INJECTED}")
    out = condor.condor("condor_history", "-limit", "1", job_id, "-json").stdout.strip() or \
        condor.condor("condor_q", "-all", job_id, "-json").stdout.strip()
    ad = json.loads(out)[0]
    assert ad["JobUniverse"] == 5, ad["JobUniverse"]  # vanilla: never local
    assert "Injected" not in ad and not ad.get("Environment")
    assert ad["Cmd"].endswith("/pod-runner.sh")
    assert not any("$ENV" in str(value) or "universe = local" in str(value) for value in ad.values())
