"""A pod as an HTCondor submit description (plain dict, JSON-able) and, in spool mode, its job wrapper.

Shared mode: the job runs ``pod-runner.sh`` in the job dir, which the execute node sees at the same
path. Spool mode: the job dir's inputs are spooled to the schedd; on the execute node the wrapper
``job.sh`` links the sandbox to a fixed run path (the runner was rendered for it), runs the runner,
reports per-container state into the job ad with condor_chirp while it runs, and leaves the
outputs (``c/``, ``pod.exit``) for ``Schedd.retrieve``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from interlink_plugins.config import Config
from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.names import job_dir_name
from interlink_plugins.core.model.pod import GPU_RESOURCES, Pod
from interlink_plugins.core.model.resources import pod_totals
from interlink_plugins.core.podrunner import templating
from interlink_plugins.core.policy.engine import AdminPolicy
from interlink_plugins.htcondor.policy import (
    ACCOUNTING_GROUP_ANNOTATION,
    SUBMIT_COMMANDS_ANNOTATION,
    accounting_group,
    submit_commands,
)
from interlink_plugins.htcondor.settings import HTCondorSettings
from interlink_plugins.htcondor.states import DEADLINE_SUBCODE, HOLD_SPOOLING_INPUT

WRAPPER = "job.sh"
RUNNER_LOG = "runner.out"
SPOOL_INPUTS = ("pod-runner.sh", "ns-exec.sh", "apptainer.sh", "podman-secrets.sh")
STUCK_SPOOLING_SECONDS = 600
CHIRP_ATTR = "InterLinkContainers"
_NOT_RESOURCES = ("ephemeral-storage", "storage", "pods")


@dataclass(frozen=True)
class JobLayout:
    """Where the job's files are: on the plugin host, and as the job sees them."""

    local_dir: str
    run_dir: str
    spool: bool


def layout(config: Config, namespace: str, uid: str) -> JobLayout:
    local = str(config.data_root / job_dir_name(namespace, uid))
    if config.section(HTCondorSettings).htcondor_data_mode == "spool":
        return JobLayout(local, f"/tmp/interlink-{config.instance_id}-{uid}", True)
    return JobLayout(local, local, False)


def classad_string(value: str) -> str:
    """A ClassAd string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unsafe(text: str) -> bool:
    """A `$` is a submit macro (`$ENV(HOME)`, `$(Cluster)`), expanded by the submit language; a line break
    ends the command and starts another (`universe = local`): neither ever passes through."""
    return "$" in text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def _checked(value: str, what: str) -> str:
    if _unsafe(value):
        raise PodSpecError(what, f"{value!r}: `$` and control characters cannot go into a submit description")
    return value


# the pod field each command's value comes from (the others are the plugin's own or the admin's)
_POD_FIELDS = {
    "batch_name": "metadata.name",
    "+InterLinkPodUID": "metadata.uid",
    "transfer_output_files": "spec.containers[*].name",
    "transfer_input_files": "spec.volumes",
    "accounting_group": f"metadata.annotations[{ACCOUNTING_GROUP_ANNOTATION}]",
}


def check_description(commands: Mapping[str, str], pod_fields: Mapping[str, str]) -> None:
    """Every key and value of a submit description, before it reaches the schedd: a value from the pod is
    a 422 naming its field; one of the plugin's or the admin's a 500 naming the command."""
    for key, value in commands.items():
        if not _unsafe(value) and not _unsafe(key) and "=" not in key:
            continue
        field = pod_fields.get(key) or _POD_FIELDS.get(key)
        if field:
            raise PodSpecError(field, f"{key} {value!r}: `$` and control characters cannot go into a submit "
                                      "description")
        raise PodSpecError(f"submit command {key!r}", f"{value!r} holds `$` or a control character: not "
                                                       "submitted (a plugin or configuration value)", status=500)


def resource_commands(pod: Pod, config: Config) -> dict[str, str]:
    """request_cpus, request_memory (MiB), request_disk (KiB), request_gpus from the pod's totals."""
    totals = pod_totals(pod)
    commands = {
        "request_cpus": str(math.ceil(totals.cpu_millis / 1000) if totals.cpu_millis else config.default_cpus),
        "request_memory": str(
            math.ceil(totals.memory_bytes / 2**20) if totals.memory_bytes else config.default_memory_mib
        ),
    }
    disk = totals.extended.get("ephemeral-storage", 0)
    if disk:
        commands["request_disk"] = str(math.ceil(disk / 1024))
    gpus = sum(totals.extended.get(kind, 0) for kind in GPU_RESOURCES)
    if gpus:
        commands["request_gpus"] = str(gpus)
    for resource, count in sorted(totals.extended.items()):
        if resource in GPU_RESOURCES or resource in _NOT_RESOURCES or resource.startswith("hugepages-") or not count:
            continue
        raise PodSpecError(
            f"spec.containers[*].resources[{resource}]", f"resource {resource!r} has no HTCondor equivalent"
        )
    return commands


