"""docs/site-admin-guide.md, the Kubernetes side and day-to-day: every ```yaml block of the guide parsed and checked
against what reads it, the guide's first pod run on the real local cluster with the output `kubectl` is shown
printing, and every command of "Day-to-day" run as written against a serving plugin."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from interlink_plugins.backends import FIELDS, POLICY_KEYS, parse_config
from interlink_plugins.exitcodes import MEANINGS
from interlink_plugins.manifest import pod_body_from_manifest
from interlink_plugins.metrics import Metrics
from tests.guidedoc import GUIDE, ROOT, blocks_of, run_block, section_blocks, sections, yaml_blocks
from tests.harness import PluginProcess, free_port, states

pytestmark = pytest.mark.e2e

# the keys interLink reads, from its Go types: pkg/interlink/config.go (API server), pkg/virtualkubelet/config.go
# (virtual kubelet), and the top of interlink-hq/interlink-helm-chart's interlink/values.yaml
INTERLINK_API_KEYS = {"InterlinkAddress", "InterlinkPort", "SidecarURL", "SidecarPort", "JobScriptBuildConfig",
                      "JobScriptTemplate", "VerboseLogging", "ErrorsOnlyLogging", "DataRootFolder", "TLS", "Pprof",
                      "Tracing"}
VIRTUAL_KUBELET_KEYS = {"InterlinkURL", "InterlinkPort", "KubernetesApiAddr", "KubernetesApiPort",
                        "KubernetesApiCaCrt", "DisableProjectedVolumes", "VKConfigPath", "VKTokenFile",
                        "ServiceAccount", "Namespace", "PodIP", "VerboseLogging", "ErrorsOnlyLogging", "HTTP",
                        "KubeletHTTP", "Resources", "NodeLabels", "NodeTaints"}
HELM_VALUES = {
    "": {"nodeName", "interlink", "virtualNode", "plugin", "sshBastion", "OAUTH", "extraVolumes", "extraContainers",
         "extraInitContainers", "podScheduling"},
    "plugin": {"enabled", "image", "command", "args", "config", "envs", "socket", "address", "port", "privileged",
               "resources", "extraVolumeMounts"},
    "interlink": {"image", "enabled", "exportPodData", "skipDownwardAPIResolution", "dataRootVolume", "socket",
                  "address", "port", "kubernetesApiAddr", "kubernetesApiPort", "kubernetesApiCaCrt",
                  "disableProjectedVolumes", "tls", "logging", "tracing", "pluginEndpoint", "resources",
                  "extraVolumeMounts"},
    "virtualNode": {"image", "resources", "HTTPProxies", "HTTP", "kubeletHTTP", "tracing", "nodeLabels", "nodeTaints",
                    "containerResources", "extraVolumeMounts", "JobScriptBuilderURL", "disableCSR", "network"},
}


def plugin_config_ok(raw: dict[str, Any], where: str) -> None:
    _config, warnings = parse_config(raw, environ={})
    assert not warnings, f"{where}: {warnings}"


def kind_of(documents: list[Any]) -> str:
    first = documents[0]
    if all(isinstance(d, dict) and "kind" in d and "apiVersion" in d for d in documents):
        return "kubernetes"
    if not isinstance(first, dict) or len(documents) != 1:
        return "unknown"
    keys = set(first)
    if "SidecarURL" in keys:
        return "interlink-api"
    if "InterlinkURL" in keys:
        return "virtual-kubelet"
    if "nodeName" in keys and "plugin" in keys:
        return "helm-values"
    if keys <= set(FIELDS) | set(POLICY_KEYS):
        return "plugin"
    return "unknown"


def test_every_yaml_block_of_the_guide_is_parsed_and_checked() -> None:
    # the account of interLink's API server, which the guide's plugin configs allow to call (a site has it)
    if subprocess.run(["id", "-u", "interlink-api"], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "interlink-api"], check=True,
                       timeout=30)
    fences = re.findall(r"^```(\S*)", GUIDE.read_text(), re.M)
    assert not [f for f in fences if f.startswith("y") and f != "yaml"], "YAML goes in ```yaml blocks (parsed here)"
    blocks = yaml_blocks()
    seen: dict[str, int] = {}
    for heading, block in blocks:
        where = f"{heading}: {block.splitlines()[0]}"
        documents = list(yaml.safe_load_all(block))
        kind = kind_of(documents)
        seen[kind] = seen.get(kind, 0) + 1
        if kind == "plugin":
            plugin_config_ok(documents[0], where)
        elif kind == "interlink-api":
            assert set(documents[0]) <= INTERLINK_API_KEYS, f"{where}: {set(documents[0]) - INTERLINK_API_KEYS}"
        elif kind == "virtual-kubelet":
            assert set(documents[0]) <= VIRTUAL_KUBELET_KEYS, f"{where}: {set(documents[0]) - VIRTUAL_KUBELET_KEYS}"
        elif kind == "helm-values":
            values = documents[0]
            assert set(values) <= HELM_VALUES[""], where
            for section in ("plugin", "interlink", "virtualNode"):
                assert set(values.get(section, {})) <= HELM_VALUES[section], f"{where}: {section}"
            assert values["plugin"]["image"] and values["plugin"]["enabled"] is True
            plugin_config_ok(yaml.safe_load(values["plugin"]["config"]), f"{where}: plugin.config")
            assert values["plugin"]["socket"] == yaml.safe_load(values["plugin"]["config"])["Socket"]
        elif kind == "kubernetes":
            body = pod_body_from_manifest(documents)
            assert body["pod"]["spec"]["containers"], where
        else:
            raise AssertionError(f"{where}: a YAML block no test knows how to check")
    # the whole chain is shown: the plugin, interLink, the virtual kubelet, the helm chart, a pod
    assert {"plugin", "interlink-api", "virtual-kubelet", "helm-values", "kubernetes"} <= set(seen), seen


def test_the_guide_lists_every_metric_and_exit_code() -> None:
    day = sections()["Day-to-day"]
    listed = dict(re.findall(r"^\| `(interlink_plugin_[a-z_]+)` \| (\w+) \|", day, re.M))
    metrics = Metrics("slurm")
    metrics.track_pods(list)
    from prometheus_client import generate_latest

    exposed = dict(re.findall(r"^# TYPE (interlink_plugin_\S+) (\w+)", generate_latest(metrics.registry).decode(), re.M))
    assert listed == exposed
    codes = dict(re.findall(r"^\| (\d+) \| (.+) \|$", day, re.M))
    assert codes == {str(int(code)): meaning for code, meaning in MEANINGS.items()}


@pytest.fixture
def day2(slurm_cluster: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A plugin serving the first run's configuration (runtime none) under a scratch dir, as systemd would."""
    base = Path(f"/tmp/il-guide-day2-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755)
    (first_config,) = [b for b in section_blocks("Install and first run (SLURM)") if "plugin-slurm.yaml <<" in b]
    config = yaml.safe_load(first_config.split("<<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0])
    config.update(DataRootFolder=str(base / "jobs"), StateDir=str(base / "state"), InstanceId=f"day2-{os.getpid()}")
    plugin = PluginProcess(base, config, env={"SLURM_CONF": slurm_cluster["SLURM_CONF"]})
    plugin.config["SidecarPort"] = plugin.port
    plugin.start()
    metrics_port = free_port()
    subs = {
        "/path/to/interlink-plugins": str(ROOT),
        "/opt/interlink-plugins": sys.prefix,  # the venv this test runs in has the plugin installed
        "/etc/interlink/plugin-slurm.yaml": str(plugin.config_path),
        "/etc/prometheus": str(base / "prometheus"),
        "/tmp/analysis.yaml": str(base / "analysis.yaml"),
        "127.0.0.1:9464": f"127.0.0.1:{metrics_port}",
    }
    yield {"plugin": plugin, "subs": subs, "env": {"SLURM_CONF": slurm_cluster["SLURM_CONF"]}}
    plugin.stop()
    shutil.rmtree(base, ignore_errors=True)


def kubectl_shown() -> dict[str, list[str]]:
    """The guide's kubectl transcript: command -> the lines it printed."""
    (transcript,) = [b for b in blocks_of(sections()["The Kubernetes side"], "text") if "kubectl" in b]
    shown: dict[str, list[str]] = {}
    command = ""
    for line in transcript.splitlines():
        if line.startswith("$ "):
            command = line[2:]
            shown[command] = []
        else:
            shown[command].append(line)
    return shown


def test_day_to_day_commands(day2: dict[str, Any]) -> None:
    plugin, subs, env = day2["plugin"], day2["subs"], day2["env"]
    blocks = section_blocks("Day-to-day")
    assert len(blocks) == 5
    pods_block, render_block, metrics_on, scrape, rules = blocks

    # the guide's first pod, as interLink sends it, on the real cluster: what kubectl is shown printing
    (manifest,) = [b for h, b in yaml_blocks() if h == "The Kubernetes side" and "kind: Pod" in b]
    body = pod_body_from_manifest(list(yaml.safe_load_all(manifest)))
    name = body["pod"]["metadata"]["name"]
    plugin.create(body)
    status = plugin.wait_done(body, timeout=90)
    terminated = states(status)["hello"]["terminated"]
    shown = kubectl_shown()
    header, row = shown[f"kubectl get pod {name} -o wide"]
    # kubectl's fixed-width columns (NOMINATED NODE is one column)
    starts = [(m.group(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    columns = {title: row[start:next_start].strip()
               for (title, start), (_n, next_start) in zip(starts, [*starts[1:], ("", len(row))], strict=True)}
    assert columns["NAME"] == name and columns["READY"] == f"0/{len(status['containers'])}"
    assert columns["STATUS"] == ("Completed" if terminated["exitCode"] == 0 else "Error")
    assert columns["NODE"] == body["pod"]["spec"]["nodeName"] and columns["IP"] == "127.0.0.1"
    assert plugin.logs(body, "hello").text.splitlines() == shown[f"kubectl logs {name}"]

    listed = run_block(pods_block, subs, env).stdout
    row_line = next(line for line in listed.splitlines() if line.startswith(f"default/{name} "))
    assert row_line.split()[1] == body["pod"]["metadata"]["uid"] and row_line.split()[3] == "Succeeded"
    items = json.loads(listed[listed.index("["):])
    assert [item["name"] for item in items] == [name] and items[0]["job_id"] == status["JID"]

    rendered = run_block(render_block, subs, env).stdout
    assert re.search(r"^# pod physics/analysis-\w{5} uid \S+ \(from Job analysis\)", rendered, re.M), rendered
    assert '"--cpus-per-task=2"' in rendered and '"--mem=4096"' in rendered
    sent = json.loads(rendered[rendered.rindex('\n{\n  "pod": ') + 1:])
    env_sent = {var["name"]: var["value"] for var in sent["pod"]["spec"]["containers"][0]["env"]}
    # env values as their lengths only (a value may come from a Secret: the body no longer says which)
    assert env_sent == {"MODE": "<4 bytes>", "TOKEN": "<21 bytes>"} and "s3cr3t-analysis-token" not in rendered
    assert not list(Path(plugin.config["DataRootFolder"]).glob("physics-*"))  # nothing written

    run_block(metrics_on, subs, env)
    plugin.config = yaml.safe_load(plugin.config_path.read_text())  # what the admin appended
    plugin.kill(signal.SIGTERM)  # systemctl restart interlink-plugin@slurm
    plugin.start()
    scraped = run_block(scrape, subs, env).stdout
    assert re.search(r'^interlink_plugin_build_info\{backend="slurm",version="[^"]+"\} 1\.0$', scraped, re.M), scraped
    assert 'interlink_plugin_backend_up{backend="slurm"} 1.0' in scraped
    assert re.search(r'^interlink_plugin_tracked_pods\{backend="slurm",phase="succeeded"\} 1\.0$', scraped, re.M)
    checked = run_block(rules, subs, env).stdout
    assert "SUCCESS: 5 rules found" in checked
