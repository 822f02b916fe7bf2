"""Admin policy: every spelling of an option is seen, reserved options never pass."""

from __future__ import annotations

import getopt
import logging
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlink_plugins.backends import policy_from_config
from interlink_plugins.core.errors import ConfigError, PodSpecError
from interlink_plugins.core.policy.engine import (
    DEFAULT_SINGULARITY_ALLOW,
    NEVER_ALLOWED_SINGULARITY,
    SINGULARITY_OPTIONS,
    AdminPolicy,
    NamespacePolicy,
    OptionSpec,
    ParsedOption,
    PolicyViolation,
    check_options,
    parse_options,
)
from interlink_plugins.slurm.policy import (
    DEFAULT_SBATCH_ALLOW,
    NEVER_ALLOWED_SBATCH,
    SBATCH_OPTIONS,
    SlurmPolicy,
    render_sbatch_option,
    sbatch_flags,
    slurm_policy,
)

F = "slurm-job.vk.io/flags"
NS = NamespacePolicy(choices={"accounts": ("physics",), "qos": ("normal", "long"), "partitions": ("geant4", "cpu")})
POLICY = AdminPolicy(namespaces={"team-a": NS}, allowed_host_paths=("/data", "/cvmfs"))


def flags(text: str, namespace: str = "team-a", policy: AdminPolicy = POLICY) -> list[ParsedOption]:
    return sbatch_flags(policy, text, namespace, field=F)


def pairs(parsed: list[ParsedOption]) -> list[tuple[str, str | None]]:
    return [(p.name, p.value) for p in parsed]


# ------------------------------------------------------------------------------- the tables


def test_tables_are_consistent() -> None:
    for table, never, default in (
        (SBATCH_OPTIONS, NEVER_ALLOWED_SBATCH, DEFAULT_SBATCH_ALLOW),
        (SINGULARITY_OPTIONS, NEVER_ALLOWED_SINGULARITY, DEFAULT_SINGULARITY_ALLOW),
    ):
        canonical = {s.long for s in table.values()}
        assert all(table[s.long].long == s.long for s in table.values())  # canonical names are keys
        assert never <= canonical
        assert default <= canonical
        assert not (default & never)
        shorts = [s.short for k, s in table.items() if s.short and k == s.long]
        assert len(shorts) == len(set(shorts))


def test_aliases_map_to_the_canonical_name() -> None:
    assert pairs(parse_options("--tasks-per-node=2 --cluster x", SBATCH_OPTIONS, field=F)) == [
        ("ntasks-per-node", "2"),
        ("clusters", "x"),
    ]


# ------------------------------------------------------------------ forbidden, every spelling

FORBIDDEN = [
    "--chdir=/x",
    "--chdir /x",
    "--chd=/x",
    "--ch /x",
    "-D /x",
    "-D/x",
    "--ui=0",
    "--uid 0",
    "--uid=root",
    "--gid=0",
    "--comm=x",
    "--comment x",
    "--exp=ALL",
    "--export=ALL",
    "--export ALL",
    "--export-f=/etc/passwd",
    "-o /etc/x",
    "-o/etc/x",
    "--output=/etc/x",
    "--ou /etc/x",
    "-e/etc/x",
    "--error=/x",
    "-i /etc/shadow",
    "--input=/x",
    "-vD/x",
    "-HvD /x",
    '--"chdir"=x',
    "'--chdir=x'",
    "--ch\\dir=x",
    '-"D"/x',
    "--wrap='rm -rf ~'",
    "--wr=x",
    "--requeue",
    "--req",
    "--no-requeue",
    "--get-user-env",
    "--get-user-env=10L",
    "--ge",
    "--parsable",
    "--pa",
    "--wait",
    "-W",
    "-vW",
    "--test-only",
    "--te",
    "-a 1-10",
    "-a1-10",
    "--array=1-3",
    "--ar 0-1",
    "-M other",
    "--clusters=other",
    "--cluster=other",
    "--cluster-constraint=x",
    "--container=/bundle",
    "--conta=/bundle",
    "--context=unconfined_u",
    "--conte x",
    "--open-mode=append",
    "--op append",
    "-F /etc/hosts",
    "--nodefile=/etc/hosts",
    "--bbf=/x",
    "-Q",
    "--quiet",
    "-h",
    "--help",
    "--usage",
    "-V",
    "--version",
    "-p geant4 --chdir=/x",
    "--job-name=ok -D /x -t 60",
]


@pytest.mark.parametrize("text", FORBIDDEN)
def test_forbidden_option_is_refused_in_every_spelling(text: str) -> None:
    with pytest.raises(PolicyViolation) as exc:
        flags(text)
    assert exc.value.field == F
    assert exc.value.status in (403, 422)
    if exc.value.status == 403:
        assert "reserved by the plugin" in exc.value.message