def policy_expressions(pod: Pod, config: Config) -> dict[str, str]:
    """Holds the plugin resolves itself: deadline, HeldTimeout, a spool that never came."""
    held = int(config.section(HTCondorSettings).held_timeout)
    remove = [
        f"(JobStatus == 5 && HoldReasonCode =!= {HOLD_SPOOLING_INPUT} && time() - EnteredCurrentStatus > {held})",
        # deadline and memory holds end the pod at once (DeadlineExceeded, OOMKilled)
        f"(JobStatus == 5 && (HoldReasonCode == 34 || HoldReasonCode == 46 || HoldReasonCode == 47 || "
        f"(HoldReasonCode == 3 && HoldReasonSubCode == {DEADLINE_SUBCODE})))",
        f"(JobStatus == 5 && HoldReasonCode == {HOLD_SPOOLING_INPUT} && time() - QDate > {STUCK_SPOOLING_SECONDS})",
    ]
    commands = {"periodic_remove": " || ".join(remove)}
    if pod.active_deadline_seconds:
        seconds = int(pod.active_deadline_seconds)
        commands["allowed_execute_duration"] = str(seconds)
        # HTCondor 23 does not always enforce allowed_execute_duration without file transfer
        commands["periodic_hold"] = (
            f"JobStatus == 2 && JobCurrentStartExecutingDate =!= undefined && "
            f"time() - JobCurrentStartExecutingDate > {seconds}"
        )
        commands["periodic_hold_reason"] = classad_string(f"activeDeadlineSeconds ({seconds} s) exceeded")
        commands["periodic_hold_subcode"] = str(DEADLINE_SUBCODE)
    return commands


def pod_commands(pod: Pod, policy: AdminPolicy) -> dict[str, str]:
    """Extra submit commands and the accounting group, as the admin policy allows."""
    commands: dict[str, str] = {}
    text = pod.annotations.get(SUBMIT_COMMANDS_ANNOTATION, "")
    if text.strip():
        for key, value in submit_commands(policy, text, field=f"metadata.annotations[{SUBMIT_COMMANDS_ANNOTATION}]"):
            commands[key] = value
    group = accounting_group(
        policy,
        pod.namespace,
        pod.annotations.get(ACCOUNTING_GROUP_ANNOTATION, "").strip(),
        field=f"metadata.annotations[{ACCOUNTING_GROUP_ANNOTATION}]",
    )
    if group:
        commands["accounting_group"] = _checked(group, "NamespacePolicy.AccountingGroups")
    return commands


def output_files(names: Sequence[str]) -> str:
    """What comes back: the runner's state dir and exit file; each live log by name for condor_tail."""
    return ", ".join(["c", "pod.exit", *(f"c/{name}/log" for name in names)])


def description(
    pod: Pod,
    config: Config,
    policy: AdminPolicy,
    where: JobLayout,
    *,
    grace_seconds: int,
    spool_inputs: Sequence[str] = SPOOL_INPUTS,
) -> dict[str, str]:
    """The submit description; identity, files and policy last, so nothing can override them."""
    local = _checked(where.local_dir, "DataRootFolder")
    commands = pod_commands(pod, policy)
    from_pod = {key: f"metadata.annotations[{SUBMIT_COMMANDS_ANNOTATION}]" for key in commands
                if key != "accounting_group"}
    commands.update(resource_commands(pod, config))
    commands.update(policy_expressions(pod, config))
    commands.update(
        {
            "universe": "vanilla",
            "initialdir": local,
            "output": RUNNER_LOG,
            "error": RUNNER_LOG,
            "getenv": "false",
            "notification": "never",
            "batch_name": classad_string(f"{pod.namespace}/{pod.name}"),
            "job_max_vacate_time": str(grace_seconds + 10),
            "+InterLinkPodUID": classad_string(_checked(pod.uid, "metadata.uid")),
            "+InterLinkInstance": classad_string(config.instance_id),
            "+InterLinkJobDir": classad_string(local),
        }
    )
    if where.spool:
        names = [c.name for c in pod.all_containers]
        commands.update(
            {
                "executable": f"{local}/{WRAPPER}",
                "should_transfer_files": "YES",
                "when_to_transfer_output": "ON_EXIT",
                "transfer_input_files": ", ".join(spool_inputs),
                "transfer_output_files": output_files(names),
                "preserve_relative_paths": "true",
                "+WantIOProxy": "true",
            }
        )
    else:
        commands.update(
            {
                "executable": f"{local}/pod-runner.sh",
                "transfer_executable": "false",
                "should_transfer_files": "NO",
            }
        )
    check_description(commands, from_pod)
    return commands


