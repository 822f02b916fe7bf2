#!/bin/bash
# interlink-plugins apptainer/singularity launcher (installed in every job dir, run by the pod runner).
#
#   bash apptainer.sh BINARY FALLBACK ENV_FILE SIF IMAGE VERB [OPTION]... -- [ARG]...
#   bash apptainer.sh --convert BINARY FALLBACK AUTH_FILE SIF IMAGE
#
# VERB      exec or run; "convert" only converts IMAGE into SIF and exits (the runner's image step,
#           so the container waits ContainerCreating during a conversion and ErrImagePull after a
#           failed one, instead of running with an empty log)
# BINARY    the configured runtime binary; FALLBACK is tried when BINARY is not on PATH ("" = none)
# ENV_FILE  the container's env: NAME=VALUE records, NUL-separated (written by the plugin, 0600);
#           each becomes APPTAINERENV_NAME (SINGULARITYENV_NAME for a singularity binary) in the
#           binary's environment, so no value is ever in an argv and none is parsed by a shell
# SIF       "" to run IMAGE as given; else IMAGE is converted once into this SIF file (under a
#           flock, so pods started together convert once) and the SIF is run. A SIF in the shared
#           cache (ApptainerCacheDir) has the dir uid-@UID@: it becomes uid-<our uid>, a dir that must
#           be ours and private, in a cache root that is ours or root's and, if others may write it,
#           sticky (like /tmp): a job of another uid can never plant or swap the SIF we run
# --convert only converts IMAGE into SIF, with the registry credentials of AUTH_FILE (a private
#           docker-style auth file given to the build as --authfile, never an argv or an environment),
#           and removes AUTH_FILE once the SIF exists: the pod runner's image step for that container.
# `--` ends the runtime's options before every image, so an image is never read as an option.
set -uo pipefail
convert_only=0 auth=''
if [[ ${1-} == --convert ]]; then
  convert_only=1 bin=$2 fallback=$3 auth=$4 sif=$5 image=$6 env_file='' verb=''
  shift 6
else
  bin=$1 fallback=$2 env_file=$3 sif=$4 image=$5 verb=$6
  shift 6
fi
opts=()
while (($#)) && [[ $1 != -- ]]; do
  opts+=("$1")
  shift
done
(($#)) && shift  # the --

path=$(command -v -- "$bin" 2>/dev/null)
if [[ -z $path && -n $fallback ]]; then
  path=$(command -v -- "$fallback" 2>/dev/null)
fi
if [[ -z $path ]]; then
  echo "apptainer.sh: neither ${bin@Q} nor ${fallback@Q} is on PATH ($PATH)" >&2
  exit 127
fi
# the env prefix the binary found reads (singularity is often a link to apptainer)
real=$(readlink -f -- "$path" 2>/dev/null || printf '%s' "$path")
want=APPTAINERENV_
[[ ${real##*/} == *singularity* ]] && want=SINGULARITYENV_
# the runtime's INFO lines (e.g. "gocryptfs not found") are not the container's output
if [[ $want == APPTAINERENV_ ]]; then
  export APPTAINER_QUIET=${APPTAINER_QUIET-1}
else
  export SINGULARITY_QUIET=${SINGULARITY_QUIET-1}
fi
if [[ -n $env_file ]]; then
  if ! mapfile -d '' -t records <"$env_file"; then
    echo "apptainer.sh: cannot read the env file ${env_file@Q}" >&2
    exit 1
  fi
  for record in "${records[@]}"; do
    export "$want${record%%=*}=${record#*=}"
  done
  unset records record
fi

# a private per-uid dir of the shared cache (made here when missing); 1 when it is not safe to use
private_cache() {
  local dir=$1 root=${1%/*} me
  me=$(id -u)
  # shellcheck disable=SC2174  # the mode is meant for the cache root itself, not for its parents
  [[ -d $root ]] || mkdir -p -m 0755 -- "$root" 2>/dev/null
  [[ -d $dir || -L $dir ]] || mkdir -m 0700 -- "$dir" 2>/dev/null
  local root_owner root_mode owner mode
  read -r root_owner root_mode < <(stat -c '%u %a' -- "$root" 2>/dev/null)
  if [[ -L $root || ( $root_owner != 0 && $root_owner != "$me" ) ]] \
     || (( (8#${root_mode:-0} & 8#022) && !(8#${root_mode:-0} & 8#1000) )); then
    echo "apptainer.sh: the image cache ${root@Q} must be owned by root or uid $me, and sticky if others may write it" >&2
    return 1
  fi
  read -r owner mode < <(stat -c '%u %a' -- "$dir" 2>/dev/null)
  if [[ -L $dir || ! -d $dir || $owner != "$me" ]] || (( 8#${mode:-0} & 8#022 )); then
    echo "apptainer.sh: the image cache dir ${dir@Q} is not a private dir of uid $me" >&2
    return 1
  fi
}

if [[ $sif == */uid-@UID@/* ]]; then
  sif=${sif/\/uid-@UID@\//\/uid-$(id -u)\/}
  private_cache "${sif%/*}" || exit 1
fi
if [[ -n $sif ]]; then
  if [[ ! -s $sif ]]; then
    dir=${sif%/*}
    mkdir -p -- "$dir" 2>/dev/null
    if ! exec 9>>"$sif.lock"; then
      echo "apptainer.sh: cannot create the lock ${sif@Q}.lock" >&2
      exit 1
    fi
    if ! flock -w 3600 9; then
      echo "apptainer.sh: timed out waiting for the conversion of ${image@Q}" >&2
      exit 1
    fi
    if [[ ! -s $sif ]]; then
      tmp="$sif.tmp.$$"
      log="$sif.build.log"
      # credentials only through the private auth file (never an argv or an environment)
      build=("$path" build -F)
      [[ -n $auth ]] && build+=(--authfile "$auth")
      "${build[@]}" -- "$tmp" "$image" >"$log" 2>&1 </dev/null
      rc=$?
      if ((rc != 0)); then
        rm -f -- "$tmp"
        echo "apptainer.sh: converting ${image@Q} failed (exit $rc):" >&2
        tail -n 20 -- "$log" >&2
        exit 1
      fi
      mv -f -- "$tmp" "$sif"
      printf '%s built %s -> %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$image" "$sif" >>"${dir}/builds.log"
    fi
    exec 9>&-
  fi
  image=$sif
fi
# VERB "convert" and --convert (with credentials) are image steps: they only convert; the auth file
# goes once the SIF exists (after a failure it stays for the retry; the runner removes it at its end)
if ((convert_only)) || [[ $verb == convert ]]; then
  [[ -n $auth ]] && rm -f -- "$auth"
  exit 0
fi
exec "$path" "$verb" "${opts[@]}" -- "$image" "$@"
