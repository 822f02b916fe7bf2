"""The admin's commands on the real local SLURM cluster: a user's Kubernetes manifest resolved as interLink would
send it (render shows it, the plugin runs it: env and files arrive as in a cluster), and `pods` listing what the
running plugin tracks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.harness import ROOT, PluginProcess, states

pytestmark = pytest.mark.e2e

MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data:
  greeting: "hello from a ConfigMap"
  MODE: fast
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2-very-secret}
---
apiVersion: batch/v1
kind: Job
metadata: {name: report}
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {team: hep}}
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: localhost/busybox:latest
        imagePullPolicy: Never
        command: [sh, -c]
        args:
        - |
          echo "pod=$POD team=$TEAM mode=$CFG_MODE greeting=$GREETING"
          echo "secret length ${#PASSWORD}"
          cat /cfg/greeting; echo
          cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo
          cat /info/team; echo
          wc -c < /creds/password
        envFrom: [{configMapRef: {name: settings}, prefix: CFG_}]
        env:
        - {name: GREETING, value: "$(CFG_greeting)!"}
        - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
        - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: TEAM, valueFrom: {fieldRef: {fieldPath: "metadata.labels['team']"}}}
        volumeMounts:
        - {name: cfg, mountPath: /cfg}
        - {name: creds, mountPath: /creds}
        - {name: info, mountPath: /info}
      volumes:
      - {name: cfg, configMap: {name: settings}}
      - {name: creds, secret: {secretName: creds}}
      - {name: info, downwardAPI: {items: [{path: team, fieldRef: {fieldPath: "metadata.labels['team']"}}]}}
"""


def cli(plugin: PluginProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interlink_plugins.cli", *args, "--config", str(plugin.config_path)],
                          capture_output=True, text=True, timeout=120, env=plugin.env, cwd=ROOT)


def test_a_manifest_renders_and_runs_as_interlink_would_send_it(plugin_factory: Callable[..., PluginProcess],
                                                                tmp_path: Path) -> None:
    from interlink_plugins.manifest import pod_body_from_manifest

    plugin = plugin_factory()
    path = tmp_path / "report.yaml"
    path.write_text(MANIFEST)
    rendered = cli(plugin, "render", str(path))
    assert rendered.returncode == 0, rendered.stderr
    first = rendered.stdout.splitlines()[0]
    assert first.startswith("# pod default/report-") and "(from Job report)" in first
    assert "--export-file=/dev/null" in rendered.stdout and "/var/run/secrets/kubernetes.io/serviceaccount" in rendered.stdout
    assert "hunter2-very-secret" not in rendered.stdout
    assert not list(Path(plugin.config["DataRootFolder"]).glob("default-*"))  # render submits and writes nothing

    body = pod_body_from_manifest(list(yaml.safe_load_all(MANIFEST)))
    name = body["pod"]["metadata"]["name"]
    plugin.create(json.loads(json.dumps(body)))
    status = plugin.wait_done(body, timeout=90)
    assert states(status)["main"]["terminated"]["exitCode"] == 0, status
    assert plugin.logs(body, "main").text.splitlines() == [
        f"pod={name} team=hep mode=fast greeting=hello from a ConfigMap!",
        f"secret length {len('hunter2-very-secret')}",
        "hello from a ConfigMap",
        "default",
        "hep",
        str(len("hunter2-very-secret")),
    ]
    plugin.delete(body)


def test_pods_lists_what_the_running_plugin_tracks(plugin_factory: Callable[..., PluginProcess]) -> None:
    from tests.podfactory import container, pod_body

    plugin = plugin_factory()
    sleeper = pod_body("sleeper", [container("c", ["sleep", "30"])])
    quick = pod_body("quick", [container("c", ["true"])])
    sleeper_job = plugin.create(sleeper)["PodJID"]
    plugin.create(quick)
    plugin.wait_status(sleeper, lambda s: "running" in s["containers"][0]["state"])
    plugin.wait_done(quick)
    node = socket.gethostname().split(".")[0]
    rows: dict[str, dict[str, object]] = {}
    for _ in range(20):  # the poller records the node within a poll interval of the start
        listed = cli(plugin, "pods", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = {item["name"]: item for item in json.loads(listed.stdout)}
        if rows.get("sleeper", {}).get("node") and rows.get("quick", {}).get("phase") == "Succeeded":
            break
        subprocess.run(["sleep", "0.5"], check=True)
    assert rows["sleeper"]["phase"] == "Running" and rows["sleeper"]["node"] == node
    assert rows["sleeper"]["job_id"] == sleeper_job
    assert rows["sleeper"]["uid"] == sleeper["pod"]["metadata"]["uid"]
    assert rows["quick"]["phase"] == "Succeeded"
    table = cli(plugin, "pods")
    row = next(line for line in table.stdout.splitlines() if line.startswith("default/sleeper "))
    assert row.split()[2:5] == [sleeper_job, "Running", node]
    plugin.delete(sleeper)
