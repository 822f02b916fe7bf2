"""The bind-source check on real files: core/volumes/bindcheck.py (Podman backend) and the pod runner's
check_binds (SLURM runtimes) give the same verdict on the same trees, with hostile names."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from interlink_plugins.core.podrunner.plan import RunPlan
from interlink_plugins.core.volumes.bindcheck import BindSource, bind_sources, refusal
from interlink_plugins.core.volumes.mounts import Mount
from tests.unit.core.podrunner import test_render as runscript_kit
from tests.unit.core.podrunner.test_render import main, plan_for, sh, state, wait_until

start_pod = runscript_kit.start_pod  # runs a rendered runner in the background, killed at teardown

ODD = "a b\n$(touch PWNED)'\"*"  # a legal volume/subPath component: the template layer quotes it


def tree(tmp_path: Path) -> Path:
    """<root>/emptydir/<ODD>/sub/file, and a few traps beside it."""
    root = tmp_path / "job"
    (root / "emptydir" / ODD / "sub").mkdir(parents=True)
    (root / "emptydir" / ODD / "sub" / "file").write_text("x")
    (root / "emptydir" / ODD / "link").symlink_to("/")
    (root / "emptydir" / ODD / "dirlink").symlink_to(root / "emptydir" / ODD / "sub")
    return root


CASES = [
    # (source below root, refused because ...)
    (f"emptydir/{ODD}/sub", ""),
    (f"emptydir/{ODD}/sub/file", ""),
    (f"emptydir/{ODD}", ""),
    (f"emptydir/{ODD}/link", "is a symlink"),
    (f"emptydir/{ODD}/link/etc", "is a symlink"),
    (f"emptydir/{ODD}/dirlink", "is a symlink"),  # even one that stays inside
    (f"emptydir/{ODD}/gone", "does not exist"),
    (f"emptydir/{ODD}/sub/file/x", "is not a directory"),
    (f"emptydir/{ODD}/../{ODD}/sub", "'.' or '..'"),
]


@pytest.mark.parametrize(("rel", "why"), CASES)
def test_python_check(tmp_path: Path, rel: str, why: str) -> None:
    root = tree(tmp_path)
    problem = refusal([BindSource(str(root), f"{root}/{rel}", "volume 'v' subPath 's'")])
    if not why:
        assert problem == ""
    else:
        assert why in problem and problem.startswith("volume 'v' subPath 's': ") and "refused" in problem, problem


def test_python_check_outside_the_root(tmp_path: Path) -> None:
    root = tree(tmp_path)
    assert "is not below" in refusal([BindSource(str(root), "/etc", "v")])
    assert "is not below" in refusal([BindSource(str(root), f"{root}x/emptydir", "v")])
    assert refusal([BindSource("/", "/etc", "v")]) == ""


def test_only_mounts_with_a_root_are_checked() -> None:
    mounts = [Mount("/a", "/x", root="/", what="volume 'a'"), Mount("/b", "/y")]
    assert bind_sources(mounts) == (BindSource("/", "/a", "volume 'a'"),)


def runner_plan(root: Path, rel: str) -> RunPlan:
    bind = BindSource(str(root), f"{root}/{rel}", f"volume {ODD!r} subPath 's'")
    return plan_for(root, main("c", sh('echo ran > "$1"', str(root / "ran")), binds=(bind,)),
                    backoff_initial_seconds=0.2, backoff_max_seconds=0.2)


@pytest.mark.parametrize(("rel", "why"), CASES)
def test_runner_check(tmp_path: Path, rel: str, why: str, start_pod: Callable[[RunPlan], object]) -> None:
    root = tree(tmp_path)
    start_pod(runner_plan(root, rel))
    if not why:
        wait_until(lambda: state(root, "c", "exit") is not None)
        assert (root / "ran").read_text() == "ran\n"
    else:
        wait_until(lambda: (state(root, "c", "waiting") or "").startswith("CreateContainerConfigError"))
        waiting = state(root, "c", "waiting") or ""
        assert why in waiting and "refused" in waiting, waiting
        time.sleep(0.5)  # two more retries: still refused, never ran
        assert not (root / "ran").exists() and state(root, "c", "started") is None
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()


def test_runner_starts_once_the_source_is_fine_again(tmp_path: Path, start_pod: Callable[[RunPlan], object]) -> None:
    """The refusal is retried with the back-off: a directory put back lets the container start."""
    root = tree(tmp_path)
    start_pod(runner_plan(root, f"emptydir/{ODD}/link"))
    wait_until(lambda: (state(root, "c", "waiting") or "").startswith("CreateContainerConfigError"))
    link = root / "emptydir" / ODD / "link"
    link.unlink()
    link.mkdir()
    wait_until(lambda: state(root, "c", "exit") == "0")
    assert (root / "ran").read_text() == "ran\n"


def test_cost_per_start(tmp_path: Path) -> None:
    """What the check costs per container start: four binds, five components each (printed; bound)."""
    root = tree(tmp_path)
    binds = [BindSource(str(root), f"{root}/emptydir/{ODD}/sub/file", "v")] * 4
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        assert refusal(binds) == ""
    per_start = (time.perf_counter() - started) / rounds
    print(f"bindcheck: {per_start * 1e6:.1f} us per container start (4 binds)")
    assert per_start < 0.01


def test_pins_rewrite_only_the_pinned_mount_sources() -> None:
    """podman's --mount CSV: a source with a comma or quote is quoted; only pinned sources change."""
    from interlink_plugins.core.runtimes.containers import _csv_field
    from interlink_plugins.podman.bindcheck import Pins

    def word(source: str, target: str) -> str:
        return "--mount=" + ",".join(_csv_field(f) for f in ("type=bind", f"source={source}", f"destination={target}"))

    odd = '/job/emptydir/a,b"c/sub'
    pins = Pins({odd: "/state/binds-x/uid-c-0-0", "/job/emptydir/v": "/state/binds-x/uid-c-0-1"})
    words = ["run", word(odd, "/x"), word("/job/emptydir/other", "/y"), word("/job/emptydir/v", "/z,w"), "--", "img"]
    assert pins.argv(words) == ["run", word("/state/binds-x/uid-c-0-0", "/x"), word("/job/emptydir/other", "/y"),
                                word("/state/binds-x/uid-c-0-1", "/z,w"), "--", "img"]
    assert Pins().argv(words) == words
