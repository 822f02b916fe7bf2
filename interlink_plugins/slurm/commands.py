"""The SLURM command lines the backend runs, as pure functions of their inputs (no I/O).

Each command's output format is named here beside its argv, and read by slurm/parse.py. ``prefix`` is
the admin's configured command (SbatchPath, SqueuePath, ...: an argv prefix, e.g. ``("ssh", "login",
"squeue")``). Every value is one argv element: nothing here is ever seen by a shell.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from interlink_plugins.slurm.memory import RUNNER_OUTPUT

# squeue -o: id, state, reason, node, start, end, comment, workdir; fields apart by the unit separator
# (none of them can hold one), one job a line
SQUEUE_FIELDS = ("%i", "%T", "%r", "%N", "%S", "%e", "%k", "%Z")
SQUEUE_FORMAT = "\x1f".join(SQUEUE_FIELDS)
# the adoption query's: the same, and the uid each job runs as (adoption takes only jobs of its own uids)
SQUEUE_MINE_FIELDS = (*SQUEUE_FIELDS, "%U")
SQUEUE_MINE_FORMAT = "\x1f".join(SQUEUE_MINE_FIELDS)
# sacct -P -o: '|' apart, WorkDir last (a path may hold '|': the parser keeps the rest of the line); the
# same fields for a status and for finding a pod's job by its job dir
SACCT_FIELDS = ("JobID", "State", "ExitCode", "Start", "End", "NodeList", "WorkDir")
SACCT_FIND_SINCE = "now-7days"  # how far back a pod's job is looked for by its job dir
# sinfo -N -o: one line per node and partition
SINFO_FIELDS = ("%N", "%c", "%m", "%G", "%T", "%P")
SINFO_FORMAT = "|".join(SINFO_FIELDS)

# the job's environment is SLURM's own variables only: sbatch unsets its environment and reads an empty
# one. (--export=NIL/NONE would do the same, but SLURM 22.05 then loads the user's login environment on
# the node, `su - <user>` at every job start: slow, and not clean.)
JOB_ENVIRONMENT = "--export-file=/dev/null"


def comment(uid: str, instance_id: str) -> str:
    """The --comment a job carries: the pod's UID and the plugin instance that owns it."""
    return f"il:{uid}@{instance_id}"


def uid_from_comment(text: str, instance_id: str) -> str | None:
    """The pod UID in a job's comment, when the job is one of this instance's (else None)."""
    prefix, _, instance = text.rpartition("@")
    if instance != instance_id or not prefix.startswith("il:"):
        return None
    return prefix[3:]


def sbatch(
    prefix: Sequence[str], *, comment: str, job_dir: Path, requeue: bool, options: Sequence[str], script: Path
) -> list[str]:
    """sbatch --parsable of a pod's job: identity, job dir, output, environment, then the pod's options."""
    return [
        *prefix,
        "--parsable",
        f"--comment={comment}",
        f"--chdir={job_dir}",
        f"--output={job_dir}/{RUNNER_OUTPUT}",
        JOB_ENVIRONMENT,
        "--requeue" if requeue else "--no-requeue",
        *options,
        str(script),
    ]


def squeue_mine(prefix: Sequence[str], *, every_user: bool = False) -> list[str]:
    """Every job of the plugin's user still known to slurmctld (adoption, find); with ``every_user`` (a root
    plugin, whose --uid jobs are not its own) every user's, which the caller filters by uid."""
    return [*prefix, "-h", "-t", "all", *([] if every_user else ["--me"]), "-o", SQUEUE_MINE_FORMAT]


def squeue_jobs(prefix: Sequence[str], job_ids: Sequence[str]) -> list[str]:
    """The given jobs, in every state slurmctld still has them (one call per poll)."""
    return [*prefix, "-h", "-t", "all", "-j", ",".join(job_ids), "-o", SQUEUE_FORMAT]


def sacct(prefix: Sequence[str], job_ids: Sequence[str] | None, *, completion: bool, since: str = "") -> list[str]:
    """sacct from accounting (-X: allocations only), or with ``completion`` from jobcomp (-c); the given
    jobs, or every job since ``since``."""
    source = ["-c", "-n", "-P"] if completion else ["-n", "-P", "-X"]
    ids = ["-j", ",".join(job_ids)] if job_ids else []
    window = ["-S", since] if since else []
    return [*prefix, *source, *ids, *window, "-o", ",".join(SACCT_FIELDS)]


def scancel(prefix: Sequence[str], job_id: str, *, graceful: bool) -> list[str]:
    """Graceful: SIGTERM to every process of the job; without --full the batch script (our runner) never
    sees it. Otherwise a plain cancel."""
    signal = ["--full", "--signal=TERM"] if graceful else []
    return [*prefix, *signal, job_id]


def sinfo(prefix: Sequence[str]) -> list[str]:
    """Every node of every partition with its CPUs, memory, gres and state (the ping's capacity)."""
    return [*prefix, "-h", "-N", "-o", SINFO_FORMAT]
