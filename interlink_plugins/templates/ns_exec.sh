#!/usr/bin/env bash
# ns-exec.sh - run a command on the host userland with container-style volume mounts
# (interlink-plugins, container runtime "none"). Static helper: the plugin copies it into the
# job directory unchanged; every value arrives as a separate argument, nothing is evaluated.
#
# Usage: ns-exec.sh [--bwrap PATH] [--env-file FILE] [--ro SRC DST | --rw SRC DST]... [--chdir DIR] -- COMMAND [ARG]...
#        ns-exec.sh [--bwrap PATH] --probe        (exit 0 when the namespace can be built here)
#
# At job start it builds a bubblewrap (bwrap) command line as an argv array:
#   * a fresh tmpfs root with every top-level host entry bound back (symlinks recreated),
#     --proc /proc and --dev-bind /dev /dev: the host userland, in a private mount namespace;
#   * each mount bound on its target (--ro-bind for read-only), parents before children.
# Targets are never created on the host: when a target's parent does not exist, its deepest
# existing ancestor is shadowed inside the namespace (a tmpfs over it, each host entry bound
# back), so the missing directories exist only in the namespace. A target under an earlier
# mount is created inside that volume, as container runtimes do.
#
# Signals: bwrap does not forward signals, so this script stays the parent, runs bwrap in its
# own process group and forwards TERM/INT/HUP/QUIT/USR1/USR2 to the command (the pid bwrap
# reports on --info-fd). SIGKILL of this script kills everything (--die-with-parent).
# Env: with --env-file, the command gets exactly the NAME=VALUE records of FILE (NUL-separated,
# written by the plugin, mode 0600) and nothing else. The values reach it through this shell's own
# environment (exported, then exec), never through an argv that `ps` shows on a shared node; only
# names bash cannot export as given (not identifiers, or bash's own variables such as SHLVL or IFS)
# go through env(1)'s argv, until it execs.
# Without mounts and workingDir no namespace is needed and bwrap is not used.
# Exit status: the command's; 126 when bwrap is missing; 125 on a setup error.
set -euo pipefail
shopt -s nullglob dotglob

die() {
    local code=$1
    shift
    printf 'ns-exec: %s\n' "$*" >&2
    exit "$code"
}

