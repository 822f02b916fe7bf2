"""The submit description, the admin policy for pod submit commands, the client security settings,
and the spool-mode job wrapper (RUN with bash, with a stand-in runner and condor_chirp)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import htcondor2
import pytest

from interlink_plugins.backends import parse_config, policy_from_config
from interlink_plugins.core.commands.local import LocalRunner
from interlink_plugins.core.errors import ConfigError, PodSpecError
from interlink_plugins.core.model.pod import parse_create_body
from interlink_plugins.core.policy.engine import AdminPolicy, NamespacePolicy, PolicyViolation
from interlink_plugins.htcondor import security, submit
from interlink_plugins.htcondor.backend import HTCondorBackend
from interlink_plugins.htcondor.policy import accounting_group, submit_commands
from tests.podfactory import config_map, container, pod_body

ANN = submit.SUBMIT_COMMANDS_ANNOTATION


def backend(tmp_path: Path, **raw: Any) -> HTCondorBackend:
    config, _ = parse_config({"Backend": "htcondor", "ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "j"),
                              "StateDir": str(tmp_path / "s"), "InstanceId": "unit", **raw}, environ={})
    return HTCondorBackend(config, LocalRunner(), policy_from_config(config.policy_raw))


def prepared(tmp_path: Path, body: dict[str, Any], **raw: Any) -> tuple[dict[str, str], dict[str, str]]:
    job = backend(tmp_path, **raw).prepare(parse_create_body(body), write=True)
    return dict(job.submit["description"]), dict(job.files)


def test_shared_description_identity_resources_and_policy(tmp_path: Path) -> None:
    body = pod_body("p", [container("a", ["true"], resources={"limits": {"cpu": "1500m", "memory": "1.5Gi",
                                                                           "ephemeral-storage": "1Mi",
                                                                           "amd.com/gpu": "2"}})],
                    annotations={ANN: "requirements = Memory > 1\n+InterLinkPodUID = \"x\""},
                    activeDeadlineSeconds=60)
    with pytest.raises(PolicyViolation, match="reserved"):
        prepared(tmp_path, body)
    body["pod"]["metadata"]["annotations"][ANN] = "requirements = Memory > 1\nrank = Memory"
    desc, files = prepared(tmp_path, body, HeldTimeout=120)
    uid = body["pod"]["metadata"]["uid"]
    assert desc["+InterLinkPodUID"] == f'"{uid}"' and desc["+InterLinkInstance"] == '"unit"'
    assert desc["executable"].endswith(f"default-{uid}/pod-runner.sh") and desc["should_transfer_files"] == "NO"
    assert (desc["request_cpus"], desc["request_memory"], desc["request_disk"], desc["request_gpus"]) == (
        "2", "1536", "1024", "2")
    assert desc["requirements"] == "Memory > 1" and desc["getenv"] == "false" and "environment" not in desc
    assert desc["allowed_execute_duration"] == "60" and "time() - EnteredCurrentStatus > 120" in desc["periodic_remove"]
    assert desc["periodic_hold_subcode"] == "4701"
    assert "submit-description" in files and "job.sh" not in files
    htcondor2.Submit(desc)  # the bindings parse it


def test_spool_description_and_wrapper(tmp_path: Path) -> None:
    body = pod_body("p", [container("a", ["true"], volumeMounts=[{"name": "cm", "mountPath": "/cm"},
                                                                 {"name": "e", "mountPath": "/e"}])],
                    volumes=[{"name": "cm", "configMap": {"name": "cm"}}, {"name": "e", "emptyDir": {}}],
                    config_maps=[config_map("cm", {"k": "v"})])
    desc, files = prepared(tmp_path, body, HTCondorDataMode="spool")
    uid = body["pod"]["metadata"]["uid"]
    assert desc["executable"].endswith("/job.sh") and desc["should_transfer_files"] == "YES"
    inputs = desc["transfer_input_files"].split(", ")
    assert {"pod-runner.sh", "ns-exec.sh", "volumes"} <= set(inputs)
    assert "pod.json" not in inputs  # recovery reads it on the plugin host
    assert desc["transfer_output_files"] == "c, pod.exit, c/a/log" and desc["+WantIOProxy"] == "true"
    run_dir = f"/tmp/interlink-unit-{uid}"
    assert f"JOB_DIR={run_dir}" in files["pod-runner.sh"]  # rendered for the path the job sees
    assert (tmp_path / "j" / f"default-{uid}" / "volumes" / "cm" / "k").read_text() == "v"
    htcondor2.Submit(desc)


def test_values_that_submit_macros_would_expand_are_refused(tmp_path: Path) -> None:
    body = pod_body("p", [container("a", ["true"])], annotations={ANN: "requirements = $ENV(HOME) != \"\""})
    with pytest.raises(PolicyViolation, match=r"\$"):
        prepared(tmp_path, body)
    with pytest.raises(PodSpecError, match="no HTCondor equivalent"):
        prepared(tmp_path, pod_body("p", [container("a", ["true"], resources={"limits": {"nvidia.com/mig-1g": "1"}})]))
    assert submit.classad_string('a"b\\c') == '"a\\"b\\\\c"'


def test_submit_command_policy_and_accounting_groups() -> None:
    policy = AdminPolicy(namespaces={"t": NamespacePolicy(choices={"accounting_groups": ("group_a", "group_b")})})
    assert submit_commands(policy, "Requirements = true\n# comment\n\nrank=Memory", field="f") == [
        ("requirements", "true"), ("rank", "Memory")]
    for text in ("executable = /bin/sh", "MY.Owner = 1", "+Custom = 1", "universe = docker", "Queue = 1"):
        with pytest.raises(PolicyViolation) as info:
            submit_commands(policy, text, field="f")
        assert info.value.status == 403
    with pytest.raises(PolicyViolation) as info:
        submit_commands(policy, "no equals sign", field="f")
    assert info.value.status == 422
    assert accounting_group(policy, "t", "", field="f") == "group_a"
    assert accounting_group(policy, "t", "group_b", field="f") == "group_b"
    assert accounting_group(policy, "other", "", field="f") == ""
    with pytest.raises(PolicyViolation):
        accounting_group(policy, "t", "group_c", field="f")
    extra = policy_from_config({"ExtraSubmitCommands": ["+ProjectName"],
                                "NamespacePolicy": {"t": {"AccountingGroups": ["g"]}}})
    assert submit_commands(extra, "MY.ProjectName = \"x\"", field="f") == [("+projectname", '"x"')]
    assert extra.namespace_policy("t").choice("accounting_groups") == ("g",)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="reserved"):
        policy_from_config({"ExtraSubmitCommands": ["executable"]})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"HTCondorAuth": ["claimtobe"], "HTCondorCollector": "127.0.0.1:9618"},
         {"SEC_CLIENT_AUTHENTICATION_METHODS": "CLAIMTOBE", "COLLECTOR_HOST": "127.0.0.1:9618", "ENABLE_IPV6": "False"}),
        ({"HTCondorAuth": ["IDTOKENS"], "HTCondorTokenFile": "/etc/il/token"},
         {"SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS", "SEC_TOKEN_DIRECTORY": "/state/tokens"}),
        ({"HTCondorAuth": ["SCITOKENS"], "HTCondorTokenFile": "/etc/il/scitoken"},
         {"SEC_CLIENT_AUTHENTICATION_METHODS": "SCITOKENS", "SCITOKENS_FILE": "/etc/il/scitoken"}),
        ({"HTCondorAuth": ["SSL", "IDTOKENS"], "HTCondorCAFile": "/ca.pem", "HTCondorCertFile": "/c.pem",
          "HTCondorKeyFile": "/k.pem", "HTCondorParams": {"SEC_CLAIMTOBE_USER": "svc"}},
         {"SEC_CLIENT_AUTHENTICATION_METHODS": "SSL, IDTOKENS", "AUTH_SSL_CLIENT_CAFILE": "/ca.pem",
          "AUTH_SSL_CLIENT_CERTFILE": "/c.pem", "AUTH_SSL_CLIENT_KEYFILE": "/k.pem", "SEC_CLAIMTOBE_USER": "svc"}),
    ],
)
def test_client_security_settings(raw: dict[str, Any], expected: dict[str, str]) -> None:
    config, _ = parse_config(raw, environ={})
    params = security.client_params(config, Path("/state/tokens"))
    assert expected.items() <= params.items()
    assert security.tool_environment(params)["_condor_SEC_CLIENT_AUTHENTICATION_METHODS"] == expected[
        "SEC_CLIENT_AUTHENTICATION_METHODS"]


@pytest.mark.parametrize(
    "raw",
    [{"HTCondorAuth": ["SSL"]}, {"HTCondorAuth": ["SCITOKENS"]},
     {"HTCondorAuth": ["SSL"], "HTCondorCAFile": "/ca", "HTCondorCertFile": "/c"}],
)
def test_incomplete_security_settings_are_config_errors(raw: dict[str, Any]) -> None:
    config, _ = parse_config(raw, environ={})
    with pytest.raises(ConfigError):
        security.client_params(config, Path("/t"))


def test_bad_htcondor_config_values_stop_startup() -> None:
    for raw in ({"HTCondorAuth": ["PASSWORD"]}, {"HTCondorDataMode": "nfs"}, {"HeldTimeout": 0},
                {"HTCondorTailCommand": "condor_tail; rm -rf /"}):
        with pytest.raises(ConfigError):
            parse_config(raw, environ={})


def test_token_is_copied_privately_and_refreshed(tmp_path: Path) -> None:
    source = tmp_path / "token"
    source.write_text("t1\n")
    target_dir = tmp_path / "tokens"
    assert security.install_token(str(source), target_dir) is True
    assert security.install_token(str(source), target_dir) is False
    assert oct((target_dir / "token").stat().st_mode & 0o777) == "0o600" and (target_dir / "token").read_text() == "t1\n"
    source.write_text("t2\n")
    assert security.install_token(str(source), target_dir) is True


def test_wrapper_links_runs_reports_and_leaves_outputs(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    run_dir = tmp_path / f"run-{os.getpid()}"
    where = submit.JobLayout(str(tmp_path / "local"), str(run_dir), True)
    (sandbox / "job.sh").write_text(submit.wrapper_script(where, ["init", "c"], ["scratch"]))
    # stand-in runner: records where it ran, writes per-container state, waits for TERM
    (sandbox / "pod-runner.sh").write_text(
        "d=$(dirname \"$0\"); mkdir -p \"$d/c/c\"; echo started > \"$d/c/c/started\"; echo ok >> \"$d/c/c/log\"\n"
        "echo \"$0\" > \"$d/ran-as\"; [ -d \"$d/emptydir/scratch\" ] || exit 9\n"
        "trap 'echo 143 > \"$d/pod.exit\"; exit 143' TERM; while :; do sleep 0.1; done\n"
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    chirp = bindir / "condor_chirp"
    chirp.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {tmp_path}/chirps\n")
    chirp.chmod(0o755)
    proc = subprocess.Popen(["bash", "job.sh"], cwd=sandbox, env={"PATH": f"{bindir}:/usr/bin:/bin"},
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while "started" not in _read(tmp_path / "chirps") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run_dir.is_symlink() and os.readlink(run_dir) == str(sandbox)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    assert (sandbox / "ran-as").read_text().strip() == f"{run_dir}/pod-runner.sh"
    assert not run_dir.exists() and (sandbox / "pod.exit").read_text() == "143\n"
    assert (sandbox / "c" / "init" / "log").exists()  # every transfer_output_files entry exists
    chirps = (tmp_path / "chirps").read_text().splitlines()
    assert 'set_job_attr InterLinkContainers "init|||||||;c|started||||||;"' in chirps, chirps


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
