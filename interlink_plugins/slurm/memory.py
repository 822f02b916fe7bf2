"""slurmstepd's memory-kill line, read from the end of a job's output file (runner.out).

The file belongs to the job, which may have replaced it with a link, a FIFO or a huge file: it is
read through core/safefs (no link followed, regular files only, as the job dir's owner), and only its
last OUTPUT_TAIL_BYTES. The job can write such a line itself; it then only mislabels its own pod.
"""

from __future__ import annotations

import re

from interlink_plugins.core import safefs

RUNNER_OUTPUT = "runner.out"  # sbatch --output of every job: the runner's and slurmstepd's lines
OUTPUT_TAIL_BYTES = 65536

# e.g.  slurmstepd-n1: error: StepId=7.batch exceeded memory limit (172654592 > 104857600), being killed
#       slurmstepd-n1: error: Detected 1 oom-kill event(s) in StepId=7.batch. Some of your processes may ...
_STEPD_MEMORY = re.compile(
    rb"^slurmstepd(?:-[A-Za-z0-9._-]{1,64})?: error: ("
    rb"StepId=[0-9A-Za-z.+_]{1,40} exceeded memory limit \([0-9]{1,20} > [0-9]{1,20}\), being killed"
    rb"|Detected [0-9]{1,9} oom-kill event\(s\) in StepId=[0-9A-Za-z.+_]{1,40}\."
    rb")",
    re.MULTILINE,
)


def memory_kill_detail(output_tail: bytes) -> str:
    """The last memory-kill line of slurmstepd in this text, without its prefix ("" when none)."""
    found = _STEPD_MEMORY.findall(output_tail)
    return found[-1].decode("ascii") if found else ""


def output_tail(job_dir: str) -> bytes:
    """The last bytes of <job dir>/runner.out (b"" when it is missing, refused or unreadable)."""
    try:
        return safefs.read_tail(safefs.job_location(job_dir) / RUNNER_OUTPUT, OUTPUT_TAIL_BYTES) or b""
    except (OSError, ValueError):  # Refused (a link, a FIFO, ...) is an OSError; "..", "" a ValueError
        return b""