@pytest.mark.parametrize(
    ("text", "spelling", "canonical"),
    [
        ("--chd=/x", "'--chd=/x'", "--chdir"),
        ("-D /x", "'-D /x'", "--chdir"),
        ("-vD/x", "'-vD/x'", "--chdir"),
        ("--ui=0", "'--ui=0'", "--uid"),
        ("--comm=x", "'--comm=x'", "--comment"),
        ('--"chdir"=x', "'--chdir=x'", "--chdir"),
        ("-o /etc/x", "'-o /etc/x'", "--output"),
    ],
)
def test_violation_names_the_option_as_written(text: str, spelling: str, canonical: str) -> None:
    with pytest.raises(PolicyViolation) as exc:
        flags(text)
    assert exc.value.status == 403
    assert f"{spelling} ({canonical}) is reserved by the plugin" in exc.value.message


def test_ambiguous_export_abbreviation_is_a_422_listing_the_candidates() -> None:
    with pytest.raises(PolicyViolation) as exc:
        flags("--exp=ALL")
    assert exc.value.status == 422
    assert "ambiguous" in exc.value.message
    assert "--export" in exc.value.message and "--export-file" in exc.value.message


@pytest.mark.parametrize("text", ["--mem-per=4G", "--gpus-per=1", "--cpus=2", "--ntasks-per 2", "--c x"])
def test_ambiguous_abbreviation_is_refused(text: str) -> None:
    with pytest.raises(PolicyViolation, match="ambiguous") as exc:
        flags(text)
    assert exc.value.status == 422


def test_acc_is_ambiguous_in_sbatch_22_05() -> None:
    # sbatch 22.05 itself says: option '--acc=x' is ambiguous; possibilities: '--account' '--acctg-freq'
    with pytest.raises(PolicyViolation, match="ambiguous") as exc:
        flags("--acc physics")
    assert exc.value.status == 422
    assert "--account, --acctg-freq" in exc.value.message


def test_exact_name_wins_over_longer_names() -> None:
    # --mem is also a prefix of --mem-bind, --mem-per-cpu, ...; --gpus of --gpus-per-node.
    assert pairs(flags("--mem=4G --gpus=1 --time 5")) == [("mem", "4G"), ("gpus", "1"), ("time", "5")]


def test_not_in_allow_list_is_403() -> None:
    with pytest.raises(PolicyViolation, match="is not allowed") as exc:
        flags("--mail-user=a@b.c")
    assert exc.value.status == 403
    assert "'--mail-user=a@b.c' (--mail-user)" in exc.value.message


def test_all_offending_options_are_listed() -> None:
    with pytest.raises(PolicyViolation) as exc:
        flags("-vD/x --uid 0")
    msg = exc.value.message
    assert "'-vD/x' (--chdir) is reserved" in msg
    assert "'--uid 0' (--uid) is reserved" in msg
    assert "'-vD/x' (--verbose) is not allowed" in msg


def test_policy_violation_is_a_pod_spec_error() -> None:
    err = PolicyViolation(F, "nope")
    assert isinstance(err, PodSpecError)
    assert (err.field, err.message, err.status) == (F, "nope", 403)
    assert str(err) == f"{F}: nope"


# ----------------------------------------------------------------------------- syntax (422)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("--job-name='unterminated", "cannot split"),
        ('-p "geant4', "cannot split"),
        ("-p geant4\\", "cannot split"),
        ("geant4", "unexpected word"),
        ("-p geant4 extra", "unexpected word"),
        ("-", "unexpected word"),
        ("-- script.sh", "'--' ends the options"),
        ("--", "'--' ends the options"),
        ("-p", "needs a value"),
        ("-t 60 --partition", "needs a value"),
        ("--hold=yes", "takes no value"),
        ("--contiguous=1", "takes no value"),
        ("--no-such-option", "unknown option"),
        ("--PARTITION=x", "unknown option"),
        ("-Z", "unknown option -Z"),
        ("-vZ", "unknown option -Z"),
        ("--=x", "unknown option"),
        ("--nice 5", "unexpected word"),
        ("--job-name='a\nb'", "control character"),
        ("--job-name='a\tb'", "control character"),
        ("-J'a\x7fb'", "control character"),
    ],
)
def test_malformed_annotations_are_422(text: str, match: str | None) -> None:
    with pytest.raises(PolicyViolation) as exc:
        parse_options(text, SBATCH_OPTIONS, field=F)
    assert exc.value.status == 422
    if match:
        assert match in exc.value.message


def test_unbalanced_quotes_through_the_policy_are_422() -> None:
    with pytest.raises(PolicyViolation) as exc:
        flags("-p 'geant4")
    assert exc.value.status == 422
    assert exc.value.field == F


def test_empty_annotation_is_no_options() -> None:
    assert flags("") == []
    assert flags("   \n\t ") == []


# ---------------------------------------------------------------------- allowed, round trip

