"""Schemathesis against the plugin's own /openapi.json, for every backend, on a real running plugin.

Every operation gets schema-valid (positive) and schema-violating (negative) bodies. Claims: no 5xx (a 503
only while the backend is really down, which it never is here), every answer has a documented status, content
type and shape, and the plugin is alive and still runs a valid pod afterwards (the positive control).
Fuzzed pods never run a host command: SLURM runs them in podman (images are local only, so a fuzzed image
fails to start), HTCondor inside the pool's container as its test user.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.kits import KIT_NAMES, BackendKit, open_kit
from tests.harness import PluginProcess, exit_codes
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("IL_SCHEMATHESIS_EXAMPLES", "100"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
RUNTIME = {"slurm": "podman", "podman": None, "htcondor": "none"}


@pytest.fixture(params=KIT_NAMES)
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendKit]:
    yield from open_kit(request, tmp_path, request.param)


def aim(case: Any, pod: dict[str, Any], container_name: str) -> Any:
    """Point a generated /status or /getLogs body at a pod the plugin knows, keeping the fuzzed rest."""
    uid = pod["pod"]["metadata"]["uid"]
    body = case.body
    if case.operation.path == "/getLogs" and isinstance(body, dict):
        body["PodUID"], body["ContainerName"] = uid, container_name
    elif case.operation.path == "/status":
        for item in body if isinstance(body, list) else [body]:
            if isinstance(item, dict) and isinstance(item.get("metadata"), dict):
                item["metadata"]["uid"] = uid
    return case


def fuzz_operation(plugin: PluginProcess, operation: Any, mode: GenerationMode, examples: int,
                   known: dict[str, Any]) -> Counter[int]:
    """Run `examples` cases of one operation, half of them aimed at a known pod where that means
    something; hypothesis shrinks a failing one. Returns the statuses seen."""
    base = str(plugin.client.base_url).rstrip("/")
    seen: Counter[int] = Counter()
    strategy = operation.as_strategy(generation_mode=mode)
    if operation.path in ("/getLogs", "/status"):
        strategy = st.tuples(strategy, st.booleans()).map(lambda pair: aim(pair[0], known, "c") if pair[1] else pair[0])

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base, timeout=30)
        seen[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    run()
    return seen


def cancel_slurm_jobs(plugin: PluginProcess) -> None:
    suffix = f"@{plugin.config['InstanceId']}"
    out = subprocess.run(["squeue", "-h", "-o", "%i|%k"], capture_output=True, text=True, timeout=10).stdout
    jobs = [line.split("|")[0] for line in out.splitlines() if line.endswith(suffix)]
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=30)


def test_schemathesis_finds_no_server_error_and_every_answer_conforms(kit: BackendKit) -> None:
    runtime = RUNTIME[kit.name]
    plugin = kit.plugin(**({"runtime": runtime} if runtime else {}))
    schema = schemathesis.openapi.from_url(f"{str(plugin.client.base_url).rstrip('/')}/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /create", "GET /status", "POST /status", "POST /delete", "GET /getLogs", "POST /getLogs"} <= labels
    command = ["sh", "-c", "echo hello"] if kit.name != "htcondor" else ["/bin/echo", "hello"]
    known = pod_body("fuzz-target", [container("c", command)])
    plugin.create(known)
    assert exit_codes(plugin.wait_done(known, timeout=180)) == {"c": 0}
    try:
        seen: dict[str, Counter[int]] = {}
        for operation in operations:
            if operation.path in ("/metrics", "/healthz"):
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                seen[f"{operation.label} {mode.value}"] = fuzz_operation(plugin, operation, mode, EXAMPLES, known)
        print(kit.name, {label: dict(statuses) for label, statuses in seen.items()})
        assert len(seen) == 12 and all(sum(statuses.values()) >= EXAMPLES // 2 for statuses in seen.values())
        assert seen["GET /getLogs positive"][200] > 0, "aimed log requests must reach a real log"
        assert plugin.proc is not None and plugin.proc.poll() is None, "the plugin must still run"
        assert plugin.ping()["status"] == "ok"
        # positive control: after the fuzzing, a Kubernetes-valid pod still runs to completion
        command = ["true"] if kit.name != "htcondor" else ["/bin/true"]
        body = pod_body("after-fuzz", [container("c", command)])
        plugin.create(body)
        assert exit_codes(plugin.wait_done(body, timeout=180)) == {"c": 0}
    finally:
        if kit.name == "slurm":
            cancel_slurm_jobs(plugin)
