"""Several plugin instances on one account: each recovers, cleans up and queries only its own jobs."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.harness import PluginProcess
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e


def alive(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=10).stdout
    return out.strip() in ("RUNNING", "PENDING", "CONFIGURING")


def test_two_instances_on_one_account_never_touch_each_other(plugin_factory: Callable[..., PluginProcess]) -> None:
    first = plugin_factory(InstanceId="site-a")
    second = plugin_factory(InstanceId="site-b", DataRootFolder=first.config["DataRootFolder"])
    pod_a = pod_body("pod-a", [container("c", ["sleep", "600"])], terminationGracePeriodSeconds=1)
    pod_b = pod_body("pod-b", [container("c", ["sleep", "600"])], terminationGracePeriodSeconds=1)
    job_a = first.create(pod_a)["PodJID"]
    job_b = second.create(pod_b)["PodJID"]
    first.wait_status(pod_a, lambda s: "running" in s["containers"][0]["state"])
    second.wait_status(pod_b, lambda s: "running" in s["containers"][0]["state"])

    # recovery from the scheduler alone adopts only this instance's jobs
    first.kill(signal.SIGKILL)
    shutil.rmtree(first.config["StateDir"])
    first.start()
    assert first.wait_status(pod_a, lambda s: "running" in s["containers"][0]["state"])["JID"] == job_a
    assert first.status(pod_b) is None

    # a delete sent to the wrong instance changes nothing
    assert first.delete(pod_b).status_code == 200
    time.sleep(3)
    assert alive(job_b)
    assert "running" in second.status(pod_b)["containers"][0]["state"]

    assert first.delete(pod_a).status_code == 200
    assert second.delete(pod_b).status_code == 200
    deadline = time.monotonic() + 30
    while (alive(job_a) or alive(job_b)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(job_a) and not alive(job_b)