ALLOWED = [
    ("-p geant4 -t 60", [("partition", "geant4"), ("time", "60")]),
    ("--job-name=test-pod-cfg -t 2800", [("job-name", "test-pod-cfg"), ("time", "2800")]),
    ("--time 01:00:00", [("time", "01:00:00")]),
    ("-N2", [("nodes", "2")]),
    ("-N 2-4 -n8 -c 4", [("nodes", "2-4"), ("ntasks", "8"), ("cpus-per-task", "4")]),
    ("--mem=4G", [("mem", "4G")]),
    ("--gres=gpu:1", [("gres", "gpu:1")]),
    ("--gres gpu:a100:2 -G2", [("gres", "gpu:a100:2"), ("gpus", "2")]),
    ("--part=cpu --acco physics -qnormal", [("partition", "cpu"), ("account", "physics"), ("qos", "normal")]),
    ("-J 'my job' --exclusive", [("job-name", "my job"), ("exclusive", None)]),
    ("--exclusive=user --nice --nice=10", [("exclusive", "user"), ("nice", None), ("nice", "10")]),
    ("-C 'intel&ib' --hint=nomultithread", [("constraint", "intel&ib"), ("hint", "nomultithread")]),
    ("--job-name=", [("job-name", "")]),
    ("-sO", [("oversubscribe", None), ("overcommit", None)]),
    ("-Os -t5", [("overcommit", None), ("oversubscribe", None), ("time", "5")]),
    ("--signal=B:USR1@60 --tmp=10G", [("signal", "B:USR1@60"), ("tmp", "10G")]),
    ("--tasks-per-node=4", [("ntasks-per-node", "4")]),
    ("--mem-per-c=1G --mem-per-g 2G", [("mem-per-cpu", "1G"), ("mem-per-gpu", "2G")]),
    ("-J --chdir=/x", [("job-name", "--chdir=/x")]),  # getopt: a required value may start with '-'
]


@pytest.mark.parametrize(("text", "expected"), ALLOWED)
def test_allowed_options_pass_and_round_trip(text: str, expected: list[tuple[str, str | None]]) -> None:
    parsed = flags(text)
    assert pairs(parsed) == expected
    words = [w for opt in parsed for w in render_sbatch_option(opt)]
    assert pairs(parse_options(shlex.join(words), SBATCH_OPTIONS, field=F)) == expected
    for opt, word in zip(parsed, words, strict=True):
        assert word == (f"--{opt.name}" if opt.value is None else f"--{opt.name}={opt.value}")


def test_render_is_canonical_argv() -> None:
    assert render_sbatch_option(ParsedOption("time", "60")) == ["--time=60"]
    assert render_sbatch_option(ParsedOption("exclusive", None)) == ["--exclusive"]
    assert render_sbatch_option(ParsedOption("job-name", "a b")) == ["--job-name=a b"]


def test_optional_values_only_when_attached() -> None:
    assert pairs(parse_options("-kX --no-kill -k", SBATCH_OPTIONS, field=F)) == [
        ("no-kill", "X"),
        ("no-kill", None),
        ("no-kill", None),
    ]
    assert pairs(parse_options("-vk", SBATCH_OPTIONS, field=F)) == [("verbose", None), ("no-kill", None)]
    assert pairs(parse_options("-kv", SBATCH_OPTIONS, field=F)) == [("no-kill", "v")]


@pytest.mark.parametrize("text", ["--nice=-5", "--nice=-10000", "--ni=-1", "--nice=x"])
def test_negative_nice_is_refused(text: str) -> None:
    with pytest.raises(PolicyViolation, match="non-negative nice") as exc:
        flags(text)
    assert exc.value.status == 403


# ------------------------------------------------------------------------- namespace choices


@pytest.mark.parametrize(
    "template",
    ["-A {}", "-A{}", "--account={}", "--account {}", "--acco {}", "--accou={}", "--account={} -t 5"],
)
def test_account_in_every_spelling(template: str) -> None:
    assert ("account", "physics") in pairs(flags(template.format("physics")))
    with pytest.raises(PolicyViolation, match="account 'chemistry' is not allowed") as exc:
        flags(template.format("chemistry"))
    assert exc.value.status == 403
    assert "team-a" in exc.value.message


@pytest.mark.parametrize("template", ["-q {}", "-q{}", "--qos={}", "--qos {}", "--qo {}", "-vq{}"])
def test_qos_in_every_spelling(template: str) -> None:
    policy = AdminPolicy(sections={"slurm": SlurmPolicy(DEFAULT_SBATCH_ALLOW | {"verbose"})}, namespaces={"team-a": NS})
    assert ("qos", "long") in pairs(flags(template.format("long"), policy=policy))
    with pytest.raises(PolicyViolation, match="qos 'high' is not allowed"):
        flags(template.format("high"), policy=policy)


@pytest.mark.parametrize("template", ["-p {}", "-p{}", "--partition={}", "--partition {}", "--part {}"])
def test_partition_lists_are_checked_item_by_item(template: str) -> None:
    assert ("partition", "geant4,cpu") in pairs(flags(template.format("geant4,cpu")))
    for bad in ("geant4,gpu", "gpu", "geant4,", ",cpu", "", "geant4 cpu"):
        with pytest.raises(PolicyViolation) as exc:
            flags(template.format(shlex.quote(bad)))
        if bad and template != "-p{}":
            assert "partition" in exc.value.message


