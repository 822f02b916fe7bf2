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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
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


def fuzz_operation(plugin: PluginProcess, operation: Any, mode: GenerationMode, examples: int) -> int:
    """Run `examples` cases of one operation; hypothesis shrinks a failing one. Returns the calls made."""
    base = str(plugin.client.base_url).rstrip("/")
    calls = 0

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal calls
        calls += 1
        response = case.call(base_url=base, timeout=30)
        case.validate_response(response, checks=CHECKS)

    run()
    return calls


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
    try:
        calls = 0
        for operation in operations:
            if operation.path in ("/metrics", "/healthz"):
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                calls += fuzz_operation(plugin, operation, mode, EXAMPLES)
        assert calls >= EXAMPLES * 6, "every operation must have been exercised"
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
