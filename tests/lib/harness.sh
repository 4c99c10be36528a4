# shellcheck shell=bash
# Shared helpers of the bash suites tests/e2e/run.sh, tests/contract/run.sh and benches/load/run.sh.
# Sourced (never executed) after the caller has set `set -euo pipefail` and REPO_ROOT:
#   source "$REPO_ROOT/tests/lib/harness.sh"
# Functions read the caller's globals at call time, so TMP / PIDDIR may be set after sourcing.
#
# Globals the caller sets (only those of the functions it uses):
#   TMP               the run's `mktemp -d` directory (steps write $TMP/steps/NN.log, logs live in $TMP/logs)
#   PIDDIR            where start_bg records pids and exit statuses (usually $TMP/pids)
#   HARNESS_NAME      prefix of the cleanup messages ("e2e", "contract")
#   HARNESS_KEEP      1 = harness_cleanup keeps $TMP (default 0)
#   HARNESS_VERBOSE   1 = run_step prints every step's output, not only that of failed steps (default 0)
#   HARNESS_FAIL_TAIL lines of a failed step's output shown when not verbose (default 60)
#   HARNESS_PYTHON    interpreter pick_port uses (default python3; without one it probes random ports)
#   HARNESS_PORT_FATAL 1 = pick_port exits the script (through `die`) instead of returning 1 (default 0)
#
# Functions:
#   pick_port VAR           store a free TCP port on 127.0.0.1 in VAR; a port is never handed out twice in one
#                           run (call it in the main shell, not in a subshell, so USED_PORTS is remembered).
#   start_bg NAME LOG CMD...  start CMD in the background (stdin /dev/null, stdout+stderr to LOG) through a tiny
#                           bash wrapper that writes the real pid to $PIDDIR/NAME.pid and, once CMD exits, its exit
#                           status to $PIDDIR/NAME.rc (the wrapper's pid goes to $PIDDIR/NAME.wrapper). Works from
#                           the main shell and from step subshells alike. Fails if no pid shows up within 5 s.
#   is_running NAME         true while the process started as NAME has not exited.
#   stop_bg NAME [TIMEOUT_S]  SIGTERM, wait up to TIMEOUT_S (default 10), then SIGKILL; prints the recorded exit
#                           status (143 = killed by SIGTERM without handling it, 137 = SIGKILL, "unknown").
#   wait_http URL [TIMEOUT_S] [NAME]  wait until GET URL answers 200 (default 30 s); fails early if process NAME
#                           (started with start_bg) exited.
#   stop_all_bg             stop everything start_bg started: SIGTERM to what still runs, up to 5 s, then SIGKILL
#                           to every remaining process and wrapper.
#   unmount_below_tmp       unmount whatever is mounted below $TMP (containerd snapshots), deepest first.
#   harness_cleanup         EXIT trap: stop_all_bg, then the caller's hook `harness_cleanup_hook` if defined,
#                           then remove $TMP (or keep it when HARNESS_KEEP=1); exits with the original status.
#   harness_traps FUNC      install FUNC as the EXIT trap; INT and TERM exit 130 / 143 (so FUNC runs on Ctrl-C).
#   run_step NAME FUNC ARGS...  run FUNC in a subshell with errexit, output to $TMP/steps/NN.log; print
#                           `PASS NAME` / `FAIL NAME` (plus the output of a failed step), count PASSED / FAILED,
#                           append failures to FAILED_NAMES, leave STEP_OK (1 = passed). Always returns 0: never call
#                           it in a conditional context (`if`, `&&`, `||`), bash would then ignore errexit inside.
#   critical_step NAME FUNC ARGS...  run_step, and when it fails: print the abort line, call the caller's `finish`
#                           and exit 1.
#   run_captured FUNC ARGS...  the capture part of run_step (next STEP_NO, subshell with errexit); leaves the log
#                           file in STEP_OUT and the status in STEP_RC (for step kinds of the caller's own).
#   dump_log_tails LINES COLS  print the last LINES lines (cut to COLS columns, indented) of every $TMP/logs/*.log.
#   settle_access_log       wait until ociregistry's access-log lines for answers already given are written.

# settle_access_log: ociregistry writes access-log lines from a thread that takes them at least every 100 ms, so a
# line lands up to 100 ms after its answer. Call this before counting lines for requests just answered
# (and before asserting that a request left no line).
settle_access_log() { sleep 0.5; }