def test_namespace_without_entry_uses_the_default_or_nothing() -> None:
    with pytest.raises(PolicyViolation, match="namespace 'other'"):
        flags("-p geant4", namespace="other")
    policy = AdminPolicy(namespaces={"team-a": NS}, default_namespace=NamespacePolicy(choices={"partitions": ("cpu",)}))
    assert pairs(flags("-p cpu", namespace="other", policy=policy)) == [("partition", "cpu")]
    with pytest.raises(PolicyViolation):
        flags("-p geant4", namespace="other", policy=policy)
    # a namespace's own entry replaces the default, it does not extend it
    with pytest.raises(PolicyViolation):
        flags("-A physics", namespace="team-b", policy=policy)
    assert pairs(flags("-p geant4", namespace="team-a", policy=policy)) == [("partition", "geant4")]


def test_options_without_namespace_rules_need_no_namespace_entry() -> None:
    assert pairs(flags("-t 60 --mem=1G", namespace="nobody")) == [("time", "60"), ("mem", "1G")]


def test_users() -> None:
    policy = AdminPolicy(namespaces={"team-a": NamespacePolicy(users=("alice", "1001", "root"))})
    assert policy.user_allowed("team-a", "alice")
    assert policy.user_allowed("team-a", 1001)
    assert policy.user_allowed("team-a", 0)  # root is uid 0 in every passwd
    assert not policy.user_allowed("team-a", 1002)
    assert not policy.user_allowed("team-b", "alice")
    with pytest.raises(PolicyViolation, match="may not run as user '1002'") as exc:
        policy.check_user("team-a", 1002, field="spec.securityContext.runAsUser")
    assert exc.value.field == "spec.securityContext.runAsUser"
    assert exc.value.status == 403


# -------------------------------------------------------------------------------- raw shell


def test_raw_shell_needs_the_switch() -> None:
    with pytest.raises(PolicyViolation, match="AllowRawShell") as exc:
        AdminPolicy().check_raw_shell("slurm-job.vk.io/pre-exec")
    assert exc.value.status == 403
    assert exc.value.field == "slurm-job.vk.io/pre-exec"
    AdminPolicy(allow_raw_shell=True).check_raw_shell("slurm-job.vk.io/pre-exec")


# ------------------------------------------------------------------------------- host paths


def test_host_paths_are_compared_by_component() -> None:
    p = AdminPolicy(allowed_host_paths=("/data", "/cvmfs/"))
    assert p.host_path_allowed("/data")
    assert p.host_path_allowed("/data/")
    assert p.host_path_allowed("/data/x/y")
    assert p.host_path_allowed("/cvmfs/sft.cern.ch")
    assert p.host_path_allowed("/data/./x")
    assert not p.host_path_allowed("/data2")
    assert not p.host_path_allowed("/data2/x")
    assert not p.host_path_allowed("/dat")
    assert not p.host_path_allowed("/data/../etc/passwd")
    assert not p.host_path_allowed("/data/x/../../etc")
    assert not p.host_path_allowed("data/x")
    assert not p.host_path_allowed("")
    assert not p.host_path_allowed("/data/x\x00")
    assert not AdminPolicy().host_path_allowed("/data")
    assert AdminPolicy(allowed_host_paths=("/",)).host_path_allowed("/etc")


def test_host_path_symlinks_are_resolved(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "escape").symlink_to("/etc")
    (allowed / "inner").symlink_to(allowed / "sub")
    (tmp_path / "alias").symlink_to(allowed)
    p = AdminPolicy(allowed_host_paths=(str(allowed),))
    assert p.host_path_allowed(str(allowed / "sub" / "f"))
    assert p.host_path_allowed(str(allowed / "inner" / "f"))
    assert p.host_path_allowed(str(tmp_path / "alias" / "sub"))  # resolves into the allowed tree
    assert not p.host_path_allowed(str(allowed / "escape"))
    assert not p.host_path_allowed(str(allowed / "escape" / "passwd"))
    # an allowed root that is itself a symlink is resolved too
    q = AdminPolicy(allowed_host_paths=(str(tmp_path / "alias"),))
    assert q.host_path_allowed(str(allowed / "sub"))


# ------------------------------------------------------------------------------ singularity

S = "slurm-job.vk.io/singularity-options"


def sing(text: str, policy: AdminPolicy = POLICY) -> list[tuple[str, str | None]]:
    return pairs(policy.singularity_options(text, field=S))


