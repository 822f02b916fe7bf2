from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.pod import parse_create_body
from interlink_plugins.core.model.quantity import cpu_millicores, memory_bytes, parse_quantity
from interlink_plugins.core.model.resources import pod_totals
from tests.podfactory import container, pod_body, secret


@pytest.mark.parametrize(
    ("text", "millis"), [("1", 1000), ("500m", 500), ("0.5", 500), ("1.2", 1200), ("2k", 2_000_000), ("1e-3", 1), ("0.0001", 1)]
)
def test_cpu_quantities(text: str, millis: int) -> None:
    assert cpu_millicores(text) == millis


@pytest.mark.parametrize(
    ("text", "size"),
    [("1Gi", 2**30), ("100Mi", 100 * 2**20), ("1G", 10**9), ("128974848", 128974848), ("129e6", 129_000_000), ("123Mi", 123 * 2**20)],
)
def test_memory_quantities(text: str, size: int) -> None:
    assert memory_bytes(text) == size


@pytest.mark.parametrize("text", ["", "lots", "1Gb", "--1", "-1", "1.2.3", "Mi"])
def test_bad_quantities_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


@given(st.integers(min_value=0, max_value=10**12))
def test_integer_quantities_round_trip(value: int) -> None:
    assert memory_bytes(str(value)) == value


def test_pod_totals_follow_the_kubernetes_rule() -> None:
    body = pod_body(
        "t",
        [
            container("a", ["x"], resources={"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}),
            container("b", ["x"], resources={"limits": {"cpu": "1", "nvidia.com/gpu": "1"}}),
        ],
        init_containers=[
            container("big-init", ["x"], resources={"limits": {"cpu": "4", "memory": "32Mi"}}),
            container("sidecar", ["x"], restartPolicy="Always", resources={"requests": {"cpu": "500m", "memory": "16Mi"}}),
        ],
    )
    totals = pod_totals(parse_create_body(body))
    assert totals.cpu_millis == 4000  # max(0.25 + 1 + 0.5, 4)
    assert totals.memory_bytes == (128 + 16) * 2**20  # limit beats request; sidecar counted with main
    assert totals.extended == {"nvidia.com/gpu": 1}


def test_secrets_are_decoded_and_objects_collected() -> None:
    body = pod_body("s", [container("c", ["x"])], secrets=[secret("s1", {"k": b"\x00\xffbinary"})])
    pod = parse_create_body(body)
    assert pod.secrets == {"s1": {"k": b"\x00\xffbinary"}}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p["metadata"].pop("uid"), "metadata.uid"),
        (lambda p: p["spec"]["containers"][0].update(name="Bad_Name"), "spec.containers[0].name"),
        (lambda p: p["spec"]["containers"][0].update(env=[{"name": "A=B", "value": "x"}]), "spec.containers[0].env[0].name"),
        (lambda p: p["spec"]["containers"][0].update(env=[{"name": "A", "value": "x\x00y"}]), "spec.containers[0].env[0].value"),
        (lambda p: p["spec"]["containers"][0].update(volumeMounts=[{"name": "nope", "mountPath": "/x"}]),
         "spec.containers[0].volumeMounts[0].name"),
        (lambda p: p["spec"].update(restartPolicy="Sometimes"), "spec.restartPolicy"),
        (lambda p: p["spec"].update(containers=[]), "spec.containers"),
        (lambda p: p["spec"]["containers"][0].update(restartPolicy="Always"), "spec.containers[0].restartPolicy"),
        (lambda p: p["spec"].update(activeDeadlineSeconds=0), "spec.activeDeadlineSeconds"),
    ],
)
def test_invalid_pods_name_the_field(mutate: object, field: str) -> None:
    body = pod_body("p", [container("c", ["x"])])
    mutate(body["pod"])  # type: ignore[operator]
    with pytest.raises(PodSpecError) as info:
        parse_create_body(body)
    assert info.value.field == field


def test_array_body_must_hold_one_pod() -> None:
    body = pod_body("p", [container("c", ["x"])])
    assert parse_create_body([body]).name == "p"
    with pytest.raises(PodSpecError) as info:
        parse_create_body([body, body])
    assert info.value.status == 400


def test_null_lists_from_go_are_empty() -> None:
    body = pod_body("p", [container("c", ["x"], env=None, volumeMounts=None)])
    body["pod"]["spec"]["volumes"] = None
    body["pod"]["spec"]["initContainers"] = None
    pod = parse_create_body(body)
    assert pod.volumes == () and pod.init_containers == () and pod.containers[0].env == ()
