from __future__ import annotations

from pathlib import Path

import pytest

from interlink_plugins import __version__
from interlink_plugins.backends import config_reference_markdown, default_config_path, load_config, parse_config
from interlink_plugins.cli import main
from interlink_plugins.core.errors import ConfigError
from interlink_plugins.exitcodes import ExitCode
from interlink_plugins.slurm.settings import SlurmSettings

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
    slurm = config.section(SlurmSettings)
    assert slurm.sbatch == ("/usr/bin/sbatch",) and config.sidecar_port == 4000
    assert config.container_runtime == "singularity"
    assert slurm.flavors["default"].memory_mib == 16 * 1024 and slurm.flavors["default"].cpus == 2
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
    assert config.section(SlurmSettings).sbatch == ("/opt/slurm/bin/sbatch", "--clusters=leo")
    assert config.section(SlurmSettings).squeue == ("/x/squeue",)


def test_config_reference_doc_is_generated_from_the_code() -> None:
    assert (ROOT / "docs" / "config-reference.md").read_text() == config_reference_markdown()


def test_config_reference_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-reference"]) == 0
    assert capsys.readouterr().out == config_reference_markdown()


# ---- the Go plugin's keys, read as it reads them ----------------------------------------------


def test_go_logging_keys_map_to_log_level() -> None:
    assert parse_config({"VerboseLogging": True}, environ={})[0].log_level == "debug"
    assert parse_config({"ErrorsOnlyLogging": "true"}, environ={})[0].log_level == "error"
    assert parse_config({"VerboseLogging": True, "ErrorsOnlyLogging": True}, environ={})[0].log_level == "debug"
    assert parse_config({"VerboseLogging": True, "LogLevel": "warning"}, environ={})[0].log_level == "warning"
    assert parse_config({"VerboseLogging": False}, environ={})[0].log_level == "INFO"


def test_singularity_default_options_map_onto_apptainer_options() -> None:
    raw = {"SingularityDefaultOptions": ["--nv", "--no-eval", "-C", "-e", "--bind /cvmfs", "--writable-tmpfs=true"],
           "ApptainerOptions": {"no-home": True}}
    config, warnings = parse_config(raw, environ={})
    assert config.apptainer_options == ("--no-home", "--containall", "--cleanenv", "--writable-tmpfs")
    (note,) = warnings
    assert "SingularityDefaultOptions: --bind=/cvmfs ignored" in note and "AllowedHostPaths" in note, note
    assert "singularity-options" in note and "ApptainerOptions" in note
    # the Go plugin's default when the list is empty, or missing from a Go plugin's file
    assert parse_config({"SingularityDefaultOptions": []}, environ={})[0].apptainer_options == ("--containall",)
    go_file, notes = parse_config({"BashPath": "/bin/bash", "SbatchPath": "sbatch"}, environ={})
    assert go_file.apptainer_options == ("--containall",)
    assert any("SingularityDefaultOptions" in n and "--containall" in n for n in notes), notes
    # ...but not in one of ours, nor when ApptainerOptions chooses
    assert parse_config({"SbatchPath": "sbatch"}, environ={})[0].apptainer_options == ("--containall",)
    assert parse_config({"BashPath": "/bin/bash", "ApptainerOptions": []}, environ={})[0].apptainer_options == ()
    with pytest.raises(ConfigError, match="SingularityDefaultOptions: unknown option '--frobnicate'"):
        parse_config({"SingularityDefaultOptions": ["--frobnicate"]}, environ={})


def test_command_prefix_is_admin_shell_text() -> None:
    raw = {"CommandPrefix": "module load apptainer\nexport X=1\n", "ContainerRuntime": "none"}
    config, warnings = parse_config(raw, environ={})
    assert config.command_prefix == "module load apptainer\nexport X=1" and not warnings
    with pytest.raises(ConfigError, match="CommandPrefix: NUL byte"):
        parse_config({"CommandPrefix": "echo \x00"}, environ={})