def test_singularity_allowed_spellings() -> None:
    assert sing("--nv -B /data/x:/x --containall -ce") == [
        ("nv", None),
        ("bind", "/data/x:/x"),
        ("containall", None),
        ("contain", None),
        ("cleanenv", None),
    ]
    assert sing("--bind=/data/a:/a:ro,/cvmfs -B/data/b -B=/data/c") == [
        ("bind", "/data/a:/a:ro,/cvmfs"),
        ("bind", "/data/b"),
        ("bind", "/data/c"),
    ]
    assert sing("-cB /data -C --no-home --writable-tmpfs -f --pwd /work --cwd /w") == [
        ("contain", None),
        ("bind", "/data"),
        ("containall", None),
        ("no-home", None),
        ("writable-tmpfs", None),
        ("fakeroot", None),
        ("pwd", "/work"),
        ("pwd", "/w"),
    ]
    assert sing("--nv=false -e=true --no-mount=tmp,home") == [
        ("nv", "false"),
        ("cleanenv", "true"),
        ("no-mount", "tmp,home"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "-B /etc:/x",
        "-B/etc",
        "-B=/etc",
        "--bind=/data2:/d",
        "--bind /data/../etc",
        "--bind /data/x,/etc",
        "--bind data/x",
        "-cB/root",
        "--bind=:/x",
        "-B '$HOME'",
    ],
)
def test_singularity_bind_sources_must_be_allowed(text: str) -> None:
    with pytest.raises(PolicyViolation, match="host path") as exc:
        POLICY.singularity_options(text, field=S)
    assert exc.value.status == 403


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("--env FOO=1", 403),
        ("--env=FOO=1", 403),
        ("--env-file /data/e", 403),
        ("--mount type=bind,src=/etc,dst=/x", 403),
        ("-H /etc", 403),
        ("--home=/root", 403),
        ("-o /data/ov.img", 403),
        ("-W /tmp", 403),
        ("--security uid:0", 403),
        ("--fusemount 'host:sshfs x /m'", 403),
        ("--add-caps CAP_SYS_ADMIN", 403),
        ("--keep-privs", 403),
        ("--net", 403),  # not in the default allow-list
        ("-n", 403),
        ("-cn", 403),
        ("--bin /data", 422),  # pflag has no abbreviations
        ("--nv true", 422),  # a boolean never takes the next word
        ("--nv=yes", 422),
        ("--nv=", 422),
        ("-B", 422),
        ("docker://busybox", 422),
        ("--nv 'unterminated", 422),
        ("-X", 422),
    ],
)
def test_singularity_refusals(text: str, status: int) -> None:
    with pytest.raises(PolicyViolation) as exc:
        POLICY.singularity_options(text, field=S)
    assert exc.value.status == status
    assert exc.value.field == S


# ------------------------------------------------------------------------------------ config


def test_config_defaults() -> None:
    p = policy_from_config({})
    assert p == AdminPolicy()
    assert not p.allow_raw_shell
    assert slurm_policy(p).sbatch_allow == DEFAULT_SBATCH_ALLOW
    assert p.singularity_allow == DEFAULT_SINGULARITY_ALLOW
    assert p.allowed_host_paths == ()
    assert p.default_namespace is None


def test_config_full() -> None:
    p = policy_from_config(
        {
            "AllowRawShell": True,
            "AllowedSbatchOptions": ["partition", "--time", "-N", "tasks-per-node"],
            "ExtraSbatchOptions": ["mail-type"],
            "AllowedSingularityOptions": ["nv", "-B"],
            "AllowedHostPaths": ["/data/", "/cvmfs"],
            "NamespacePolicy": {
                "team-a": {"Accounts": ["physics"], "QOS": ["normal"], "Partitions": ["cpu"], "Users": [1001]},
            },
            "DefaultNamespacePolicy": {"Partitions": ["cpu"]},
        }
    )
    assert p.allow_raw_shell
    assert slurm_policy(p).sbatch_allow == {"partition", "time", "nodes", "ntasks-per-node", "mail-type"}
    assert p.singularity_allow == {"nv", "bind"}
    assert p.allowed_host_paths == ("/data", "/cvmfs")
    assert p.namespaces["team-a"] == NamespacePolicy(
        users=("1001",), choices={"accounts": ("physics",), "qos": ("normal",), "partitions": ("cpu",)}
    )
    assert p.default_namespace == NamespacePolicy(choices={"partitions": ("cpu",)})
    assert pairs(sbatch_flags(p, "-p cpu -N2 --mail-type=END", "team-a", field=F)) == [
        ("partition", "cpu"),
        ("nodes", "2"),
        ("mail-type", "END"),
    ]
    with pytest.raises(PolicyViolation, match="not allowed"):
        sbatch_flags(p, "--mem=1G", "team-a", field=F)  # replaced the default list


def test_config_extra_adds_to_the_default() -> None:
    p = policy_from_config({"ExtraSbatchOptions": ["deadline", "--priority"]})
    assert slurm_policy(p).sbatch_allow == DEFAULT_SBATCH_ALLOW | {"deadline", "priority"}


