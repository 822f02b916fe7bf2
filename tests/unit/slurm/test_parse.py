"""slurm/parse.py and slurm/commands.py against what a real SLURM 22.05 cluster printed.

tests/fixtures/slurm/*.txt are recorded by tests/fixtures/slurm/recapture.py (its own cluster, one job
per case: completed, failed, killed by a signal, out of memory, running, pending, cancelled, timeout,
deadline, a job array); captures.json says which job id is which case. The edge cases SLURM cannot be
made to print on demand (a truncated line, a row split by a newline, an unknown state word, a '|' in a
job dir) are the recorded lines cut or altered here.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from interlink_plugins.backends import parse_config, policy_from_config
from interlink_plugins.core.commands.local import CommandResult
from interlink_plugins.slurm import commands, parse
from interlink_plugins.slurm.backend import SlurmBackend
from interlink_plugins.slurm.states import may_be_memory_kill

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "slurm"
CAPTURES: dict[str, Any] = json.loads((FIXTURES / "captures.json").read_text())
IDS: dict[str, str] = CAPTURES["jobs"]["ids"]
INSTANCE = CAPTURES["jobs"]["instance"]


def fixture(name: str) -> str:
    return (FIXTURES / f"{name}.txt").read_text()


@pytest.fixture(autouse=True)
def capture_zone() -> Iterator[None]:
    """SLURM printed local times of the capture's zone (UTC): read them in that zone."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def by_case(rows: Sequence[parse.SqueueRow | parse.SacctRow]) -> dict[str, Any]:
    """The case each recorded row belongs to, from its job dir (capture-<case>)."""
    return {row.work_dir.rsplit("/capture-", 1)[1]: row for row in rows if row.job_id in IDS.values()}


# --- the recorded command lines are the ones the backend runs -------------------------------------


def test_the_recorded_command_lines_are_todays() -> None:
    """A format changed in commands.py without a recapture fails here (the fixtures would be stale)."""
    everything = sorted(IDS.values(), key=int)  # in submission order
    assert CAPTURES["squeue_status"]["argv"] == commands.squeue_jobs(["squeue"], everything)
    assert CAPTURES["squeue_mine"]["argv"] == commands.squeue_mine(["squeue"])
    assert CAPTURES["sacct_completion"]["argv"] == commands.sacct(["sacct"], everything, completion=True)
    assert CAPTURES["sacct_accounting"]["argv"] == commands.sacct(["sacct"], everything, completion=False)
    assert CAPTURES["sacct_find"]["argv"] == commands.sacct(["sacct"], None, completion=True,
                                                            since=commands.SACCT_FIND_SINCE)
    assert CAPTURES["sinfo_idle"]["argv"] == commands.sinfo(["sinfo"])
    assert CAPTURES["scancel_invalid"]["argv"] == commands.scancel(["scancel"], "999999", graceful=True)
    sbatch = CAPTURES["sbatch_parsable"]["argv"]
    job_dir = Path(sbatch[3].removeprefix("--chdir="))
    assert sbatch == commands.sbatch(["sbatch"], comment=commands.comment("parsable", INSTANCE), job_dir=job_dir,
                                     requeue=False, options=["--hold"], script=job_dir / "pod-runner.sh")


def test_argv_builders_prefix_ids_and_graceful_cancel() -> None:
    prefix = ["ssh", "login", "squeue"]
    assert commands.squeue_jobs(prefix, ["1", "2"])[:6] == [*prefix, "-h", "-t", "all"]
    assert commands.squeue_jobs(prefix, ["1", "2"])[-3:] == ["1,2", "-o", commands.SQUEUE_FORMAT]
    assert commands.scancel(["scancel"], "7", graceful=True) == ["scancel", "--full", "--signal=TERM", "7"]
    assert commands.scancel(["scancel"], "7", graceful=False) == ["scancel", "7"]
    assert commands.scancel_pending(["scancel"], "7") == ["scancel", "--state=PENDING", "7"]
    assert commands.sacct(["sacct"], None, completion=False)[:4] == ["sacct", "-n", "-P", "-X"]
    argv = commands.sbatch(["sbatch"], comment="il:u@i", job_dir=Path("/d/ns-u"), requeue=True, options=["--mem=5"],
                           script=Path("/d/ns-u/pod-runner.sh"))
    assert argv == ["sbatch", "--parsable", "--comment=il:u@i", "--chdir=/d/ns-u", "--output=/d/ns-u/runner.out",
                    "--export-file=/dev/null", "--requeue", "--mem=5", "/d/ns-u/pod-runner.sh"]


