"""core/volumes/materialise: files written byte for byte with exact modes, mounts, and no path escapes."""

from __future__ import annotations

import base64
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.pod import Pod, parse_create_body, parse_pod
from interlink_plugins.core.volumes.materialise import VolumePlan, format_map, materialise_volumes, plan_volumes
from interlink_plugins.core.volumes.mounts import Mount

PEM = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUV\r\nQ29udGVudA==\n-----END CERTIFICATE-----\n"
BINARY = bytes(range(256)) + b"\x00\r\n\x00"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def make_pod(
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]] | None = None,
    *,
    config_maps: Mapping[str, Mapping[str, bytes]] | None = None,
    secrets: Mapping[str, Mapping[str, bytes]] | None = None,
    projected: Mapping[str, Mapping[str, bytes]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Pod:
    raw = {
        "metadata": {
            "name": "demo",
            "namespace": "team-a",
            "uid": "0d3c8f1e-1111-2222-3333-444455556666",
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {
            "volumes": volumes,
            "containers": containers or [{"name": "main", "image": "busybox", "volumeMounts": mounts or []}],
            "nodeName": "vk-node",
        },
        "status": {"podIP": "10.0.0.7"},
    }
    return parse_pod(raw, config_maps=config_maps, secrets=secrets, projected=projected)


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    path = tmp_path / "job"
    path.mkdir(mode=0o700)
    return path


def run(pod: Pod, job_dir: Path, allowed: list[str] | None = None, write: bool = True) -> VolumePlan:
    if not write:
        return plan_volumes(pod, job_dir, allowed_host_paths=allowed or [])
    return materialise_volumes(pod, job_dir, allowed_host_paths=allowed or [])


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """relative path -> (mode, content or None for dirs), symlinks not followed."""
    result: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        result[rel] = (mode_of(path), None if path.is_dir() else path.read_bytes())
    return result


# --------------------------------------------------------------------------- configMap / secret


def test_configmap_every_key_exact_bytes_default_mode_and_whole_dir_mount(job_dir: Path) -> None:
    pod = make_pod(
        [{"name": "cfg", "configMap": {"name": "app-config"}}],
        [{"name": "cfg", "mountPath": "/etc/app", "readOnly": True}],
        config_maps={"app-config": {"app.yaml": b"a: 1\nb:\r\n  - \\n literal\n", "ca.pem": PEM}},
    )
    with umask(0o077):
        plan = run(pod, job_dir)
    vol = job_dir / "volumes" / "cfg"
    assert (vol / "app.yaml").read_bytes() == b"a: 1\nb:\r\n  - \\n literal\n"
    assert (vol / "ca.pem").read_bytes() == PEM
    assert mode_of(vol / "app.yaml") == 0o644
    assert mode_of(vol) == 0o755
    assert mode_of(job_dir / "volumes") == 0o755
    assert plan.mounts == {"main": (Mount(str(vol), "/etc/app", read_only=True, is_file=False),)}
    assert sorted(f.path for f in plan.files) == [str(vol / "app.yaml"), str(vol / "ca.pem")]
    assert all(not f.secret for f in plan.files)
    assert {f.size for f in plan.files} == {len(b"a: 1\nb:\r\n  - \\n literal\n"), len(PEM)}


def test_secret_from_create_body_binary_and_pem_exact_and_flagged(job_dir: Path) -> None:
    body = {
        "pod": {
            "metadata": {"name": "s", "namespace": "ns", "uid": "u-1"},
            "spec": {
                "volumes": [{"name": "creds", "secret": {"secretName": "tls", "defaultMode": 0o400}}],
                "containers": [
                    {"name": "c", "image": "x", "volumeMounts": [{"name": "creds", "mountPath": "/creds"}]}
                ],
            },
        },
        "container": [
            {
                "name": "c",
                "configMaps": None,
                "projectedvolumemaps": None,
                "emptyDirs": None,
                "secrets": [
                    {
                        "metadata": {"name": "tls"},
                        "type": "Opaque",
                        "data": {
                            "tls.crt": base64.b64encode(PEM).decode(),
                            "blob.bin": base64.b64encode(BINARY).decode(),
                        },
                    }
                ],
            }
        ],
    }
    plan = run(parse_create_body(body), job_dir)
    vol = job_dir / "volumes" / "creds"
    assert (vol / "tls.crt").read_bytes() == PEM
    assert (vol / "blob.bin").read_bytes() == BINARY
    assert mode_of(vol / "blob.bin") == 0o400
    assert all(f.secret for f in plan.files)
    assert {f.mode for f in plan.files} == {0o400}


def test_items_nested_paths_only_listed_keys_and_modes(job_dir: Path) -> None:
    pod = make_pod(
        [
            {
                "name": "cfg",
                "configMap": {
                    "name": "cm",
                    "defaultMode": 0o400,
                    "items": [
                        {"key": "a", "path": "deep/er/a.conf", "mode": 0o600},
                        {"key": "b", "path": "b.conf"},
                    ],
                },
            }
        ],
        config_maps={"cm": {"a": b"A\n", "b": b"B", "c": b"not listed"}},
    )
    plan = run(pod, job_dir)
    vol = job_dir / "volumes" / "cfg"
    assert tree(vol) == {
        "b.conf": (0o400, b"B"),
        "deep": (0o755, None),
        "deep/er": (0o755, None),
        "deep/er/a.conf": (0o600, b"A\n"),
    }
    assert {Path(f.path).name: f.mode for f in plan.files} == {"a.conf": 0o600, "b.conf": 0o400}


def test_mode_zero_and_umask_do_not_change_modes(job_dir: Path) -> None:
    pod = make_pod(
        [{"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "k", "path": "k", "mode": 0}]}}],
        config_maps={"cm": {"k": b"x"}},
    )
    with umask(0o777):
        run(pod, job_dir)
    assert mode_of(job_dir / "volumes" / "cfg" / "k") == 0
    assert mode_of(job_dir / "volumes" / "cfg") == 0o755


def test_optional_missing_object_and_key(job_dir: Path) -> None:
    pod = make_pod(
        [
            {"name": "gone", "configMap": {"name": "absent", "optional": True}},
            {
                "name": "gone-s",
                "secret": {"secretName": "absent", "optional": True, "items": [{"key": "k", "path": "k"}]},
            },
            {
                "name": "partial",
                "configMap": {
                    "name": "cm",
                    "optional": True,
                    "items": [{"key": "nope", "path": "x"}, {"key": "yes", "path": "y"}],
                },
            },
        ],
        config_maps={"cm": {"yes": b"1"}},
    )
    plan = run(pod, job_dir)
    assert tree(job_dir / "volumes") == {
        "gone": (0o755, None),
        "gone-s": (0o755, None),
        "partial": (0o755, None),
        "partial/y": (0o644, b"1"),
    }
    assert [Path(f.path).name for f in plan.files] == ["y"]


@pytest.mark.parametrize(
    ("volume", "field"),
    [
        ({"configMap": {"name": "absent"}}, "spec.volumes[0].configMap.name"),
        ({"secret": {"secretName": "absent"}}, "spec.volumes[0].secret.secretName"),
        (
            {
                "configMap": {
                    "name": "cm",
                    "items": [{"key": "k", "path": "k"}, {"key": "missing", "path": "m"}],
                }
            },
            "spec.volumes[0].configMap.items[1].key",
        ),
        ({"configMap": {"name": "cm", "defaultMode": 0o1777}}, "spec.volumes[0].configMap.defaultMode"),
        (
            {"configMap": {"name": "cm", "items": [{"key": "k", "path": "k", "mode": "644"}]}},
            "spec.volumes[0].configMap.items[0].mode",
        ),
        (
            {"configMap": {"name": "cm", "items": [{"key": "k", "path": "a"}, {"key": "k", "path": "a"}]}},
            "spec.volumes[0].configMap.items[1].path",
        ),
        (
            {"configMap": {"name": "cm", "items": [{"key": "k", "path": "a"}, {"key": "k", "path": "a/b"}]}},
            "spec.volumes[0].configMap.items[1].path",
        ),
        ({"configMap": {"name": "cm", "items": [{"key": "k"}]}}, "spec.volumes[0].configMap.items[0].path"),
    ],
)
def test_errors_name_the_field(job_dir: Path, volume: dict[str, Any], field: str) -> None:
    pod = make_pod([{"name": "v", **volume}], config_maps={"cm": {"k": b"secret-value"}})
    with pytest.raises(PodSpecError) as info:
        run(pod, job_dir)
    assert info.value.field == field
    assert info.value.status == 422
    assert "secret-value" not in str(info.value)
    assert list(job_dir.iterdir()) == []


def test_odd_key_names_work(job_dir: Path) -> None:
    keys = ["with space", 'it\'s "quoted"', "ünïcødé-ключ-键", "--leading-dash", "-", ".hidden", "$(x);`y`"]
    pod = make_pod(
        [{"name": "cfg", "configMap": {"name": "cm"}}],
        [{"name": "cfg", "mountPath": "/c", "subPath": "--leading-dash"}],
        config_maps={"cm": {k: k.encode() * 2 for k in keys}},
    )
    plan = run(pod, job_dir)
    for key in keys:
        assert (job_dir / "volumes" / "cfg" / key).read_bytes() == key.encode() * 2
    assert plan.mounts["main"][0].is_file


# --------------------------------------------------------------------------- escapes


@pytest.mark.parametrize(
    "bad", ["../x", "/etc/passwd", "a/../../x", "..", "a//b", "./a", "a/", "nul\x00byte", "x" * 256]
)
def test_item_path_escapes_are_refused(job_dir: Path, bad: str) -> None:
    pod = make_pod(
        [
            {
                "name": "cfg",
                "configMap": {"name": "cm", "items": [{"key": "k", "path": "ok"}, {"key": "k", "path": bad}]},
            }
        ],
        config_maps={"cm": {"k": b"v"}},
    )
    with pytest.raises(PodSpecError) as info:
        run(pod, job_dir)
    assert (info.value.field, info.value.status) == ("spec.volumes[0].configMap.items[1].path", 422)
    assert list(job_dir.iterdir()) == []


def test_planted_directory_symlink_is_refused(job_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    vol = job_dir / "volumes" / "cfg"
    vol.mkdir(parents=True)
    (vol / "sub").symlink_to(outside)
    pod = make_pod(
        [{"name": "cfg", "secret": {"secretName": "s", "items": [{"key": "k", "path": "sub/x"}]}}],
        secrets={"s": {"k": b"top secret"}},
    )
    with pytest.raises(PodSpecError) as info:
        run(pod, job_dir)
    assert info.value.field == "spec.volumes[0].secret.items[0].path"
    assert "top secret" not in str(info.value)
    assert list(outside.iterdir()) == []


def test_planted_file_symlink_is_not_written_through(job_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "passwd"
    target.write_bytes(b"root:x:0:0\n")
    vol = job_dir / "volumes" / "cfg"
    vol.mkdir(parents=True)
    (vol / "k").symlink_to(target)
    pod = make_pod([{"name": "cfg", "configMap": {"name": "cm"}}], config_maps={"cm": {"k": b"pwned"}})
    with pytest.raises(PodSpecError) as info:
        run(pod, job_dir)
    assert info.value.field == "spec.volumes[0].configMap"
    assert target.read_bytes() == b"root:x:0:0\n"


def test_planted_volumes_dir_symlink_is_refused(job_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (job_dir / "volumes").symlink_to(outside)
    pod = make_pod([{"name": "cfg", "configMap": {"name": "cm"}}], config_maps={"cm": {"k": b"v"}})
    with pytest.raises(PodSpecError) as info:
        run(pod, job_dir)
    assert info.value.field == "spec.volumes[0].name"
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("name", ["..", ".", "a/b"])
def test_volume_names_that_are_not_one_component_are_refused(job_dir: Path, name: str) -> None:
    pod = make_pod([{"name": name, "emptyDir": {}}])
    with pytest.raises(PodSpecError) as info:
        run(pod, job_dir)
    assert info.value.field == "spec.volumes[0].name"


# --------------------------------------------------------------------------- emptyDir


def test_emptydir_shared_0777_and_medium_memory_accepted(job_dir: Path) -> None:
    pod = make_pod(
        [{"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}],
        containers=[
            {"name": "a", "image": "x", "volumeMounts": [{"name": "scratch", "mountPath": "/s"}]},
            {
                "name": "b",
                "image": "x",
                "volumeMounts": [{"name": "scratch", "mountPath": "/t", "readOnly": True}],
            },
            {"name": "c", "image": "x"},
        ],
    )
    with umask(0o077):
        plan = run(pod, job_dir)
    src = str(job_dir / "emptydir" / "scratch")
    assert mode_of(job_dir / "emptydir" / "scratch") == 0o777
    assert plan.mounts == {"a": (Mount(src, "/s"),), "b": (Mount(src, "/t", read_only=True),), "c": ()}
    assert plan.files == ()


def test_emptydir_unsupported_medium(job_dir: Path) -> None:
    with pytest.raises(PodSpecError) as info:
        run(make_pod([{"name": "h", "emptyDir": {"medium": "HugePages"}}]), job_dir)
    assert info.value.field == "spec.volumes[0].emptyDir.medium"


def test_emptydir_content_survives_recreate(job_dir: Path) -> None:
    pod = make_pod([{"name": "scratch", "emptyDir": {}}])
    run(pod, job_dir)
    (job_dir / "emptydir" / "scratch" / "data").write_bytes(b"keep")
    run(pod, job_dir)
    assert (job_dir / "emptydir" / "scratch" / "data").read_bytes() == b"keep"


# --------------------------------------------------------------------------- hostPath


@pytest.fixture
def host(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    (root / "allowed" / "data").mkdir(parents=True)
    (root / "allowed" / "file.txt").write_bytes(b"f")
    (root / "private").mkdir()
    (root / "allowed" / "sneaky").symlink_to(root / "private")
    (root / "alias").symlink_to(root / "allowed")
    return root


def host_pod(path: str, host_type: str | None = None, sub_path: str = "") -> Pod:
    source: dict[str, Any] = {"path": path}
    if host_type is not None:
        source["type"] = host_type
    mount: dict[str, Any] = {"name": "h", "mountPath": "/h", "readOnly": True}
    if sub_path:
        mount["subPath"] = sub_path
    return make_pod([{"name": "scratch", "emptyDir": {}}, {"name": "h", "hostPath": source}], [mount])


@pytest.mark.parametrize("host_type", [None, "", "Directory", "DirectoryOrCreate"])
def test_hostpath_allowed_directory(job_dir: Path, host: Path, host_type: str | None) -> None:
    plan = run(host_pod(str(host / "allowed" / "data"), host_type), job_dir, [str(host / "allowed")])
    assert plan.mounts["main"] == (Mount(str(host / "allowed" / "data"), "/h", read_only=True),)


def test_hostpath_source_is_the_realpath_and_allowed_list_is_realpathed(job_dir: Path, host: Path) -> None:
    plan = run(host_pod(str(host / "alias" / "file.txt"), "File"), job_dir, [str(host / "alias") + "/"])
    assert plan.mounts["main"] == (Mount(str(host / "allowed" / "file.txt"), "/h", True, is_file=True),)
    plan = run(
        host_pod(str(host / "allowed"), "Directory"),
        job_dir,
        [str(host / "allowed")],
    )
    assert plan.mounts["main"][0].source == str(host / "allowed")


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/etc", None),  # default deny
        ("{host}/private", ["{host}/allowed"]),
        ("{host}/allowed/sneaky", ["{host}/allowed"]),  # symlink escape
        ("{host}/allowed/../private", ["{host}/allowed"]),
        ("{host}/allowed-not", ["{host}/allowed"]),  # prefix is not a parent
        ("{host}/allowed/data", ["relative/allowed", ""]),
    ],
)
def test_hostpath_denied_403(job_dir: Path, host: Path, path: str, allowed: list[str] | None) -> None:
    pod = host_pod(path.format(host=host))
    with pytest.raises(PodSpecError) as info:
        run(pod, job_dir, [a.format(host=host) for a in allowed or []])
    assert (info.value.field, info.value.status) == ("spec.volumes[1].hostPath.path", 403)
    assert list(job_dir.iterdir()) == []  # validation happens before anything is written


@pytest.mark.parametrize(
    ("path", "host_type", "field"),
    [
        ("allowed/file.txt", "Directory", "spec.volumes[1].hostPath.path"),
        ("allowed/data", "File", "spec.volumes[1].hostPath.path"),
        ("allowed/new", "DirectoryOrCreate", "spec.volumes[1].hostPath.path"),
        ("allowed/new.txt", "FileOrCreate", "spec.volumes[1].hostPath.path"),
        ("allowed/new", "", "spec.volumes[1].hostPath.path"),
        ("allowed/data", "Socket", "spec.volumes[1].hostPath.type"),
    ],
)
def test_hostpath_types_422_and_never_created(
    job_dir: Path, host: Path, path: str, host_type: str, field: str
) -> None:
    with pytest.raises(PodSpecError) as info:
        run(host_pod(str(host / path), host_type), job_dir, [str(host / "allowed")])
    assert (info.value.field, info.value.status) == (field, 422)
    assert not (host / "allowed" / "new").exists()
    assert not (host / "allowed" / "new.txt").exists()


def test_hostpath_relative_path_refused(job_dir: Path, host: Path) -> None:
    with pytest.raises(PodSpecError) as info:
        run(host_pod("relative/dir"), job_dir, ["/"])
    assert info.value.field == "spec.volumes[1].hostPath.path"


def test_hostpath_subpath(job_dir: Path, host: Path) -> None:
    allowed = [str(host / "allowed")]
    plan = run(host_pod(str(host / "allowed"), sub_path="file.txt"), job_dir, allowed)
    assert plan.mounts["main"] == (Mount(str(host / "allowed" / "file.txt"), "/h", True, True),)
    for sub, message in (("sneaky", "outside"), ("missing", "does not exist")):
        with pytest.raises(PodSpecError) as info:
            run(host_pod(str(host / "allowed"), sub_path=sub), job_dir, allowed)
        assert info.value.field == "spec.containers[0].volumeMounts[0].subPath"
        assert message in info.value.message


# --------------------------------------------------------------------------- subPath


def subpath_pod(*mounts: dict[str, Any]) -> Pod:
    return make_pod(
        [
            {
                "name": "cfg",
                "configMap": {
                    "name": "cm",
                    "items": [{"key": "a", "path": "conf.d/a.conf"}, {"key": "b", "path": "b.txt"}],
                },
            },
            {"name": "scratch", "emptyDir": {}},
        ],
        list(mounts),
        config_maps={"cm": {"a": b"A", "b": b"B"}},
    )


def test_subpath_file_and_dir(job_dir: Path) -> None:
    pod = subpath_pod(
        {"name": "cfg", "mountPath": "/etc/b.txt", "subPath": "b.txt", "readOnly": True},
        {"name": "cfg", "mountPath": "/etc/conf.d", "subPath": "conf.d"},
        {"name": "scratch", "mountPath": "/work", "subPath": "nested/dir"},
    )
    vol = job_dir / "volumes" / "cfg"
    expected = (
        Mount(str(vol / "b.txt"), "/etc/b.txt", read_only=True, is_file=True),
        Mount(str(vol / "conf.d"), "/etc/conf.d"),
        Mount(str(job_dir / "emptydir" / "scratch" / "nested" / "dir"), "/work"),
    )
    assert run(pod, job_dir, write=False).mounts["main"] == expected
    assert run(pod, job_dir).mounts["main"] == expected
    assert mode_of(job_dir / "emptydir" / "scratch" / "nested" / "dir") == 0o777


def test_subpath_missing_in_configmap_is_created_as_dir(job_dir: Path) -> None:
    plan = run(subpath_pod({"name": "cfg", "mountPath": "/x", "subPath": "not-a-key"}), job_dir)
    assert plan.mounts["main"][0] == Mount(str(job_dir / "volumes" / "cfg" / "not-a-key"), "/x")
    assert (job_dir / "volumes" / "cfg" / "not-a-key").is_dir()


def test_subpath_through_planted_symlink_in_emptydir_is_refused(job_dir: Path, tmp_path: Path) -> None:
    pod = subpath_pod({"name": "scratch", "mountPath": "/w", "subPath": "link/inner"})
    run(make_pod([{"name": "scratch", "emptyDir": {}}]), job_dir)
    (job_dir / "emptydir" / "scratch" / "link").symlink_to(tmp_path)
    with pytest.raises(PodSpecError) as info:
        run(pod, job_dir)
    assert info.value.field == "spec.containers[0].volumeMounts[0].subPath"
    assert not (tmp_path / "inner").exists()


def test_subpath_symlink_inside_the_volume_is_fine(job_dir: Path) -> None:
    pod = subpath_pod({"name": "scratch", "mountPath": "/w", "subPath": "current"})
    run(make_pod([{"name": "scratch", "emptyDir": {}}]), job_dir)
    (job_dir / "emptydir" / "scratch" / "v2").mkdir()
    (job_dir / "emptydir" / "scratch" / "current").symlink_to("v2")
    plan = run(pod, job_dir)
    assert plan.mounts["main"][0].source == str(job_dir / "emptydir" / "scratch" / "current")


def test_init_container_mount_fields(job_dir: Path) -> None:
    pod = make_pod(
        [{"name": "h", "hostPath": {"path": "/"}}],
        containers=[{"name": "main", "image": "x"}],
    )
    raw = dict(pod.raw)
    raw["spec"] = {
        **raw["spec"],
        "initContainers": [
            {
                "name": "init",
                "image": "x",
                "volumeMounts": [{"name": "h", "mountPath": "/h", "subPath": "no/such/dir/at/all"}],
            }
        ],
    }
    pod = parse_pod(raw)
    with pytest.raises(PodSpecError) as info:
        run(pod, job_dir, ["/"])
    assert info.value.field == "spec.initContainers[0].volumeMounts[0].subPath"


# --------------------------------------------------------------------------- projected / downwardAPI

CONTRACT_BODY: dict[str, Any] = {
    "pod": {
        "metadata": {
            "name": "hello-world-6a1f",
            "namespace": "interlink",
            "uid": "2f0c7c3e-8a8b-4d2e-9a51-0c2f3b1e9d10",
            "labels": {"app": "demo"},
        },
        "spec": {
            "volumes": [
                {
                    "name": "config-map",
                    "configMap": {
                        "name": "vol-config-6a1f",
                        "items": [{"key": "script.py", "path": "script.py"}],
                        "defaultMode": 420,
                    },
                },
                {"name": "secret", "secret": {"secretName": "secret-6a1f", "defaultMode": 420}},
                {"name": "shared-vol1", "emptyDir": {"sizeLimit": "50Mi"}},
                {
                    "name": "kube-api-access-x7k2p",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {
                                "configMap": {
                                    "name": "kube-root-ca.crt",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            },
                            {
                                "downwardAPI": {
                                    "items": [
                                        {
                                            "path": "namespace",
                                            "fieldRef": {
                                                "apiVersion": "v1",
                                                "fieldPath": "metadata.namespace",
                                            },
                                        }
                                    ]
                                }
                            },
                        ],
                        "defaultMode": 420,
                    },
                },
            ],
            "containers": [
                {
                    "name": "config",
                    "image": "python:alpine",
                    "command": ["python", "/config-map/script.py"],
                    "volumeMounts": [
                        {"name": "config-map", "mountPath": "/config-map"},
                        {"name": "shared-vol1", "mountPath": "/shared-vol1", "readOnly": True},
                        {
                            "name": "kube-api-access-x7k2p",
                            "readOnly": True,
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        },
                    ],
                }
            ],
            "restartPolicy": "Never",
        },
        "status": {"phase": "Pending"},
    },
    "container": [
        {
            "name": "config",
            "configMaps": [
                {
                    "metadata": {"name": "vol-config-6a1f", "namespace": "interlink"},
                    "data": {"script.py": "print('hi')\n"},
                }
            ],
            "projectedvolumemaps": [
                {
                    "metadata": {"name": "kube-api-access-x7k2p", "creationTimestamp": None},
                    "data": {
                        "token": "eyJhbGciOiJSUzI1NiJ9.e30.sig",
                        "ca.crt": "-----BEGIN CERTIFICATE-----\nMIIB\nQUJD\n-----END CERTIFICATE-----\n",
                        "namespace": "interlink",
                    },
                }
            ],
            "secrets": [
                {
                    "metadata": {"name": "secret-6a1f", "namespace": "interlink"},
                    "data": {"secret-script.py": "cHJpbnQgKCJoZWxsbyIpCg=="},
                    "type": "Opaque",
                }
            ],
            "emptyDirs": None,
        }
    ],
    "jobConfig": {},
}


def test_contract_example_as_interlink_sends_it(job_dir: Path) -> None:
    plan = run(parse_create_body(CONTRACT_BODY), job_dir)
    vols = job_dir / "volumes"
    sa = vols / "kube-api-access-x7k2p"
    assert tree(vols) == {
        "config-map": (0o755, None),
        "config-map/script.py": (0o644, b"print('hi')\n"),
        "kube-api-access-x7k2p": (0o755, None),
        "kube-api-access-x7k2p/ca.crt": (
            0o644,
            b"-----BEGIN CERTIFICATE-----\nMIIB\nQUJD\n-----END CERTIFICATE-----\n",
        ),
        "kube-api-access-x7k2p/namespace": (0o644, b"interlink"),
        "kube-api-access-x7k2p/token": (0o644, b"eyJhbGciOiJSUzI1NiJ9.e30.sig"),
        "secret": (0o755, None),
        "secret/secret-script.py": (0o644, b'print ("hello")\n'),
    }
    assert mode_of(job_dir / "emptydir" / "shared-vol1") == 0o777
    flags = {str(Path(f.path).relative_to(vols)): f.secret for f in plan.files}
    assert flags == {
        "config-map/script.py": False,
        "secret/secret-script.py": True,
        "kube-api-access-x7k2p/ca.crt": False,
        "kube-api-access-x7k2p/namespace": False,
        "kube-api-access-x7k2p/token": True,
    }
    assert plan.mounts == {
        "config": (
            Mount(str(vols / "config-map"), "/config-map"),
            Mount(str(job_dir / "emptydir" / "shared-vol1"), "/shared-vol1", read_only=True),
            Mount(str(sa), "/var/run/secrets/kubernetes.io/serviceaccount", read_only=True),
        )
    }


def projected_pod(sources: list[dict[str, Any]], **kwargs: Any) -> Pod:
    return make_pod(
        [{"name": "proj", "projected": {"sources": sources, "defaultMode": 0o440}}],
        [{"name": "proj", "mountPath": "/p"}],
        **kwargs,
    )


def test_projected_nothing_sent_gives_empty_dir(job_dir: Path) -> None:
    pod = projected_pod(
        [
            {"serviceAccountToken": {"path": "token"}},
            {"configMap": {"name": "absent", "items": [{"key": "k", "path": "k"}]}},
            {"secret": {"name": "absent"}},
        ]
    )
    plan = run(pod, job_dir)
    assert tree(job_dir / "volumes") == {"proj": (0o755, None)}
    assert plan.files == ()
    assert plan.mounts["main"] == (Mount(str(job_dir / "volumes" / "proj"), "/p"),)


def test_projected_falls_back_to_objects_and_computes_downward(job_dir: Path) -> None:
    pod = projected_pod(
        [
            {"serviceAccountToken": {"path": "token"}},
            {"configMap": {"name": "cm", "items": [{"key": "a", "path": "conf/a", "mode": 0o600}]}},
            {"configMap": {"name": "whole"}},
            {"secret": {"name": "sec", "items": [{"key": "pw", "path": "pw"}]}},
            {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        ],
        projected={"proj": {"token": b"tok"}},
        config_maps={"cm": {"a": b"A\r\n"}, "whole": {"w1": b"1", "w2": b"2"}},
        secrets={"sec": {"pw": b"\x00\xff"}},
        labels={"b": "2", "a": 'x"y\n'},
    )
    plan = run(pod, job_dir)
    assert tree(job_dir / "volumes" / "proj") == {
        "conf": (0o755, None),
        "conf/a": (0o600, b"A\r\n"),
        "labels": (0o440, b'a="x\\"y\\n"\nb="2"'),
        "pw": (0o440, b"\x00\xff"),
        "token": (0o440, b"tok"),
        "w1": (0o440, b"1"),
        "w2": (0o440, b"2"),
    }
    secret = {Path(f.path).name for f in plan.files if f.secret}
    assert secret == {"token", "pw"}


def test_projected_map_wins_over_objects(job_dir: Path) -> None:
    pod = projected_pod(
        [{"configMap": {"name": "cm", "items": [{"key": "a", "path": "a"}]}}],
        projected={"proj": {"a": b"from interLink"}},
        config_maps={"cm": {"a": b"stale"}},
    )
    run(pod, job_dir)
    assert (job_dir / "volumes" / "proj" / "a").read_bytes() == b"from interLink"


def test_projected_explicit_item_beats_whole_object_key(job_dir: Path) -> None:
    pod = projected_pod(
        [
            {"configMap": {"name": "whole"}},
            {"secret": {"name": "sec", "items": [{"key": "pw", "path": "shared", "mode": 0o600}]}},
        ],
        projected={"proj": {}},
        config_maps={"whole": {"shared": b"from configMap", "other": b"o"}},
        secrets={"sec": {"pw": b"from secret"}},
    )
    plan = run(pod, job_dir)
    assert tree(job_dir / "volumes" / "proj") == {"other": (0o440, b"o"), "shared": (0o600, b"from secret")}
    assert {Path(f.path).name: f.secret for f in plan.files} == {"other": False, "shared": True}


def test_projected_unexplained_file_is_masked(job_dir: Path) -> None:
    plan = run(projected_pod([], projected={"proj": {"mystery": b"?"}}), job_dir)
    assert [(f.mode, f.secret) for f in plan.files] == [(0o440, True)]


@pytest.mark.parametrize(
    ("sources", "field"),
    [
        (
            [{"configMap": {"name": "cm", "items": [{"key": "gone", "path": "g"}]}}],
            "spec.volumes[0].projected.sources[0].configMap.items[0].key",
        ),
        ([{"secret": {"name": "sec"}}], "spec.volumes[0].projected.sources[0].secret.name"),
        (
            [{"clusterTrustBundle": {"name": "b", "path": "b.pem"}}],
            "spec.volumes[0].projected.sources[0].clusterTrustBundle",
        ),
        (
            [{"serviceAccountToken": {"path": "../token"}}],
            "spec.volumes[0].projected.sources[0].serviceAccountToken.path",
        ),
        ([{}], "spec.volumes[0].projected.sources[0]"),
        (
            [{"downwardAPI": {"items": [{"path": "x", "fieldRef": {"fieldPath": "spec.containers"}}]}}],
            "spec.volumes[0].projected.sources[0].downwardAPI.items[0].fieldRef.fieldPath",
        ),
        (
            [
                {"serviceAccountToken": {"path": "token"}},
                {"configMap": {"name": "cm", "items": [{"key": "a", "path": "token"}]}},
            ],
            "spec.volumes[0].projected.sources[1].configMap.items[0].path",
        ),
    ],
)
def test_projected_errors(job_dir: Path, sources: list[dict[str, Any]], field: str) -> None:
    pod = projected_pod(sources, projected={"proj": {"token": b"t"}}, config_maps={"cm": {"a": b"a"}})
    with pytest.raises(PodSpecError) as info:
        run(pod, job_dir)
    assert info.value.field == field


def test_projected_optional_sources_may_be_missing(job_dir: Path) -> None:
    pod = projected_pod(
        [
            {"configMap": {"name": "cm", "optional": True, "items": [{"key": "gone", "path": "g"}]}},
            {"secret": {"name": "sec", "optional": True}},
        ],
        projected={"proj": {}},
    )
    assert run(pod, job_dir).files == ()


def test_projected_path_sent_by_interlink_is_validated(job_dir: Path) -> None:
    pod = projected_pod([], projected={"proj": {"../../escape": b"x"}})
    with pytest.raises(PodSpecError) as info:
        run(pod, job_dir)
    assert info.value.field == "spec.volumes[0].projected"


def test_downward_api_volume_raw(job_dir: Path) -> None:
    items = [
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
        {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
        {"path": "meta/labels", "fieldRef": {"fieldPath": "metadata.labels"}, "mode": 0o600},
        {"path": "meta/annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
        {"path": "node", "fieldRef": {"fieldPath": "spec.nodeName"}},
        {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}},
        {
            "path": "cpu",
            "resourceFieldRef": {"containerName": "main", "resource": "limits.cpu", "divisor": "1m"},
        },
        {
            "path": "mem",
            "resourceFieldRef": {"containerName": "main", "resource": "requests.memory", "divisor": "1Mi"},
        },
    ]
    pod = make_pod(
        [{"name": "info", "downwardAPI": {"items": items, "defaultMode": 0o444}}],
        containers=[
            {
                "name": "main",
                "image": "x",
                "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}},
                "volumeMounts": [{"name": "info", "mountPath": "/etc/podinfo"}],
            }
        ],
        labels={"tier": "front end", "app": "démo"},
        annotations={"z": "tab\there", "a.b/c": "\x01\u00a0\U0001f600"},
    )
    plan = run(pod, job_dir)
    assert tree(job_dir / "volumes" / "info") == {
        "name": (0o444, b"demo"),
        "ns": (0o444, b"team-a"),
        "uid": (0o444, b"0d3c8f1e-1111-2222-3333-444455556666"),
        "meta": (0o755, None),
        "meta/labels": (0o600, 'app="démo"\ntier="front end"'.encode()),
        "meta/annotations": (0o444, 'a.b/c="\\x01\\u00a0\U0001f600"\nz="tab\\there"'.encode()),
        "tier": (0o444, b"front end"),
        "node": (0o444, b"vk-node"),
        "ip": (0o444, b"10.0.0.7"),
        "cpu": (0o444, b"1500"),
        "mem": (0o444, b"1024"),
    }
    assert not any(f.secret for f in plan.files)


def test_downward_api_unset_limit_is_refused(job_dir: Path) -> None:
    items = [{"path": "cpu", "resourceFieldRef": {"containerName": "main", "resource": "limits.cpu"}}]
    with pytest.raises(PodSpecError) as info:
        run(make_pod([{"name": "info", "downwardAPI": {"items": items}}]), job_dir)
    assert info.value.field == "spec.volumes[0].downwardAPI.items[0].resourceFieldRef.resource"


def test_format_map_matches_kubernetes() -> None:
    assert format_map({}) == ""
    assert format_map({"b": "1", "a": 'q"\\'}) == 'a="q\\"\\\\"\nb="1"'


# --------------------------------------------------------------------------- render and re-create


def test_write_false_touches_nothing_and_plans_the_same(job_dir: Path) -> None:
    pod = parse_create_body(CONTRACT_BODY)
    dry = run(pod, job_dir, write=False)
    assert list(job_dir.iterdir()) == []
    wet = run(pod, job_dir)
    assert dry == wet
    assert {f.path for f in dry.files} == {str(p) for p in (job_dir / "volumes").rglob("*") if p.is_file()}


def test_write_false_with_missing_job_dir(tmp_path: Path) -> None:
    plan = run(parse_create_body(CONTRACT_BODY), tmp_path / "not-yet", write=False)
    assert len(plan.files) == 5
    assert not (tmp_path / "not-yet").exists()


def test_recreate_rewrites_the_same_files(job_dir: Path) -> None:
    pod = make_pod(
        [
            {
                "name": "s",
                "secret": {"secretName": "s", "defaultMode": 0o400, "items": [{"key": "k", "path": "d/k"}]},
            }
        ],
        secrets={"s": {"k": b"v1"}},
    )
    first = run(pod, job_dir)
    target = job_dir / "volumes" / "s" / "d" / "k"
    os.chmod(target, 0o666)
    target.write_bytes(b"tampered")
    os.chmod(target.parent, 0o700)
    second = run(pod, job_dir)
    assert first == second
    assert target.read_bytes() == b"v1"
    assert mode_of(target) == 0o400
    assert mode_of(target.parent) == 0o755
    assert sorted(p.name for p in target.parent.iterdir()) == ["k"]  # no temp files left


def test_relative_job_dir_gives_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("rel").mkdir()
    plan = run(make_pod([{"name": "e", "emptyDir": {}}], [{"name": "e", "mountPath": "/e"}]), Path("rel"))
    assert plan.mounts["main"][0].source == str(tmp_path / "rel" / "emptydir" / "e")


# --------------------------------------------------------------------------- property


_key_chars = st.characters(codec="utf-8", exclude_characters="/\x00")
_keys = st.text(_key_chars, min_size=1, max_size=40).filter(
    lambda k: k not in (".", "..") and len(k.encode()) <= 255
)


@settings(max_examples=150, deadline=None)
@given(
    cm=st.dictionaries(_keys, st.binary(max_size=300), max_size=6),
    sec=st.dictionaries(_keys, st.binary(max_size=300), min_size=1, max_size=6),
)
def test_any_key_and_content_round_trip(cm: dict[str, bytes], sec: dict[str, bytes]) -> None:
    body = {
        "pod": {
            "metadata": {"name": "p", "uid": "u"},
            "spec": {
                "volumes": [
                    {"name": "c", "configMap": {"name": "cm"}},
                    {"name": "s", "secret": {"secretName": "sec", "defaultMode": 0o600}},
                ],
                "containers": [{"name": "x", "image": "i"}],
            },
        },
        "container": [
            {
                "name": "x",
                "configMaps": [
                    {
                        "metadata": {"name": "cm"},
                        "binaryData": {k: base64.b64encode(v).decode() for k, v in cm.items()},
                    }
                ],
                "secrets": [
                    {
                        "metadata": {"name": "sec"},
                        "data": {k: base64.b64encode(v).decode() for k, v in sec.items()},
                    }
                ],
            }
        ],
    }
    pod = parse_create_body(body)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for _ in range(2):  # and again: re-create rewrites the same bytes
            plan = run(pod, root)
            for key, value in cm.items():
                assert (root / "volumes" / "c" / key).read_bytes() == value
                assert mode_of(root / "volumes" / "c" / key) == 0o644
            for key, value in sec.items():
                assert (root / "volumes" / "s" / key).read_bytes() == value
                assert mode_of(root / "volumes" / "s" / key) == 0o600
            assert sorted(os.listdir(root / "volumes" / "c")) == sorted(cm)
            assert sorted(os.listdir(root / "volumes" / "s")) == sorted(sec)
            assert len(plan.files) == len(cm) + len(sec)
