"""Nothing dropped silently, through the real plugin on each backend (real slurmctld, real podman, the real
HTCondor pool): a field the backend refuses is a 422 naming it and no job; a warned field runs, and the
container's status message and the plugin log name it; an ordinary pod gets neither."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.kits import KIT_NAMES, BackendKit, open_kit
from tests.harness import states
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e

# per backend: a field it refuses that another backend honours, and one every backend refuses
REFUSED: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "slurm": ({"ports": [{"containerPort": 8080, "hostPort": 8080}]}, {}, "spec.containers[0].ports[0].hostPort"),
    "htcondor": ({"ports": [{"containerPort": 8080, "hostPort": 8080}]}, {}, "spec.containers[0].ports[0].hostPort"),
    "podman": ({}, {"hostNetwork": True}, "spec.hostNetwork"),
}


@pytest.fixture(params=KIT_NAMES)
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendKit]:
    yield from open_kit(request, tmp_path, request.param)


def _body(name: str, command: str, container_fields: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    body = pod_body(name, [container("c", ["sh", "-c", command], **container_fields)], restart_policy="Never")
    body["pod"]["spec"].update(spec)
    return body


def test_a_refused_field_is_a_422_naming_it_and_no_job_is_made(kit: BackendKit) -> None:
    plugin = kit.plugin()
    fields, spec, path = REFUSED[kit.name]
    everywhere = {"securityContext": {"privileged": True}}
    for body, field in ((_body("refused", "echo never", fields, spec), path),
                        (_body("privileged", "echo never", everywhere, {}),
                         "spec.containers[0].securityContext.privileged")):
        response = plugin.client.post("/create", json=body)
        assert response.status_code == 422, response.text
        answer = response.json()
        assert answer["field"] == field
        assert f"the {kit.name} backend refuses this pod" in answer["error"]
        uid = body["pod"]["metadata"]["uid"]
        assert plugin.status(body) is None
        assert kit.jobs_for(plugin, uid) == []


def test_a_warned_field_runs_and_the_status_message_and_the_log_name_it(kit: BackendKit) -> None:
    plugin = kit.plugin()
    warned = _body("warned", "echo fields-ok", {"stdin": True}, {"dnsConfig": {"options": [{"name": "ndots", "value": "2"}]}})
    plain = _body("plain", "echo plain-ok", {}, {})
    for body in (warned, plain):
        plugin.create(body)
    timeout = 180 if kit.name == "htcondor" else 90
    done = plugin.wait_done(warned, timeout=timeout)
    terminated = states(done)["c"]["terminated"]
    assert terminated["exitCode"] == 0, done
    assert terminated["message"].endswith(
        f"; fields not honoured by the {kit.name} backend: spec.containers[0].stdin (no stdin is attached); "
        "spec.dnsConfig (the node's resolver configuration is used)"), terminated
    assert "fields-ok" in plugin.logs(warned, "c").text
    plain_done = plugin.wait_done(plain, timeout=timeout)
    assert "fields not honoured" not in str(plain_done)
    log = plugin.log_path.read_text()
    uid, plain_uid = warned["pod"]["metadata"]["uid"], plain["pod"]["metadata"]["uid"]
    lines = [line for line in log.splitlines() if "fields not honoured" in line]
    assert len(lines) == 1, lines  # once per pod, the plain pod never
    assert uid in lines[0] and plain_uid not in lines[0]
    assert (f"fields not honoured by the {kit.name} backend (the pod runs without them): "
            "spec.containers[0].stdin (no stdin is attached); spec.dnsConfig") in lines[0]
