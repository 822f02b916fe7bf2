from __future__ import annotations

from pathlib import Path

import pytest

from interlink_plugins.cli import main
from interlink_plugins.config import config_reference_markdown, load_config, parse_config
from interlink_plugins.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_go_plugin_config_works_unchanged_with_warnings(tmp_path: Path) -> None:
    go_config = """
SbatchPath: "/usr/bin/sbatch"
ScancelPath: "/usr/bin/scancel"
SqueuePath: "/usr/bin/squeue"
SinfoPath: "/usr/bin/sinfo"
SidecarPort: "4000"
ExportPodData: true
DataRootFolder: "/tmp/jobs/"
Namespace: "vk"
Tsocks: false
BashPath: /bin/bash
VerboseLogging: true
ErrorsOnlyLogging: false
EnrootPath: /usr/bin/enroot
SingularityDefaultOptions: ["--nv", "--no-eval", "--containall"]
ContainerRuntime: singularity
Flavors:
  default:
    CPUDefault: 2
    MemoryDefault: "16G"
    SlurmFlags: ["--partition=debug"]
SomethingNew: 1
"""
    path = tmp_path / "SlurmConfig.yaml"
    path.write_text(go_config)
    config, warnings = load_config(path)
    assert config.sbatch == ("/usr/bin/sbatch",) and config.sidecar_port == 4000
    assert config.container_runtime == "singularity"
    assert config.flavors["default"].memory_mib == 16 * 1024 and config.flavors["default"].cpus == 2
    assert any("'SomethingNew'" in w and "unknown" in w for w in warnings)
    assert any("'BashPath'" in w for w in warnings)
    assert any("'EnrootPath'" in w and "enroot is not supported" in w for w in warnings)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"Backend": "kubernetes"}, "Backend: 'kubernetes'"),
        ({"SidecarPort": "forty"}, "SidecarPort: expected an integer, got 'forty'"),
        ({"SbatchPath": "ssh login sbatch | tee"}, "SbatchPath"),
        ({"SqueuePath": "$(squeue)"}, "needs a shell"),
        ({"PollInterval": 0}, "PollInterval: must be > 0"),
        ({"Socket": "/run/x.sock"}, "must start with unix://"),
        ({"DefaultFlavor": "gpu"}, "DefaultFlavor: 'gpu' is not a key of Flavors"),
        ({"Taints": [{"Key": "a", "Effect": "Sometimes"}]}, "effect 'Sometimes'"),
        ({"ContainerRuntime": "enroot"}, "'enroot' is not supported"),
        ({"ContainerRuntime": "docker"}, "is not one of apptainer, singularity, podman, none"),
        ({"BindAddress": "0.0.0.0"}, "BindAddress: '0.0.0.0' is not a loopback address"),
        ({"BindAddress": ""}, "AllowNetworkBind"),
        ({"AllowedClientUids": ["no-such-user-il"]}, "AllowedClientUids: 'no-such-user-il' is neither a number"),
        ({"AllowedClientGids": "no-such-group-il"}, "AllowedClientGids: 'no-such-group-il'"),
        ({"SocketGroup": "no-such-group-il"}, "SocketGroup"),
        ({"MaxFollowStreams": 0}, "MaxFollowStreams: must be >= 1"),
        ({"RequestReadTimeout": 0}, "RequestReadTimeout: must be > 0"),
    ],
)
def test_bad_values_stop_startup_naming_key_and_value(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_config(raw, environ={})
    assert message in str(info.value)


def test_api_access_keys_take_names_or_numbers_and_a_network_bind_only_when_allowed() -> None:
    config, _ = parse_config({"AllowedClientUids": ["root", 4242], "AllowedClientGids": "root, 17",
                              "SocketGroup": "root"}, environ={})
    assert config.allowed_client_uids == (0, 4242) and config.allowed_client_gids == (0, 17)
    assert config.socket_group == 0
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert parse_config({"BindAddress": loopback}, environ={})[0].bind_address == loopback
    assert parse_config({"BindAddress": "0.0.0.0", "AllowNetworkBind": True}, environ={})[0].allow_network_bind
    assert parse_config({"BindAddress": "0.0.0.0", "Socket": "unix:///run/x.sock"}, environ={})[0].socket


def test_path_keys_are_argv_prefixes_and_env_overrides() -> None:
    config, _ = parse_config({"SbatchPath": "/opt/slurm/bin/sbatch --clusters=leo"}, environ={"SQUEUEPATH": "/x/squeue"})
    assert config.sbatch == ("/opt/slurm/bin/sbatch", "--clusters=leo")
    assert config.squeue == ("/x/squeue",)


def test_config_reference_doc_is_generated_from_the_code() -> None:
    assert (ROOT / "docs" / "config-reference.md").read_text() == config_reference_markdown()


def test_config_reference_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-reference"]) == 0
    assert capsys.readouterr().out == config_reference_markdown()