def test_comment_names_the_pod_and_the_instance() -> None:
    assert commands.uid_from_comment(commands.comment("u-1", "inst"), "inst") == "u-1"
    assert commands.uid_from_comment("il:u-1@other", "inst") is None
    assert commands.uid_from_comment("u-1@inst", "inst") is None
    assert commands.uid_from_comment("", "inst") is None
    # a comment may hold '@' before the instance: the last one separates
    assert commands.uid_from_comment("il:a@b@inst", "inst") == "a@b"


# --- squeue -------------------------------------------------------------------------------------

# case -> (state word, active, running, abnormal reason, waiting reason, detail, on a node)
SQUEUE_EXPECTED = {
    "completed": ("COMPLETED", False, False, "", "", "", True),
    "failed": ("FAILED", False, False, "", "", "NonZeroExitCode", True),
    "signalled": ("FAILED", False, False, "", "", "JobLaunchFailure", True),
    "oom": ("OUT_OF_MEMORY", False, False, "OOMKilled", "", "OutOfMemory", True),
    "running": ("RUNNING", True, True, "", "", "", True),
    "held": ("PENDING", True, False, "", "Pending", "JobHeldUser", False),
    "begin": ("PENDING", True, False, "", "Pending", "BeginTime", False),
    "cancelled-running": ("CANCELLED", False, False, "Cancelled", "", "", True),
    "cancelled-pending": ("CANCELLED", False, False, "Cancelled", "", "JobHeldUser", False),
    "timeout": ("TIMEOUT", False, False, "DeadlineExceeded", "", "TimeLimit", True),
    "deadline": ("DEADLINE", False, False, "DeadlineExceeded", "", "DeadLine", False),
}


def test_squeue_status_of_every_recorded_case() -> None:
    rows = parse.parse_squeue(fixture("squeue_status"))
    cases = by_case(rows)
    assert set(SQUEUE_EXPECTED) <= set(cases)
    for case, (word, active, running, abnormal, waiting, detail, on_node) in SQUEUE_EXPECTED.items():
        row = cases[case]
        job = parse.squeue_job(row)
        assert (job.job_id, job.state, job.active, job.running) == (IDS[case], word, active, running), case
        assert (job.abnormal_reason, job.waiting_reason, job.detail) == (abnormal, waiting, detail), case
        assert bool(job.node) == on_node, case
        if not active:
            assert job.finished_at.endswith("Z") and job.started_at.endswith("Z"), case
        else:
            assert job.finished_at == "", case  # squeue's end of an active job is a limit, not an end
    assert parse.squeue_job(cases["running"]).started_at == cases["running"].start + "Z"
    assert parse.squeue_job(cases["held"]).started_at == ""  # N/A


def test_squeue_memory_kill_candidates_are_oom_and_signalled_launch_failures() -> None:
    cases = by_case(parse.parse_squeue(fixture("squeue_status")))
    candidates = {case for case, row in cases.items() if may_be_memory_kill(row.state, row.reason, None)}
    assert candidates == {"oom", "signalled"}


def test_squeue_job_arrays_keep_their_task_ids() -> None:
    ids = [row.job_id for row in parse.parse_squeue(fixture("squeue_status"))]
    array, held = IDS["array"], IDS["array-held"]
    assert f"{array}_0" in ids and f"{held}_[0-3]" in ids
    assert all(job_id.isdigit() or "_" in job_id for job_id in ids)


