#!/usr/bin/env bash
# End-to-end resilience suite: crashes, slow clients and sustained load against a real upstream (Debian's
# docker-registry) on loopback.
#
#   1. Crash loop: CRASH_ITERATIONS times, ociregistry is started on the same data dir, concurrent cold pulls
#      of 6 multi-MiB images are started (curl --parallel over the in-path and ?ns= routes), and the server is
#      killed with SIGKILL after a random 0-700 ms. The upstream is docker-registry behind a throttling proxy
#      (tests/e2e/throttle_proxy.py, 4 MiB/s per connection), so that kills land in the middle of fills. Then,
#      started once more: every blob file hashes to its name, blobs/tmp is empty, every image pulls completely
#      (skopeo --all, byte-exact) with the upstream up and again with it stopped, and `ociregistry list`
#      (admin socket) lists all of them.
#   2. Slowloris: 2,000 connections sending a request head one byte a second (tests/e2e/slowloris.py) against
#      max_connections 1000 and header_read_timeout 5s: normal requests meanwhile answer within 1 s, the
#      server's fds stay at most max_connections + 100, and fall back near the baseline once the slow clients
#      were cut off.
#   3. Soak: SOAK_SECONDS of mixed cached traffic over 32 keep-alive connections (tests/e2e/soak.py): no error,
#      RSS at the end at most RSS after the warm-up + hot_cache_bytes + 32 MiB.
# Everything listens on 127.0.0.1; all state lives in one `mktemp -d` dir removed on exit; every process started
# here is stopped by the EXIT trap (also on failure or Ctrl-C).
#
# Env:
#   OCIREGISTRY_BIN          binary under test (default: <repo>/target/debug/ociregistry)
#   RESILIENCE_KEEP=1        keep the temp dir (logs, data dir, timelines) for debugging
#   RESILIENCE_VERBOSE=1     print every step's output, not only the output of failed steps
#   RESILIENCE_ITERATIONS    crash-loop iterations (default 20)
#   RESILIENCE_SOAK_SECONDS  soak duration including the 5 s warm-up (default 60)
#
# Output: one `PASS name` / `FAIL name` line per step (with figures), then exactly one line
# `resilience: N passed, M failed`. Exit status: 0 iff no step failed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO_ROOT/tests/lib/harness.sh"
# MT_* media types, ACCEPT_MANIFESTS, expect_eq, sha256_of, header_value, put_blob, build_image, compare_layout
source "$REPO_ROOT/tests/e2e/lib-images.sh"
HARNESS_NAME=resilience
HARNESS_KEEP="${RESILIENCE_KEEP:-0}"
HARNESS_VERBOSE="${RESILIENCE_VERBOSE:-0}"
HARNESS_FAIL_TAIL=60
OCIREGISTRY_BIN="${OCIREGISTRY_BIN:-$REPO_ROOT/target/debug/ociregistry}"
CMD_TIMEOUT=60
CRASH_ITERATIONS="${RESILIENCE_ITERATIONS:-20}"
SOAK_SECONDS="${RESILIENCE_SOAK_SECONDS:-60}"
SOAK_WARMUP=5
SOAK_CONNS=32
SLOW_CONNS=2000
MAX_CONNECTIONS=1000
HEADER_TIMEOUT_S=5
HOT_CACHE_BYTES=$((8 * 1024 * 1024))
TAG="v1"
IMAGES="r1 r2 r3 r4 r5 r6"
# random-data layer per platform (KiB) of each image: 2 platforms -> 2 to 8 MiB of layers per image, 28 MiB in all
declare -A KIB=([r1]=1024 [r2]=1536 [r3]=2048 [r4]=2560 [r5]=3072 [r6]=4096)
# The upstream as ociregistry sees it is docker-registry behind tests/e2e/throttle_proxy.py, which sends at most
# THROTTLE bytes/s per connection: a layer then takes 0.25 s (1 MiB) to 1 s (4 MiB) to download, so the
# crash loop's kills (0-700 ms after the pulls start) land in the middle of fills, iteration after iteration.
THROTTLE=$((4 * 1024 * 1024))

