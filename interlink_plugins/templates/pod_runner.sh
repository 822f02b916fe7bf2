#!/usr/bin/env bash
# shellcheck disable=SC2034,SC2016,SC2317,SC2329,SC2153
# SC2034/SC2153: the per-job header assigns the arrays and values this file reads (some through namerefs);
# SC2016: single-quoted text is data (the perl log stamper); SC2317/SC2329: trap handlers and functions
# called indirectly look unreachable.
# interlink-plugins pod runner, static part (contract: docs/internals.md). The job's pod-runner.sh is a
# small generated header (core/podrunner/render.py) holding the pod's values, every one shell-quoted by the
# template layer; it sources this file, which is the same for every pod and lives once per content hash
# in the data root (core/podrunner/helpers.py).
# Runs one pod's containers inside the job: prologue, init containers in order, sidecars beside the
# main containers, restartPolicy with back-off, CRI logs and per-container state under c/<name>/.
# Needs bash >= 5, coreutils and util-linux (setsid, timeout, mkfifo, mv). Nothing in this file
# evaluates a name, a path or an argument (the prologue is the admin-enabled raw shell).
if [ -z "${BASH_VERSINFO-}" ] || [ "${BASH_VERSINFO[0]}" -lt 5 ]; then
  echo "pod-runner: bash >= 5 is required" >&2
  exit 1
fi
WRAPPED=0
[[ ${1-} == --wrapped ]] && WRAPPED=1

# ---------------------------------------------------------------------------------------------
# helpers

# stamp VAR: the current time as RFC3339Nano UTC, e.g. 2026-11-25T16:22:26.123456000Z
stamp() {
  local _us=${EPOCHREALTIME//[!0-9]/}
  printf -v "$1" '%(%Y-%m-%dT%H:%M:%S)T.%s000Z' "${_us:0:-6}" "${_us: -6}"
}

# child_alive PID: PID is a live child of this shell; never true for a reaped pid that was reused
# (Linux /proc/PID/stat: state and parent pid after the command name)
child_alive() {
  local stat
  [[ -n $1 ]] || return 1
  IFS= read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != [ZX] ]] || return 1
  stat=${stat#* }
  [[ ${stat%% *} == "$BASHPID" ]]
}

