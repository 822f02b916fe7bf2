#!/usr/bin/env bash
# interlink-plugins probe helper, installed in the job dir; the pod runner runs it under `timeout`.
#   probe.sh tcp HOST PORT
#   probe.sh http SCHEME HOST PORT PATH [HEADER]...      (HEADER: "Name: value")
#   probe.sh podman-exec PODMAN NAME COMMAND...           (exec hook or probe, runtime podman)
#   probe.sh podman-pull PODMAN POLICY IMAGE              (image step of runtime podman)
# Exit 0 = success (TCP: the connection opens; HTTP: a status from 200 to 399, as the kubelet).
# Every value arrives as an argument: nothing here evaluates it.
set -u
mode=${1-}
shift || true
case $mode in
  tcp)
    [[ $# -eq 2 ]] || { echo "usage: probe.sh tcp HOST PORT" >&2; exit 2; }
    if ! exec 3<>"/dev/tcp/$1/$2"; then
      echo "tcp $1:$2: connection refused" >&2
      exit 1
    fi
    exec 3>&-
    exit 0
    ;;
  http)
    [[ $# -ge 4 ]] || { echo "usage: probe.sh http SCHEME HOST PORT PATH [HEADER]..." >&2; exit 2; }
    scheme=${1,,} host=$2 port=$3 path=$4
    shift 4
    authority=$host
    [[ $host == *:* ]] && authority="[$host]"
    authority="$authority:$port"
    if command -v curl >/dev/null 2>&1; then
      args=(--silent --show-error --globoff --output /dev/null --write-out '%{http_code}'
            --header 'User-Agent: kube-probe/1.31' --header 'Accept: */*')
      # the kubelet does not verify certificates of HTTPS probes
      [[ $scheme == https ]] && args+=(--insecure)
      for header in "$@"; do
        args+=(--header "$header")
      done
      code=$(curl "${args[@]}" -- "$scheme://$authority$path")
      rc=$?
      ((rc == 0)) || exit 1
    else
      if [[ $scheme != http ]]; then
        echo "https probe needs curl on the compute node" >&2
        exit 1
      fi
      if ! exec 3<>"/dev/tcp/$host/$port"; then
        echo "http $authority: connection refused" >&2
        exit 1
      fi
      printf 'GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: kube-probe/1.31\r\nAccept: */*\r\n' "$path" "$authority" >&3
      for header in "$@"; do
        printf '%s\r\n' "$header" >&3
      done
      printf '\r\n' >&3
      IFS=' ' read -r _ code _ <&3
      exec 3>&-
    fi
    if [[ $code =~ ^[0-9]{3}$ ]] && ((10#$code >= 200 && 10#$code < 400)); then
      exit 0
    fi
    echo "http $scheme://$authority$path: status ${code:-none}" >&2
    exit 1
    ;;
  podman-pull)
    # the kubelet's image step for runtime podman: POLICY always|newer pulls, missing pulls when
    # the image is not there, never only checks that it is
    [[ $# -eq 3 ]] || { echo "usage: probe.sh podman-pull PODMAN POLICY IMAGE" >&2; exit 2; }
    bin=$1 policy=$2 image=$3
    case $policy in
      never)
        "$bin" image exists -- "$image" && exit 0
        echo "image $image is not present and the pull policy is Never" >&2
        exit 1
        ;;
      missing) "$bin" image exists -- "$image" && exit 0 ;;
    esac
    exec "$bin" pull --quiet -- "$image"
    ;;
  podman-exec)
    # the runner starts `podman run` in the background and a postStart hook right after it, when
    # podman may not have created the container yet: wait until it runs, then exec into it
    [[ $# -ge 3 ]] || { echo "usage: probe.sh podman-exec PODMAN NAME COMMAND..." >&2; exit 2; }
    bin=$1 name=$2
    shift 2
    for ((i = 0; i < 600; i++)); do
      state=$("$bin" container inspect --format '{{.State.Status}}' -- "$name" 2>/dev/null) || state=''
      case $state in
        running) exec "$bin" exec -- "$name" "$@" ;;
        exited|stopped|stopping|removing) echo "container $name is $state" >&2; exit 1 ;;
      esac
      sleep 0.1
    done
    echo "container $name did not start within 60 s" >&2
    exit 1
    ;;
  *)
    echo "probe.sh: unknown mode ${mode@Q}" >&2
    exit 2
    ;;
esac
