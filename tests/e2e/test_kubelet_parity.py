"""The kubelet-parity suite (our vk-test-set equivalent) on every backend, against real daemons.

One plugin per backend runs every case of tests/kubelet/cases.py at once (threads), each case
driven the way interLink 0.6.2 drives a plugin (tests/kubelet/driver.py); one test per case and
backend reports the result. SLURM runs containers with runtime podman and probes enabled;
Podman natively; HTCondor on the test pool with runtime podman inside its execute node (rootless,
as the job's user). Images are the suite's local stand-ins (tests/kubelet/images/build.sh), so
every plugin sets ``PullPolicy: never``: no registry is involved here.

HTCondor cases use the shared pool: run them under ``flock /tmp/il-htcondor.lock``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.kits import HTCondorKit, PodmanKit
from tests.harness import PluginProcess
from tests.kubelet.cases import CASES, Case
from tests.kubelet.driver import CaseResult, CaseRun

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
# keys the security work makes mandatory for a root plugin (a warning on versions without them)
ROOT_JOBS = {"AllowRootJobs": True}
SUITE_CONFIG = {"PullPolicy": "never", "PollInterval": 1, "CommandTimeout": 30, **ROOT_JOBS}


class SuiteRun:
    """Every case started at once against one plugin; results collected as they come."""

    def __init__(self, plugin: PluginProcess) -> None:
        self.plugin = plugin
        self.started = time.monotonic()
        self._pool = ThreadPoolExecutor(max_workers=len(CASES), thread_name_prefix="kubelet-case")
        base_url = f"http://127.0.0.1:{plugin.port}"
        self.futures: dict[str, Future[CaseResult]] = {
            case.key: self._pool.submit(CaseRun(base_url, case).run) for case in CASES
        }

    def result(self, key: str) -> CaseResult:
        return self.futures[key].result(timeout=900)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        wall = time.monotonic() - self.started
        print(f"\nkubelet-parity on {self.plugin.config['Backend']}: {len(CASES)} cases in {wall:.0f}s wall")


def _run_suite(make: Callable[[], PluginProcess]) -> Iterator[SuiteRun]:
    run = SuiteRun(make())
    yield run
    run.close()


@pytest.fixture(scope="module")
def podman_suite(tmp_path_factory: pytest.TempPathFactory, kubelet_images: dict[str, str]) -> Iterator[SuiteRun]:
    kit = PodmanKit(tmp_path_factory.mktemp("kubelet-podman"), remote=False)
    yield from _run_suite(lambda: kit.plugin(**SUITE_CONFIG))
    kit.close()


@pytest.fixture(scope="module")
def slurm_suite(tmp_path_factory: pytest.TempPathFactory, slurm_cluster: dict[str, str],
                kubelet_images: dict[str, str]) -> Iterator[SuiteRun]:
    workdir = tmp_path_factory.mktemp("kubelet-slurm")
    plugin = PluginProcess(
        workdir,
        {"Backend": "slurm", "ContainerRuntime": "podman", "EnableProbes": True,
         "InstanceId": f"kp-{workdir.name[-10:]}", **SUITE_CONFIG},
        env={"SLURM_CONF": slurm_cluster["SLURM_CONF"]},
    )
    yield from _run_suite(plugin.start)
    plugin.stop()


@pytest.fixture(scope="module")
def htcondor_suite(tmp_path_factory: pytest.TempPathFactory, htcondor_pool: dict[str, str],
                   kubelet_images: dict[str, str]) -> Iterator[SuiteRun]:
    kit = HTCondorKit(tmp_path_factory.mktemp("kubelet-htcondor"), htcondor_pool)
    load = subprocess.run(["bash", str(ROOT / "htcondor" / "htcondor-images.sh"), *kubelet_images],
                          capture_output=True, text=True, timeout=900,
                          env={"HTCONDOR_NAME": htcondor_pool["name"], "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert load.returncode == 0, load.stderr[-3000:]
    workdir = kit.workdir / "plugin-kubelet"
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o711)
    plugin = PluginProcess(
        workdir,
        {**kit.base_config(), "ContainerRuntime": "podman", "PodmanPath": "il-job-podman", "EnableProbes": True,
         "InstanceId": f"kh-{workdir.parent.name[-10:]}", **SUITE_CONFIG},
        env={"CONDOR_CONFIG": "/dev/null"},
    )
    yield from _run_suite(plugin.start)
    plugin.stop()
    kit.close()


def _check(run: SuiteRun, case: Case, backend: str, request: pytest.FixtureRequest) -> None:
    if backend in case.xfail:
        request.applymarker(pytest.mark.xfail(reason=case.xfail[backend], strict=False))
    result = run.result(case.key)
    print(f"{backend} {case.key}: {'ok' if result.ok else 'FAILED'} in {result.seconds:.0f}s {result.phases}")
    if not result.ok:
        print(result.detail[:4000])
    assert result.ok, result.detail


@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_podman(podman_suite: SuiteRun, case: Case, request: pytest.FixtureRequest) -> None:
    _check(podman_suite, case, "podman", request)


@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_slurm(slurm_suite: SuiteRun, case: Case, request: pytest.FixtureRequest) -> None:
    _check(slurm_suite, case, "slurm", request)


@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_htcondor(htcondor_suite: SuiteRun, case: Case, request: pytest.FixtureRequest) -> None:
    _check(htcondor_suite, case, "htcondor", request)