def test_squeue_mine_finds_this_instances_pods_only() -> None:
    rows = parse.parse_squeue_mine(fixture("squeue_mine"))
    assert rows and {row.user_id for row in rows} == {str(CAPTURES["jobs"]["uid"])}  # the uid each job runs as
    assert parse.parse_squeue(fixture("squeue_mine")) == []  # not the status query's format
    owned = {commands.uid_from_comment(row.comment, INSTANCE): row.job_id for row in rows}
    assert owned[None] == IDS["other-instance"]
    for case in SQUEUE_EXPECTED:
        assert owned[case] == IDS[case]
    assert all(row.work_dir.endswith(f"/capture-{commands.uid_from_comment(row.comment, INSTANCE)}")
               for row in rows if commands.uid_from_comment(row.comment, INSTANCE))


def test_squeue_of_an_unknown_job() -> None:
    text = fixture("squeue_invalid")
    assert CAPTURES["squeue_invalid"]["returncode"] != 0
    assert parse.invalid_job_id(text) and not parse.unreachable(text)


def test_squeue_edge_cases_are_skipped_never_guessed() -> None:
    text = fixture("squeue_status")
    lines = text.splitlines()
    assert parse.parse_squeue("") == [] and parse.parse_squeue("\n\n") == []
    # truncated output (a line cut short): the cut line is dropped, the others stay
    cut = "\n".join([*lines[:-1], lines[-1][: len(lines[-1]) // 2]])
    assert len(parse.parse_squeue(cut)) == len(lines) - 1
    # a field holding a newline splits a row in two: neither half is a row
    first = lines[0].split("\x1f")
    split_row = "\x1f".join(first[:2]) + "\n" + "\x1f".join(first[2:])
    assert [r.job_id for r in parse.parse_squeue(split_row + "\n" + "\n".join(lines[1:]))] == \
        [r.job_id for r in parse.parse_squeue("\n".join(lines[1:]))]
    # one field more than asked for is not our format
    assert parse.parse_squeue(lines[0] + "\x1fextra") == []


def test_an_unknown_state_word_is_active_and_waiting_unknown() -> None:
    line = fixture("squeue_status").splitlines()[0].split("\x1f")
    line[1] = "SOMETHING_NEW"
    job = parse.squeue_job(parse.parse_squeue("\x1f".join(line))[0])
    assert (job.state, job.active, job.running, job.waiting_reason) == ("SOMETHING_NEW", True, False, "Unknown")
    assert job.finished_at == ""  # an unknown word is never taken for an end


# --- sacct --------------------------------------------------------------------------------------

# case -> (state, abnormal reason, exit code, signal, on a node)
SACCT_EXPECTED = {
    "completed": ("COMPLETED", "", 0, None, True),
    "failed": ("FAILED", "", 3, None, True),
    "signalled": ("FAILED", "", 0, 9, True),
    "oom": ("OUT_OF_MEMORY", "OOMKilled", 0, 125, True),
    "cancelled-running": ("CANCELLED", "Cancelled", 0, None, True),
    "cancelled-pending": ("CANCELLED", "Cancelled", 0, None, False),
    "timeout": ("TIMEOUT", "DeadlineExceeded", 0, None, True),
    "deadline": ("DEADLINE", "DeadlineExceeded", 0, 1, False),
}


def test_sacct_jobcomp_of_every_ended_case() -> None:
    cases = by_case(parse.parse_sacct(fixture("sacct_completion")))
    assert set(SACCT_EXPECTED) <= set(cases)
    for case, (word, abnormal, code, signal, on_node) in SACCT_EXPECTED.items():
        job = parse.sacct_job(cases[case])
        assert (job.job_id, job.state, job.active, job.abnormal_reason) == (IDS[case], word, False, abnormal), case
        assert (job.exit_code, job.signal, bool(job.node)) == (code, signal, on_node), case
        assert job.started_at.endswith("Z") and job.finished_at.endswith("Z"), case
    timeout = cases["timeout"]
    assert parse.sacct_job(timeout).finished_at == timeout.end + "Z"


def test_sacct_without_slurmdbd_says_accounting_is_disabled() -> None:
    assert CAPTURES["sacct_accounting"]["returncode"] != 0
    assert parse.accounting_disabled(fixture("sacct_accounting"))
    assert not parse.accounting_disabled(fixture("sacct_completion"))


def test_sacct_find_knows_a_job_by_its_job_dir() -> None:
    rows = parse.parse_sacct(fixture("sacct_find"))
    completed = next(row for row in rows if row.work_dir.endswith("/capture-completed"))
    assert completed.job_id == IDS["completed"]
    # the tasks of an array are recorded under their own raw job ids, all with the array's job dir
    assert len([row for row in rows if row.work_dir.endswith("/capture-array")]) == 3


def test_sacct_edge_cases() -> None:
    lines = fixture("sacct_completion").splitlines()
    assert parse.parse_sacct("") == []
    assert len(parse.parse_sacct("\n".join([*lines, lines[0][:10]]))) == len(lines)  # truncated last line
    # a job dir with '|' stays whole (WorkDir is the last field)
    row = parse.parse_sacct(lines[0].rsplit("|", 1)[0] + "|/data/a|b")[0]
    assert row.work_dir == "/data/a|b"
    # sacct with slurmdbd names who cancelled: the first word is the state
    fields = lines[0].split("|")
    fields[1] = "CANCELLED by 0"
    job = parse.sacct_job(parse.parse_sacct("|".join(fields))[0])
    assert (job.state, job.abnormal_reason) == ("CANCELLED", "Cancelled")
    fields[1], fields[2] = "", ""
    job = parse.sacct_job(parse.parse_sacct("|".join(fields))[0])
    assert (job.state, job.exit_code, job.signal, job.active) == ("UNKNOWN", None, None, True)


# --- sinfo --------------------------------------------------------------------------------------


def test_sinfo_of_an_idle_and_a_busy_node() -> None:
    for name in ("sinfo_idle", "sinfo_busy"):
        rows = parse.parse_sinfo(fixture(name))
        assert [row.partition for row in rows] == ["debug", "short"]  # the default's '*' dropped
        assert all(row.usable for row in rows)
        assert all((row.cpus, row.memory_bytes, row.gpus) == (8, 8000 * 2**20, 2) for row in rows)
        resources = parse.capacity(rows, [])
        # one node in two partitions is counted once
        assert (resources.cpus, resources.memory_bytes, dict(resources.gpus)) == (8, 8000 * 2**20,
                                                                                 {"nvidia.com/gpu": 2})
        assert resources.unavailable_reason == ""
        assert parse.capacity(rows, ["short"]).cpus == 8
        assert parse.capacity(rows, ["nosuch"]).cpus == 0


@pytest.mark.parametrize("name", ["sinfo_draining", "sinfo_drained", "sinfo_down"])
def test_sinfo_of_a_drained_or_down_node(name: str) -> None:
    rows = parse.parse_sinfo(fixture(name))
    assert rows and not any(row.usable for row in rows)
    resources = parse.capacity(rows, [])
    assert (resources.cpus, resources.memory_bytes, dict(resources.gpus)) == (0, 0, {})
    assert resources.unavailable_reason == "partition(s) debug, short down or drained"
    assert parse.capacity(rows, ["short"]).unavailable_reason == "partition(s) short down or drained"


def test_sinfo_edge_cases() -> None:
    assert parse.parse_sinfo("") == []
    assert parse.parse_sinfo("n1|8|8000|gpu:2|idle") == []  # truncated
    row = parse.parse_sinfo("n1|8+|(null)|gpu:a100:4(S:0-1),gpu:2,shard:8|unknown_state|p")[0]
    assert (row.cpus, row.memory_bytes, row.gpus, row.usable) == (8, 0, 6, False)
    assert parse.gres_gpus("(null)") == 0


# --- sbatch and scancel ---------------------------------------------------------------------------


def test_sbatch_parsable_prints_the_job_id() -> None:
    text = fixture("sbatch_parsable")
    assert parse.parse_sbatch(text) == text.strip() and text.strip().isdigit()
    assert parse.parse_sbatch("123;cluster\n") == "123"
    assert parse.parse_sbatch("") is None
    assert parse.parse_sbatch("Submitted batch job 5") is None
    assert parse.parse_sbatch("١٢") is None  # digits, but not ASCII ones


@pytest.mark.parametrize("name", ["sbatch_invalid_partition", "sbatch_too_big"])
def test_sbatch_refusals_are_one_line_and_final(name: str) -> None:
    text = fixture(name)
    assert CAPTURES[name]["returncode"] != 0 and len(text.splitlines()) == 2
    detail, throttled = parse.sbatch_refusal(text, 1)
    assert detail == "; ".join(line.strip() for line in text.splitlines())
    assert "Batch job submission failed" in detail and not throttled


def test_sbatch_limits_are_waited_out() -> None:
    # what SLURM prints at a QOS submit limit (needs slurmdbd: not on the capture cluster)
    text = ("sbatch: error: QOSMaxSubmitJobPerUserLimit\n"
            "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, "
            "user's size and/or time limits)\n")
    assert parse.sbatch_refusal(text, 1) == (
        "sbatch: error: QOSMaxSubmitJobPerUserLimit; sbatch: error: Batch job submission failed: Job violates "
        "accounting/QOS policy (job submit limit, user's size and/or time limits)", True)
    assert parse.sbatch_refusal("  \n", 7) == ("sbatch exited 7", False)


def test_scancel_answers() -> None:
    assert parse.cancel_settled(fixture("scancel_invalid"))
    assert parse.cancel_settled(fixture("scancel_completed"))
    assert not parse.cancel_settled("scancel: error: Kill job error on job id 5: Access/permission denied")
    # SLURM 22.05 refuses nothing for a graceful cancel of a pending job: it retries without a word until the
    # command's timeout (recorded: given up after 5 s)
    assert CAPTURES["scancel_signal_pending"]["returncode"] is None and fixture("scancel_signal_pending") == ""
    assert parse.cancel_needs_plain("scancel: error: Kill job error on job id 5: Job is pending execution")


def test_unreachable_controller_words() -> None:
    assert CAPTURES["sinfo_unreachable"]["returncode"] != 0
    assert parse.unreachable(fixture("sinfo_unreachable"))  # recorded with slurmctld stopped
    assert parse.unreachable("squeue: error: Unable to contact slurm controller (connect failure)")
    assert parse.unreachable("slurm_load_jobs error: Unable to contact slurm controller (connect failure)")
    assert parse.unreachable("sbatch: error: Socket timed out on send/recv operation")
    assert not parse.unreachable(fixture("sbatch_invalid_partition"))


def test_slurm_time_is_the_local_time_in_utc() -> None:
    assert parse.slurm_time("2026-12-07T08:51:54") == "2026-12-07T08:51:54Z"
    for unknown in ("", "N/A", "Unknown", "None", "NONE", "garbage"):
        assert parse.slurm_time(unknown) == ""
    os.environ["TZ"] = "CET-1"
    time.tzset()
    assert parse.slurm_time("2026-12-07T08:51:54") == "2026-12-07T07:51:54Z"


# --- the backend reads through the parsers ---------------------------------------------------------


class RecordedSlurm:
    """Stand-in for the SLURM commands: the recorded answers, by command name."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.argvs: list[list[str]] = []

    async def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None) -> CommandResult:
        self.argvs.append(list(argv))
        code, out, err = self.answers[argv[0]]
        return CommandResult(tuple(argv), code, out.encode(), err.encode(), 0.0)


def test_backend_status_and_capacity_come_from_the_recorded_output(tmp_path: Path) -> None:
    runner = RecordedSlurm({"squeue": (0, fixture("squeue_status"), ""), "sinfo": (0, fixture("sinfo_busy"), "")})
    config, _ = parse_config({"ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs")}, environ={})
    backend = SlurmBackend(config, runner, policy_from_config(config.policy_raw))  # type: ignore[arg-type]
    jobs = asyncio.run(backend.query([IDS["running"], IDS["timeout"], IDS["held"]]))
    assert jobs[IDS["running"]].running and jobs[IDS["timeout"]].abnormal_reason == "DeadlineExceeded"
    assert jobs[IDS["held"]].detail == "JobHeldUser"
    resources = asyncio.run(backend.resources())
    assert (resources.cpus, dict(resources.gpus)) == (8, {"nvidia.com/gpu": 2})
    assert runner.argvs[0] == commands.squeue_jobs(["squeue"], [IDS["running"], IDS["timeout"], IDS["held"]])