log() { printf '%s\n' "$*"; }
die() { printf 'resilience: error: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------------------
# Preconditions
# ---------------------------------------------------------------------------------------------------------
missing=()
for tool in docker-registry skopeo jq curl python3 tar gzip sha256sum timeout cmp shuf; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  die "missing tools: ${missing[*]} (run scripts/install-test-deps as root; Debian packages: docker-registry skopeo jq curl python3)"
fi
[[ -x "$OCIREGISTRY_BIN" ]] || die "ociregistry binary not found or not executable: $OCIREGISTRY_BIN (cargo build first, or set OCIREGISTRY_BIN)"
OCIREGISTRY_BIN="$(cd "$(dirname "$OCIREGISTRY_BIN")" && pwd)/$(basename "$OCIREGISTRY_BIN")"
# 2,000 client sockets plus the server's 1,000 connections (both inherit this limit).
if [[ "$(ulimit -Hn)" != unlimited && "$(ulimit -Hn)" -lt 4096 ]]; then
  die "the hard limit of open files ($(ulimit -Hn)) is below 4096; the slowloris step needs more"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536

TMP="$(mktemp -d /tmp/ociregistry-res.XXXXXX)"
PIDDIR="$TMP/pids"
DATA="$TMP/data"
mkdir -p "$PIDDIR" "$TMP/steps" "$TMP/expect" "$TMP/logs" "$TMP/out"

harness_traps harness_cleanup

finish() {
  if [[ $FAILED -gt 0 ]]; then
    log "failed steps: ${FAILED_NAMES[*]}"
    dump_log_tails 20 300
  fi
  log "resilience: $PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}

pick_port REGPORT
pick_port UPPORT
pick_port OCIPORT
REG="127.0.0.1:$REGPORT"   # docker-registry itself (images are pushed there)
UP="127.0.0.1:$UPPORT"     # the throttling proxy in front of it: the upstream in ociregistry's config
OCI="127.0.0.1:$OCIPORT"
OCI_LOG="$TMP/logs/ociregistry.log"
echo "resilience: temp dir $TMP; docker-registry $REG behind the throttling proxy $UP; ociregistry $OCI; binary $OCIREGISTRY_BIN"

# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------
sk() { timeout "$CMD_TIMEOUT" skopeo "$@"; }
repo_of() { echo "res/img${1#r}"; }
oci_pid() { cat "$PIDDIR/oci.pid"; }
fd_count() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
is_manifest() { grep -qxF "$2" "$TMP/expect/$1/index.digest" "$TMP/expect/$1/"*.manifest; }
# files DIR: how many regular files are below DIR (0 when it does not exist yet)
files() { if [[ -d "$1" ]]; then find "$1" -type f | wc -l; else echo 0; fi; }

# start_oci: ociregistry on $OCI with data dir $DATA; its output is appended to $OCI_LOG across restarts
# (exec: the recorded pid is the server's own).
start_oci() {
  echo "===== start $(date -u +%T.%N) =====" >>"$OCI_LOG"
  start_bg oci "$TMP/logs/oci-wrapper.out" bash -c 'exec "$@" >>"'"$OCI_LOG"'" 2>&1' _ \
    "$OCIREGISTRY_BIN" serve --listen "$OCI" --data-dir "$DATA" --config-file "$TMP/config.yaml"
  wait_http "http://$OCI/v2/" 30 oci
}

ensure_oci() { is_running oci || start_oci; }

# traced FUNC ARGS...: FUNC with an ERR trap that names the failing command, so that a step stopped by errexit
# says where (run_step runs FUNC under `set -e`, which stops silently).
traced() {
  set -E
  trap '_err_rc=$?; [[ "$BASH_COMMAND" == return* ]] || echo "(step stopped: \`$BASH_COMMAND\` exited $_err_rc)" >&2' ERR
  "$@"
}

# A panic in the server's log is a failure of whatever step finds it.
no_panics() {
  if grep -an -B2 -A8 'panicked' "$OCI_LOG"; then
    echo "the server panicked (above, from $OCI_LOG)" >&2
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------
step_start_upstream() {
  start_docker_registry "$REG" "$TMP/logs/docker-registry.log" info
  echo "docker-registry serves http://$REG/v2/"
  start_bg proxy "$TMP/logs/throttle-proxy.log" python3 "$REPO_ROOT/tests/e2e/throttle_proxy.py" \
    --listen "$UP" --upstream "$REG" --rate "$THROTTLE"
  wait_http "http://$UP/v2/" 30 proxy
  echo "throttle_proxy.py serves it on http://$UP/v2/ at $THROTTLE bytes/s per connection"
}

step_build_images() {
  local v
  for v in $IMAGES; do
    build_image "$TMP/layout-$v" "$v" "${KIB[$v]}" &
  done
  wait
  for v in $IMAGES; do [[ -s "$TMP/expect/$v/index.digest" ]] || { echo "image $v not built" >&2; return 1; }; done
}

step_push() {
  local v pids=() rc=0
  for v in $IMAGES; do
    sk copy --all --preserve-digests --dest-tls-verify=false \
      "oci:$TMP/layout-$v:$TAG" "docker://$REG/$(repo_of "$v"):$TAG" >"$TMP/out/push-$v.log" 2>&1 &
    pids+=("$!")
  done
  for v in "${pids[@]}"; do wait "$v" || rc=1; done
  [[ $rc -eq 0 ]] || { cat "$TMP/out/push-"*.log; return 1; }
  for v in $IMAGES; do
    sk inspect --raw --tls-verify=false "docker://$REG/$(repo_of "$v"):$TAG" >"$TMP/out/push-$v.raw"
    expect_eq "sha256:$(sha256_of "$TMP/out/push-$v.raw")" "$(cat "$TMP/expect/$v/index.digest")" "upstream index digest of $(repo_of "$v")"
  done
  echo "pushed $(echo $IMAGES | wc -w) images, $(cat "$TMP"/expect/*/blobs.list | sort -u | wc -l) distinct blobs and manifests, $(du -sm "$TMP/upstream/data" | cut -f1) MiB in the upstream"
}

# One config for every server of the suite: the connection cap and header timeout are those of the slowloris
# step, the hot cache bound that of the soak step. tag_ttl is long: with the upstream down, cached tags are
# answered from the cache.
step_config() {
  cat >"$TMP/config.yaml" <<EOF
log_level: info
default_registry: "$UP"
tag_ttl: 10m
hot_cache_bytes: $HOT_CACHE_BYTES
max_connections: $MAX_CONNECTIONS
header_read_timeout: ${HEADER_TIMEOUT_S}s
registries:
  - name: "$UP"
    scheme: http
EOF
  cat "$TMP/config.yaml"
  # Everything a pull fetches, in the routes the crash loop uses: in-path /v2/HOST:PORT/repo and ?ns=HOST:PORT.
  local v repo d n=0
  : >"$TMP/urls.all"
  for v in $IMAGES; do
    repo="$(repo_of "$v")"
    echo "/v2/$UP/$repo/manifests/$TAG" >>"$TMP/urls.all"
    echo "/v2/$repo/manifests/$TAG?ns=$UP" >>"$TMP/urls.all"
    while read -r d; do
      n=$((n + 1))
      if is_manifest "$v" "$d"; then
        if ((n % 2)); then echo "/v2/$UP/$repo/manifests/$d"; else echo "/v2/$repo/manifests/$d?ns=$UP"; fi
      else
        if ((n % 2)); then echo "/v2/$UP/$repo/blobs/$d"; else echo "/v2/$repo/blobs/$d?ns=$UP"; fi
      fi
    done <"$TMP/expect/$v/blobs.list" >>"$TMP/urls.all"
  done
  echo "$(wc -l <"$TMP/urls.all") URLs per crash-loop round"
}

# ---------------------------------------------------------------------------------------------------------
# 1. Crash loop
# ---------------------------------------------------------------------------------------------------------
# pullers_config FILE: a curl config fetching every URL once, in a random order (each to /dev/null, status and
# size written by -w)
pullers_config() {
  local u
  shuf "$TMP/urls.all" | while read -r u; do
    printf 'url = "http://%s%s"\noutput = "/dev/null"\n' "$OCI" "$u"
  done >"$1"
}

step_crash_loop() {
  local i ms rc tmpleft total_tmp=0 killed_mid=0 answers
  : >"$TMP/crash.figures"
  for i in $(seq 1 "$CRASH_ITERATIONS"); do
    tmpleft="$(files "$DATA/blobs/tmp")"
    total_tmp=$((total_tmp + tmpleft))
    local t0=$SECONDS
    start_oci
    pullers_config "$TMP/pull.cfg"
    start_bg pullers "$TMP/out/pullers-$i.log" curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max 8 --max-time 20 \
      -H "Accept: $ACCEPT_MANIFESTS" -w '%{http_code} %{exitcode} %{size_download}\n' -K "$TMP/pull.cfg"
    ms=$((RANDOM % 701))
    sleep "$(printf '0.%03d' "$ms")"
    if ! is_running oci; then
      echo "iteration $i: the server exited by itself (status $(cat "$PIDDIR/oci.rc")) before the kill" >&2
      return 1
    fi
    kill -KILL "$(oci_pid)"
    for _ in $(seq 1 100); do [[ -e "$PIDDIR/oci.rc" ]] && break; sleep 0.05; done
    rc="$(cat "$PIDDIR/oci.rc" 2>/dev/null || echo none)"
    expect_eq "$rc" 137 "exit status of the server after SIGKILL (iteration $i)"
    stop_bg pullers 5 >/dev/null
    # complete answers: 200 and the whole body received (curl exit code 0)
    answers="$(awk '$1 == 200 && $2 == 0 { n++ } END { print n + 0 }' "$TMP/out/pullers-$i.log")"
    [[ "$(files "$DATA/blobs/tmp")" -gt 0 ]] && killed_mid=$((killed_mid + 1))
    printf 'iteration %2d: killed after %3d ms of pulling; %2d/%d objects received whole before the kill; %d partial files left in blobs/tmp; %d blob files\n' \
      "$i" "$ms" "$answers" "$(wc -l <"$TMP/urls.all")" "$(files "$DATA/blobs/tmp")" "$(files "$DATA/blobs/sha256")" | tee -a "$TMP/crash.figures"
  done
  echo "$CRASH_ITERATIONS kills; $killed_mid of them left partial downloads in blobs/tmp" | tee -a "$TMP/crash.figures"
}

# After the loop: start once more; (b) blobs/tmp is empty as soon as it answers, (a) every blob file hashes to
# its name and is one that was pushed.
step_after_crash_store() {
  local before
  before="$(files "$DATA/blobs/tmp")"
  start_oci
  local left
  [[ -d "$DATA/blobs/tmp" ]] || { echo "no $DATA/blobs/tmp after the start" >&2; return 1; }
  left="$(find "$DATA/blobs/tmp" -mindepth 1 | wc -l)"
  echo "blobs/tmp: $before partial files before the start, $left entries once the server answers"
  if [[ "$left" -ne 0 ]]; then find "$DATA/blobs/tmp" -mindepth 1 -ls >&2; echo "blobs/tmp not empty after the start" >&2; return 1; fi
  local f h n=0 bad=0
  cat "$TMP"/expect/*/blobs.list | sort -u >"$TMP/pushed.all"
  while read -r f; do
    h="$(basename "$f")"
    n=$((n + 1))
    if [[ "$(sha256_of "$f")" != "$h" ]]; then
      echo "CORRUPT: $f hashes to $(sha256_of "$f") ($(stat -c %s "$f") bytes)" >&2
      bad=$((bad + 1))
    elif [[ "$f" != "$DATA/blobs/sha256/${h:0:2}/$h" ]]; then
      echo "misplaced blob file: $f" >&2
      bad=$((bad + 1))
    elif ! grep -qxF "sha256:$h" "$TMP/pushed.all"; then
      echo "blob file $f is none of the pushed blobs" >&2
      bad=$((bad + 1))
    fi
  done < <(find "$DATA/blobs/sha256" -type f)
  echo "$n blob files under blobs/sha256, $bad bad"
  [[ $n -gt 0 ]] || { echo "no blob file at all was cached during the crash loop" >&2; return 1; }
  [[ $bad -eq 0 ]]
  no_panics
}

# skopeo pulls every image (all platforms) through the default-registry route; byte-exact with what was pushed
pull_all() { # LABEL
  local v fails=0
  ensure_oci
  for v in $IMAGES; do
    rm -rf "$TMP/pull-$1-$v"
    if ! sk copy --all --preserve-digests --src-tls-verify=false \
      "docker://$OCI/$(repo_of "$v"):$TAG" "oci:$TMP/pull-$1-$v:$TAG" >"$TMP/out/pull-$1-$v.log" 2>&1; then
      echo "skopeo pull of $(repo_of "$v"):$TAG failed:" >&2
      tail -n 5 "$TMP/out/pull-$1-$v.log" >&2
      fails=$((fails + 1))
      continue
    fi
    compare_layout "$TMP/layout-$v" "$TMP/pull-$1-$v" "$v" || fails=$((fails + 1))
  done
  [[ $fails -eq 0 ]] || { echo "$fails image(s) did not pull completely" >&2; return 1; }
  no_panics
}

step_pull_upstream_up() { pull_all up; }

step_pull_upstream_down() {
  local rc
  rc="$(stop_bg upstream 10)"
  echo "docker-registry stopped (status $rc)"
  rc="$(stop_bg proxy 10)"
  echo "throttle_proxy.py stopped (status $rc)"
  if curl -s -o /dev/null --max-time 2 "http://$UP/v2/"; then echo "upstream still answers" >&2; return 1; fi
  pull_all down
}

step_list() {
  ensure_oci
  local rc=0
  "$OCIREGISTRY_BIN" list --data-dir "$DATA" --output json >"$TMP/out/list.json" 2>"$TMP/out/list.err" || rc=$?
  echo "\$ ociregistry list --data-dir $DATA --output json -> exit $rc"
  head -c 3000 "$TMP/out/list.json"; echo
  cat "$TMP/out/list.err"
  expect_eq "$rc" 0 "exit status of ociregistry list"
  grep -qi 'admin' "$TMP/out/list.err" || { echo "list did not go through the server's admin socket (stderr above)" >&2; return 1; }
  local got want v
  got="$(jq -r '(if type == "array" then . else .images end) | .[].reference' "$TMP/out/list.json" | sort | tr '\n' ' ')"
  want="$(for v in $IMAGES; do echo "$UP/$(repo_of "$v"):$TAG"; done | sort | tr '\n' ' ')"
  expect_eq "$got" "$want" "images listed"
  # and each with the index digest that was pushed
  for v in $IMAGES; do
    expect_eq "$(jq -r --arg r "$UP/$(repo_of "$v"):$TAG" '(if type == "array" then . else .images end) | .[] | select(.reference == $r) | .digest' "$TMP/out/list.json")" \
      "$(cat "$TMP/expect/$v/index.digest")" "digest listed for $(repo_of "$v"):$TAG"
  done
}

# ---------------------------------------------------------------------------------------------------------
# 2. Slowloris
# ---------------------------------------------------------------------------------------------------------
step_slowloris() {
  ensure_oci
  local pid base
  pid="$(oci_pid)"
  local manifest="/v2/$UP/$(repo_of r1)/manifests/$TAG"
  # warm: the manifest is cached and answered before the slow clients come
  curl -sS -o /dev/null --fail -H "Accept: $ACCEPT_MANIFESTS" "http://$OCI$manifest"
  sleep 0.5
  base="$(fd_count "$pid")"
  echo "server pid $pid: $base open fds before the slow clients"
  start_bg slowloris "$TMP/out/slowloris.log" python3 "$REPO_ROOT/tests/e2e/slowloris.py" \
    --port "$OCIPORT" --conns "$SLOW_CONNS" --pid "$pid" --max-seconds $((HEADER_TIMEOUT_S * 6)) \
    --timeline "$TMP/out/slowloris.jsonl"
  # wait until the server holds max_connections slow connections (every slot taken) and more wait in its
  # backlog: the normal requests below then compete with them for a slot
  local last="" connected=0 fds=0
  for _ in $(seq 1 200); do
    last="$(tail -n 1 "$TMP/out/slowloris.jsonl" 2>/dev/null || true)"
    connected="$(jq -r '.connected // 0' <<<"$last" 2>/dev/null || echo 0)"
    fds="$(fd_count "$pid")"
    [[ "${connected:-0}" -ge $((MAX_CONNECTIONS + 100)) && "$fds" -ge "$MAX_CONNECTIONS" ]] && break
    sleep 0.05
  done
  echo "measuring with $connected slow connections established, the server holding $fds fds: $last"
  # 20 normal requests while the slow clients hold their connections: one every 100 ms, each timed
  local i pids=() url
  for i in $(seq 1 20); do
    if ((i % 2)); then url="http://$OCI/v2/"; else url="http://$OCI$manifest"; fi
    curl -sS -o /dev/null -H "Accept: $ACCEPT_MANIFESTS" -w '%{http_code} %{time_total}\n' --max-time 30 "$url" \
      >"$TMP/out/normal-$i.txt" 2>"$TMP/out/normal-$i.err" &
    pids+=("$!")
    sleep 0.1
  done
  local open_during
  open_during="$(tail -n 1 "$TMP/out/slowloris.jsonl" | jq -r .open)"
  for i in "${pids[@]}"; do wait "$i" || true; done
  for i in $(seq 1 20); do
    cat "$TMP/out/normal-$i.err" >&2
    echo "$(cat "$TMP/out/normal-$i.txt")" >>"$TMP/out/normal.all"
  done
  echo "normal request latencies (s): $(awk '{ printf "%s ", $2 }' "$TMP/out/normal.all")"
  echo "$open_during" >"$TMP/out/normal.open_during"
  echo "slow connections still open after the normal requests were sent: $open_during"
  # wait for the slow clients to be cut off (slowloris.py exits once all are closed, or after its max)
  for _ in $(seq 1 $((HEADER_TIMEOUT_S * 70))); do
    is_running slowloris || break
    sleep 0.1
  done
  sleep 1
  local after
  after="$(fd_count "$pid")"
  echo "slowloris: $(cat "$TMP/out/slowloris.log")"
  echo "timeline (lines where something changed; t, slow connections connected / open / closed, server fds):"
  jq -r '"\(.connected) \(.open) \(.closed) \(.server_fds) \(.t)"' "$TMP/out/slowloris.jsonl" \
    | awk '{ k = $1 " " $2 " " $3 " " $4 } k != prev { printf "  %6.2fs connected=%d open=%d closed=%d server_fds=%d\n", $5, $1, $2, $3, $4; prev = k }'

  local maxfds first_cut
  maxfds="$(jq -s 'map(.server_fds) | max' "$TMP/out/slowloris.jsonl")"
  first_cut="$(jq -s -r 'map(select(.closed > 0)) | first | .t // "never"' "$TMP/out/slowloris.jsonl")"
  echo "server fds: baseline $base, max $maxfds while slow clients were connected (bound $((MAX_CONNECTIONS + 100))), $after after they were cut off; first slow clients cut off after ${first_cut}s"
  local fail=0
  # At the cap the server sheds the oldest connections without a request head as new ones arrive, so the
  # first slow clients go long before the header timeout; none may outlive it by much.
  if [[ "$first_cut" == never ]] || ! awk -v t="$first_cut" -v h="$HEADER_TIMEOUT_S" 'BEGIN { exit !(t <= h + 2) }'; then
    echo "the first slow clients were cut off after ${first_cut}s, later than header_read_timeout (${HEADER_TIMEOUT_S}s)" >&2
    fail=1
  fi
  [[ "$maxfds" -le $((MAX_CONNECTIONS + 100)) ]] || { echo "server fds reached $maxfds > max_connections + 100" >&2; fail=1; }
  [[ "$(jq -r .still_open_at_exit <<<"$(tail -n 1 "$TMP/out/slowloris.log")")" == 0 ]] \
    || { echo "slow clients were not all cut off within $((HEADER_TIMEOUT_S * 6)) s" >&2; fail=1; }
  [[ "$after" -le $((base + 20)) ]] || { echo "server fds $after did not fall back near the baseline $base" >&2; fail=1; }
  is_running oci || { echo "the server exited" >&2; fail=1; }
  no_panics || fail=1
  [[ $fail -eq 0 ]]
}

# The 20 normal requests made by step_slowloris while the slow clients held their connections.
step_slowloris_latency() {
  [[ -s "$TMP/out/normal.all" ]] || { echo "the slowloris step made no normal request" >&2; return 1; }
  local open_during slow=0 code rc t n=0
  open_during="$(cat "$TMP/out/normal.open_during")"
  echo "slow connections open when the last normal request was sent: $open_during"
  while read -r code t; do
    n=$((n + 1))
    if [[ "$code" != 200 ]] || ! awk -v t="${t:-99}" 'BEGIN { exit !(t < 1.0) }'; then
      echo "normal request $n: status $code after ${t}s (want 200 within 1 s)" >&2
      slow=$((slow + 1))
    fi
  done <"$TMP/out/normal.all"
  echo "latencies (s): $(awk '{ printf "%s ", $2 }' "$TMP/out/normal.all")"
  expect_eq "$n" 20 "number of normal requests"
  # The normal requests take slots too (shedding slow ones), so a few fewer than the cap remain.
  [[ "$open_during" -ge $((MAX_CONNECTIONS - 25)) ]] || { echo "only $open_during slow connections were open during the measurement" >&2; return 1; }
  [[ $slow -eq 0 ]] || { echo "$slow of 20 normal requests were not answered 200 within 1 s" >&2; return 1; }
}

# ---------------------------------------------------------------------------------------------------------
# 3. Soak
# ---------------------------------------------------------------------------------------------------------
step_soak() {
  # a fresh server: its RSS is not that of the slowloris step
  if is_running oci; then stop_bg oci 15 >/dev/null; fi
  start_oci
  local pid v repo d f
  pid="$(oci_pid)"
  # targets: every manifest (the index by tag and by digest, the platform manifests by digest) and every blob
  for v in $IMAGES; do
    repo="$(repo_of "$v")"
    jq -n -c --arg repo "$repo" --arg ref "$TAG" --arg d "$(cat "$TMP/expect/$v/index.digest")" \
      --arg f "$TMP/layout-$v/blobs/sha256/$(cut -d: -f2 <"$TMP/expect/$v/index.digest")" \
      '{kind: "manifest", repo: $repo, ref: $ref, digest: $d, file: $f}'
    while read -r d; do
      f="$TMP/layout-$v/blobs/sha256/${d#sha256:}"
      if is_manifest "$v" "$d"; then
        jq -n -c --arg repo "$repo" --arg d "$d" --arg f "$f" '{kind: "manifest", repo: $repo, ref: $d, digest: $d, file: $f}'
      else
        jq -n -c --arg repo "$repo" --arg d "$d" --arg f "$f" '{kind: "blob", repo: $repo, ref: $d, digest: $d, file: $f}'
      fi
    done <"$TMP/expect/$v/blobs.list"
  done | jq -s . >"$TMP/soak-targets.json"
  echo "$(jq length "$TMP/soak-targets.json") targets; server pid $pid, RSS $(rss_kib "$pid") KiB at start"
  local rc=0
  timeout $((SOAK_SECONDS + 60)) python3 "$REPO_ROOT/tests/e2e/soak.py" --port "$OCIPORT" --upstream "$UP" \
    --targets "$TMP/soak-targets.json" --pid "$pid" --seconds "$SOAK_SECONDS" --warmup "$SOAK_WARMUP" \
    --conns "$SOAK_CONNS" --out "$TMP/out/soak.json" || rc=$?
  expect_eq "$rc" 0 "exit status of soak.py"
  local s="$TMP/out/soak.json"
  local base end mn med mx errors bound
  base="$(jq .rss_kib_after_warmup "$s")"; end="$(jq .rss_kib_end "$s")"
  mn="$(jq .rss_kib_min "$s")"; med="$(jq .rss_kib_median "$s")"; mx="$(jq .rss_kib_max "$s")"
  errors="$(jq .errors "$s")"
  bound=$((base + HOT_CACHE_BYTES / 1024 + 32 * 1024))
  echo "requests: $(jq .requests "$s") in $(jq .seconds "$s") s = $(jq .requests_per_s "$s")/s ($(jq .requests_per_s_after_warmup "$s")/s after the warm-up), $(jq .mib_per_s "$s") MiB/s, $(jq .checked_bodies "$s") bodies checked byte for byte"
  echo "by operation: $(jq -c .by_op "$s")"
  echo "RSS (MiB): min $((mn / 1024)), median $((med / 1024)), max $((mx / 1024)); after the ${SOAK_WARMUP}s warm-up $((base / 1024)), at the end $((end / 1024)) (bound $((bound / 1024)) = warm-up + hot_cache_bytes + 32 MiB)"
  echo "RSS samples (s, KiB): $(jq -c '.rss_samples' "$s")"
  local fail=0
  if [[ "$errors" -ne 0 ]]; then
    echo "$errors errors; first ones:" >&2
    jq -r '.first_errors[]' "$s" >&2
    fail=1
  fi
  [[ "$(jq .requests "$s")" -gt 0 ]] || { echo "no request was made" >&2; fail=1; }
  [[ "$end" -le "$bound" ]] || { echo "RSS at the end $end KiB > $bound KiB" >&2; fail=1; }
  is_running oci || { echo "the server exited during the soak" >&2; fail=1; }
  no_panics || fail=1
  [[ $fail -eq 0 ]]
}

step_graceful_stop() {
  is_running oci || { echo "the server is not running" >&2; return 1; }
  expect_eq "$(stop_bg oci 25)" 0 "ociregistry exit status after SIGTERM"
}

# ---------------------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------------------
# summary SED_SCRIPT [FILE]: after a passed step, the figures worth seeing in the run's output (a failed step's
# output is printed anyway)
summary() {
  if [[ $STEP_OK -eq 1 && "$HARNESS_VERBOSE" != 1 ]]; then sed -n "$1" "${2:-$STEP_OUT}" | sed 's/^/    /'; fi
  return 0
}

critical_step "upstream docker-registry starts, behind a throttling proxy" traced step_start_upstream
critical_step "build 6 OCI images (2 platforms, 2-8 MiB of random layers each)" traced step_build_images
critical_step "skopeo pushes the 6 images to the upstream" traced step_push
critical_step "ociregistry config and the crash loop's pull list" traced step_config
run_step "crash loop: $CRASH_ITERATIONS x (start, concurrent cold pulls, kill -9 after 0-700 ms)" traced step_crash_loop
summary 'p' "$TMP/crash.figures"
run_step "after the crash loop: blobs/tmp empty once started, every blob file hashes to its name" traced step_after_crash_store
run_step "after the crash loop: every image pulls completely (skopeo --all, byte-exact), upstream up" traced step_pull_upstream_up
run_step "after the crash loop: every image pulls again with the upstream stopped" traced step_pull_upstream_down
run_step "ociregistry list --output json (admin socket) lists every image" traced step_list
run_step "slowloris: $SLOW_CONNS slow heads (max_connections $MAX_CONNECTIONS): fds <= max_connections + 100, the oldest shed at the cap and all cut off by the ${HEADER_TIMEOUT_S}s header timeout, fds back to baseline" traced step_slowloris
summary '/^server fds:/p'
run_step "slowloris: 20 normal requests (GET /v2/, a cached manifest) meanwhile answered 200 within 1 s" traced step_slowloris_latency
summary '/^latencies/p'
run_step "soak: ${SOAK_SECONDS}s of mixed cached traffic, $SOAK_CONNS connections: no error, RSS bounded" traced step_soak
summary '/^requests:/p; /^RSS (MiB)/p'
run_step "ociregistry exits 0 on SIGTERM after all that" traced step_graceful_stop

finish || exit 1