@pytest.mark.parametrize(
    ("raw", "key", "value"),
    [
        ({"AllowRawShell": "yes"}, "AllowRawShell", "'yes'"),
        ({"AllowRawShell": 1}, "AllowRawShell", "1"),
        ({"AllowedSbatchOptions": "partition"}, "AllowedSbatchOptions", "'partition'"),
        ({"AllowedSbatchOptions": ["chdir"]}, "AllowedSbatchOptions", "'chdir'"),
        ({"AllowedSbatchOptions": ["-D"]}, "AllowedSbatchOptions", "'-D'"),
        ({"ExtraSbatchOptions": ["--uid"]}, "ExtraSbatchOptions", "'--uid'"),
        ({"ExtraSbatchOptions": ["comment"]}, "ExtraSbatchOptions", "'comment'"),
        ({"ExtraSbatchOptions": ["cluster"]}, "ExtraSbatchOptions", "'cluster'"),
        ({"ExtraSbatchOptions": ["part"]}, "ExtraSbatchOptions", "'part'"),  # no abbreviations here
        ({"ExtraSbatchOptions": ["no-such"]}, "ExtraSbatchOptions", "'no-such'"),
        ({"ExtraSbatchOptions": [3]}, "ExtraSbatchOptions", "3"),
        ({"ExtraSbatchOptions": [""]}, "ExtraSbatchOptions", "''"),
        ({"AllowedSingularityOptions": ["env"]}, "AllowedSingularityOptions", "'env'"),
        ({"AllowedSingularityOptions": ["--mount"]}, "AllowedSingularityOptions", "'--mount'"),
        ({"AllowedSingularityOptions": ["-H"]}, "AllowedSingularityOptions", "'-H'"),
        ({"AllowedHostPaths": ["data"]}, "AllowedHostPaths", "'data'"),
        ({"AllowedHostPaths": "/data"}, "AllowedHostPaths", "'/data'"),
        ({"NamespacePolicy": ["team-a"]}, "NamespacePolicy", "['team-a']"),
        ({"NamespacePolicy": {"team-a": "physics"}}, "NamespacePolicy.team-a", "'physics'"),
        ({"NamespacePolicy": {"team-a": {"Accounts": "physics"}}}, "NamespacePolicy.team-a.Accounts", "'physics'"),
        ({"NamespacePolicy": {"team-a": {"QOS": [True]}}}, "NamespacePolicy.team-a.QOS", "True"),
        ({"NamespacePolicy": {"team-a": {"Accounts": [7]}}}, "NamespacePolicy.team-a.Accounts", "7"),
        ({"DefaultNamespacePolicy": {"Partitions": [None]}}, "DefaultNamespacePolicy.Partitions", "None"),
        ({"DefaultNamespacePolicy": []}, "DefaultNamespacePolicy", "[]"),
    ],
)
def test_config_bad_values_name_key_and_value(raw: dict[str, object], key: str, value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        policy_from_config(raw)
    assert str(exc.value).startswith(key + ":")
    assert value in str(exc.value)


def test_config_unknown_namespace_subkey_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        p = policy_from_config({"NamespacePolicy": {"team-a": {"Acounts": ["x"], "QOS": ["normal"]}}})
    assert p.namespaces["team-a"] == NamespacePolicy(choices={"qos": ("normal",)})
    assert "NamespacePolicy.team-a.Acounts" in caplog.text


# ------------------------------------------------------------------------------ properties


def _long_spellings(table: Mapping[str, OptionSpec], key: str) -> list[str]:
    """The key and every prefix of it that still names the same option (getopt abbreviations)."""
    target = table[key].long
    out = []
    for n in range(1, len(key) + 1):
        prefix = key[:n]
        unique = prefix in table or len({s.long for k, s in table.items() if k.startswith(prefix)}) == 1
        if unique and table.get(prefix, table[key]).long == target:
            out.append(prefix)
    return out


NO_ARG_SHORTS = sorted(s.short for k, s in SBATCH_OPTIONS.items() if s.short and s.takes_value == "no")
VALUE = st.text(alphabet="abcxyz019:/_.,=@+-", min_size=1, max_size=8)


@st.composite
def sbatch_spelling(draw: st.DrawFn, name: str) -> list[str]:
    """One random spelling (as argv words) of the canonical option ``name``."""
    spec = SBATCH_OPTIONS[name]
    value = draw(VALUE)
    choices: list[list[str]] = []
    keys = [k for k, s in SBATCH_OPTIONS.items() if s.long == name]
    for key in keys:
        for long in _long_spellings(SBATCH_OPTIONS, key):
            if spec.takes_value == "no":
                choices.append([f"--{long}"])
            elif spec.takes_value == "required":
                choices += [[f"--{long}={value}"], [f"--{long}", value]]
            else:
                choices += [[f"--{long}={value}"], [f"--{long}"]]
    if spec.short:
        bundle = "".join(draw(st.lists(st.sampled_from(NO_ARG_SHORTS), max_size=3)))
        s = spec.short
        if spec.takes_value == "no":
            choices += [[f"-{s}"], [f"-{bundle}{s}"], [f"-{s}{bundle}"]]
        elif spec.takes_value == "required":
            choices += [[f"-{s}{value}"], [f"-{s}", value], [f"-{bundle}{s}{value}"], [f"-{bundle}{s}", value]]
        else:
            choices += [[f"-{s}{value}"], [f"-{s}"], [f"-{bundle}{s}{value}"]]
    return draw(st.sampled_from(choices))


@st.composite
def quoted(draw: st.DrawFn, word: str) -> str:
    """The word written so that a POSIX shell split gives it back, in several styles."""
    style = draw(st.sampled_from(["quote", "double-part", "backslash", "single-whole"]))
    if style == "quote" or not re.fullmatch(r"[A-Za-z0-9:/_.,=@+-]*", word):
        return shlex.quote(word)
    if style == "double-part" and word:
        i = draw(st.integers(0, len(word) - 1))
        j = draw(st.integers(i + 1, len(word)))
        return f'{word[:i]}"{word[i:j]}"{word[j:]}'
    if style == "backslash":
        return "".join("\\" + c for c in word)
    return f"'{word}'"


SAFE_FILLER = sorted(DEFAULT_SBATCH_ALLOW - {"account", "qos", "partition", "nice"})
PERMISSIVE = AdminPolicy(sections={"slurm": SlurmPolicy(frozenset({s.long for s in SBATCH_OPTIONS.values()}))})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), never=st.sampled_from(sorted(NEVER_ALLOWED_SBATCH)))
def test_reserved_option_never_passes_in_any_spelling(data: st.DataObject, never: str) -> None:
    before = data.draw(st.lists(st.sampled_from(SAFE_FILLER), max_size=3))
    after = data.draw(st.lists(st.sampled_from(SAFE_FILLER), max_size=3))
    words: list[str] = []
    for name in before:
        words += data.draw(sbatch_spelling(name))
    words += data.draw(sbatch_spelling(never))
    for name in after:
        words += data.draw(sbatch_spelling(name))
    text = " ".join(data.draw(quoted(w)) for w in words)
    assert shlex.split(text) == words
    assert never in {p.name for p in parse_options(text, SBATCH_OPTIONS, field=F)}
    for policy in (POLICY, PERMISSIVE):
        with pytest.raises(PolicyViolation) as exc:
            flags(text, policy=policy)
        assert exc.value.status == 403
        assert f"(--{never}) is reserved by the plugin" in exc.value.message


