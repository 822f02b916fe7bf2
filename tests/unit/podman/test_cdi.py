"""CDI spec scanning for `check`: which device names the host's spec files define."""

from __future__ import annotations

import json
from pathlib import Path

from interlink_plugins.podman.cdi import CdiScan, gpu_map_report, scan_specs


def _specs(tmp_path: Path) -> list[Path]:
    etc, run = tmp_path / "etc-cdi", tmp_path / "run-cdi"
    etc.mkdir()
    run.mkdir()
    (etc / "nvidia.yaml").write_text(
        "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n"
        "  - name: '0'\n    containerEdits: {deviceNodes: [{path: /dev/nvidia0}]}\n"
        "  - name: all\n    containerEdits: {}\n"
    )
    (run / "mig.json").write_text(json.dumps({"cdiVersion": "0.3.0", "kind": "nvidia.com/gpu",
                                              "devices": [{"name": "0:1", "containerEdits": {}}]}))
    (run / "notes.txt").write_text("kind: not/a-spec\n")  # not a spec file name: ignored
    return [etc, run, tmp_path / "missing-dir"]


def test_scan_reads_yaml_and_json_specs_in_every_directory(tmp_path: Path) -> None:
    dirs = _specs(tmp_path)
    scan = scan_specs(dirs)
    assert sorted(scan.devices) == ["nvidia.com/gpu=0", "nvidia.com/gpu=0:1", "nvidia.com/gpu=all"]
    assert scan.devices["nvidia.com/gpu=0:1"] == dirs[1] / "mig.json" and scan.broken == []


def test_broken_specs_are_reported_not_skipped(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: [unclosed\n")
    (tmp_path / "nokind.json").write_text(json.dumps({"devices": [{"name": "0"}]}))
    (tmp_path / "flat.json").write_text(json.dumps({"kind": "gpu", "devices": [{"name": "0"}]}))
    scan = scan_specs([tmp_path])
    assert scan.devices == {}
    assert sorted(Path(line.split(":")[0]).name for line in scan.broken) == ["bad.yaml", "flat.json", "nokind.json"]
    report = gpu_map_report({}, scan)
    assert len(report) == 3 and not any(ok for ok, _ in report)


def test_report_names_missing_devices_and_how_to_generate_them(tmp_path: Path) -> None:
    scan = scan_specs(_specs(tmp_path))
    report = gpu_map_report({"nvidia.com/gpu": ["nvidia.com/gpu=0", "nvidia.com/gpu=1"],
                             "nvidia.com/mig-1g.10gb": ["nvidia.com/gpu=0:1"]}, scan)
    (gpu_ok, gpu_line), (mig_ok, mig_line) = report  # sorted by resource
    assert mig_ok and "nvidia.com/mig-1g.10gb: 1 CDI devices defined" in mig_line and "mig.json" in mig_line
    assert not gpu_ok and "nvidia.com/gpu=1 not defined" in gpu_line and "nvidia.com/gpu=0," not in gpu_line
    assert "nvidia-ctk cdi generate" in gpu_line


def test_an_empty_host_defines_nothing() -> None:
    report = gpu_map_report({"nvidia.com/gpu": ["nvidia.com/gpu=0"]}, CdiScan())
    assert report == [(False, report[0][1])] and "nvidia.com/gpu=0 not defined" in report[0][1]