USED_PORTS=" "
pick_port() {
  local p py="${HARNESS_PYTHON:-python3}"
  for _ in $(seq 1 50); do
    if command -v "$py" >/dev/null 2>&1; then
      p="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    else
      p=$((20000 + RANDOM % 40000))
      # something answers there -> in use
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
    fi
    [[ "$USED_PORTS" == *" $p "* ]] && continue
    USED_PORTS+="$p "
    printf -v "$1" '%s' "$p"
    return 0
  done
  if [[ "${HARNESS_PORT_FATAL:-0}" == "1" ]]; then die "no free port"; fi
  echo "no free port found" >&2
  return 1
}

# ---------------------------------------------------------------------------------------------------------
# Background processes
# ---------------------------------------------------------------------------------------------------------
start_bg() { # NAME LOGFILE CMD...
  local name=$1 logf=$2
  shift 2
  rm -f "$PIDDIR/$name.pid" "$PIDDIR/$name.rc"
  bash -c 'pd=$1; n=$2; lf=$3; shift 3
           "$@" </dev/null >"$lf" 2>&1 &
           p=$!; echo "$p" >"$pd/$n.pid.tmp"; mv "$pd/$n.pid.tmp" "$pd/$n.pid"
           wait "$p"; echo $? >"$pd/$n.rc.tmp"; mv "$pd/$n.rc.tmp" "$pd/$n.rc"' \
    _ "$PIDDIR" "$name" "$logf" "$@" </dev/null >/dev/null 2>&1 &
  echo "$!" >"$PIDDIR/$name.wrapper"
  local i
  for i in $(seq 1 100); do
    [[ -s "$PIDDIR/$name.pid" ]] && return 0
    sleep 0.05
  done
  echo "could not start $name" >&2
  return 1
}

is_running() { # NAME -> true while the process has not exited
  [[ -s "$PIDDIR/$1.pid" && ! -e "$PIDDIR/$1.rc" ]]
}

stop_bg() { # NAME [TIMEOUT_S]
  local name=$1 t=${2:-10} pid i
  pid="$(cat "$PIDDIR/$name.pid" 2>/dev/null)" || return 0
  [[ -n "$pid" ]] || return 0
  if is_running "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 $((t * 10))); do
      [[ -e "$PIDDIR/$name.rc" ]] && break
      sleep 0.1
    done
    if [[ ! -e "$PIDDIR/$name.rc" ]]; then
      echo "$name (pid $pid) did not exit within ${t}s after SIGTERM; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 1 50); do
        [[ -e "$PIDDIR/$name.rc" ]] && break
        sleep 0.1
      done
    fi
  fi
  cat "$PIDDIR/$name.rc" 2>/dev/null || echo "unknown"
}

wait_http() { # URL [TIMEOUT_S] [PROCESS_NAME]
  local url=$1 t=${2:-30} name=${3:-} code=""
  for _ in $(seq 1 $((t * 10))); do
    if [[ -n "$name" ]] && ! is_running "$name"; then
      echo "$name exited (status $(cat "$PIDDIR/$name.rc" 2>/dev/null)) before $url answered" >&2
      return 1
    fi
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null || true)"
    [[ "$code" == "200" ]] && return 0
    sleep 0.1
  done
  echo "$url did not answer 200 within ${t}s (last status: ${code:-none})" >&2
  return 1
}