def _oracle_tables() -> tuple[str, list[str]]:
    """Python's getopt configured like sbatch's getopt_long (options with optional values left out)."""
    shortopts = "".join(
        s.short + (":" if s.takes_value == "required" else "")
        for k, s in SBATCH_OPTIONS.items()
        if s.short and k == s.long and s.takes_value != "optional"
    )
    # optional-value long options stay in as flags, so that prefixes are ambiguous as in sbatch
    longopts = [k + ("=" if s.takes_value == "required" else "") for k, s in SBATCH_OPTIONS.items()]
    return shortopts, longopts


ORACLE_SHORT, ORACLE_LONG = _oracle_tables()
NON_OPTIONAL = sorted(k for k, s in SBATCH_OPTIONS.items() if s.takes_value != "optional")
SHORTS_NON_OPTIONAL = sorted(
    s.short for k, s in SBATCH_OPTIONS.items() if s.short and k == s.long and s.takes_value != "optional"
)


@st.composite
def fuzz_word(draw: st.DrawFn) -> str:
    """A word an attacker might try: options, prefixes, bundles, values, junk."""
    kind = draw(st.integers(0, 5))
    value = draw(VALUE)
    if kind == 0:
        key = draw(st.sampled_from(NON_OPTIONAL))
        prefix = key[: draw(st.integers(1, len(key)))]
        return f"--{prefix}" + draw(st.sampled_from(["", f"={value}", "="]))
    if kind == 1:
        letters = draw(st.lists(st.sampled_from([*SHORTS_NON_OPTIONAL, "Z", "="]), min_size=1, max_size=4))
        return "-" + "".join(letters) + draw(st.sampled_from(["", value]))
    if kind == 2:
        return value
    if kind == 3:
        return "--" + draw(st.text(alphabet="abcdehiopqrtuvw-=", min_size=1, max_size=10))
    if kind == 4:
        return draw(st.sampled_from(["-", "", "=", "-=", "--=", "---", "--x=", "-D", "-o", "--ch"]))
    return "-" + value


