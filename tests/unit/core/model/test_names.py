"""core/model/names: pod names, namespaces, uids and keys as Kubernetes allows them; the job dir name is
injective; lone surrogates are found wherever they are; every submit command is checked; volume caps."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlink_plugins.api.answers import BadRequest, read_json_body
from interlink_plugins.backends import parse_config
from interlink_plugins.core.errors import ConfigError, PodSpecError
from interlink_plugins.core.model.names import (
    check_dns_label,
    check_dns_subdomain,
    check_keys,
    check_pod_uid,
    job_dir_name,
    surrogate_field,
)
from interlink_plugins.core.model.pod import parse_create_body
from interlink_plugins.core.volumes.materialise import VolumeLimits, materialise_volumes
from interlink_plugins.htcondor import submit
from tests.podfactory import config_map, container, pod_body

INJECTIONS = ["a\nuniverse = local", "a\n", "a$ENV(HOME)", "a\rb", "a b", "A", "-a", "a-", "a\x00", "a\u2028b",
              "a/b", "..", "", "a_b"]


@pytest.mark.parametrize("bad", INJECTIONS)
def test_names_and_namespaces_refuse_what_kubernetes_refuses(bad: str) -> None:
    with pytest.raises(PodSpecError) as raised:
        check_dns_label(bad, "metadata.namespace")
    assert raised.value.field == "metadata.namespace"
    if bad != "..":  # two dots make no subdomain either, but "a.b" does
        with pytest.raises(PodSpecError):
            check_dns_subdomain(bad, "metadata.name")


def test_names_kubernetes_accepts() -> None:
    for good in ("a", "web-0", "0abc", "x" * 63):
        assert check_dns_label(good, "f") == good
    for good in ("a.b-c.d", "my-pod.x", "a" * 253):
        assert check_dns_subdomain(good, "f") == good
    with pytest.raises(PodSpecError, match="253"):
        check_dns_subdomain("a" * 254, "metadata.name")
    with pytest.raises(PodSpecError, match="63"):
        check_dns_label("a" * 64, "metadata.namespace")


@pytest.mark.parametrize("bad", ["../etc", "a/b", "a\n", "a\nb", "$(Cluster)", ".hidden", "-x", "", "x" * 129,
                                 "a b", "é"])
def test_pod_uid_refuses_what_could_break_a_path_or_a_submit_file(bad: str) -> None:
    with pytest.raises(PodSpecError) as raised:
        check_pod_uid(bad)
    assert raised.value.field == "metadata.uid"


def test_pod_uid_accepts_what_interlink_sends() -> None:
    for good in (str(uuid.uuid4()), str(uuid.uuid4()).upper(), "u-1", "x"):
        assert check_pod_uid(good) == good


def test_label_and_annotation_keys() -> None:
    check_keys({"app": "any value at all\n", "example.com/tier": "", "slurm-job.vk.io/flags": "-t 1"}, "m")
    for bad in ("a\nb", "a=b", "bad prefix/x", "/x", "x/", "a" * 64, "-a"):
        with pytest.raises(PodSpecError) as raised:
            check_keys({bad: "v"}, "metadata.labels")
        assert raised.value.field.startswith("metadata.labels[")


def test_the_colliding_pairs_get_different_job_dirs() -> None:
    """(tenant-b, <uid>) and (tenant, b-<uid>) named one dir: no longer."""
    uid = str(uuid.uuid4())
    assert job_dir_name("tenant-b", uid) != job_dir_name("tenant", f"b-{uid}")
    assert job_dir_name("default", uid) == f"default-{uid}"  # a UUID keeps the Go plugin's name
    assert job_dir_name("default", "u-1") == "default_u-1"


_labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True)
_uids = st.one_of(st.uuids().map(str), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True),
                  st.tuples(st.from_regex(r"[a-z0-9][a-z0-9-]{0,5}", fullmatch=True), st.uuids()).map(
                      lambda pair: f"{pair[0]}-{pair[1]}"))


@settings(max_examples=400, deadline=None)
@given(st.tuples(_labels, _uids), st.tuples(_labels, _uids))
def test_job_dir_name_is_injective(first: tuple[str, str], second: tuple[str, str]) -> None:
    if first != second:
        assert job_dir_name(*first) != job_dir_name(*second)


def test_surrogate_field_names_value_and_key() -> None:
    body: dict[str, Any] = {"pod": {"metadata": {"name": "ok", "labels": {"a": "\ud800"}}}}
    assert surrogate_field(body) == "pod.metadata.labels.a"
    assert surrogate_field({"pod": {"spec": {"containers": [{"env": [{}, {"name": "x\udfff"}]}]}}}) == \
        "pod.spec.containers[0].env[1].name"
    assert surrogate_field({"pod": {"metadata": {"annotations": {"k\udc00": "v"}}}}) == \
        "pod.metadata.annotations.k\udc00"
    assert surrogate_field({"ok": ["😀", "é", {"x": "\U0001f600"}]}) is None
    raw = json.dumps({"a": "\ud83d\ude00"}).encode()  # a valid pair, escaped: one character
    assert surrogate_field(json.loads(raw), raw=raw) is None


async def _chunks(raw: bytes) -> AsyncIterator[bytes]:
    yield raw


def test_read_json_body_answers_422_naming_the_field() -> None:
    raw = b'{"pod": {"metadata": {"name": "x", "annotations": {"\\ud800k": "v"}}}}'
    with pytest.raises(BadRequest) as raised:
        asyncio.run(read_json_body(_chunks(raw), None))
    assert raised.value.status == 422
    assert raised.value.field == "pod.metadata.annotations.\\ud800k"  # encodable in the answer
    json.dumps(raised.value.field).encode()
    raw = b'{"pod": {"spec": {"containers": [{"args": ["\xed\xa0\x80"]}]}}}'  # CESU-8: json accepts it
    with pytest.raises(BadRequest) as raised:
        asyncio.run(read_json_body(_chunks(raw), None))
    assert raised.value.field == "pod.spec.containers[0].args[0]"
    assert asyncio.run(read_json_body(_chunks(b'{"a": "\\ud83d\\ude00"}'), None)) == {"a": "\U0001f600"}


@pytest.mark.parametrize(("where", "field"), [("name", "metadata.name"), ("namespace", "metadata.namespace"),
                                              ("uid", "metadata.uid")])
def test_parse_refuses_injections_in_identity(where: str, field: str) -> None:
    for bad in ("x\nuniverse = local", "x$ENV(HOME)", "x\n"):
        body = pod_body("p", [container("c", ["true"])])
        body["pod"]["metadata"][where] = bad
        with pytest.raises(PodSpecError) as raised:
            parse_create_body(body)
        assert raised.value.field == field and raised.value.status == 422


def test_container_name_with_a_trailing_newline_is_refused() -> None:
    """`^...$` matches before a final newline: `c\\n` passed the old check."""
    with pytest.raises(PodSpecError, match="DNS-1123 label"):
        parse_create_body(pod_body("p", [container("c\n", ["true"])]))


def test_check_description_names_the_pod_field_or_refuses_as_plugin_error() -> None:
    submit.check_description({"universe": "vanilla", "batch_name": '"ns/ok"'}, {})
    with pytest.raises(PodSpecError) as raised:
        submit.check_description({"batch_name": '"ns/x\nuniverse = local"'}, {})
    assert raised.value.field == "metadata.name" and raised.value.status == 422
    with pytest.raises(PodSpecError) as raised:
        submit.check_description({"rank": "$ENV(HOME)"}, {"rank": "metadata.annotations[k]"})
    assert raised.value.field == "metadata.annotations[k]"
    with pytest.raises(PodSpecError) as raised:
        submit.check_description({"initialdir": "/data/$(Cluster)"}, {})
    assert raised.value.status == 500 and "initialdir" in raised.value.field
    with pytest.raises(PodSpecError):
        submit.check_description({"a\nuniverse": "local"}, {})


def test_data_root_with_a_line_break_or_a_dollar_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DataRootFolder"):
        parse_config({"DataRootFolder": f"{tmp_path}/a\nb"}, environ={})
    with pytest.raises(ConfigError, match="DataRootFolder"):
        parse_config({"Backend": "htcondor", "DataRootFolder": f"{tmp_path}/$(x)"}, environ={})


def test_volume_caps_config_keys() -> None:
    config, _ = parse_config({}, environ={})
    assert (config.max_volume_files, config.max_volume_bytes) == (4096, 64 << 20)
    config, _ = parse_config({"MaxVolumeFiles": 10, "MaxVolumeBytes": "1Mi"}, environ={})
    assert (config.max_volume_files, config.max_volume_bytes) == (10, 1 << 20)
    for key, value in (("MaxVolumeFiles", 0), ("MaxVolumeBytes", "0"), ("MaxVolumeBytes", "lots")):
        with pytest.raises(ConfigError, match=key):
            parse_config({key: value}, environ={})


def _many_files_pod(count: int, size: int = 1, nested: bool = False) -> Any:
    data = {(f"d{i}/f" if nested else f"k{i}"): "x" * size for i in range(count)}
    volume = {"name": "cm", "configMap": {"name": "big"}}
    if nested:
        volume["configMap"]["items"] = [{"key": key, "path": key} for key in data]
    body = pod_body("p", [container("c", ["true"], volumeMounts=[{"name": "cm", "mountPath": "/cm"}])],
                    volumes=[volume], config_maps=[config_map("big", data)])
    return parse_create_body(body)


@pytest.mark.parametrize(("count", "size", "nested", "limits", "what"), [
    (11, 1, False, VolumeLimits(max_files=10), "MaxVolumeFiles"),
    (6, 1, True, VolumeLimits(max_files=10), "MaxVolumeFiles"),  # 6 files + 6 directories
    (3, 400, False, VolumeLimits(max_bytes=1000), "MaxVolumeBytes"),
])
def test_volume_caps_refuse_before_anything_is_written(
    tmp_path: Path, count: int, size: int, nested: bool, limits: VolumeLimits, what: str
) -> None:
    job = tmp_path / "job"
    job.mkdir()
    with pytest.raises(PodSpecError, match=what) as raised:
        materialise_volumes(_many_files_pod(count, size, nested), job, allowed_host_paths=[], limits=limits)
    assert raised.value.field == "spec.volumes[0]" and raised.value.status == 422
    assert list(job.iterdir()) == []


def test_volume_caps_allow_exactly_the_cap(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    materialise_volumes(_many_files_pod(10, 100), job, allowed_host_paths=[],
                        limits=VolumeLimits(max_files=10, max_bytes=1000))
    assert len(list((job / "volumes" / "cm").iterdir())) == 10
