"""Multi-node MPI for real: a pod asking for 2 tasks on 2 nodes runs Debian's Open MPI with one rank
per node, over HTTP against a REAL two-node SLURM cluster (slurm/multinode: slurmctld on the host,
two slurmd nodes in podman containers sharing the munge key and the data root).

The containers run with runtime `none`: the MPI program is the node's own Open MPI (mpi4py), the
ranks are wired up by SLURM's PMIx plugin (srun, the default launcher; the cluster's MpiDefault is
pmix, as on most sites) or by Open MPI's mpirun, which starts its daemons on the nodes through srun.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, PluginProcess, exit_codes, states
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e

STATE = Path(os.environ.get("IL_MPI_SLURM_STATE", "/tmp/il-slurm-mpi"))
NAME = os.environ.get("IL_MPI_NAME", "il-mpi")
NODES = (f"{NAME}1", f"{NAME}2")
# a real MPI exchange (allreduce of rank + 1 over both nodes), then one line per rank
HELLO = textwrap.dedent(
    """
    import os
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    total = comm.allreduce(comm.Get_rank() + 1)
    print(f"rank {comm.Get_rank()} of {comm.Get_size()} on {MPI.Get_processor_name()}"
          f" node {os.environ['SLURMD_NODENAME']} sum {total}", flush=True)
    """
)
TWO_NODES = {"slurm-job.vk.io/flags": "--nodes=2 --ntasks-per-node=1"}


@pytest.fixture(scope="module")
def cluster(podman_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    data = tmp_path_factory.mktemp("mpi-data")
    env = {
        **os.environ,
        "MULTINODE_NAME": NAME,
        "SLURMCTLD_PORT": os.environ.get("IL_MPI_CTLD_PORT", "6957"),
        "SLURMD_PORT": os.environ.get("IL_MPI_SLURMD_PORT", "6958"),
        "SLURM_MIN_JOB_AGE": "10",
    }
    up = subprocess.run(["bash", str(ROOT / "slurm" / "multinode" / "multinode-up.sh"), str(STATE), str(data)],
                        capture_output=True, text=True, timeout=900, env=env)
    assert up.returncode == 0, up.stderr[-3000:]
    yield {"SLURM_CONF": str(STATE / "slurm.conf"), "data": str(data)}
    subprocess.run(["bash", str(ROOT / "slurm" / "multinode" / "multinode-down.sh"), str(STATE)],
                   capture_output=True, timeout=120, env=env)


@pytest.fixture
def factory(cluster: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., PluginProcess]]:
    started: list[PluginProcess] = []

    def make(**config: Any) -> PluginProcess:
        workdir = tmp_path / f"plugin{len(started)}"
        workdir.mkdir()
        process = PluginProcess(
            workdir,
            {"Backend": "slurm", "ContainerRuntime": "none", "LogFormat": "text",
             # the job dirs must be on the data root both nodes see
             "DataRootFolder": str(Path(cluster["data"]) / f"{tmp_path.name}-{len(started)}"),
             "InstanceId": f"m{len(started)}-{tmp_path.name[-12:]}", **config},
            env={"SLURM_CONF": cluster["SLURM_CONF"]},
        )
        started.append(process)
        return process.start()

    yield make
    for process in started:
        process.stop()


def ranks(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith("rank "))


def expected_ranks() -> list[str]:
    return [f"rank {r} of 2 on {NODES[r]} node {NODES[r]} sum 3" for r in (0, 1)]


def test_two_ranks_on_two_nodes_with_srun_and_pmix(factory: Callable[..., PluginProcess],
                                                   cluster: dict[str, str]) -> None:
    plugin = factory()
    body = pod_body("mpi-srun", [container("hello", ["python3", "-c", HELLO])],
                    annotations={**TWO_NODES, "slurm-job.vk.io/mpi-flags": "--kill-on-bad-exit=1"})
    job_id = plugin.create(body)["PodJID"]
    status = plugin.wait_done(body, timeout=90)
    assert exit_codes(status) == {"hello": 0}, status
    log = plugin.logs(body, "hello").text
    assert ranks(log) == expected_ranks(), log
    # SLURM gave the job both nodes, one task each
    nodes = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%N %D"], capture_output=True,
                           text=True, timeout=30, env={**os.environ, "SLURM_CONF": cluster["SLURM_CONF"]})
    assert nodes.stdout.split() == [f"{NAME}[1-2]", "2"], nodes
    terminated = states(status)["hello"]["terminated"]
    assert terminated["reason"] == "Completed" and f"on node {NAME}[1-2]" in terminated["message"]


def test_two_ranks_on_two_nodes_with_mpirun(factory: Callable[..., PluginProcess]) -> None:
    # Open MPI's own launcher: mpirun finds the allocation and starts its daemons with srun
    plugin = factory(MpiLauncher="mpirun --allow-run-as-root -np @NTASKS@")
    body = pod_body("mpi-mpirun", [container("hello", ["python3", "-c", HELLO])],
                    annotations={**TWO_NODES, "slurm-job.vk.io/mpi-flags": "true"})
    plugin.create(body)
    status = plugin.wait_done(body, timeout=90)
    assert exit_codes(status) == {"hello": 0}, status
    log = plugin.logs(body, "hello").text
    assert ranks(log) == expected_ranks(), log


def test_a_failing_rank_fails_the_container(factory: Callable[..., PluginProcess]) -> None:
    plugin = factory()
    # both ranks have printed (barrier) before rank 1 fails and srun kills the other
    failing = HELLO + "\ncomm.Barrier()\nif comm.Get_rank() == 1:\n    raise SystemExit(7)\n"
    body = pod_body("mpi-fail", [container("hello", ["python3", "-c", failing])],
                    annotations={**TWO_NODES, "slurm-job.vk.io/mpi-flags": "--kill-on-bad-exit=1"})
    plugin.create(body)
    status = plugin.wait_done(body, timeout=90)
    assert exit_codes(status)["hello"] != 0, status
    assert ranks(plugin.logs(body, "hello").text) == expected_ranks()