@settings(max_examples=700, deadline=None)
@given(words=st.lists(fuzz_word(), max_size=8))
def test_parser_agrees_with_getopt_and_reserved_never_pass(words: list[str]) -> None:
    text = " ".join(shlex.quote(w) for w in words)
    try:
        oracle, rest = getopt.getopt(words, ORACLE_SHORT, ORACLE_LONG)
        # getopt drops a bare '--' (end of options); we refuse it, nothing may follow the options
        ended = words.count("--") > sum(1 for _, v in oracle if v == "--")
        oracle_ok = not rest and not ended
    except getopt.GetoptError:
        oracle_ok = False
    try:
        parsed = parse_options(text, SBATCH_OPTIONS, field=F)
    except PolicyViolation as exc:
        assert exc.status == 422
        assert not oracle_ok, f"we refused {words!r}, getopt accepts it: {exc}"
        return
    if any(SBATCH_OPTIONS[p.name].takes_value == "optional" for p in parsed):
        oracle_ok = True  # Python's getopt has no optional values: only the policy check below
        oracle = [(f"--{p.name}", p.value or "") for p in parsed]
    assert oracle_ok, f"we accepted {words!r}, getopt does not"
    shorts = {s.short: s.long for k, s in SBATCH_OPTIONS.items() if s.short and k == s.long}
    expected = [(SBATCH_OPTIONS[o[2:]].long if o.startswith("--") else shorts[o[1:]], v) for o, v in oracle]
    assert [(p.name, p.value or "") for p in parsed] == expected
    try:
        check_options(parsed, slurm_policy(PERMISSIVE).sbatch_allow, field=F, never=NEVER_ALLOWED_SBATCH)
    except PolicyViolation:
        assert {p.name for p in parsed} & NEVER_ALLOWED_SBATCH
    else:
        assert not {p.name for p in parsed} & NEVER_ALLOWED_SBATCH


NEVER_SING_WITH_SPELLINGS = sorted(NEVER_ALLOWED_SINGULARITY)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), never=st.sampled_from(NEVER_SING_WITH_SPELLINGS))
def test_reserved_singularity_option_never_passes(data: st.DataObject, never: str) -> None:
    spec = SINGULARITY_OPTIONS[never]
    value = data.draw(VALUE)
    choices = [[f"--{never}"]] if spec.takes_value == "no" else [[f"--{never}={value}"], [f"--{never}", value]]
    if spec.short:
        s = spec.short
        if spec.takes_value == "no":
            choices += [[f"-{s}"], [f"-c{s}"], [f"-{s}=true"]]
        else:
            choices += [[f"-{s}{value}"], [f"-{s}", value], [f"-{s}={value}"], [f"-ce{s}", value]]
    words = ["--nv", *data.draw(st.sampled_from(choices)), "-B", "/data"]
    text = " ".join(data.draw(quoted(w)) for w in words)
    policy = AdminPolicy(
        singularity_allow=frozenset({s.long for s in SINGULARITY_OPTIONS.values()}),
        allowed_host_paths=("/",),
    )
    with pytest.raises(PolicyViolation) as exc:
        policy.singularity_options(text, field=S)
    assert exc.value.status == 403
    assert f"(--{never}) is reserved by the plugin" in exc.value.message


# --------------------------------------------- the table against the installed sbatch binary


def _sbatch_env(tmp_path: Path) -> dict[str, str] | None:
    if shutil.which("sbatch") is None:
        return None
    conf = tmp_path / "slurm.conf"
    # a controller port nothing listens on: no probe can ever submit a job
    conf.write_text(
        "ClusterName=probe\nSlurmctldHost=localhost\nSlurmctldPort=1\n"
        "NodeName=localhost CPUs=1 State=UNKNOWN\nPartitionName=p Nodes=localhost Default=YES\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SBATCH_", "SLURM_"))}
    env["SLURM_CONF"] = str(conf)
    return env


def _sbatch(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        ["sbatch", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=20
    )
    return proc.stdout + proc.stderr


def test_table_matches_installed_sbatch(tmp_path: Path) -> None:
    env = _sbatch_env(tmp_path)
    if env is None:
        pytest.skip("sbatch not installed")
    if "22.05" not in _sbatch(env, "--version"):
        pytest.skip("the table describes sbatch 22.05")
    # every long name getopt reports for a one-letter prefix is in the table
    seen: set[str] = set()
    for letter in "abcdefghijklmnopqrstuvwxyz":
        out = _sbatch(env, f"--{letter}=")
        m = re.search(r"is ambiguous; possibilities:(.*)", out)
        if m:
            seen.update(re.findall(r"'--([^']+)'", m.group(1)))
    assert seen
    assert seen <= set(SBATCH_OPTIONS)
    # every name in the table exists, with the right value kind
    for key, spec in SBATCH_OPTIONS.items():
        bare = _sbatch(env, f"--{key}")
        assert "unrecognized option" not in bare and "ambiguous" not in bare, key
        if spec.takes_value == "required":
            assert f"option '--{key}' requires an argument" in bare, key
        else:
            with_value = _sbatch(env, f"--{key}=x")
            assert ("doesn't allow an argument" in with_value) == (spec.takes_value == "no"), key
    # every short letter, and only those
    shorts = {s.short: s for k, s in SBATCH_OPTIONS.items() if s.short and k == s.long}
    for letter in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
        out = _sbatch(env, f"-{letter}")
        if letter not in shorts:
            assert f"invalid option -- '{letter}'" in out, letter
            continue
        assert "invalid option" not in out, letter
        required = f"option requires an argument -- '{letter}'" in out
        assert required == (shorts[letter].takes_value == "required"), letter