# ---------------------------------------------------------------------------------------------------------
# Cleanup
# ---------------------------------------------------------------------------------------------------------
stop_all_bg() {
  local f
  for f in "$PIDDIR"/*.pid; do
    [[ -e "$f" ]] || continue
    is_running "$(basename "$f" .pid)" && kill -TERM "$(cat "$f")" 2>/dev/null
  done
  for _ in $(seq 1 50); do
    local alive=0
    for f in "$PIDDIR"/*.pid; do
      [[ -e "$f" ]] || continue
      kill -0 "$(cat "$f")" 2>/dev/null && alive=1
    done
    [[ $alive -eq 0 ]] && break
    sleep 0.1
  done
  for f in "$PIDDIR"/*.pid "$PIDDIR"/*.wrapper; do
    [[ -e "$f" ]] || continue
    kill -0 "$(cat "$f")" 2>/dev/null && kill -KILL "$(cat "$f")" 2>/dev/null
  done
  return 0
}

# Snapshotters (containerd's) may leave mounts below $TMP; unmount them, deepest first, before it is removed.
unmount_below_tmp() {
  if [[ -r /proc/mounts ]]; then
    awk -v t="$TMP" 'index($2, t) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null
    done
  fi
  return 0
}

harness_cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  stop_all_bg
  if declare -F harness_cleanup_hook >/dev/null; then harness_cleanup_hook; fi
  if [[ "${HARNESS_KEEP:-0}" == "1" ]]; then
    echo "${HARNESS_NAME:-harness}: keeping $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}

harness_traps() { # CLEANUP_FUNC
  # shellcheck disable=SC2064
  trap "$1" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# ---------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------
PASSED=0
FAILED=0
FAILED_NAMES=()
STEP_NO=0

run_captured() { # FUNC ARGS... -> STEP_OUT, STEP_RC
  STEP_NO=$((STEP_NO + 1))
  STEP_OUT="$TMP/steps/$(printf '%02d' "$STEP_NO").log"
  set +e
  (
    set -euo pipefail
    "$@"
  ) >"$STEP_OUT" 2>&1
  STEP_RC=$?
  set -e
}

run_step() { # NAME FUNC ARGS...
  local name=$1
  shift
  run_captured "$@"
  if [[ $STEP_RC -eq 0 ]]; then
    STEP_OK=1
    PASSED=$((PASSED + 1))
    printf '%s\n' "PASS $name"
    if [[ "${HARNESS_VERBOSE:-0}" == "1" ]]; then sed 's/^/    /' "$STEP_OUT"; fi
    return 0
  fi
  STEP_OK=0
  FAILED=$((FAILED + 1))
  FAILED_NAMES+=("$name")
  printf '%s\n' "FAIL $name"
  if [[ "${HARNESS_VERBOSE:-0}" == "1" ]]; then
    sed 's/^/    /' "$STEP_OUT"
  else
    sed 's/^/    /' "$STEP_OUT" | tail -n "${HARNESS_FAIL_TAIL:-60}"
  fi
  return 0
}

critical_step() { # NAME FUNC ARGS...
  run_step "$@"
  if [[ $STEP_OK -ne 1 ]]; then
    printf '%s\n' "aborting: prerequisite step failed, remaining steps not run"
    finish || exit 1
    exit 1
  fi
}

dump_log_tails() { # LINES COLS
  local f
  for f in "$TMP"/logs/*.log; do
    [[ -e "$f" ]] || continue
    printf '%s\n' "----- tail of $(basename "$f") -----"
    tail -n "$1" "$f" | cut -c1-"$2" | sed 's/^/    /'
  done
}

# containerd ---------------------------------------------------------------------------------------------------
# start_containerd NAME: a real containerd with root/state/sockets under $TMP/NAME (the CRI plugin, not needed
# and noisy, disabled); waits until `ctr version` answers on $TMP/NAME/ctd.sock and touches $TMP/ok/NAME.
start_containerd() {
  local name=$1 d="$TMP/$1"
  mkdir -p "$d" "$TMP/ok"
  cat >"$d/config.toml" <<CFG
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/ctd.sock"
[ttrpc]
  address = "$d/ctd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
CFG
  start_bg "$name" "$TMP/logs/$name.log" containerd --config "$d/config.toml"
  for _ in $(seq 1 300); do
    if ! is_running "$name"; then echo "containerd exited early" >&2; return 1; fi
    if [[ -S "$d/ctd.sock" ]] && timeout 10 ctr --address "$d/ctd.sock" version >/dev/null 2>&1; then
      echo "containerd ($name) is up at $d/ctd.sock"
      touch "$TMP/ok/$name"
      return 0
    fi
    sleep 0.1
  done
  echo "containerd did not come up" >&2
  return 1
}

# mirror_hosts UPSTREAM MIRROR FALLBACK: $TMP/hosts/UPSTREAM/hosts.toml naming MIRROR (host:port, plain http) as
# the mirror for pulls and resolves, and FALLBACK (a URL) as the `server` containerd falls back to.
mirror_hosts() {
  mkdir -p "$TMP/hosts/$1"
  cat >"$TMP/hosts/$1/hosts.toml" <<HOSTS
server = "$3"

[host."http://$2"]
  capabilities = ["pull", "resolve"]
HOSTS
}

# docker-registry ----------------------------------------------------------------------------------------------
# start_docker_registry ADDR LOG LEVEL [NAME]: Debian's docker-registry (Distribution 2.8) as process NAME
# (default `upstream`) on ADDR, filesystem storage in $TMP/NAME/data (deletes allowed), config in
# $TMP/NAME/config.yml, log level LEVEL, output to LOG; waits until /v2/ answers.
start_docker_registry() {
  local addr=$1 log=$2 level=$3 name=${4:-upstream}
  mkdir -p "$TMP/$name/data"
  cat >"$TMP/$name/config.yml" <<CFG
version: 0.1
log:
  level: $level
storage:
  filesystem:
    rootdirectory: $TMP/$name/data
  delete:
    enabled: true
http:
  addr: $addr
CFG
  start_bg "$name" "$log" docker-registry serve "$TMP/$name/config.yml"
  wait_http "http://$addr/v2/" 30 "$name"
}