WRAPPER_TEMPLATE = """\
#!/bin/bash
# interlink-plugins HTCondor job wrapper (spool mode), generated: every value below is quoted.
# Links the sandbox to the path the pod runner was rendered for, runs the runner (SIGTERM
# forwarded), reports per-container state into the job ad (condor_chirp) while it runs, and leaves
# c/ and pod.exit for Schedd.retrieve.
RUN_DIR={{ run_dir }}
NAMES=({{ names }})
EMPTYDIRS=({{ emptydirs }})
SANDBOX=$PWD
for d in "${EMPTYDIRS[@]}"; do
  mkdir -p -- "emptydir/$d" && chmod 0777 -- "emptydir/$d"
done
mkdir -p -- c
if ! ln -s -- "$SANDBOX" "$RUN_DIR" 2>/dev/null; then
  if [[ -L $RUN_DIR && $(stat -c %u -- "$RUN_DIR") == "$(id -u)" ]]; then
    ln -sfn -- "$SANDBOX" "$RUN_DIR"
  else
    echo "job wrapper: $RUN_DIR exists and is not this job's link" >&2
    exit 1
  fi
fi

CHIRP=$(command -v condor_chirp || echo /usr/libexec/condor/condor_chirp)
report() {
  local name f v line state=''
  for name in "${NAMES[@]}"; do
    line=$name
    for f in started finished exit restarts last waiting reason; do
      v=''
      [[ -e c/$name/$f ]] && IFS= read -r v <"c/$name/$f"
      v=${v//[|;\\"\\\\[:cntrl:]]/ }
      line+="|$v"
    done
    state+="$line;"
  done
  if [[ $state != "$LAST" ]] && "$CHIRP" set_job_attr {{ chirp_attr }} "\\"$state\\"" >/dev/null 2>&1; then
    LAST=$state
  fi
}
LAST=''
if [[ -x $CHIRP ]]; then
  (trap 'exit 0' TERM; while :; do report; sleep 2; done) &
  REPORTER=$!
fi

bash "$RUN_DIR/pod-runner.sh" &
RUNNER=$!
trap 'kill -TERM "$RUNNER" 2>/dev/null' TERM INT
while :; do
  wait "$RUNNER"
  rc=$?
  kill -0 "$RUNNER" 2>/dev/null || break
done
if [[ -n ${REPORTER-} ]]; then
  kill "$REPORTER" 2>/dev/null
  wait "$REPORTER" 2>/dev/null
fi
[[ -e pod.exit ]] || printf '%s\\n' "$rc" >pod.exit
# every file named in transfer_output_files must exist, or the job is held
for name in "${NAMES[@]}"; do
  mkdir -p -- "c/$name"
  [[ -e c/$name/log ]] || : >"c/$name/log"
done
rm -f -- "$RUN_DIR"
exit "$rc"
"""


def wrapper_script(where: JobLayout, names: Sequence[str], emptydirs: Sequence[str]) -> str:
    return templating.environment().from_string(WRAPPER_TEMPLATE).render(
        run_dir=where.run_dir, names=list(names), emptydirs=list(emptydirs), chirp_attr=CHIRP_ATTR
    )


def parse_chirped(text: str) -> Mapping[str, list[str]]:
    """InterLinkContainers as chirped by the wrapper: name -> [started, finished, exit, restarts, last,
    waiting, reason]."""
    out: dict[str, list[str]] = {}
    for record in text.split(";"):
        fields = record.split("|")
        if len(fields) == 8 and fields[0]:
            out[fields[0]] = fields[1:]
    return out