@pytest.mark.parametrize(
    ("key", "replacement"),
    [
        ("BashPath", "JobPath"),
        ("Tsocks", "JobEnvironment"),
        ("TsocksPath", "JobEnvironment"),
        ("ResourceScriptPath", "MaxCPU"),
        ("SingularityPrefix", "ImagePrefix"),
        ("EnrootDefaultOptions", "enroot is not supported"),
        ("Namespace", "NamespacePolicy"),
        ("InterlinkPort", "SidecarPort"),
        ("ExportPodData", "always mounted"),
    ],
)
def test_go_keys_without_effect_say_what_to_use(key: str, replacement: str) -> None:
    _config, warnings = parse_config({key: "x", "ApptainerOptions": []}, environ={})
    (warning,) = [w for w in warnings if "containall" not in w]
    assert f"config key {key!r}" in warning and "without effect" in warning and replacement in warning, warning


def test_shared_fs_off_is_said_to_have_no_effect() -> None:
    assert parse_config({}, environ={"SHARED_FS": "true"})[1] == []
    (warning,) = parse_config({}, environ={"SHARED_FS": "false"})[1]
    assert "SHARED_FS=false has no effect" in warning and "DataTransfer: sftp" in warning


def test_serve_without_config_reads_the_go_plugins_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert default_config_path({}) == Path("/etc/interlink/SlurmConfig.yaml")
    assert default_config_path({"SLURMCONFIGPATH": "/x/SlurmConfig.yaml"}) == Path("/x/SlurmConfig.yaml")
    missing = tmp_path / "nowhere.yaml"
    monkeypatch.setenv("SLURMCONFIGPATH", str(missing))
    assert main(["serve"]) == ExitCode.CONFIG  # one line naming the file it looked for
    assert f"cannot read config {missing}" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"interlink-plugin {__version__}\n"


def test_each_backend_reads_its_own_section_typed() -> None:
    from interlink_plugins.config import Config
    from interlink_plugins.htcondor.settings import HTCondorSettings
    from interlink_plugins.podman.settings import PodmanSettings

    config, _ = parse_config({"Requeue": True, "HeldTimeout": "60s", "PodmanPodNetwork": "host"}, environ={})
    assert config.section(SlurmSettings).requeue is True
    assert config.section(HTCondorSettings).held_timeout == 60.0
    assert config.section(PodmanSettings).podman_pod_network == "host"
    assert Config().section(SlurmSettings) == SlurmSettings()  # a config built without the section: its defaults
    with pytest.raises(TypeError):
        Config(sections={SlurmSettings: PodmanSettings()}).section(SlurmSettings)


def test_sighup_takes_the_reloadable_keys_of_every_section_only() -> None:
    from interlink_plugins.backends import reloaded_config

    running, _ = parse_config({"Flavors": {"a": {"CPUDefault": 1}}, "Requeue": False, "MaxCPU": 4}, environ={})
    fresh, _ = parse_config({"Flavors": {"b": {"CPUDefault": 2}}, "DefaultFlavor": "b", "Requeue": True,
                             "MaxCPU": 8, "DefaultCPU": 3}, environ={})
    updated = reloaded_config(running, fresh)
    slurm = updated.section(SlurmSettings)
    assert set(slurm.flavors) == {"b"} and slurm.default_flavor == "b" and updated.default_cpus == 3
    assert slurm.requeue is False and updated.max_cpus == 4  # need a restart: kept


def test_the_backend_key_accepts_the_backends_that_have_a_factory() -> None:
    from interlink_plugins.backends import BACKENDS, CONFIG_SECTIONS
    from interlink_plugins.config import backend_names

    assert sorted(backend_names(CONFIG_SECTIONS)) == sorted(BACKENDS)
    with pytest.raises(ConfigError, match="Backend: 'pbs' is not one of slurm, htcondor, podman"):
        parse_config({"Backend": "pbs"}, environ={})