# now_us: REPLY = microseconds since the epoch
now_us() { REPLY=${EPOCHREALTIME//[!0-9]/}; }

# put FILE TEXT: atomic write (temp file + mv)
put() {
  printf '%s\n' "$2" >"$1.tmp.$BASHPID" && mv -f -- "$1.tmp.$BASHPID" "$1"
}

# get VAR FILE: first line of FILE into VAR (empty if missing)
get() {
  printf -v "$1" '%s' ''
  [[ -e $2 ]] && IFS= read -r "$1" <"$2"
  return 0
}

# number VAR FILE DEFAULT: a non-negative integer read from FILE, DEFAULT if missing or not a number
number() {
  local _n
  get _n "$2"
  [[ $_n =~ ^[0-9]{1,9}$ ]] || _n=$3
  printf -v "$1" '%d' "$((10#$_n))"
}

# seconds US: REPLY = US microseconds as seconds for humans (10, 0.2, 1.25)
seconds() {
  local frac
  printf -v frac '%06d' "$(($1 % 1000000))"
  while [[ $frac == *0 ]]; do frac=${frac%0}; done
  REPLY=$(($1 / 1000000))${frac:+.$frac}
}

say() {
  local ts
  stamp ts
  printf '%s pod-runner: %s\n' "$ts" "$*" >&2
}

# Log stamping: every line a container writes becomes `<RFC3339Nano> <stream> F <text>` (CRI). perl
# (perl-base and its core Time::HiRes are on every Debian/RHEL node) does it at pipe speed; bash's
# `read` loop is the fallback. One write per read of the pipe, at line boundaries (the two readers
# append to the same file), nothing buffered between reads (Follow sees lines at once, SIGTERM loses
# nothing). A line longer than 1 MiB goes out as P records of 1 MiB (CRI partial lines). With a cap
# (MaxContainerLogBytes), the file stops just under it with one marker line; the rest is read and
# dropped, so the container never blocks on its output.
# LOG_MAX_BYTES: set by the per-job header
LOG_STAMPER='
use strict;
use Fcntl qw(:flock);
use POSIX qw(strftime);
use Time::HiRes qw(gettimeofday);
my ($stream, $cap) = @ARGV;
my $piece = 1 << 20;
my $limit = $cap > 0 ? $cap - 256 : 0;
my ($sec, $day) = (-1, "");
my ($buf, $done, $open) = ("", 0, 0);
binmode STDIN;
binmode STDOUT;
sub stamp {
  my ($s, $us) = gettimeofday();
  if ($s != $sec) { $sec = $s; $day = strftime("%Y-%m-%dT%H:%M:%S", gmtime $s); }
  return sprintf("%s.%06d000Z %s ", $day, $us, $stream);
}
sub emit {
  my ($out) = @_;
  return if $done;
  if ($limit) {
    flock(STDOUT, LOCK_EX);
    my $size = -s STDOUT;
    if ($size > $limit) { $done = 1; flock(STDOUT, LOCK_UN); return; }
    if ($size + length($out) > $limit) {
      my $room = $limit - $size;
      my $cut = rindex($out, "\n", $room - 1);
      my $keep = $cut >= 0 ? substr($out, 0, $cut + 1) : "";
      my $rest = $room - length($keep);
      # the line that does not fit is cut (header + part of its text) to fill the room exactly
      $keep .= substr($out, length($keep), $rest - 1) . "\n" if $rest > 42;
      $out = $keep . stamp() . "F [pod-runner] log truncated: MaxContainerLogBytes ($cap bytes) reached, the rest of this container\x27s output is dropped\n";
      $done = 1;
    }
  }
  my $off = 0;
  while ($off < length $out) {
    my $n = syswrite(STDOUT, $out, length($out) - $off, $off);
    if (!defined $n) { next if $!{EINTR}; $done = 1; last; }
    $off += $n;
  }
  flock(STDOUT, LOCK_UN) if $limit;
}
while (1) {
  my $n = sysread(STDIN, $buf, 65536, length $buf);
  if (!defined $n) { next if $!{EINTR}; last; }
  if ($done) { $buf = ""; last if $n == 0; next; }
  if ($n == 0) { emit(stamp() . "F $buf\n") if length($buf) || $open; last; }
  my $end = rindex($buf, "\n");
  my $out = "";
  if ($end < 0) {
    next if length($buf) < $piece;
    while (length($buf) >= $piece) { $out .= stamp() . "P " . substr($buf, 0, $piece, "") . "\n"; }
    $open = 1;
  } else {
    my $pos = 0;
    while ($pos <= $end) {
      my $nl = index($buf, "\n", $pos);
      while ($nl - $pos > $piece) { $out .= stamp() . "P " . substr($buf, $pos, $piece) . "\n"; $pos += $piece; }
      $out .= stamp() . "F " . substr($buf, $pos, $nl - $pos) . "\n";
      $pos = $nl + 1;
    }
    substr($buf, 0, $end + 1, "");
    $open = 0;
  }
  emit($out);
}
'
LOG_PERL=''
command -v perl >/dev/null 2>&1 && perl -MTime::HiRes -e 1 2>/dev/null && LOG_PERL=perl

# log_reader STREAM: each line of stdin as a CRI log line on stdout (a last partial line too)
log_reader() {
  trap '' TERM INT HUP USR1 USR2
  if [[ -n $LOG_PERL ]]; then
    exec "$LOG_PERL" -e "$LOG_STAMPER" -- "$1" "$LOG_MAX_BYTES"
  fi
  log_reader_bash "$1"
}

# log_reader_bash STREAM: the fallback (bash `read`, about 50x slower); with a cap, each stream
# counts its own bytes against half of it (the two streams share the file)
log_reader_bash() {
  local line us n=0 limit=$((LOG_MAX_BYTES > 0 ? LOG_MAX_BYTES / 2 : 0)) LC_ALL=C
  while IFS= read -r line || [[ -n $line ]]; do
    us=${EPOCHREALTIME//[!0-9]/}
    if ((limit)); then
      n=$((n + ${#line} + 45))
      if ((n > limit)); then
        printf '%(%Y-%m-%dT%H:%M:%S)T.%s000Z %s F %s\n' "${us:0:-6}" "${us: -6}" "$1" \
          "[pod-runner] log truncated: MaxContainerLogBytes ($LOG_MAX_BYTES bytes) reached, the rest of this container's output is dropped"
        while IFS= read -r line || [[ -n $line ]]; do :; done
        return
      fi
    fi
    printf '%(%Y-%m-%dT%H:%M:%S)T.%s000Z %s F %s\n' "${us:0:-6}" "${us: -6}" "$1" "$line"
  done
}

# Containers start with default signal dispositions (bash ignores SIGINT/SIGQUIT in background jobs);
# `env --default-signal` needs coreutils >= 8.31, older nodes keep bash's behaviour.
SIGRESET=()
if env --default-signal true 2>/dev/null; then
  SIGRESET=(env --default-signal --)
fi

# finished_state DIR EXIT REASON: record an end (reason, then finished, then exit) and drop `waiting`
finished_state() {
  local ts
  [[ -n $3 ]] && put "$1/reason" "$3"
  stamp ts
  [[ -e $1/started ]] || put "$1/started" "$ts"
  put "$1/finished" "$ts"
  put "$1/exit" "$2"
  rm -f -- "$1/waiting"
}

# ---------------------------------------------------------------------------------------------
# one container: `supervise I &` runs container I with its restart policy, then records its end.
# Stop requests arrive as signals: TERM/INT = the pod is stopping, USR1 = sidecar shutdown after
# the main containers, USR2 = sidecar shutdown after a failed init container.

supervise() {
  STOP=''
  trap '[[ -n $STOP ]] || STOP=term' TERM INT
  trap '[[ -n $STOP ]] || STOP=sidecar' USR1
  trap '[[ -n $STOP ]] || STOP=initfail' USR2
  I=$1
  NAME=${NAMES[I]}
  DIR="$JOB_DIR/c/$NAME"
  local -n argv="ARGV_$I" post_start="POST_START_$I"
  local delay=$BACKOFF_INITIAL_US restarts ts started finished run_us human runs=0 last_reason
  number restarts "$DIR/restarts" 0
  EXEC=("${SIGRESET[@]}")
  [[ ${argv[0]} == *=* ]] && EXEC=()

  while :; do
    if [[ -n $STOP ]]; then
      if ((runs == 0)); then
        stopped_state never
      else
        stopped_state waiting
      fi
      return
    fi
    runs=$((runs + 1))
    if ! image_step; then
      if ((runs == 1)); then
        stopped_state never
      else
        stopped_state waiting
      fi
      return
    fi
    if ! binds_step; then
      if ((runs == 1)); then
        stopped_state never
      else
        stopped_state waiting
      fi
      return
    fi
    run_once
    if ((STOPPED)); then
      stopped_state "$STOPPED_HOW"
      return
    fi
    get started "$DIR/started"
    stamp finished
    put "$DIR/finished" "$finished"
    put "$DIR/exit" "$RC"
    say "container $NAME exited $RC"
    [[ -n $STOP ]] && return
    last_reason=''
    [[ -e $DIR/reason ]] && IFS=' ' read -r last_reason _ <"$DIR/reason"
    case ${POLICIES[I]} in
      Never) return ;;
      # as the kubelet: a container its liveness or startup probe killed restarts whatever its exit code
      OnFailure) ((RC == 0)) && [[ $last_reason != Unhealthy ]] && return ;;
    esac

    # CrashLoopBackOff: the kubelet's back-off, reset after a run of twice the maximum
    now_us
    run_us=$((REPLY - RUN_START_US))
    ((run_us >= 2 * BACKOFF_MAX_US)) && delay=$BACKOFF_INITIAL_US
    ((delay > BACKOFF_MAX_US)) && delay=$BACKOFF_MAX_US
    seconds "$delay"
    human=$REPLY
    put "$DIR/waiting" "CrashLoopBackOff back-off ${human}s restarting failed container $NAME"
    # the last run's log and state first: a status read in between never shows the new restartCount
    # without its lastState and previous log
    [[ -e $DIR/log ]] && mv -f -- "$DIR/log" "$DIR/log.prev"
    put "$DIR/last" "$RC $started $finished${last_reason:+ $last_reason}"
    restarts=$((restarts + 1))
    put "$DIR/restarts" "$restarts"
    rm -f -- "$DIR/started" "$DIR/finished" "$DIR/exit"
    say "container $NAME: back-off ${human}s before restart $restarts"
    printf -v ts '%d.%06d' "$((delay / 1000000))" "$((delay % 1000000))"
    sleep "$ts" &
    SLEEP_PID=$!
    while child_alive "$SLEEP_PID" && [[ -z $STOP ]]; do
      wait "$SLEEP_PID"
    done
    kill "$SLEEP_PID" 2>/dev/null
    delay=$((delay * 2))
  done
}

# image_step: the kubelet's image step before a start (pull or convert, IMAGE_<I>). The container
# waits "ContainerCreating pulling image X" meanwhile; a failure waits with its reason (ErrImagePull,
# ErrImageNeverPull) and the tool's last output (the registry's message), then "ImagePullBackOff"
# until the retry, with the restart back-off. Returns 1 when a stop request ends it.
image_step() {
  local -n image_argv="IMAGE_$I"
  [[ -n ${image_argv[0]+set} ]] || return 0
  local image=${IMAGES[I]} failure=${IMAGE_FAILURES[I]} delay=$BACKOFF_INITIAL_US out="$DIR/.image" r msg ts human
  while [[ -z $STOP ]]; do
    put "$DIR/waiting" "ContainerCreating pulling image $image"
    say "container $NAME: pulling image $image"
    setsid -- "${image_argv[@]}" </dev/null >"$out" 2>&1 &
    IMAGE_PID=$!
    r=0
    while child_alive "$IMAGE_PID"; do
      if [[ -n $STOP ]]; then
        kill -TERM -- "-$IMAGE_PID" 2>/dev/null
      fi
      wait "$IMAGE_PID"
      r=$?
    done
    IMAGE_PID=''
    [[ -n $STOP ]] && return 1
    if ((r == 0)); then
      say "container $NAME: pulled image $image"
      rm -f -- "$out"
      return 0
    fi
    msg=$(tail -c 1024 -- "$out" 2>/dev/null | tr -s '\n\t\r' '   ')
    put "$DIR/waiting" "$failure pulling image $image: $msg"
    say "container $NAME: pulling image $image failed (exit $r): $msg"
    ((delay > BACKOFF_MAX_US)) && delay=$BACKOFF_MAX_US
    seconds "$delay"
    human=$REPLY
    # ErrImagePull first, for a moment, then ImagePullBackOff while waiting to retry
    sleep 2 &
    SLEEP_PID=$!
    while child_alive "$SLEEP_PID" && [[ -z $STOP ]]; do
      wait "$SLEEP_PID"
    done
    kill "$SLEEP_PID" 2>/dev/null
    [[ -n $STOP ]] && return 1
    put "$DIR/waiting" "ImagePullBackOff Back-off ${human}s pulling image $image: $msg"
    printf -v ts '%d.%06d' "$((delay / 1000000))" "$((delay % 1000000))"
    sleep "$ts" &
    SLEEP_PID=$!
    while child_alive "$SLEEP_PID" && [[ -z $STOP ]]; do
      wait "$SLEEP_PID"
    done
    kill "$SLEEP_PID" 2>/dev/null
    delay=$((delay * 2))
  done
  return 1
}

# check_binds: every bind source of container I (BINDS_<I>: root, source, what) lies below its root
# through real directories, checked component by component without following one: an earlier
# container may have replaced a subPath directory by a symlink (`ln -s / sub`). REPLY = why not.
check_binds() {
  local -n binds="BINDS_$I"
  local k root src what rest part path
  REPLY=''
  for ((k = 0; k + 2 < ${#binds[@]}; k += 3)); do
    root=${binds[k]} src=${binds[k + 1]} what=${binds[k + 2]}
    root=${root%/}
    if [[ $src != "$root" && $src != "$root"/* ]]; then
      REPLY="$what: ${src@Q} is not below ${root:-/}"
      return 1
    fi
    rest=${src#"$root"} path=$root
    while [[ -n $rest ]]; do
      rest=${rest#/}
      part=${rest%%/*}
      rest=${rest:${#part}}
      [[ -z $part ]] && continue
      path+=/$part
      if [[ $part == . || $part == .. ]]; then
        REPLY="$what: ${src@Q} has a '.' or '..' component"
      elif [[ -L $path ]]; then
        REPLY="$what: ${path@Q} is a symlink (to $(readlink -- "$path" | head -c 200))"
      elif [[ ! -e $path ]]; then
        REPLY="$what: ${path@Q} does not exist"
      elif [[ -n $rest && ! -d $path ]]; then
        REPLY="$what: ${path@Q} is not a directory"
      fi
      if [[ -n $REPLY ]]; then
        REPLY+="; refused (the source is re-checked before each container start)"
        return 1
      fi
    done
  done
}

# binds_step: check_binds right before a start; a refusal keeps the container waiting
# (CreateContainerConfigError, as the kubelet's refused subPath) and is retried with the restart
# back-off until the source is fine again. Returns 1 when a stop request ends the wait.
binds_step() {
  local delay=$BACKOFF_INITIAL_US ts human why
  while [[ -z $STOP ]]; do
    check_binds && return 0
    why=$REPLY
    ((delay > BACKOFF_MAX_US)) && delay=$BACKOFF_MAX_US
    seconds "$delay"
    human=$REPLY
    put "$DIR/waiting" "CreateContainerConfigError $why"
    say "container $NAME not started: $why (retry in ${human}s)"
    printf -v ts '%d.%06d' "$((delay / 1000000))" "$((delay % 1000000))"
    sleep "$ts" &
    SLEEP_PID=$!
    while child_alive "$SLEEP_PID" && [[ -z $STOP ]]; do
      wait "$SLEEP_PID"
    done
    kill "$SLEEP_PID" 2>/dev/null
    delay=$((delay * 2))
  done
  return 1
}

# run_once: one run of the container; RC = its exit code, STOPPED=1 if a stop request ended it
run_once() {
  local out="$DIR/.stdout" err="$DIR/.stderr" r hook
  local -n probe_kinds="PROBES_$I"
  STOPPED=0
  STOPPED_HOW=''
  KILLED=0
  H_PID=''
  rm -f -- "$out" "$err" "$DIR/finished" "$DIR/exit" "$DIR/reason"
  if ! mkfifo -m 600 -- "$out" "$err"; then
    say "container $NAME: cannot create the log pipes in $DIR"
    put "$DIR/reason" "StartError cannot create the log pipes"
    RC=128
    now_us
    RUN_START_US=$REPLY
    stamp r
    put "$DIR/started" "$r"
    rm -f -- "$DIR/waiting"
    return
  fi
  # readers first (they must not inherit the write ends), then the write ends, then the process
  log_reader stdout <"$out" >>"$DIR/log" 2>/dev/null &
  R_OUT=$!
  log_reader stderr <"$err" >>"$DIR/log" 2>/dev/null &
  R_ERR=$!
  exec {W_OUT}>"$out" {W_ERR}>"$err"
  rm -f -- "$out" "$err"
  probe_files

  # own session and process group (setsid does not fork: pid == pgid), stdin /dev/null
  setsid -- "${EXEC[@]}" "${argv[@]}" </dev/null >&"$W_OUT" 2>&"$W_ERR" {W_OUT}>&- {W_ERR}>&- &
  C_PID=$!
  now_us
  RUN_START_US=$REPLY
  stamp r
  say "container $NAME started (pid $C_PID)"
  if [[ -n ${post_start[0]+set} ]]; then
    # like the kubelet: the container is reported running once its postStart hook finished; a failing
    # hook kills it (preStop, TERM, KILL after the grace period) and the restart policy decides
    put "$DIR/waiting" "ContainerCreating postStart hook running"
    setsid -- "${post_start[@]}" </dev/null >&"$W_OUT" 2>&"$W_ERR" {W_OUT}>&- {W_ERR}>&- &
    H_PID=$!
    wait "$H_PID"
    hook=$?
    while [[ -z $STOP ]] && child_alive "$H_PID"; do
      wait "$H_PID"
      hook=$?
    done
    if [[ -z $STOP ]] && ((hook != 0)); then
      say "container $NAME: postStart hook failed (exit $hook); killing it"
      kill_container "PostStartHookError postStart hook failed (exit $hook)" "$GRACE"
    fi
  fi
  put "$DIR/started" "$r"
  rm -f -- "$DIR/waiting"
  P_PID=''
  if [[ -n ${probe_kinds[0]+set} ]]; then
    probe_loop {W_OUT}>&- {W_ERR}>&- &
    P_PID=$!
  fi

  # a stop request may come in before or during the wait (the trap sets STOP and interrupts it)
  while :; do
    if [[ -n $STOP ]] && child_alive "$C_PID"; then
      stop_container
      r=143
      break
    fi
    wait "$C_PID"
    r=$?
    child_alive "$C_PID" || break
  done
  RC=$r
  # a stop request that reached the container directly (e.g. SLURM signals every process of the job)
  if [[ -n $STOP ]] && ((STOPPED || RC > 128)); then
    STOPPED=1
    STOPPED_HOW=running
  fi
  end_io
  if ((STOPPED)); then
    run_cleanup
  fi
}

# stop_container: preStop hook, TERM to the process group, KILL after the grace period
stop_container() {
  local deadline extra=0
  local -n pre_stop="PRE_STOP_$I"
  STOPPED=1
  stop_probes
  now_us
  deadline=$((REPLY + GRACE * 1000000))
  if [[ -n ${pre_stop[0]+set} ]] && ((GRACE > 0)); then
    say "container $NAME: preStop hook"
    timeout -k 1 "$GRACE" "${pre_stop[@]}" </dev/null {W_OUT}>&- {W_ERR}>&-
    extra=2000000 # like the kubelet: 2 s more for the container when the hook used up the grace
  fi
  say "container $NAME: SIGTERM"
  kill -TERM -- "-$C_PID" 2>/dev/null || kill -TERM "$C_PID" 2>/dev/null
  now_us
  ((deadline < REPLY + extra)) && deadline=$((REPLY + extra))
  while child_alive "$C_PID"; do
    now_us
    ((REPLY >= deadline)) && break
    sleep 0.05 {W_OUT}>&- {W_ERR}>&-
  done
  if child_alive "$C_PID"; then
    say "container $NAME: SIGKILL after the grace period (${GRACE}s)"
    KILLED=1
    kill -KILL -- "-$C_PID" 2>/dev/null || kill -KILL "$C_PID" 2>/dev/null
  fi
  while child_alive "$C_PID"; do
    wait "$C_PID"
  done
  wait "$C_PID" 2>/dev/null
}

# end_io: kill what is left of the container's group and its postStart hook, drain the log readers
end_io() {
  local n=0
  stop_probes
  kill -KILL -- "-$C_PID" 2>/dev/null
  # the postStart hook's group, only while its leader lives (a reaped pid may be reused)
  if child_alive "$H_PID"; then
    kill -KILL -- "-$H_PID" 2>/dev/null || kill -KILL "$H_PID" 2>/dev/null
  fi
  [[ -n $H_PID ]] && wait "$H_PID" 2>/dev/null
  exec {W_OUT}>&- {W_ERR}>&-
  # readers end at EOF; a process that escaped the group may hold the pipe: give up after 5 s
  while child_alive "$R_OUT" || child_alive "$R_ERR"; do
    if ((++n > 100)); then
      say "container $NAME: log pipe still held open, closing the log"
      kill -KILL "$R_OUT" "$R_ERR" 2>/dev/null
      break
    fi
    sleep 0.05
  done
  wait "$R_OUT" "$R_ERR" 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# probes (Kubernetes semantics): the startup probe gates the others; readiness only moves the
# container's `ready` file; a liveness or startup probe that reaches its failure threshold kills the
# container (preStop, TERM, KILL after the grace period) and the restart policy decides.

# probe_files: `ready` / `startup` (0|1) exist only for containers whose probes decide them
probe_files() {
  local k
  rm -f -- "$DIR/ready" "$DIR/startup" "$DIR/.probe"
  for k in "${probe_kinds[@]}"; do
    case $k in
      startup)
        put "$DIR/startup" 0
        put "$DIR/ready" 0
        ;;
      readiness) put "$DIR/ready" 0 ;;
    esac
  done
}

stop_probes() {
  if child_alive "$P_PID"; then
    kill -TERM "$P_PID" 2>/dev/null
  fi
  [[ -n $P_PID ]] && wait "$P_PID" 2>/dev/null
  P_PID=''
}

# probe_sleep US: sleep, interruptible by the TERM trap
probe_sleep() {
  local t
  ((${1} > 0)) || return 0
  printf -v t '%d.%06d' "$(($1 / 1000000))" "$(($1 % 1000000))"
  sleep "$t" {W_OUT}>&- {W_ERR}>&- &
  PCHILD=$!
  wait "$PCHILD"
  PCHILD=''
}

# kill_container REASON GRACE: what the kubelet does to a container whose liveness/startup probe or
# postStart hook failed: REASON ("Word message") recorded, preStop hook, TERM, KILL after GRACE seconds
kill_container() {
  local deadline
  local -n pre_stop="PRE_STOP_$I"
  put "$DIR/reason" "$1"
  put "$DIR/ready" 0
  now_us
  deadline=$((REPLY + $2 * 1000000))
  if [[ -n ${pre_stop[0]+set} ]] && (($2 > 0)); then
    timeout -k 1 "$2" "${pre_stop[@]}" </dev/null
  fi
  kill -TERM -- "-$C_PID" 2>/dev/null || kill -TERM "$C_PID" 2>/dev/null
  while kill -0 -- "-$C_PID" 2>/dev/null; do
    now_us
    ((REPLY >= deadline)) && break
    sleep 0.05
  done
  kill -KILL -- "-$C_PID" 2>/dev/null
}

# probe_loop: run in the background by run_once while container I runs (C_PID)
probe_loop() {
  PCHILD=''
  trap '[[ -n $PCHILD ]] && kill -KILL "$PCHILD" 2>/dev/null; exit 0' TERM
  trap '' INT USR1 USR2
  local -n kinds="PROBES_$I"
  local -a due=() delay=() period=() tmo=() succ=() fail=() grace=() ok=() bad=()
  local j best rc started=1 ready=0 has_ready=0 detail g
  for j in "${!kinds[@]}"; do
    local -n nums="PROBE_${I}_${j}_N"
    delay[j]=${nums[0]} period[j]=${nums[1]} tmo[j]=${nums[2]}
    succ[j]=${nums[3]} fail[j]=${nums[4]} grace[j]=${nums[5]}
    due[j]=$((RUN_START_US + delay[j] * 1000000))
    ok[j]=0 bad[j]=0
    [[ ${kinds[j]} == startup ]] && started=0
    [[ ${kinds[j]} == readiness ]] && has_ready=1
  done
  while :; do
    best=-1
    for j in "${!kinds[@]}"; do
      if [[ ${kinds[j]} == startup ]]; then
        ((started)) && continue
      elif ((!started)); then
        continue
      fi
      ((best < 0 || due[j] < due[best])) && best=$j
    done
    ((best < 0)) && exit 0
    now_us
    probe_sleep "$((due[best] - REPLY))"
    now_us
    due[best]=$((REPLY + period[best] * 1000000))
    local -n check="PROBE_${I}_${best}"
    timeout -k 1 "${tmo[best]}" "${check[@]}" </dev/null >"$DIR/.probe" 2>&1 {W_OUT}>&- {W_ERR}>&- &
    PCHILD=$!
    wait "$PCHILD"
    rc=$?
    PCHILD=''
    if ((rc == 0)); then
      ok[best]=$((ok[best] + 1))
      bad[best]=0
      ((ok[best] < succ[best])) && continue
      case ${kinds[best]} in
        startup)
          started=1
          ((has_ready)) || put "$DIR/ready" 1
          put "$DIR/startup" 1
          now_us
          for j in "${!kinds[@]}"; do
            ((due[j] < REPLY)) && due[j]=$REPLY
          done
          ;;
        readiness)
          ((ready)) || put "$DIR/ready" 1
          ready=1
          ;;
      esac
      continue
    fi
    ok[best]=0
    bad[best]=$((bad[best] + 1))
    ((bad[best] < fail[best])) && continue
    if [[ ${kinds[best]} == readiness ]]; then
      ((ready)) && put "$DIR/ready" 0
      ready=0
      continue
    fi
    detail=''
    if ((rc == 124)); then
      detail="timed out after ${tmo[best]}s"
    else
      IFS= read -r -n 200 detail <"$DIR/.probe"
      detail="exit $rc${detail:+: $detail}"
    fi
    g=${grace[best]}
    ((g < 0)) && g=$GRACE
    say "container $NAME: ${kinds[best]} probe failed ${bad[best]} times ($detail); killing it"
    kill_container "Unhealthy ${kinds[best]} probe failed ${bad[best]} times ($detail)" "$g"
    exit 0
  done
}

run_cleanup() {
  local -n cleanup="CLEANUP_$I"
  if [[ -n ${cleanup[0]+set} ]]; then
    say "container $NAME: cleanup"
    timeout -k 5 30 "${cleanup[@]}" </dev/null
  fi
}

# stopped_state HOW: record the end of a container stopped by the runner (HOW: running|waiting|never)
stopped_state() {
  if [[ $STOP == sidecar ]]; then
    finished_state "$DIR" 0 "Completed sidecar stopped after the main containers finished"
  elif [[ $STOP == initfail ]]; then
    finished_state "$DIR" 0 "Completed sidecar stopped because an init container failed"
  elif [[ $1 == never ]]; then
    finished_state "$DIR" 143 "Terminated pod stopped before the container started"
  elif [[ $1 == waiting ]]; then
    finished_state "$DIR" 143 "Terminated pod stopped while the container was waiting to restart"
  elif ((KILLED)); then
    finished_state "$DIR" 137 "Killed SIGKILL after grace period"
  else
    finished_state "$DIR" 143 "Terminated killed by SIGTERM"
  fi
  if [[ $1 == waiting ]]; then
    run_cleanup
  fi
  say "container $NAME stopped ($STOP)"
}

# ---------------------------------------------------------------------------------------------
# the pod

declare -a SUP=()
STOPPING=0
PHASE=start
INIT_FAILED=''
PRE_FAILED=''
WRAP_PID=''

on_signal() {
  ((STOPPING)) && return
  STOPPING=1
  say "stop requested: stopping every container"
  local pid
  for pid in "${SUP[@]}"; do
    child_alive "$pid" && kill -TERM "$pid" 2>/dev/null
  done
  # the runner inside the wrapper (the wrapper may not pass signals on)
  if child_alive "$WRAP_PID"; then
    number pid "$JOB_DIR/.wrapped.pid" 0
    ((pid > 1)) && kill -TERM "$pid" 2>/dev/null
    kill -TERM "$WRAP_PID" 2>/dev/null
  fi
}

on_exit() {
  local rc=$?
  if [[ $PHASE == prologue ]]; then
    PRE_FAILED="PreExecFailed prologue command $((PROLOGUE_AT + 1)) exited the runner with $rc"
    finish
  fi
  drop_credentials
}

# prepare I: state dir of container I; a run left by an earlier attempt of this job becomes lastState
prepare() {
  local d="$JOB_DIR/c/${NAMES[$1]}" st fin ex n
  mkdir -p -- "$d" || exit 1
  rm -f -- "$d/.stdout" "$d/.stderr"
  if [[ -e $d/started ]]; then
    get st "$d/started"
    get fin "$d/finished"
    number ex "$d/exit" 137
    [[ -n $fin ]] || stamp fin
    put "$d/last" "$ex $st $fin"
    number n "$d/restarts" 0
    put "$d/restarts" "$((n + 1))"
    [[ -e $d/log ]] && mv -f -- "$d/log" "$d/log.prev"
  fi
  rm -f -- "$d/started" "$d/finished" "$d/exit" "$d/reason" "$d/waiting" "$d/ready" "$d/startup"
  if [[ ${KINDS[$1]} == main && $HAS_INIT == 1 ]]; then
    put "$d/waiting" "PodInitializing waiting for the init containers"
  else
    put "$d/waiting" "ContainerCreating waiting for the pod runner to start it"
  fi
}

start() {
  supervise "$1" &
  SUP[$1]=$!
  if ((STOPPING)); then
    kill -TERM "${SUP[$1]}" 2>/dev/null
  fi
}

# wait_for SIGNAL I...: wait until the supervisors of containers I... are done; SIGNAL (if not
# empty, and TERM once the pod is stopping) is sent again every 0.25 s so a request cannot be lost
wait_for() {
  local sig=$1 i pid
  shift
  for i in "$@"; do
    pid=${SUP[i]}
    [[ -n $pid ]] || continue
    while child_alive "$pid"; do
      if ((STOPPING)) || [[ -n $sig ]]; then
        ((STOPPING)) && sig=TERM
        kill "-$sig" "$pid" 2>/dev/null
        sleep 0.25 &
        wait $!
      else
        wait "$pid"
      fi
    done
    wait "$pid" 2>/dev/null
  done
}

# indexes of the containers by role
INITS=()
MAINS=()
SIDES=()
SIDES_LAST_FIRST=()
HAS_INIT=0
for i in "${!NAMES[@]}"; do
  if [[ ${KINDS[i]} == main ]]; then
    MAINS+=("$i")
  elif ((SIDECARS[i])); then
    SIDES+=("$i")
    SIDES_LAST_FIRST=("$i" "${SIDES_LAST_FIRST[@]}")
  else
    INITS+=("$i")
    HAS_INIT=1
  fi
done

# drop_credentials: the files only the image steps read (registry credentials) are gone for good
drop_credentials() {
  [[ -n ${CREDENTIAL_FILES[0]+set} ]] && rm -f -- "${CREDENTIAL_FILES[@]}"
}

finish() {
  local i d code=0 ex pid
  PHASE=finish
  drop_credentials
  for i in "${!NAMES[@]}"; do
    d="$JOB_DIR/c/${NAMES[i]}"
    [[ -e $d/exit ]] && continue
    if [[ -n $PRE_FAILED ]]; then
      finished_state "$d" 1 "$PRE_FAILED"
    elif [[ -n $INIT_FAILED && -z ${SUP[i]} ]]; then
      finished_state "$d" 1 "$INIT_FAILED"
    elif [[ -z ${SUP[i]} || ! -e $d/started ]]; then
      finished_state "$d" 143 "Terminated pod stopped before the container started"
    else
      finished_state "$d" 137 "Killed the pod runner lost this container's supervisor"
    fi
  done
  for i in "${!NAMES[@]}"; do
    ((SIDECARS[i])) && continue
    number ex "$JOB_DIR/c/${NAMES[i]}/exit" 1
    ((ex > code)) && code=$ex
  done
  ((code > 255)) && code=255
  put "$JOB_DIR/pod.exit" "$code"
  say "pod finished, exit $code"
  exit "$code"
}

trap on_signal TERM INT
trap on_exit EXIT
mkdir -p -- "$JOB_DIR/c" || exit 1
if ((WRAPPED)); then
  # inside the wrapper: prepare and prologue already ran in the outer runner
  put "$JOB_DIR/.wrapped.pid" "$$"
  PROLOGUE=()
else
  rm -f -- "$JOB_DIR/pod.exit" "$JOB_DIR/.wrapped.pid"
  for i in "${!NAMES[@]}"; do
    prepare "$i"
  done
fi

# prologue: admin-enabled shell, run in order in the runner itself
PHASE=prologue
for PROLOGUE_AT in "${!PROLOGUE[@]}"; do
  ((STOPPING)) && break
  eval "${PROLOGUE[PROLOGUE_AT]}"
  rc=$?
  # the prologue must not take the runner's signal handling or error mode with it
  trap on_signal TERM INT
  set +e +u
  if ((rc != 0)); then
    PRE_FAILED="PreExecFailed prologue command $((PROLOGUE_AT + 1)) exited $rc"
    say "$PRE_FAILED"
    break
  fi
done
# prepare: the runtimes' steps before any container (argv arrays: nothing is evaluated)
PHASE=prepare
if ((!WRAPPED)) && [[ -z $PRE_FAILED ]]; then
  for ((k = 0; k < PREPARE_COUNT; k++)); do
    ((STOPPING)) && break
    declare -n step="PREPARE_$k"
    "${step[@]}"
    rc=$?
    unset -n step
    if ((rc != 0)); then
      PRE_FAILED="ErrImagePull preparing the images: step $((k + 1)) exited $rc (see runner.out)"
      say "$PRE_FAILED"
      break
    fi
  done
fi
PHASE=run
[[ -n $PRE_FAILED ]] && finish
((STOPPING)) && finish

# the containers inside the wrapper (interLink's mesh script): it runs a second runner as its argument
if [[ -n ${WRAPPER[0]+set} ]] && ((!WRAPPED)); then
  say "running the containers inside ${WRAPPER[0]}"
  "${WRAPPER[@]}" bash "$JOB_DIR/pod-runner.sh" --wrapped &
  WRAP_PID=$!
  rc=0
  while child_alive "$WRAP_PID"; do
    wait "$WRAP_PID"
    rc=$?
  done
  wait "$WRAP_PID" 2>/dev/null
  r=$?
  ((r != 127)) && rc=$r
  if [[ ! -e $JOB_DIR/pod.exit ]]; then
    ran=0
    for i in "${!NAMES[@]}"; do
      [[ -e $JOB_DIR/c/${NAMES[i]}/started ]] && ran=1
    done
    ((ran)) || PRE_FAILED="PreExecFailed the wrapper ${WRAPPER[0]} exited $rc before the containers ran"
    finish
  fi
  number rc "$JOB_DIR/pod.exit" 1
  exit "$rc"
fi

# init containers in order (sidecars start and stay), then the main containers in parallel
for i in "${!NAMES[@]}"; do
  [[ ${KINDS[i]} == init ]] || continue
  ((STOPPING)) && break
  start "$i"
  ((SIDECARS[i])) && continue
  wait_for '' "$i"
  number ex "$JOB_DIR/c/${NAMES[i]}/exit" 1
  if ((ex != 0)) && ((!STOPPING)); then
    INIT_FAILED="InitContainerFailed init container ${NAMES[i]} exited $ex"
    say "$INIT_FAILED"
    break
  fi
done

if [[ -z $INIT_FAILED ]] && ((!STOPPING)); then
  for i in "${MAINS[@]}"; do
    start "$i"
  done
  wait_for '' "${MAINS[@]}"
fi

# sidecars stop once the main containers are done (or an init container failed), last first
if [[ -n $INIT_FAILED ]]; then
  sig=USR2
else
  sig=USR1
fi
for i in "${SIDES_LAST_FIRST[@]}"; do
  child_alive "${SUP[i]}" && kill "-$sig" "${SUP[i]}" 2>/dev/null
done
wait_for "$sig" "${SIDES[@]}"
wait_for '' "${!SUP[@]}"
finish
