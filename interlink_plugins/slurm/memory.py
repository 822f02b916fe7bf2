"""slurmstepd's memory-kill line, read from the end of a job's output file (runner.out).

The file belongs to the job, which may have replaced it with a link, a FIFO or a huge file: it is
opened below the data root without following links, only as a regular file, and only its last
OUTPUT_TAIL_BYTES are read. The job can write such a line itself; it then only mislabels its own pod.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

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


def output_tail(data_root: Path, job_dir: str) -> bytes:
    """The last bytes of <job dir>/runner.out, for a job dir directly below the data root (b"" otherwise)."""
    path = Path(job_dir)
    if path.parent != data_root or path.name in ("", ".", ".."):
        return b""
    try:
        root_fd = os.open(data_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            dir_fd = os.open(path.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
        finally:
            os.close(root_fd)
        try:
            fd = os.open(RUNNER_OUTPUT, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        return b""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return b""
        os.lseek(fd, max(0, info.st_size - OUTPUT_TAIL_BYTES), os.SEEK_SET)
        return os.read(fd, OUTPUT_TAIL_BYTES)
    except OSError:
        return b""
    finally:
        os.close(fd)