bwrap=bwrap
probe=0
chdir=""
env_file=""
modes=() srcs=() dsts=()
while (($#)); do
    case $1 in
        --bwrap)
            (($# >= 2)) || die 125 "--bwrap needs a path"
            bwrap=$2
            shift 2
            ;;
        --ro | --rw)
            (($# >= 3)) || die 125 "$1 needs SRC and DST"
            modes+=("$1") srcs+=("$2") dsts+=("$3")
            shift 3
            ;;
        --env-file)
            (($# >= 2)) || die 125 "--env-file needs a file"
            env_file=$2
            shift 2
            ;;
        --chdir)
            (($# >= 2)) || die 125 "--chdir needs a directory"
            chdir=$2
            shift 2
            ;;
        --probe)
            probe=1
            shift
            ;;
        --)
            shift
            break
            ;;
        *) die 125 "unknown option: $1" ;;
    esac
done
if ((probe)); then
    set -- true
fi
(($# > 0)) || die 125 "no command given"

# exec_with_env FILE COMMAND...: COMMAND with exactly the records of FILE as its environment
exec_with_env() {
    local file=$1 envbin record name
    shift
    [[ -r $file ]] || die 125 "cannot read the env file $file"
    envbin=$(command -v env) || die 125 "env(1) is not on PATH"
    local -a envs=() plain=() odd=()
    mapfile -d '' -t envs <"$file"
    for record in "${envs[@]}"; do
        name=${record%%=*}
        if [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ && ! $name =~ ^(BASH.*|SHLVL|IFS|POSIXLY_CORRECT|SHELLOPTS|EUID|UID|PPID|GROUPS|RANDOM|SRANDOM|SECONDS|LINENO|HISTCMD|FUNCNAME|DIRSTACK|EPOCHSECONDS|EPOCHREALTIME|OPTIND|OPTERR|PIPESTATUS|COMP_WORDBREAKS|_)$ ]]; then
            plain+=("$record")
        else
            odd+=("$record")
        fi
    done
    while IFS= read -r name; do
        # shellcheck disable=SC2163  # the variable named by $name is unexported
        export -n -- "$name" 2>/dev/null || true
    done < <(compgen -e)
    for record in "${plain[@]}"; do
        # shellcheck disable=SC2163  # $record is NAME=VALUE, exported as given
        export -- "$record"
    done
    exec "$envbin" -u SHLVL -- "${odd[@]}" "$@"
}

if ((!probe)) && [[ -z $chdir ]] && ((${#modes[@]} == 0)); then
    [[ -n $env_file ]] && exec_with_env "$env_file" "$@"
    exec -- "$@"
fi

if ! bwrap_path=$(command -v -- "$bwrap"); then
    die 126 "bubblewrap ($bwrap) is not installed on $(hostname 2>/dev/null || echo this node): runtime 'none' needs it for volumeMounts and workingDir"
fi

args=(--die-with-parent)
# --perms appeared in bubblewrap 0.5 (RHEL 8 ships 0.4): without it tmpfs and dirs get mode 0755
perms=0
if "$bwrap_path" --help 2>&1 | grep -q -- '--perms'; then
    perms=1
fi
declare -A created=() shadowed=()
mount_dsts=() mount_srcs=()

# readlink, keeping trailing newlines of the link target
link_target() {
    local t
    t=$(readlink -- "$1" && echo x)
    printf '%s' "${t%$'\nx'}"
}

# is $1 equal to or below directory $2?
is_under() {
    [[ $2 == / || $1 == "$2" || $1 == "$2"/* ]]
}

# the mount (index) whose target holds namespace path $1, or nothing
mount_of() {
    local i
    for ((i = ${#mount_dsts[@]} - 1; i >= 0; i--)); do
        if is_under "$1" "${mount_dsts[i]}"; then
            printf '%s' "$i"
            return 0
        fi
    done
    return 1
}

# the host path that backs namespace path $1
host_path() {
    local i
    if i=$(mount_of "$1"); then
        local rest=${1#"${mount_dsts[i]}"}
        printf '%s' "${mount_srcs[i]}$rest"
    else
        printf '%s' "$1"
    fi
}

ns_exists() {
    [[ -n ${created[$1]+x} ]] && return 0
    local h
    h=$(host_path "$1")
    [[ -e $h || -L $h ]]
}

ns_is_dir() {
    [[ -n ${created[$1]+x} ]] && return 0
    local h
    h=$(host_path "$1")
    [[ -d $h ]]
}

bind_back() {
    local e=$1 kind=--bind
    if [[ -L $e ]]; then
        args+=(--symlink "$(link_target "$e")" "$e")
        return
    fi
    if is_under "$e" /dev; then
        kind=--dev-bind
    fi
    args+=("$kind" "$e" "$e")
}

# hide host directory $1 under a tmpfs in the namespace, binding each host entry back
shadow() {
    local d=$1 e
    if ((perms)); then
        args+=(--perms "$(stat -c %a -- "$d")")
    fi
    args+=(--tmpfs "$d")
    for e in "$d"/*; do
        bind_back "$e"
    done
    shadowed[$d]=1
}

# make sure namespace directory $1 (for a mount target or the working dir) can be created
# without touching the host: shadow its deepest existing host ancestor when needed, then
# create the missing parents inside the namespace
prepare_parent() {
    local target=$1 a missing=() m
    a=$(dirname -- "$target")
    while ! ns_exists "$a"; do
        missing=("$a" ${missing[@]+"${missing[@]}"})
        a=$(dirname -- "$a")
    done
    ns_is_dir "$a" || die 125 "cannot mount on $target: $a is not a directory"
    if [[ $a != / && -z ${shadowed[$a]+x} && -z ${created[$a]+x} ]] && ! mount_of "$a" >/dev/null; then
        shadow "$a"
    fi
    for m in ${missing[@]+"${missing[@]}"}; do
        ((perms)) && args+=(--perms 0755)
        args+=(--dir "$m")
        created[$m]=1
    done
}

# the namespace path of target $1: symlinks resolved through the host view, except below an
# earlier mount (volume contents are taken literally)
resolve() {
    local lit
    lit=$(realpath -m -s -- "$1")
    if mount_of "$lit" >/dev/null || [[ -n ${created[$lit]+x} ]]; then
        printf '%s' "$lit"
    else
        realpath -m -- "$lit"
    fi
}

# 1. fresh root: the host's top-level entries bound back
for e in /*; do
    case $e in
        /proc) args+=(--proc /proc) ;;
        /dev) args+=(--dev-bind /dev /dev) ;;
        *) bind_back "$e" ;;
    esac
done

# 2. the mounts, in the given order (the plugin sorts parents first)
for i in "${!dsts[@]}"; do
    src=${srcs[i]} dst=${dsts[i]}
    [[ $dst == /* ]] || die 125 "mount target must be absolute: $dst"
    [[ -e $src ]] || die 125 "mount source does not exist: $src"
    dst=$(resolve "$dst")
    [[ $dst != / ]] || die 125 "cannot mount on /"
    if ! ns_exists "$dst"; then
        prepare_parent "$dst"
        if [[ -d $src ]]; then
            created[$dst]=1
        fi
    fi
    if [[ ${modes[i]} == --ro ]]; then
        args+=(--ro-bind "$src" "$dst")
    else
        args+=(--bind "$src" "$dst")
    fi
    mount_dsts+=("$dst") mount_srcs+=("$src")
done

# 3. the working directory, created in the namespace when missing
if [[ -n $chdir ]]; then
    [[ $chdir == /* ]] || die 125 "working directory must be absolute: $chdir"
    chdir=$(resolve "$chdir")
    if ! ns_exists "$chdir"; then
        prepare_parent "$chdir"
        if ! mount_of "$chdir" >/dev/null; then
            ((perms)) && args+=(--perms 0755)
            args+=(--dir "$chdir")
            created[$chdir]=1
        fi
    fi
    args+=(--chdir "$chdir")
fi

if ((probe)); then
    exec "$bwrap_path" "${args[@]}" -- "$@"
fi

# 4. run bwrap in its own process group and forward signals to the command
info=$(mktemp "${TMPDIR:-/tmp}/ns-exec.XXXXXXXX") || die 125 "cannot create a temporary file in ${TMPDIR:-/tmp}"
trap 'rm -f -- "$info"' EXIT
# shellcheck disable=SC2317  # run by forward, from the signal traps
child_pid() {
    local text
    text=$(<"$info")
    [[ $text =~ \"child-pid\"[[:space:]]*:[[:space:]]*([0-9]+) ]] && printf '%s' "${BASH_REMATCH[1]}"
}
# shellcheck disable=SC2317  # run from the signal traps
forward() {
    local sig=$1 pid="" n
    got_signal=1
    for ((n = 0; n < 50; n++)); do
        pid=$(child_pid) && break
        kill -0 "$bwrap_pid" 2>/dev/null || return 0
        sleep 0.02
    done
    if [[ -n $pid ]]; then
        kill -s "$sig" "$pid" 2>/dev/null || true
    else
        kill -s "$sig" "$bwrap_pid" 2>/dev/null || true
    fi
}
set -m
if [[ -n $env_file ]]; then
    # inside the namespace this script runs again, only to load the env file: bwrap would
    # otherwise add PWD, and the values must not sit in bwrap's long-lived argv
    self=$(readlink -f -- "${BASH_SOURCE[0]}")
    args+=(--ro-bind "$env_file" /.il-env --ro-bind "$self" /.il-ns-exec)
    set -- bash /.il-ns-exec --env-file /.il-env -- "$@"
fi
"$bwrap_path" --info-fd 3 "${args[@]}" -- "$@" 3>"$info" &
bwrap_pid=$!
set +m
for sig in TERM INT HUP QUIT USR1 USR2; do
    # shellcheck disable=SC2064  # the signal name is fixed here on purpose
    trap "forward $sig" "$sig"
done
got_signal=0
while :; do
    got_signal=0
    rc=0
    wait "$bwrap_pid" || rc=$?
    ((got_signal)) || break
    kill -0 "$bwrap_pid" 2>/dev/null || {
        wait "$bwrap_pid" 2>/dev/null && rc=0 || rc=$?
        break
    }
done
exit "$rc"
