#!/usr/bin/env bash
# Load benchmark for ociregistry (issue 7, "Performance"): ONE command that measures, side by side and on
# loopback only,
#   - ociregistry (release build, RUST_LOG=warn: no per-request access log),
#   - Docker Distribution (Debian's docker-registry) in pull-through proxy mode,
#   - nginx serving the same files statically (sendfile on: the practical limit),
# in front of an upstream docker-registry seeded with skopeo from generated OCI layouts.
# Scenarios (see README.md beside this file): a) warm manifests, b) warm blobs, c) cold pull, d) 50 concurrent
# cold readers of one blob, e) RSS, f) startup time with a big index, t) warm manifest and 64 MiB blob GETs over
# TLS against nginx with TLS (throwaway CA and certificate for 127.0.0.1 made with openssl), o) the cost of the
# access log and metrics (ociregistry against itself with both off). Opt-in: i) the same four variants' instructions
# per warm manifest GET, counted by callgrind (needs valgrind; installed when missing). Opt-in (need garage):
# s) S3 store vs filesystem (warm 64 MiB GETs, cold pull, bucket-warm pull), p) pull storm of STORM_CLIENTS clients
# through one cache, two replicas sharing a Garage bucket, and a node -> site chain.
#
# Output: benches/load/out/results.md (also printed), results.csv, runs.csv (every single run), results.png.
#
# Env (defaults in brackets):
#   DURATION [3]         seconds per load-generator run (wrk / ab), scenarios a, b and t
#   RUNS [3]             runs per measurement; the tables report the median
#   CONNS_A ["1 16 64"]  connection counts for scenario a;  CONNS_B ["1 16"] for scenario b
#   CONNS_TM ["1 16"]    connection counts for scenario t's manifest GETs;  CONNS_TB ["1 4"] for its 64 MiB GETs
#   COLD_RUNS [RUNS]     fresh-cache repetitions for scenario c
#   THUNDER [50]         concurrent cold readers in scenario d
#   RSS_MANIFESTS [10000]  manifests cached before the idle-RSS reading (scenario e)
#   FULL=1               scenario f with 100,000 manifests in the index instead of STARTUP_MANIFESTS [20000]
#   STARTUP_RUNS [5]     restarts measured in scenario f
#   CONNS_O [16]         connections for scenario o;  RUNS_O [2*RUNS] runs (each measures all four instances in turn)
#   O_PIN=1              scenario o with the servers on CPU 0 and wrk (one thread) on CPU 1
#   O_TOGETHER=1         scenario o loads the four servers at the same time (a wrk each) instead of in turn
#   O_LOG [file]         where scenario o's servers write their output: file (appended straight to the log file),
#                        pipe (through a pipe to a `cat` that appends it, as a container runtime collects a
#                        container's stderr) or null (/dev/null: what formatting alone costs, without storing it)
#   I_REQUESTS [10000]   GETs counted per variant in scenario i;  I_RUNS [2] runs of each variant (median)
#   SCENARIOS ["a b c d e f t o"]  subset to run; `s` and `p` are opt-in (SCENARIOS="s p"): they start a 3-node
#                        Garage cluster (tests/lib/garage.sh) and are skipped with a note when garage is missing
#   CONNS_S ["1 4"]      connection counts for scenario s's warm 64 MiB GETs
#   STORM_CLIENTS [50]   concurrent pulling clients in scenario p;  STORM_RUNS [RUNS] storms per setup
#   BUILD [1]            0 = do not run `cargo build --release` (use the existing target/release/ociregistry)
#   OCIREGISTRY_BIN      binary to measure (default <repo>/target/release/ociregistry)
#   OUT [benches/load/out]  output directory;  KEEP=1 keeps the temp dir (logs) for debugging
#   TMPDIR [/tmp]        where the temp dir is made (all data dirs, the upstream's and Garage's storage)
#   NO_PLOT=1            skip the PNG
#   BLOB_IO [mmap]       ociregistry's `blob_io` (mmap or buffered), to compare the two ways of reading blobs
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
source "$REPO_ROOT/tests/lib/harness.sh"
source "$REPO_ROOT/tests/lib/garage.sh"   # scenarios s and p (functions only; nothing starts until they run)
HARNESS_PORT_FATAL=1   # pick_port dies (through die) instead of returning 1
OUT="${OUT:-$HERE/out}"
DURATION="${DURATION:-3}"
DURATION="${DURATION%s}"
RUNS="${RUNS:-3}"
CONNS_A="${CONNS_A:-1 16 64}"
CONNS_B="${CONNS_B:-1 16}"
CONNS_TM="${CONNS_TM:-1 16}"
CONNS_TB="${CONNS_TB:-1 4}"
COLD_RUNS="${COLD_RUNS:-$RUNS}"
THUNDER="${THUNDER:-50}"
RSS_MANIFESTS="${RSS_MANIFESTS:-10000}"
if [[ "${FULL:-0}" == "1" ]]; then
  STARTUP_MANIFESTS=100000
else
  STARTUP_MANIFESTS="${STARTUP_MANIFESTS:-20000}"
fi
STARTUP_RUNS="${STARTUP_RUNS:-5}"
CONNS_O="${CONNS_O:-16}"
RUNS_O="${RUNS_O:-$((2 * RUNS))}"
I_REQUESTS="${I_REQUESTS:-10000}"
I_RUNS="${I_RUNS:-2}"
CONNS_S="${CONNS_S:-1 4}"
STORM_CLIENTS="${STORM_CLIENTS:-50}"
STORM_RUNS="${STORM_RUNS:-$RUNS}"
SCENARIOS=" ${SCENARIOS:-a b c d e f t o} "
BUILD="${BUILD:-1}"
OCIREGISTRY_BIN="${OCIREGISTRY_BIN:-$REPO_ROOT/target/release/ociregistry}"

[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -ge 1 && "$DURATION" -le 600 ]] || { echo "DURATION must be 1..600 seconds" >&2; exit 2; }
for v in RUNS RUNS_O CONNS_O I_REQUESTS I_RUNS COLD_RUNS THUNDER STORM_CLIENTS STORM_RUNS RSS_MANIFESTS STARTUP_MANIFESTS STARTUP_RUNS; do
  [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -ge 1 && "${!v}" -le 200000 ]] || { echo "$v must be a number in 1..200000" >&2; exit 2; }
done
[[ $RSS_MANIFESTS -le $STARTUP_MANIFESTS ]] || { echo "RSS_MANIFESTS must not exceed the startup index size" >&2; exit 2; }

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
has() { [[ "$SCENARIOS" == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------------------
# Tools: install what is missing (Debian packages, as root).
# ---------------------------------------------------------------------------------------------------------
need_pkgs=()
declare -A PKG_OF=([docker-registry]=docker-registry [skopeo]=skopeo [nginx]=nginx-light [wrk]=wrk
  [ab]=apache2-utils [jq]=jq [curl]=curl [python3]=python3 [sha256sum]=coreutils [timeout]=coreutils
  [openssl]=openssl)
for tool in "${!PKG_OF[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null 2>&1 || need_pkgs+=("${PKG_OF[$tool]}")
done
# Scenario i counts instructions with callgrind.
if has i && ! command -v callgrind_control >/dev/null 2>&1; then need_pkgs+=(valgrind); fi
if [[ ${#need_pkgs[@]} -gt 0 ]]; then
  [[ $(id -u) -eq 0 ]] || die "missing packages ${need_pkgs[*]} and not root: apt-get install ${need_pkgs[*]}"
  log "installing ${need_pkgs[*]}"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >&2
fi
export PATH="$PATH:/usr/sbin"

if [[ "$BUILD" == "1" ]]; then
  log "cargo build --release"
  (cd "$REPO_ROOT" && cargo build --release --bin ociregistry) >&2 || die "cargo build --release failed"
fi
[[ -x "$OCIREGISTRY_BIN" ]] || die "no binary at $OCIREGISTRY_BIN"

# ---------------------------------------------------------------------------------------------------------
# Temp dir, process management, cleanup.
# ---------------------------------------------------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/ociregistry-load.XXXXXX")"   # TMPDIR=/dev/shm: everything in RAM (tmpfs)
chmod 0755 "$TMP"   # nginx workers (an unprivileged user when started as root) must read the static files
PIDDIR="$TMP/pids"
GARAGE_PIDDIR="$TMP/garage-pids"   # garage.sh's start_bg files (NAME.pid/.rc/.wrapper), apart from start_proc's
mkdir -p "$PIDDIR" "$TMP/logs" "$OUT"
RAW="$TMP/raw.tsv"     # row_key  server  run  value
ROWS="$TMP/rows.tsv"   # row_key  group  label  unit  better(higher|lower|none)  note
: >"$RAW"
: >"$ROWS"
NOTES="$TMP/notes.txt"
: >"$NOTES"

# start_proc NAME LOG CMD...: runs CMD in the background (from the main shell, so $! is CMD itself).
start_proc() {
  local name=$1 logf=$2
  shift 2
  "$@" </dev/null >>"$logf" 2>&1 &
  echo "$!" >"$PIDDIR/$name"
}
pid_of() { cat "$PIDDIR/$1"; }

# stop_proc NAME: SIGTERM, up to 15 s, then SIGKILL; reaps it.
stop_proc() {
  local name=$1 pid i
  [[ -e "$PIDDIR/$name" ]] || return 0
  pid="$(cat "$PIDDIR/$name")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
  rm -f "$PIDDIR/$name"
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  local f
  if [[ -n "${GARAGE_DIR:-}" ]]; then   # the Garage nodes of scenarios s and p
    PIDDIR="$GARAGE_PIDDIR" garage_cluster_stop
    PIDDIR="$GARAGE_PIDDIR" stop_all_bg
  fi
  for f in "$PIDDIR"/*; do
    [[ -e "$f" ]] || continue
    stop_proc "$(basename "$f")"
  done
  if [[ $rc -ne 0 ]]; then
    log "failed (status $rc); tails of the logs in $TMP/logs:"
    for f in "$TMP"/logs/*.log; do
      [[ -s "$f" ]] || continue
      echo "----- $(basename "$f") -----" >&2
      tail -n 15 "$f" | cut -c1-300 >&2
    done
  fi
  if [[ "${KEEP:-0}" == "1" ]]; then
    log "keeping $TMP"
  elif [[ $rc -ne 0 ]]; then
    find "$TMP" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} + 2>/dev/null   # keep only the logs
    log "logs kept in $TMP/logs"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
harness_traps cleanup

# pick_port VAR: tests/lib/harness.sh (HARNESS_PORT_FATAL=1: dies when no port is free).
# Not harness.sh's start_bg / stop_bg / wait_http: here processes are direct children of the main shell (pid_of
# is the measured process itself, logs are appended across restarts, stop_proc reaps and forgets the process),
# and a process that does not come up is fatal for the whole benchmark.

# wait_http_or_die URL NAME [TIMEOUT_S]: until GET URL answers 200; dies if process NAME died.
# https:// URLs are checked against the benchmark's throwaway CA (scenario t), so a bad certificate fails here.
ca_args() { # URL -> sets the array CA_ARGS (curl options)
  CA_ARGS=()
  if [[ $1 == https://* ]]; then CA_ARGS=(--cacert "$TMP/tls/ca.pem"); fi
}
wait_http_or_die() {
  local url=$1 name=$2 t=${3:-60} code=""
  ca_args "$url"
  for _ in $(seq 1 $((t * 20))); do
    kill -0 "$(pid_of "$name")" 2>/dev/null || die "$name exited before $url answered (see $TMP/logs/$name.log)"
    code="$(curl -s "${CA_ARGS[@]}" -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null || true)"
    [[ "$code" == "200" ]] && return 0
    sleep 0.05
  done
  die "$url did not answer 200 within ${t}s (last: ${code:-none})"
}

rss_kib() { awk -v k="${2:-VmRSS}:" '$1 == k { print $2 }' "/proc/$1/status"; }
kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
now_ns() { date +%s%N; }

# ---------------------------------------------------------------------------------------------------------
# Results: every measurement is one line in $RAW; rows are declared once with label/unit/direction.
# ---------------------------------------------------------------------------------------------------------
declare -A ROW_SEEN=()
row() { # KEY GROUP LABEL UNIT BETTER [NOTE]
  [[ -n "${ROW_SEEN[$1]:-}" ]] && return 0
  ROW_SEEN[$1]=1
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6:-}" >>"$ROWS"
}
put() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW"; } # KEY SERVER RUN VALUE
note() { printf '%s\n' "$*" >>"$NOTES"; log "note: $*"; }

# ---------------------------------------------------------------------------------------------------------
# Machine details
# ---------------------------------------------------------------------------------------------------------
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
# CPU use by everything else during 2 s before the benchmark starts (the load average would still count the
# `cargo build` that just ran).
cpu_sample() { awk '$1 == "cpu" { idle = $5 + $6; t = 0; for (i = 2; i <= 9; i++) t += $i; print t, idle }' /proc/stat; }
read -r CPU_T0 CPU_I0 < <(cpu_sample)
sleep 2
read -r CPU_T1 CPU_I1 < <(cpu_sample)
CPU_BUSY="$(awk -v t="$((CPU_T1 - CPU_T0))" -v i="$((CPU_I1 - CPU_I0))" 'BEGIN { printf "%.0f", (t > 0) ? 100 * (t - i) / t : 0 }')"
{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc=$(nproc)"
  echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "kernel=$(uname -sr)"
  echo "mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "ociregistry=$("$OCIREGISTRY_BIN" version 2>/dev/null | head -n 1) (git $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO_ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty'))"
  echo "docker-registry=$(docker-registry --version 2>&1 | head -n 1)"
  echo "nginx=$(nginx -v 2>&1 | head -n 1)"
  echo "wrk=$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
  echo "ab=$(ab -V 2>&1 | head -n 1)"
  echo "skopeo=$(skopeo --version 2>&1)"
  echo "curl=$(curl --version | head -n 1 | cut -d' ' -f1-2)"
  echo "python=$(python3 --version 2>&1)"
  echo "openssl=$(openssl version 2>&1 | head -n 1)"
  if has s || has p; then
    g="$(_garage_bin 2>/dev/null || true)"
    if [[ -n "$g" && -x "$g" ]]; then echo "garage=$("$g" --version 2>&1 | head -n 1)"; else echo "garage=not installed"; fi
  fi
  echo "params=DURATION=${DURATION}s RUNS=$RUNS CONNS_A='$CONNS_A' CONNS_B='$CONNS_B' CONNS_TM='$CONNS_TM' CONNS_TB='$CONNS_TB' COLD_RUNS=$COLD_RUNS THUNDER=$THUNDER RSS_MANIFESTS=$RSS_MANIFESTS STARTUP_MANIFESTS=$STARTUP_MANIFESTS STARTUP_RUNS=$STARTUP_RUNS BLOB_IO=${BLOB_IO:-mmap}$(if has s || has p; then echo " CONNS_S='$CONNS_S' STORM_CLIENTS=$STORM_CLIENTS STORM_RUNS=$STORM_RUNS"; fi)"
  echo "load_start=$LOAD_START"
  echo "cpu_busy_before=${CPU_BUSY}% of all CPUs busy during the 2 s before the start"
} >"$TMP/machine.txt"
log "temp dir $TMP; $(grep -E '^(nproc|cpu)=' "$TMP/machine.txt" | tr '\n' ' ')"
if [[ "$CPU_BUSY" -ge 20 ]]; then
  note "the machine was busy before the start (${CPU_BUSY}% of $(nproc) CPUs used by other processes): treat the figures as a smoke test"
fi

# ---------------------------------------------------------------------------------------------------------
# Upstream docker-registry and the seeded images
# ---------------------------------------------------------------------------------------------------------
MT_MANIFEST="application/vnd.oci.image.manifest.v1+json"
ACCEPT_MANIFESTS="application/vnd.oci.image.index.v1+json, $MT_MANIFEST, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"
REPO_WARM="bench/blobs"   # layers of 4 KiB, 1 MiB, 64 MiB (scenarios a, b)
REPO_COLD="bench/cold"    # 3 layers: 4 MiB, 16 MiB, 64 MiB (scenarios c, d)
TAG=v1

pick_port UPPORT
UP="127.0.0.1:$UPPORT"
mkdir -p "$TMP/upstream"
cat >"$TMP/upstream/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $TMP/upstream/data
http:
  addr: $UP
EOF
start_proc upstream "$TMP/logs/upstream.log" docker-registry serve "$TMP/upstream/config.yml"
wait_http_or_die "http://$UP/v2/" upstream
UPLOG="$TMP/logs/upstream.log"

put_blob() { # LAYOUT FILE -> "sha256:<hex> <size>"
  local h s
  h="$(sha256sum "$2" | cut -d' ' -f1)"
  s="$(stat -c %s "$2")"
  mv "$2" "$1/blobs/sha256/$h"
  echo "sha256:$h $s"
}

# build_layout NAME KIB... : OCI layout $TMP/layout-NAME with one single-platform OCI image manifest (tag v1)
# whose layers are random bytes of exactly the given sizes (incompressible; nothing unpacks them here).
# Writes $TMP/img-NAME/{manifest,config,layers,sizes}.
build_layout() {
  local name=$1
  shift
  local L="$TMP/layout-$name" I="$TMP/img-$name" kib d s layers="[]" i=0
  mkdir -p "$L/blobs/sha256" "$I"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"
  : >"$I/layers"
  for kib in "$@"; do
    i=$((i + 1))
    head -c "$((kib * 1024))" /dev/urandom >"$I/l$i"
    read -r d s < <(put_blob "$L" "$I/l$i")
    layers="$(jq -c --arg d "$d" --argjson s "$s" '. + [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}]' <<<"$layers")"
    echo "$d $s" >>"$I/layers"
  done
  jq -nc --arg n "$name" '{architecture: "amd64", os: "linux", config: {Labels: {"org.example.bench": $n}}, rootfs: {type: "layers", diff_ids: []}}' >"$I/c.json"
  read -r d s < <(put_blob "$L" "$I/c.json")
  echo "$d $s" >"$I/config"
  jq -nc --arg mt "$MT_MANIFEST" --arg cd "$d" --argjson cs "$s" --argjson layers "$layers" \
    '{schemaVersion: 2, mediaType: $mt, config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs}, layers: $layers}' >"$I/m.json"
  read -r d s < <(put_blob "$L" "$I/m.json")
  echo "$d $s" >"$I/manifest"
  jq -nc --arg d "$d" --argjson s "$s" --arg mt "$MT_MANIFEST" --arg t "$TAG" \
    '{schemaVersion: 2, manifests: [{mediaType: $mt, digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": $t}}]}' >"$L/index.json"
}

push_layout() { # NAME REPO
  timeout 300 skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci:$TMP/layout-$1:$TAG" "docker://$UP/$2:$TAG" >>"$TMP/logs/skopeo.log" 2>&1 || die "skopeo copy to $UP/$2 failed"
  local got
  got="$(curl -sf -H "Accept: $ACCEPT_MANIFESTS" "http://$UP/v2/$2/manifests/$TAG" | sha256sum | cut -d' ' -f1)"
  [[ "sha256:$got" == "$(cut -d' ' -f1 "$TMP/img-$1/manifest")" ]] || die "upstream manifest of $2:$TAG has digest sha256:$got, expected $(cat "$TMP/img-$1/manifest")"
}

log "building OCI layouts and pushing them to the upstream docker-registry on $UP"
build_layout warm 4 1024 65536
build_layout cold 4096 16384 65536
push_layout warm "$REPO_WARM"
push_layout cold "$REPO_COLD"
WARM_MANIFEST="$(cut -d' ' -f1 "$TMP/img-warm/manifest")"
mapfile -t WARM_LAYERS < <(cut -d' ' -f1 "$TMP/img-warm/layers")
BLOB_NAMES=("4KiB" "1MiB" "64MiB")
COLD_BIG="$(tail -n 1 "$TMP/img-cold/layers" | cut -d' ' -f1)"

# ---------------------------------------------------------------------------------------------------------
# The three servers under test
# ---------------------------------------------------------------------------------------------------------
# ociregistry: default_registry = the upstream, so /v2/bench/... has the same path on all three servers.
cat >"$TMP/ociregistry.yaml" <<EOF
default_registry: $UP
log_level: warn
tag_ttl: 1h
blob_io: ${BLOB_IO:-mmap}
registries:
  - name: $UP
    scheme: http
EOF
start_oci() { # NAME PORT DATADIR [CONFIG]
  start_proc "$1" "$TMP/logs/$1.log" env RUST_LOG=warn "$OCIREGISTRY_BIN" serve --listen "127.0.0.1:$2" \
    --data-dir "$3" --config-file "${4:-$TMP/ociregistry.yaml}"
  wait_http_or_die "http://127.0.0.1:$2/v2/" "$1"
}
start_oci_tls() { # NAME PORT DATADIR: the same configuration, HTTPS with the throwaway certificate (rustls)
  start_proc "$1" "$TMP/logs/$1.log" env RUST_LOG=warn "$OCIREGISTRY_BIN" serve --listen "127.0.0.1:$2" \
    --data-dir "$3" --config-file "$TMP/ociregistry.yaml" --tls-cert "$TMP/tls/server.pem" --tls-key "$TMP/tls/server.key"
  wait_http_or_die "https://127.0.0.1:$2/v2/" "$1"
}

# Distribution as a pull-through cache. Its own access log is disabled and its level is warn, as for ociregistry.
start_proxy() { # NAME PORT ROOTDIR
  mkdir -p "$3"
  cat >"$3.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $3
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$2
proxy:
  remoteurl: http://$UP
EOF
  start_proc "$1" "$TMP/logs/$1.log" docker-registry serve "$3.yml"
  wait_http_or_die "http://127.0.0.1:$2/v2/" "$1"
}

# nginx: the manifest and the blobs as static files under the same URL paths; sendfile on, 2 workers, no access log.
# The files (hard links to the layout's blobs) live in one root shared by the plain and the TLS instance.
nginx_root() {
  local R="$TMP/nginx-root/v2/$REPO_WARM" d
  [[ -d "$R" ]] && return 0
  mkdir -p "$R/manifests" "$R/blobs"
  cp "$TMP/layout-warm/blobs/sha256/${WARM_MANIFEST#sha256:}" "$R/manifests/$WARM_MANIFEST"
  cp "$R/manifests/$WARM_MANIFEST" "$R/manifests/$TAG"
  for d in "${WARM_LAYERS[@]}"; do
    ln "$TMP/layout-warm/blobs/sha256/${d#sha256:}" "$R/blobs/$d" 2>/dev/null || cp "$TMP/layout-warm/blobs/sha256/${d#sha256:}" "$R/blobs/$d"
  done
}

# start_nginx NAME PORT [tls]: with tls, `listen ... ssl` (HTTP/1.1 only: no http2 on the listener) with the
# throwaway certificate, a shared session cache, otherwise the very same configuration (sendfile stays on: nginx
# ignores it on TLS connections unless kTLS is active, see scenario t).
start_nginx() {
  local name=$1 port=$2 N="$TMP/$1" listen tls_conf="" scheme=http
  nginx_root
  mkdir -p "$N/tmp"
  listen="127.0.0.1:$port"
  if [[ "${3:-}" == tls ]]; then
    listen="$listen ssl"
    scheme=https
    tls_conf="ssl_certificate $TMP/tls/server.pem;
    ssl_certificate_key $TMP/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1h;"
  fi
  cat >"$N/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $N/nginx.pid;
error_log $N/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  keepalive_requests 100000000;
  client_body_temp_path $N/tmp/body;
  proxy_temp_path $N/tmp/proxy;
  fastcgi_temp_path $N/tmp/fastcgi;
  uwsgi_temp_path $N/tmp/uwsgi;
  scgi_temp_path $N/tmp/scgi;
  types { }
  default_type application/octet-stream;
  server {
    listen $listen;
    $tls_conf
    root $TMP/nginx-root;
    location /v2/$REPO_WARM/manifests/ { default_type $MT_MANIFEST; }
  }
}
EOF
  start_proc "$name" "$TMP/logs/$name.log" nginx -p "$N" -e "$N/error.log" -c "$N/nginx.conf"
  wait_http_or_die "$scheme://127.0.0.1:$port/v2/$REPO_WARM/manifests/$TAG" "$name"
}

nginx_rss_kib() { # KEY(VmRSS|VmHWM) [NAME]: master + workers
  local master p sum=0 v
  master="$(pid_of "${2:-nginx}")"
  for p in $master $(ps -o pid= --ppid "$master"); do
    v="$(rss_kib "$p" "$1" 2>/dev/null || echo 0)"
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

# check_same URL DIGEST [ACCEPT]: GET returns exactly the object (warms caches too)
check_same() {
  local got
  ca_args "$1"
  got="$(curl -sf "${CA_ARGS[@]}" --max-time 120 -H "Accept: ${3:-*/*}" "$1" | sha256sum | cut -d' ' -f1)" || die "GET $1 failed"
  [[ "sha256:$got" == "$2" ]] || die "GET $1 returned sha256:$got, expected $2"
}

# ---------------------------------------------------------------------------------------------------------
# Load generators. wrk (GET; a Lua script prints exact figures) and ab (HEAD: wrk 4.1's HTTP parser waits for a
# body after a HEAD response that carries Content-Length, so every connection stalls; ab -i handles HEAD).
# Both print "rps p50_ms p99_ms mibps errors".
# ---------------------------------------------------------------------------------------------------------
WRK_LUA="$HERE/wrk-report.lua"
wrk_run() { # URL CONNS (WRK_CPU set: wrk runs one thread on that CPU)
  local url=$1 c=$2 t out
  t=$((c < 2 ? c : 2))
  [[ -n "${WRK_CPU:-}" ]] && t=1
  out="$(WRK_ACCEPT="$ACCEPT_MANIFESTS" ${WRK_CPU:+taskset -c "$WRK_CPU"} wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout 30s --latency -s "$WRK_LUA" "$url" 2>&1)" || true
  echo "$out" >>"$TMP/logs/wrk.log"
  awk '/^WRKRESULT/ {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      s = v["duration_us"] / 1e6
      printf "%.1f %.3f %.3f %.2f %d\n", v["requests"] / s, v["p50_us"] / 1000, v["p99_us"] / 1000, v["bytes"] / s / 1048576,
        v["err_connect"] + v["err_read"] + v["err_write"] + v["err_status"] + v["err_timeout"]
      found = 1 }
    END { if (!found) print "nan nan nan nan -1" }' <<<"$out"
}

ab_head() { # URL CONNS
  local url=$1 c=$2 out csv="$TMP/ab.csv"
  rm -f "$csv"
  out="$(ab -q -k -i -c "$c" -t "$DURATION" -n 100000000 -s 30 -H "Accept: $ACCEPT_MANIFESTS" -e "$csv" "$url" 2>&1)" || true
  echo "$out" >>"$TMP/logs/ab.log"
  local p50 p99
  p50="$(awk -F, '$1 == 50 { print $2 }' "$csv" 2>/dev/null)"
  p99="$(awk -F, '$1 == 99 { print $2 }' "$csv" 2>/dev/null)"
  awk -v p50="${p50:-nan}" -v p99="${p99:-nan}" '
    /^Requests per second:/ { rps = $4 }
    /^Failed requests:/ { err += $3 }
    /^Non-2xx responses:/ { err += $3 }
    /^Complete requests:/ { n = $3 }
    END { if (rps == "") print "nan nan nan nan -1"; else printf "%s %s %s 0 %d\n", rps, p50, p99, err }' <<<"$out"
}

pct_run() { # KIND(get|head) URL CONNS -> "rps p50 p99 mibps errors"
  if [[ $1 == head ]]; then ab_head "$2" "$3"; else wrk_run "$2" "$3"; fi
}

SERVERS=(ociregistry proxy nginx)
declare -A BASE=()

# ---------------------------------------------------------------------------------------------------------
# Scenario a: warm manifests (GET by digest, HEAD by tag) at 1/16/64 connections
# ---------------------------------------------------------------------------------------------------------
scenario_a() {
  local kind ref label c r srv res rps p50 p99 mibps errs key
  for kind in get head; do
    if [[ $kind == get ]]; then ref="$WARM_MANIFEST"; label="a. GET manifest by digest"; else ref="$TAG"; label="a. HEAD manifest by tag"; fi
    for c in $CONNS_A; do
      key="a_${kind}_c$c"
      row "${key}_rps" a "$label, $c conn: req/s" "req/s" higher
      row "${key}_p50" a "$label, $c conn: p50 latency" "ms" lower
      row "${key}_p99" a "$label, $c conn: p99 latency" "ms" lower
      for r in $(seq 1 "$RUNS"); do
        for srv in "${SERVERS[@]}"; do
          res="$(pct_run "$kind" "${BASE[$srv]}/v2/$REPO_WARM/manifests/$ref" "$c")"
          read -r rps p50 p99 mibps errs <<<"$res"
          log "a: $srv $kind $ref c=$c run $r: $rps req/s, p50 $p50 ms, p99 $p99 ms, errors $errs"
          [[ "$errs" == "0" ]] || note "a: $srv $kind c=$c run $r reported $errs errors/non-2xx responses"
          put "${key}_rps" "$srv" "$r" "$rps"
          put "${key}_p50" "$srv" "$r" "$p50"
          put "${key}_p99" "$srv" "$r" "$p99"
        done
      done
    done
  done
}

# ---------------------------------------------------------------------------------------------------------
# Scenario b: warm blob GET throughput
# ---------------------------------------------------------------------------------------------------------
scenario_b() {
  local i d c r srv res rps p50 p99 mibps errs key
  for i in 0 1 2; do
    d="${WARM_LAYERS[$i]}"
    for c in $CONNS_B; do
      key="b_${BLOB_NAMES[$i]}_c$c"
      row "$key" b "b. GET blob ${BLOB_NAMES[$i]}, $c conn: throughput" "MiB/s" higher
      row "${key}_rps" b "b. GET blob ${BLOB_NAMES[$i]}, $c conn: req/s" "req/s" higher
      for r in $(seq 1 "$RUNS"); do
        for srv in "${SERVERS[@]}"; do
          res="$(wrk_run "${BASE[$srv]}/v2/$REPO_WARM/blobs/$d" "$c")"
          read -r rps p50 p99 mibps errs <<<"$res"
          log "b: $srv ${BLOB_NAMES[$i]} c=$c run $r: $mibps MiB/s ($rps req/s), errors $errs"
          [[ "$errs" == "0" ]] || note "b: $srv ${BLOB_NAMES[$i]} c=$c run $r reported $errs errors/non-2xx responses"
          put "$key" "$srv" "$r" "$mibps"
          put "${key}_rps" "$srv" "$r" "$rps"
        done
      done
    done
  done
}

# ---------------------------------------------------------------------------------------------------------
# Scenario c: cold pull of the 3-layer image; one curl process fetches the manifest by tag, then config and layers
# in sequence over one keep-alive connection (what a single-threaded client does). Fresh cache each run.
# ---------------------------------------------------------------------------------------------------------
cold_pull() { # BASE_URL KEY_PREFIX(c: rows c_wall, c_ttfb) SERVER RUN
  local base=$1 k=$2 srv=$3 r=$4 args=() d s expect=() t0 t1 out
  args+=(-H "Accept: $ACCEPT_MANIFESTS" -o /dev/null "$base/v2/$REPO_COLD/manifests/$TAG")
  read -r d s <"$TMP/img-cold/config"
  args+=(-o /dev/null "$base/v2/$REPO_COLD/blobs/$d")
  expect+=("$s")
  while read -r d s; do
    args+=(-o /dev/null "$base/v2/$REPO_COLD/blobs/$d")
    expect+=("$s")
  done <"$TMP/img-cold/layers"
  t0="$(now_ns)"
  out="$(curl -s --max-time 300 -w '%{http_code} %{size_download} %{time_starttransfer}\n' "${args[@]}")" || true
  t1="$(now_ns)"
  # line 1 = manifest, 2 = config, 3.. = layers; the last layer is the 64 MiB one
  local n=0 ok=1 code size ttfb last_ttfb=""
  while read -r code size ttfb; do
    n=$((n + 1))
    [[ "$code" == 200 ]] || ok=0
    if [[ $n -ge 2 && "$size" != "${expect[$((n - 2))]}" ]]; then ok=0; fi
    last_ttfb="$ttfb"
  done <<<"$out"
  [[ $n -eq $((${#expect[@]} + 1)) && $ok -eq 1 ]] || { note "$k: cold pull from $srv run $r failed: $(tr '\n' ';' <<<"$out")"; return 0; }
  put "${k}_wall" "$srv" "$r" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
  put "${k}_ttfb" "$srv" "$r" "$(awk -v t="$last_ttfb" 'BEGIN { printf "%.2f", t * 1000 }')"
  log "$k: $srv run $r: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }') s, TTFB of the 64 MiB layer $(awk -v t="$last_ttfb" 'BEGIN { printf "%.2f", t * 1000 }') ms"
}

scenario_c() {
  row c_wall c "c. cold pull (manifest + config + 4/16/64 MiB layers, sequential) [nginx column: straight from upstream]" "s" lower
  row c_ttfb c "c. cold 64 MiB layer: time to first byte [nginx column: straight from upstream]" "ms" lower
  local r port
  for r in $(seq 1 "$COLD_RUNS"); do
    pick_port port
    start_oci oci-cold "$port" "$TMP/oci-cold-$r"
    cold_pull "http://127.0.0.1:$port" c ociregistry "$r"
    stop_proc oci-cold
    rm -rf "$TMP/oci-cold-$r"
    pick_port port
    start_proxy proxy-cold "$port" "$TMP/proxy-cold-$r"
    cold_pull "http://127.0.0.1:$port" c proxy "$r"
    stop_proc proxy-cold
    rm -rf "$TMP/proxy-cold-$r" "$TMP/proxy-cold-$r.yml"
    cold_pull "http://$UP" c nginx "$r"   # the baseline column: straight from the upstream
  done
}

# ---------------------------------------------------------------------------------------------------------
# Scenario d: THUNDER concurrent cold GETs of one 64 MiB blob; count the upstream's GETs in its access log
# (Distribution logs one combined-log line per request: `"GET /v2/<name>/blobs/<digest> HTTP/1.1" 200 ...`).
# ---------------------------------------------------------------------------------------------------------
upstream_count() { # METHOD
  sleep 0.5   # the access-log line is written after the response
  grep -acF "\"$1 /v2/$REPO_COLD/blobs/$COLD_BIG HTTP" "$UPLOG" || true
}

thunder() { # BASE_URL SERVER
  local base=$1 srv=$2 g0 h0 g1 h1 t0 t1 i ok bad
  g0="$(upstream_count GET)"
  h0="$(upstream_count HEAD)"
  rm -rf "$TMP/thunder"
  mkdir -p "$TMP/thunder"
  local pids=()
  t0="$(now_ns)"
  for i in $(seq 1 "$THUNDER"); do
    curl -s --max-time 300 -o /dev/null -w '%{http_code} %{size_download}\n' "$base/v2/$REPO_COLD/blobs/$COLD_BIG" >"$TMP/thunder/$i" 2>&1 &
    pids+=("$!")
  done
  for i in "${pids[@]}"; do wait "$i" || true; done
  t1="$(now_ns)"
  g1="$(upstream_count GET)"
  h1="$(upstream_count HEAD)"
  local size
  size="$(tail -n 1 "$TMP/img-cold/layers" | cut -d' ' -f2)"
  ok="$(cat "$TMP/thunder"/* | grep -c "^200 $size\$" || true)"
  bad=$((THUNDER - ok))
  put d_get "$srv" 1 $((g1 - g0))
  put d_head "$srv" 1 $((h1 - h0))
  put d_wall "$srv" 1 "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
  put d_bad "$srv" 1 "$bad"
  log "d: $srv: $THUNDER concurrent cold readers -> upstream GETs $((g1 - g0)), HEADs $((h1 - h0)); $ok complete bodies, $bad failed"
}

scenario_d() {
  row d_get d "d. $THUNDER concurrent cold GETs of one 64 MiB blob: upstream GETs of it" "count" lower
  row d_head d "d. same: upstream HEADs of it" "count" lower
  row d_wall d "d. same: wall time until all $THUNDER bodies are complete" "s" lower
  row d_bad d "d. same: readers without a complete 200 body" "count" lower
  local port
  pick_port port
  start_oci oci-thunder "$port" "$TMP/oci-thunder"
  thunder "http://127.0.0.1:$port" ociregistry
  stop_proc oci-thunder
  rm -rf "$TMP/oci-thunder"
  pick_port port
  start_proxy proxy-thunder "$port" "$TMP/proxy-thunder"
  thunder "http://127.0.0.1:$port" proxy
  stop_proc proxy-thunder
  rm -rf "$TMP/proxy-thunder" "$TMP/proxy-thunder.yml"
}

# ---------------------------------------------------------------------------------------------------------
# Scenarios e and f: many manifests from a synthetic upstream (synth_upstream.py), pulled through ociregistry by
# tag with curl --parallel.
# ---------------------------------------------------------------------------------------------------------
SYN_PORT=""
seed_manifests() { # OCI_PORT FROM TO(exclusive) -> prints seconds taken
  local port=$1 from=$2 to=$3 cfg="$TMP/seed.curl" i t0 t1 ok
  : >"$cfg"
  for ((i = from; i < to; i++)); do
    printf 'url = "http://127.0.0.1:%s/v2/synth/img/manifests/t%d"\noutput = "/dev/null"\n' "$port" "$i" >>"$cfg"
  done
  t0="$(now_ns)"
  ok="$(curl -s --no-progress-meter --parallel --parallel-max 16 --max-time 60 -H "Accept: $ACCEPT_MANIFESTS" \
    -w '%{http_code}\n' -K "$cfg" 2>>"$TMP/logs/seed-curl.log" | grep -c '^200$' || true)"
  t1="$(now_ns)"
  [[ "$ok" -eq $((to - from)) ]] || die "seeding manifests t$from..t$((to - 1)) through ociregistry: only $ok of $((to - from)) answered 200"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'
}

scenario_ef() {
  local port oci_port secs dir="$TMP/oci-many" cfg="$TMP/ociregistry-synth.yaml" rss
  pick_port SYN_PORT
  start_proc synth "$TMP/logs/synth.log" python3 "$HERE/synth_upstream.py" --port "$SYN_PORT" --count "$STARTUP_MANIFESTS"
  wait_http_or_die "http://127.0.0.1:$SYN_PORT/v2/" synth 120
  cat >"$cfg" <<EOF
default_registry: 127.0.0.1:$SYN_PORT
log_level: warn
tag_ttl: 1h
blob_io: ${BLOB_IO:-mmap}
registries:
  - name: 127.0.0.1:$SYN_PORT
    scheme: http
EOF
  pick_port oci_port
  if has e; then
    row e_idle_empty e "e. idle RSS, empty cache (just started)" "MiB" lower
    row e_idle_seeded e "e. idle RSS after caching $RSS_MANIFESTS manifests (same process)" "MiB" lower
    row e_idle_restart e "e. idle RSS after a restart with $RSS_MANIFESTS manifests indexed" "MiB" lower
    row e_seed_rate e "e. cold manifest pulls through ociregistry while seeding (16 parallel)" "req/s" higher
  fi
  start_oci oci-many "$oci_port" "$dir" "$cfg"
  sleep 2
  has e && put e_idle_empty ociregistry 1 "$(kib_to_mib "$(rss_kib "$(pid_of oci-many)")")"
  log "e: caching $RSS_MANIFESTS manifests through ociregistry"
  secs="$(seed_manifests "$oci_port" 0 "$RSS_MANIFESTS")"
  log "e: $RSS_MANIFESTS manifests in $secs s"
  if has e; then
    put e_seed_rate ociregistry 1 "$(awk -v n="$RSS_MANIFESTS" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')"
    sleep 3
    rss="$(rss_kib "$(pid_of oci-many)")"
    put e_idle_seeded ociregistry 1 "$(kib_to_mib "$rss")"
    stop_proc oci-many
    start_oci oci-many "$oci_port" "$dir" "$cfg"
    sleep 3
    put e_idle_restart ociregistry 1 "$(kib_to_mib "$(rss_kib "$(pid_of oci-many)")")"
    log "e: idle RSS seeded $(kib_to_mib "$rss") MiB; after restart $(kib_to_mib "$(rss_kib "$(pid_of oci-many)")") MiB"
  fi
  if has f; then
    if [[ $STARTUP_MANIFESTS -gt $RSS_MANIFESTS ]]; then
      log "f: caching manifests $RSS_MANIFESTS..$((STARTUP_MANIFESTS - 1)) through ociregistry"
      secs="$(seed_manifests "$oci_port" "$RSS_MANIFESTS" "$STARTUP_MANIFESTS")"
      log "f: $((STARTUP_MANIFESTS - RSS_MANIFESTS)) more manifests in $secs s"
    fi
    stop_proc oci-many
    row f_start_empty f "f. startup (exec -> GET /v2/ answers), empty data dir" "ms" lower
    row f_start_full f "f. startup (exec -> GET /v2/ answers), $STARTUP_MANIFESTS manifests indexed" "ms" lower
    row f_index_size f "f. index file size with $STARTUP_MANIFESTS manifests" "MiB" lower
    put f_index_size ociregistry 1 "$(du -k "$dir/index.redb" | awk '{ printf "%.1f", $1 / 1024 }')"
    local which d res m
    for which in empty full; do
      if [[ $which == empty ]]; then d="$TMP/oci-empty"; else d="$dir"; fi
      pick_port port
      res="$(RUST_LOG=warn python3 "$HERE/startup.py" --url "http://127.0.0.1:$port/v2/" --runs "$STARTUP_RUNS" \
        --timeout 300 --log "$TMP/logs/startup-$which.log" -- \
        "$OCIREGISTRY_BIN" serve --listen "127.0.0.1:$port" --data-dir "$d" --config-file "$cfg")" || die "startup measurement ($which) failed"
      m="$(jq -r .median_ms <<<"$res")"
      local i=0 t
      for t in $(jq -r '.runs_ms[]' <<<"$res"); do
        i=$((i + 1))
        put "f_start_$which" ociregistry "$i" "$t"
      done
      log "f: startup with $which index: $(jq -c .runs_ms <<<"$res") ms, median $m ms"
    done
  fi
  stop_proc oci-many
  stop_proc synth
}

# ---------------------------------------------------------------------------------------------------------
# Scenario t: the warm paths over TLS. ociregistry (rustls, ring provider) with --tls-cert/--tls-key against a
# second nginx with `listen ... ssl` (OpenSSL), same files, same worker/keep-alive settings as the plain nginx.
# wrk speaks HTTP/1.1 and sends no ALPN, so both serve HTTP/1.1. wrk does not verify the certificate (fine for a
# throughput figure); curl does, against the throwaway CA, during warm-up.
# ---------------------------------------------------------------------------------------------------------
# make_tls_certs: a throwaway CA and a server certificate for IP 127.0.0.1, both ECDSA P-256, in $TMP/tls.
make_tls_certs() {
  local T="$TMP/tls"
  mkdir -p "$T"
  [[ -s "$T/server.pem" ]] && return 0
  {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/ca.key" &&
      openssl req -x509 -new -key "$T/ca.key" -sha256 -days 2 -subj "/CN=ociregistry load benchmark CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$T/ca.pem" &&
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/server.key" &&
      openssl req -new -key "$T/server.key" -subj "/CN=127.0.0.1" -out "$T/server.csr" &&
      printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1" >"$T/server.ext" &&
      openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 -sha256 \
        -extfile "$T/server.ext" -out "$T/server.pem" &&
      openssl verify -CAfile "$T/ca.pem" "$T/server.pem"
  } >>"$TMP/logs/openssl.log" 2>&1 || die "making the throwaway TLS certificates failed (see $TMP/logs/openssl.log)"
}

# tls_session NAME PORT: what an OpenSSL client with default settings (as wrk, which links the same libssl)
# negotiates, checked against the CA; one line for the notes.
tls_session() {
  local out proto cipher group verify
  out="$(timeout 10 openssl s_client -connect "127.0.0.1:$2" -CAfile "$TMP/tls/ca.pem" -verify_ip 127.0.0.1 \
    -brief </dev/null 2>&1 || true)"
  echo "$out" >>"$TMP/logs/openssl.log"
  proto="$(awk -F': *' '/^Protocol version/ { print $2; exit }' <<<"$out")"
  cipher="$(awk -F': *' '/^Ciphersuite/ { print $2; exit }' <<<"$out")"
  group="$(awk -F': *' '/^(Negotiated TLS1.3 group|Server Temp Key)/ { print $2; exit }' <<<"$out")"
  verify="$(awk -F': *' '/^Verification/ { print $2; exit }' <<<"$out")"
  echo "$1 negotiated ${proto:-?} ${cipher:-?} (key exchange ${group:-?}; certificate verification: ${verify:-?})"
}

# warm_check BASE_URL: manifest by tag and by digest and every blob, sha256-checked; HEAD by tag answers 200.
warm_check() {
  local b="$1/v2/$REPO_WARM" d code
  check_same "$b/manifests/$TAG" "$WARM_MANIFEST" "$ACCEPT_MANIFESTS"
  check_same "$b/manifests/$WARM_MANIFEST" "$WARM_MANIFEST" "$ACCEPT_MANIFESTS"
  for d in "${WARM_LAYERS[@]}"; do check_same "$b/blobs/$d" "$d"; done
  ca_args "$b"
  code="$(curl -s "${CA_ARGS[@]}" -o /dev/null -I -w '%{http_code}' -H "Accept: $ACCEPT_MANIFESTS" "$b/manifests/$TAG")"
  [[ "$code" == 200 ]] || die "HEAD $b/manifests/$TAG -> $code"
}

# Scenario o: what observability costs. The same binary four times, all warm: "quiet" (RUST_LOG=warn, no metrics
# listener), "logged" (RUST_LOG=info: one access-log line per request to its log file), "measured" (`--metrics`,
# scraped once a second) and "observed" (both), measured in turn with the same load (GET manifest by digest);
# medians of RUNS_O runs each.
O_VARIANTS=(quiet logged measured observed)
# O_BASE_BIN=path: a fifth variant "base", that binary observed (access log and metrics on), measured beside the
# others: a change's effect on the cost within one run, unmoved by the machine's drift between runs.
if [[ -n "${O_BASE_BIN:-}" ]]; then
  [[ -x "$O_BASE_BIN" ]] || die "O_BASE_BIN: no binary at $O_BASE_BIN"
  O_VARIANTS+=(base)
fi
O_LOG="${O_LOG:-file}"
[[ $O_LOG == file || $O_LOG == pipe || $O_LOG == null ]] || die "O_LOG must be file, pipe or null, not '$O_LOG'"
# o_start NAME CMD...: like start_proc, with the output going where O_LOG says.
o_start() {
  local name=$1 logf="$TMP/logs/$1.log"
  shift
  case $O_LOG in
    file) "$@" </dev/null >>"$logf" 2>&1 & ;;
    # $! stays the server's pid; the reader ends when the server closes its end.
    pipe) "$@" </dev/null > >(exec cat >>"$logf") 2>&1 & ;;
    null) "$@" </dev/null >/dev/null 2>&1 & ;;
  esac
  echo "$!" >"$PIDDIR/$name"
}
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # PID -> user + system CPU ticks of all its threads
# o_record VARIANT ROUND WRK_RESULT CPU_TICKS_BEFORE CPU_TICKS_AFTER
o_record() {
  local srv=$1 r=$2 rps p50 p99 mibps errs cpu_us
  read -r rps p50 p99 mibps errs <<<"$3"
  # Server CPU (all its threads) per request: what the load costs the server, whatever else shares the cores.
  cpu_us="$(awk -v t="$(($5 - $4))" -v hz="$CLK_TCK" -v rps="$rps" -v d="$DURATION" \
    'BEGIN { printf "%.2f", (rps > 0) ? t / hz * 1e6 / (rps * d) : 0 }')"
  log "o: $srv GET manifest c=$CONNS_O run $r: $rps req/s, p99 $p99 ms, $cpu_us CPU µs/request, errors $errs"
  put o_cpu "$srv" "$r" "$cpu_us"
  [[ "$errs" == "0" ]] || note "o: $srv run $r reported $errs errors/non-2xx responses"
  put o_rps "$srv" "$r" "$rps"
  put o_p99 "$srv" "$r" "$p99"
}
# Whether a variant of scenarios o and i writes the access log (RUST_LOG=info) / serves metrics (--metrics).
o_logs() { [[ $1 == logged || $1 == observed || $1 == base ]]; }
o_measures() { [[ $1 == measured || $1 == observed || $1 == base ]]; }
scenario_o() {
  local r srv res scraper port mport level t0
  local -A OB=() MPORT=()
  for srv in "${O_VARIANTS[@]}"; do
    pick_port port
    level=warn; o_logs "$srv" && level=info
    local extra=() bin="$OCIREGISTRY_BIN"
    [[ $srv == base ]] && bin="$O_BASE_BIN"
    if o_measures "$srv"; then
      pick_port mport
      MPORT[$srv]=$mport
      extra=(--metrics "127.0.0.1:$mport")
    fi
    o_start "oci-$srv" env RUST_LOG=$level ${O_PIN:+taskset -c 0} "$bin" serve \
      --listen "127.0.0.1:$port" --data-dir "$TMP/oci-$srv" --config-file "$TMP/ociregistry.yaml" "${extra[@]}"
    wait_http_or_die "http://127.0.0.1:$port/v2/" "oci-$srv"
    OB[$srv]="http://127.0.0.1:$port"
    warm_check "${OB[$srv]}"
  done
  ( while sleep 1; do
      curl -s -o /dev/null "http://127.0.0.1:${MPORT[measured]}/metrics"
      curl -s -o /dev/null "http://127.0.0.1:${MPORT[observed]}/metrics"
      [[ -n "${MPORT[base]:-}" ]] && curl -s -o /dev/null "http://127.0.0.1:${MPORT[base]}/metrics"
    done ) &
  scraper=$!
  # O_PIN=1: every server on CPU 0 and wrk on CPU 1, so a variant's extra work shows as lost throughput of a
  # saturated core rather than as a different share of two cores with wrk.
  [[ -n "${O_PIN:-}" ]] && WRK_CPU=1
  local url="/v2/$REPO_WARM/manifests/$WARM_MANIFEST" wrks
  local -A T0=()
  for r in $(seq 1 "$RUNS_O"); do
    if [[ -n "${O_TOGETHER:-}" ]]; then
      # All four at once, each with its own wrk: the machine's swings hit every variant alike.
      wrks=()
      for srv in "${O_VARIANTS[@]}"; do T0[$srv]="$(cpu_ticks "$(pid_of "oci-$srv")")"; done
      for srv in "${O_VARIANTS[@]}"; do
        wrk_run "${OB[$srv]}$url" "$CONNS_O" >"$TMP/o-$srv.res" &
        wrks+=("$!")
      done
      wait "${wrks[@]}"
      for srv in "${O_VARIANTS[@]}"; do
        o_record "$srv" "$r" "$(cat "$TMP/o-$srv.res")" "${T0[$srv]}" "$(cpu_ticks "$(pid_of "oci-$srv")")"
      done
      continue
    fi
    # A new order each round: on shared cores a fixed order would give one variant the same neighbours each time.
    for srv in $(printf '%s\n' "${O_VARIANTS[@]}" | shuf); do
      t0="$(cpu_ticks "$(pid_of "oci-$srv")")"
      res="$(wrk_run "${OB[$srv]}$url" "$CONNS_O")"
      o_record "$srv" "$r" "$res" "$t0" "$(cpu_ticks "$(pid_of "oci-$srv")")"
    done
  done
  kill "$scraper" 2>/dev/null; wait "$scraper" 2>/dev/null || true
  WRK_CPU=
  local dropped lines
  dropped="$(curl -s "http://127.0.0.1:${MPORT[observed]}/metrics" | awk '/^ociregistry_log_lines_dropped_total/ { print $2 }')"
  for srv in "${O_VARIANTS[@]}"; do stop_proc "oci-$srv"; done
  sleep 0.2   # O_LOG=pipe: let the readers append the last lines
  lines="$(grep -c ' access: ' "$TMP/logs/oci-observed.log" || true)"
  [[ $O_LOG == null ]] && lines="(not kept: O_LOG=null)"
  note "$(python3 - "$RAW" "$CONNS_O" "$lines" "${dropped:-?}" "${O_PIN:+pinned}" "$O_LOG" "${O_TOGETHER:+together}" "${O_VARIANTS[@]}" <<'PY'
import statistics, sys
raw, conns, lines, dropped, pinned, log_to, together, *variants = sys.argv[1:]
v = {k: {"o_rps": [], "o_p99": [], "o_cpu": []} for k in variants}
for line in open(raw):
    key, srv, run, val = line.rstrip("\n").split("\t")
    if key in ("o_rps", "o_p99", "o_cpu") and srv in v:
        v[srv][key].append(float(val))
q = statistics.median(v["quiet"]["o_rps"])
what = {"quiet": "access log and metrics off", "logged": "access log on", "measured": "metrics on, scraped every second",
        "observed": "access log and metrics on", "base": "access log and metrics on, O_BASE_BIN"}
c = statistics.median(v["quiet"]["o_cpu"])
log_to_what = {"file": "a file", "pipe": "a pipe read by cat (appending to a file)", "null": "/dev/null"}
# Each round measures every variant once, within seconds: the median of the per-round ratios to quiet is less
# exposed to the machine's slow swings than the ratio of the medians.
def paired(k):
    return statistics.median(x / y for x, y in zip(v[k]["o_rps"], v["quiet"]["o_rps"]))
parts = [f"{k} ({what[k]}) {statistics.median(v[k]['o_rps']):,.0f} req/s = {statistics.median(v[k]['o_rps']) / q:.3f} "
         f"(paired {paired(k):.3f}), p99 {statistics.median(v[k]['o_p99']):.2f} ms, server CPU "
         f"{statistics.median(v[k]['o_cpu']):.2f} µs/request = {statistics.median(v[k]['o_cpu']) / c:.3f}" for k in variants]
print(f"o: cost of observability, GET manifest by digest, {conns} conn"
      f"{' (servers pinned to CPU 0, wrk to CPU 1)' if pinned else ''}, output to {log_to_what[log_to]}, {'all four loaded at once, ' if together else ''}{len(v['quiet']['o_rps'])} runs each, "
      f"medians (ratio to quiet): " + "; ".join(parts) + f"; observed wrote {lines} access-log lines, dropped {dropped}")
PY
)"
}

# Scenario i: the instructions behind scenario o's figures, which a CPU's noise cannot blur. Each variant of
# scenario o (quiet, logged, measured, observed) runs under callgrind with one worker thread. After a warm-up the
# counters are zeroed, I_REQUESTS warm manifest GETs (ab, 4 keep-alive connections) are counted and dumped, and for
# the variants with metrics one scrape is then counted on its own. Start-up is outside the count: `quanta`'s
# calibration there runs until its estimate settles, which under valgrind takes a different 11 to 18 million
# instructions each run. The count covers every thread of the process (the access log's drain thread too), in user
# space only: the kernel's work (the `write` of the log, the sockets) is not in it.
i_count() { awk '/^summary:/ { print $2 }' "$1"; } # CALLGRIND_DUMP -> instructions
# Instructions inside glibc's allocator (malloc.c, arena.c) in a dump. They differ by up to about 300 a request
# between runs of one build, whatever the variant (each start lays the heap out differently), so the figures are
# also given without them: those vary by a few tens.
i_alloc() { # CALLGRIND_DUMP -> instructions
  callgrind_annotate --inclusive=no --auto=no --threshold=100 "$1" 2>/dev/null |
    awk '/malloc\/(malloc|arena)\.c:/ { gsub(",", "", $1); s += $1 } END { printf "%.0f\n", s }'
}
scenario_i() {
  local r srv port mport level pid out got
  local url="/v2/$REPO_WARM/manifests/$WARM_MANIFEST"
  for r in $(seq 1 "$I_RUNS"); do
    for srv in quiet logged measured observed; do
      pick_port port
      level=warn; o_logs "$srv" && level=info
      local extra=()
      if o_measures "$srv"; then
        pick_port mport
        extra=(--metrics "127.0.0.1:$mport")
      fi
      out="$TMP/callgrind-$srv-$r"
      start_proc "cg-$srv" "$TMP/logs/cg-$srv.log" env TOKIO_WORKER_THREADS=1 RUST_LOG=$level \
        valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$OCIREGISTRY_BIN" serve \
        --listen "127.0.0.1:$port" --data-dir "$TMP/cg-$srv-$r" --config-file "$TMP/ociregistry.yaml" "${extra[@]}"
      wait_http_or_die "http://127.0.0.1:$port/v2/" "cg-$srv" 120
      warm_check "http://127.0.0.1:$port"
      pid="$(pid_of "cg-$srv")"
      ab -q -k -n 500 -c 4 -H "Accept: $ACCEPT_MANIFESTS" "http://127.0.0.1:$port$url" >/dev/null 2>&1 ||
        die "i: warm-up of $srv failed"
      callgrind_control -z "$pid" >/dev/null || die "i: callgrind_control could not reach $srv"
      got="$(ab -q -k -n "$I_REQUESTS" -c 4 -H "Accept: $ACCEPT_MANIFESTS" "http://127.0.0.1:$port$url" 2>&1 |
        awk '/^Complete requests:/ { c = $3 } /^Failed requests:/ { f = $3 } /^Non-2xx responses:/ { n = $3 }
             END { print c + 0, f + 0, n + 0 }')"
      [[ "$got" == "$I_REQUESTS 0 0" ]] || die "i: $srv answered (complete, failed, non-2xx) = ($got) of $I_REQUESTS"
      callgrind_control -d "$pid" >/dev/null
      put i_ir "$srv" "$r" "$(awk -v t="$(i_count "$out.$pid.1")" -v n="$I_REQUESTS" 'BEGIN { printf "%.0f", t / n }')"
      put i_alloc "$srv" "$r" "$(awk -v t="$(i_alloc "$out.$pid.1")" -v n="$I_REQUESTS" 'BEGIN { printf "%.0f", t / n }')"
      if o_measures "$srv"; then
        callgrind_control -z "$pid" >/dev/null
        curl -sf -o /dev/null "http://127.0.0.1:$mport/metrics" || die "i: scrape of $srv failed"
        callgrind_control -d "$pid" >/dev/null
        put i_scrape "$srv" "$r" "$(i_count "$out.$pid.2")"
      fi
      stop_proc "cg-$srv"
      log "i: $srv run $r counted"
    done
  done
  note "$(python3 - "$RAW" "$I_REQUESTS" <<'PY'
import statistics, sys
raw, n = sys.argv[1], sys.argv[2]
v = {}
for line in open(raw):
    key, srv, run, val = line.rstrip("\n").split("\t")
    if key in ("i_ir", "i_alloc", "i_scrape"):
        v.setdefault((key, srv), []).append(float(val))
# Without the allocator: each run's count less its allocator's, then the median.
for srv in ("quiet", "logged", "measured", "observed"):
    v[("i_rest", srv)] = [a - b for a, b in zip(v[("i_ir", srv)], v[("i_alloc", srv)])]
# Differences are given as a share of quiet's whole count (the allocator's part of a request is still its cost).
whole = statistics.median(v[("i_ir", "quiet")])
def figures(key):
    q = statistics.median(v[(key, "quiet")])
    parts = [f"quiet {q:,.0f}"]
    for k in ("logged", "measured", "observed"):
        x = statistics.median(v[(key, k)])
        parts.append(f"{k} {x:,.0f} ({x - q:+,.0f}, {100 * (x - q) / whole:+.1f}%)")
    return "; ".join(parts)
scrape = "; ".join(f"{k} {statistics.median(v[('i_scrape', k)]) / 1e6:.2f} M" for k in ("measured", "observed"))
runs = len(v[("i_ir", "quiet")])
alloc = ", ".join(f"{k} {statistics.median(v[('i_alloc', k)]):,.0f}" for k in ("quiet", "logged", "measured", "observed"))
print(f"i: instructions per warm manifest GET (callgrind, one worker thread, {n} GETs counted after a warm-up, "
      f"median of {runs} runs): " + figures("i_ir") + f". Without glibc's allocator (in it: {alloc}; differences still as a share of quiet's whole count): "
      + figures("i_rest") + f". One scrape of /metrics: {scrape} instructions")
PY
)"
}

scenario_t() {
  local oport nport c r srv res rps p50 p99 mibps errs key big="${WARM_LAYERS[2]}"
  make_tls_certs
  pick_port oport
  pick_port nport
  start_oci_tls oci-tls "$oport" "$TMP/oci-tls"
  start_nginx nginx-tls "$nport" tls
  local -A TB=([ociregistry]="https://127.0.0.1:$oport" [nginx]="https://127.0.0.1:$nport")
  local TSERVERS=(ociregistry nginx)
  log "t: warming over TLS: ociregistry $oport, nginx $nport"
  for srv in "${TSERVERS[@]}"; do warm_check "${TB[$srv]}"; done
  note "t: $(tls_session ociregistry "$oport")"
  note "t: $(tls_session nginx "$nport")"
  if [[ -r /proc/net/tls_stat ]] || grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
    note "t: the kernel offers kTLS, but nginx is not told to use it (no \`ssl_conf_command Options KTLS\`): it encrypts in user space (SSL_write), no sendfile, like ociregistry"
  else
    note "t: no kTLS on this kernel (no tls ULP, no /proc/net/tls_stat): nginx encrypts in user space (SSL_write from its buffers; sendfile is off on TLS connections), like ociregistry (rustls)"
  fi
  for c in $CONNS_TM; do
    key="t_get_c$c"
    row "${key}_rps" t "t. TLS: GET manifest by digest, $c conn: req/s" "req/s" higher
    row "${key}_p99" t "t. TLS: GET manifest by digest, $c conn: p99 latency" "ms" lower
    for r in $(seq 1 "$RUNS"); do
      for srv in "${TSERVERS[@]}"; do
        res="$(wrk_run "${TB[$srv]}/v2/$REPO_WARM/manifests/$WARM_MANIFEST" "$c")"
        read -r rps p50 p99 mibps errs <<<"$res"
        log "t: $srv TLS manifest c=$c run $r: $rps req/s, p50 $p50 ms, p99 $p99 ms, errors $errs"
        [[ "$errs" == "0" ]] || note "t: $srv TLS manifest c=$c run $r reported $errs errors/non-2xx responses"
        put "${key}_rps" "$srv" "$r" "$rps"
        put "${key}_p99" "$srv" "$r" "$p99"
      done
    done
  done
  for c in $CONNS_TB; do
    key="t_64MiB_c$c"
    row "$key" t "t. TLS: GET blob 64MiB, $c conn: throughput" "MiB/s" higher
    for r in $(seq 1 "$RUNS"); do
      for srv in "${TSERVERS[@]}"; do
        res="$(wrk_run "${TB[$srv]}/v2/$REPO_WARM/blobs/$big" "$c")"
        read -r rps p50 p99 mibps errs <<<"$res"
        log "t: $srv TLS 64MiB c=$c run $r: $mibps MiB/s ($rps req/s), errors $errs"
        [[ "$errs" == "0" ]] || note "t: $srv TLS 64MiB c=$c run $r reported $errs errors/non-2xx responses"
        put "$key" "$srv" "$r" "$mibps"
      done
    done
  done
  row t_peak t "t. TLS: peak RSS (VmHWM) over warm-up + scenario t (nginx: master + 2 workers)" "MiB" lower
  put t_peak ociregistry 1 "$(kib_to_mib "$(rss_kib "$(pid_of oci-tls)" VmHWM)")"
  put t_peak nginx 1 "$(kib_to_mib "$(nginx_rss_kib VmHWM nginx-tls)")"
  stop_proc oci-tls
  stop_proc nginx-tls
}

# ---------------------------------------------------------------------------------------------------------
# Scale-out scenarios s and p (opt-in): a real 3-node Garage cluster on loopback (tests/lib/garage.sh:
# replication factor 3, consistent mode, every object on all three nodes), started on first use. Its nodes are
# recorded in $GARAGE_PIDDIR (start_bg's NAME.pid/.rc/.wrapper files) and stopped by the EXIT trap.
# ---------------------------------------------------------------------------------------------------------
GARAGE_STATE=""   # "" = not started yet, up, missing
garage_up() { # -> 0 when the cluster runs (starts it on first use), 1 when garage is not installed
  [[ "$GARAGE_STATE" == up ]] && return 0
  [[ "$GARAGE_STATE" == missing ]] && return 1
  if ! GARAGE_BIN="$(_garage_bin 2>/dev/null)" || [[ ! -x "$GARAGE_BIN" ]]; then
    GARAGE_STATE=missing
    return 1
  fi
  mkdir -p "$GARAGE_PIDDIR"
  log "starting a 3-node Garage cluster ($GARAGE_BIN)"
  PIDDIR="$GARAGE_PIDDIR" garage_cluster_start "$TMP/garage" >>"$TMP/logs/garage-setup.log" 2>&1 ||
    die "the Garage cluster did not start (see $TMP/logs/garage-setup.log and $TMP/garage/node*.log)"
  GARAGE_STATE=up
  log "Garage S3 endpoints: $GARAGE_S3_ENDPOINTS"
}
garage_missing_note() { # SCENARIO
  note "$1: skipped: garage is not installed (scripts/install-test-deps installs it into /root/.cargo/bin; or set GARAGE_BIN)"
}

# s3_config FILE PREFIX REPLICA LOCAL_TIER [GARAGE_NODE]: the benchmark's ociregistry config plus an s3: block on
# the cluster (the replica talks to the S3 API of GARAGE_NODE, default 1).
s3_config() {
  cat "$TMP/ociregistry.yaml" >"$1"
  cat >>"$1" <<EOF
s3:
  endpoint: "$(garage_s3_url "${5:-1}")"
  bucket: "$GARAGE_BUCKET"
  prefix: "$2"
  region: "$GARAGE_REGION"
  path_style: true
  access_key_id_file: "$GARAGE_DIR/key-id"
  secret_access_key_file: "$GARAGE_DIR/secret"
  replica_id: "$3"
  local_tier: $4
EOF
}

# wait_bucket KEY SECONDS: until the bucket holds KEY (publishing runs after the fill)
wait_bucket() {
  local i
  for i in $(seq 1 $(($2 * 10))); do
    [[ "$(garage_s3 HEAD "$1" -o /dev/null -w '%{http_code}' 2>/dev/null || true)" == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}

# img_blobs NAME: "digest size" of the config and every layer of image NAME
img_blobs() { cat "$TMP/img-$1/config" "$TMP/img-$1/layers"; }

# upstream_blob_gets REPO_RE: the upstream's GETs of blobs in repositories matching REPO_RE (an ERE), so far
upstream_blob_gets() {
  sleep 0.5   # the access-log line is written after the response
  grep -acE "\"GET /v2/($1)/blobs/sha256:[0-9a-f]{64} HTTP" "$UPLOG" || true
}

# Scenario s: the same images through three setups side by side: the filesystem store (today's default), S3 with a
# local tier (`s3: {..., local_tier: true}`) and S3 without one (`local_tier: false`: every blob byte streamed from
# the bucket).
S_SETUPS=(filesystem s3+local s3-only)
# The "direct" column is the origin without a cache, as scenario c's nginx column: (a) and (c) signed GETs straight
# from Garage (curl, one connection at a time), (b) the pull straight from the upstream docker-registry.
s_start() { # SETUP NAME PORT DATADIR PREFIX: start ociregistry as SETUP (PREFIX: its key prefix in the bucket)
  local cfg="$TMP/$2.yaml"
  case $1 in
    filesystem) cfg="$TMP/ociregistry.yaml" ;;
    s3+local) s3_config "$cfg" "$5" "$2" true ;;
    s3-only) s3_config "$cfg" "$5" "$2" false ;;
  esac
  start_oci "$2" "$3" "$4" "$cfg"
}

# s_wait_published PREFIX IMAGE [layers]: every blob of IMAGE (only its layers with `layers`: warm_check does not
# fetch the config) is in the bucket under PREFIX (60 s at most)
s_wait_published() {
  local d s
  while read -r d s; do
    wait_bucket "$1/blobs/sha256/${d#sha256:}" 60 || return 1
  done < <(if [[ "${3:-}" == layers ]]; then cat "$TMP/img-$2/layers"; else img_blobs "$2"; fi)
}

# s_bucket_pull PREFIX RUN: config and layers of the cold image, in sequence, straight from Garage node 1 (one curl
# per object: signed requests); rows s_bw_wall / s_bw_ttfb, column direct.
s_bucket_pull() {
  local d s t0 t1 out code size ttfb ok=1
  t0="$(now_ns)"
  while read -r d s; do
    out="$(garage_s3 GET "$1/blobs/sha256/${d#sha256:}" -o /dev/null -w '%{http_code} %{size_download} %{time_starttransfer}')" || out="curl-failed"
    read -r code size ttfb <<<"$out"
    [[ "$code" == 200 && "$size" == "$s" ]] || ok=0
  done < <(img_blobs cold)
  t1="$(now_ns)"
  [[ $ok == 1 ]] || { note "s: direct pull from Garage run $2 failed (last: $out)"; return 0; }
  put s_bw_wall direct "$2" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
  put s_bw_ttfb direct "$2" "$(awk -v t="$ttfb" 'BEGIN { printf "%.2f", t * 1000 }')"
}

scenario_s() {
  if ! garage_up; then
    garage_missing_note s
    return 0
  fi
  local setup port r c res rps p50 p99 mibps errs key big="${WARM_LAYERS[2]}" n=0 files
  local -A SB=()
  # (a) warm 64 MiB GETs. s3+local and s3-only share one prefix; s3-only is measured once the blob is in the
  # bucket (it then streams every GET from there).
  for setup in "${S_SETUPS[@]}"; do
    n=$((n + 1))
    pick_port port
    s_start "$setup" "s-warm-$n" "$port" "$TMP/s-warm-$n" s-warm
    SB[$setup]="http://127.0.0.1:$port"
    warm_check "${SB[$setup]}"
  done
  s_wait_published s-warm warm layers || die "s: the warm image's blobs did not appear in the bucket within 60 s"
  sleep 1
  files="$(find "$TMP/s-warm-3/blobs" -type f 2>/dev/null | wc -l)"
  [[ "$files" == 0 ]] || note "s: the s3-only replica (local_tier: false) keeps $files blob file(s) on its disk after the warm-up"
  log "s: warm: filesystem ${SB[filesystem]}, s3+local ${SB[s3+local]}, s3-only ${SB[s3-only]}"
  for c in $CONNS_S; do
    key="s_warm64_c$c"
    row "$key" s "s. (a) warm GET blob 64MiB, $c conn: throughput" "MiB/s" higher
    for r in $(seq 1 "$RUNS"); do
      for setup in "${S_SETUPS[@]}"; do
        res="$(wrk_run "${SB[$setup]}/v2/$REPO_WARM/blobs/$big" "$c")"
        read -r rps p50 p99 mibps errs <<<"$res"
        log "s: $setup warm 64MiB c=$c run $r: $mibps MiB/s ($rps req/s), errors $errs"
        [[ "$errs" == "0" ]] || note "s: $setup warm 64MiB c=$c run $r reported $errs errors/non-2xx responses"
        put "$key" "$setup" "$r" "$mibps"
      done
    done
  done
  local i out sz tt i_sz i_tt
  for r in $(seq 1 "$RUNS"); do   # 3 sequential signed GETs of the 64 MiB object straight from Garage node 1
    sz=0 tt=0
    for i in 1 2 3; do
      out="$(garage_s3 GET "s-warm/blobs/sha256/${big#sha256:}" -o /dev/null -w '%{http_code} %{size_download} %{time_total}')" || out="curl-failed"
      [[ "$out" == "200 "* ]] || { note "s: direct GET from Garage failed: $out"; continue; }
      read -r _ i_sz i_tt <<<"$out"
      sz=$((sz + i_sz))
      tt="$(awk -v a="$tt" -v b="$i_tt" 'BEGIN { print a + b }')"
    done
    [[ $sz -gt 0 ]] || continue
    put s_warm64_c1 direct "$r" "$(awk -v b="$sz" -v t="$tt" 'BEGIN { printf "%.2f", b / t / 1048576 }')"
    log "s: direct from Garage 64MiB run $r: $(awk -v b="$sz" -v t="$tt" 'BEGIN { printf "%.1f", b / t / 1048576 }') MiB/s"
  done
  for n in 1 2 3; do stop_proc "s-warm-$n"; done
  rm -rf "$TMP"/s-warm-?

  # (b) cold pull: empty data dir, a fresh prefix (nothing in the bucket); (c) bucket-warm pull: another empty data
  # dir on the same prefix, once the first replica published every blob (what a new replica experiences).
  row s_cold_wall s "s. (b) cold pull (manifest + config + 4/16/64 MiB layers, sequential; empty data dir, empty bucket prefix)" "s" lower
  row s_cold_ttfb s "s. (b) cold pull: time to first byte of the 64 MiB layer" "ms" lower
  row s_bw_wall s "s. (c) bucket-warm pull (the same, empty data dir, every blob already in the bucket)" "s" lower
  row s_bw_ttfb s "s. (c) bucket-warm pull: time to first byte of the 64 MiB layer" "ms" lower
  row s_bw_upstream s "s. (c) bucket-warm pull: upstream blob GETs during it (want 0)" "count" lower
  local pfx g0 g1
  for r in $(seq 1 "$COLD_RUNS"); do
    for setup in "${S_SETUPS[@]}"; do
      if [[ $setup == filesystem ]]; then cold_pull "http://$UP" s_cold direct "$r"; fi   # the floor of (b)
      pfx="s-cold-$r-${setup//+/}"
      pick_port port
      s_start "$setup" s-cold "$port" "$TMP/s-cold" "$pfx"
      cold_pull "http://127.0.0.1:$port" s_cold "$setup" "$r"
      if [[ $setup != filesystem ]] && ! s_wait_published "$pfx" cold; then
        note "s: $setup run $r: the cold image's blobs did not all appear in the bucket within 60 s; no bucket-warm pull"
        stop_proc s-cold
        rm -rf "$TMP/s-cold"
        continue
      fi
      stop_proc s-cold
      rm -rf "$TMP/s-cold"
      [[ $setup == filesystem ]] && continue
      if [[ $setup == s3-only ]]; then   # the floor of (c): the same blobs straight from the bucket
        s_bucket_pull "$pfx" "$r"
      fi
      g0="$(upstream_blob_gets "$REPO_COLD")"
      pick_port port
      s_start "$setup" s-bw "$port" "$TMP/s-bw" "$pfx"
      cold_pull "http://127.0.0.1:$port" s_bw "$setup" "$r"
      g1="$(upstream_blob_gets "$REPO_COLD")"
      put s_bw_upstream "$setup" "$r" $((g1 - g0))
      [[ $((g1 - g0)) -eq 0 ]] || note "s: $setup bucket-warm run $r: $((g1 - g0)) upstream blob GET(s)"
      stop_proc s-bw
      rm -rf "$TMP/s-bw"
    done
  done
}

# Scenario p: pull storm. STORM_CLIENTS clients (storm_pull.py: manifest by tag, then config and layers, one
# keep-alive connection per client, each client pulls all three images) on cold caches, three setups:
#   one      one ociregistry (filesystem store);
#   replicas two ociregistry replicas sharing the Garage bucket (fresh prefix; each on another Garage node's S3
#            API), clients split between them;
#   tiers    a node -> site chain: two node caches (`mirrors: [site]`, `mirror_fallback: false`) in front of one
#            site cache (filesystem store), clients split between the nodes.
# Upstream bytes = the response sizes of the upstream's blob GETs (Distribution's combined-log lines carry them).
REPO_STORM=(bench/storm1 bench/storm2 bench/storm3)
P_SETUPS=(one replicas tiers)
STORM_BUILT=0
storm_images() {
  [[ $STORM_BUILT == 1 ]] && return 0
  log "p: building and pushing 3 images of 8 + 16 MiB layers"
  local i
  for i in 1 2 3; do
    build_layout "storm$i" 8192 16384
    push_layout "storm$i" "${REPO_STORM[$((i - 1))]}"
  done
  STORM_BUILT=1
}

# upstream_storm_stats FROM_LINE: "bytes gets heads distinct max_gets_per_blob" of the upstream's blob requests for
# the storm repositories in its log after line FROM_LINE.
upstream_storm_stats() {
  sleep 0.5
  tail -n +"$(($1 + 1))" "$UPLOG" | python3 -c '
import re, sys
rx = re.compile(r"\"(GET|HEAD) /v2/bench/storm[0-9]+/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+\" ([0-9]{3}) ([0-9-]+)")
by, gets, heads, per = 0, 0, 0, {}
for line in sys.stdin:
    m = rx.search(line)
    if not m:
        continue
    if m.group(1) == "HEAD":
        heads += 1
        continue
    gets += 1
    per[m.group(2)] = per.get(m.group(2), 0) + 1
    by += int(m.group(4)) if m.group(4) != "-" else 0
print(by, gets, heads, len(per), max(per.values()) if per else 0)
'
}

scenario_p() {
  if ! garage_up; then
    garage_missing_note p
    return 0
  fi
  storm_images
  local img_bytes=0 nblobs=0 d s i
  for i in 1 2 3; do
    while read -r d s; do
      img_bytes=$((img_bytes + s))
      nblobs=$((nblobs + 1))
    done < <(img_blobs "storm$i")
  done
  local repos
  repos="$(IFS=,; echo "${REPO_STORM[*]}")"
  row p_ratio p "p. $STORM_CLIENTS clients pull 3 cold images (2 layers of 8 + 16 MiB each): upstream blob bytes ÷ image blob bytes" "ratio" lower
  row p_gets p "p. same: upstream GETs per blob (mean over the $nblobs blobs)" "count" lower
  row p_gets_max p "p. same: upstream GETs of the most fetched blob" "count" lower
  row p_p50 p "p. same: time to pull one image (manifest + config + layers), per client: p50" "s" lower
  row p_p99 p "p. same: time to pull one image, per client: p99" "s" lower
  row p_wall p "p. same: wall time until every client has pulled all 3 images" "s" lower
  row p_err p "p. same: failed image pulls" "count" lower
  local r setup bases port p1 p2 p3 line0 res stats by gets heads distinct maxg
  for r in $(seq 1 "$STORM_RUNS"); do
    for setup in "${P_SETUPS[@]}"; do
      pick_port p1
      pick_port p2
      case $setup in
        one)
          start_oci p-one "$p1" "$TMP/p-one"
          bases="http://127.0.0.1:$p1"
          ;;
        replicas)
          s3_config "$TMP/p-ra.yaml" "p-$r" p-ra true 1
          s3_config "$TMP/p-rb.yaml" "p-$r" p-rb true 2
          start_oci p-ra "$p1" "$TMP/p-ra" "$TMP/p-ra.yaml"
          start_oci p-rb "$p2" "$TMP/p-rb" "$TMP/p-rb.yaml"
          bases="http://127.0.0.1:$p1,http://127.0.0.1:$p2"
          ;;
        tiers)
          pick_port p3
          start_oci p-site "$p3" "$TMP/p-site"
          cat "$TMP/ociregistry.yaml" >"$TMP/p-node.yaml"
          printf 'mirrors: ["http://127.0.0.1:%s"]\nmirror_fallback: false\n' "$p3" >>"$TMP/p-node.yaml"
          start_oci p-n1 "$p1" "$TMP/p-n1" "$TMP/p-node.yaml"
          start_oci p-n2 "$p2" "$TMP/p-n2" "$TMP/p-node.yaml"
          bases="http://127.0.0.1:$p1,http://127.0.0.1:$p2"
          ;;
      esac
      line0="$(wc -l <"$UPLOG")"
      res="$(timeout 600 python3 "$HERE/storm_pull.py" --bases "$bases" --repos "$repos" --tag "$TAG" \
        --clients "$STORM_CLIENTS" 2>>"$TMP/logs/storm.log")" || die "p: storm_pull.py failed for $setup run $r (see $TMP/logs/storm.log)"
      stats="$(upstream_storm_stats "$line0")"
      read -r by gets heads distinct maxg <<<"$stats"
      for i in p-one p-ra p-rb p-site p-n1 p-n2; do stop_proc "$i"; done
      rm -rf "$TMP"/p-one "$TMP"/p-ra "$TMP"/p-rb "$TMP"/p-site "$TMP"/p-n1 "$TMP"/p-n2
      put p_ratio "$setup" "$r" "$(awk -v a="$by" -v b="$img_bytes" 'BEGIN { printf "%.3f", a / b }')"
      put p_gets "$setup" "$r" "$(awk -v a="$gets" -v b="$nblobs" 'BEGIN { printf "%.2f", a / b }')"
      put p_gets_max "$setup" "$r" "$maxg"
      put p_p50 "$setup" "$r" "$(jq -r '.p50_s | . * 1000 | round / 1000' <<<"$res")"
      put p_p99 "$setup" "$r" "$(jq -r '.p99_s | . * 1000 | round / 1000' <<<"$res")"
      put p_wall "$setup" "$r" "$(jq -r '.wall_s | . * 1000 | round / 1000' <<<"$res")"
      put p_err "$setup" "$r" "$(jq -r .errors_total <<<"$res")"
      [[ "$(jq -r .errors_total <<<"$res")" == 0 ]] || note "p: $setup run $r: $(jq -r .errors_total <<<"$res") failed pulls: $(jq -r '.errors[:3] | join("; ")' <<<"$res")"
      [[ $distinct -eq $nblobs ]] || note "p: $setup run $r: the upstream served $distinct distinct blobs of $nblobs"
      [[ $heads -eq 0 ]] || note "p: $setup run $r: $heads upstream HEADs of storm blobs"
      log "p: $setup run $r: upstream $by B of blobs = $(awk -v a="$by" -v b="$img_bytes" 'BEGIN { printf "%.3f", a / b }') × image ($img_bytes B), $gets GETs for $nblobs blobs (max $maxg per blob), pull p50 $(jq -r '.p50_s * 1000 | round / 1000' <<<"$res") s p99 $(jq -r '.p99_s * 1000 | round / 1000' <<<"$res") s, wall $(jq -r '.wall_s * 100 | round / 100' <<<"$res") s, errors $(jq -r .errors_total <<<"$res")"
    done
  done
}

# ---------------------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------------------
T_START="$(now_ns)"
if has a || has b; then
  pick_port OCI_PORT
  pick_port PROXY_PORT
  pick_port NGINX_PORT
  start_oci oci "$OCI_PORT" "$TMP/oci-warm"
  start_proxy proxy "$PROXY_PORT" "$TMP/proxy-warm"
  start_nginx nginx "$NGINX_PORT"
  BASE[ociregistry]="http://127.0.0.1:$OCI_PORT"
  BASE[proxy]="http://127.0.0.1:$PROXY_PORT"
  BASE[nginx]="http://127.0.0.1:$NGINX_PORT"
  log "warming: ociregistry $OCI_PORT, distribution proxy $PROXY_PORT, nginx $NGINX_PORT"
  for srv in "${SERVERS[@]}"; do warm_check "${BASE[$srv]}"; done
  has a && scenario_a
  has b && scenario_b
  row e_peak e "e. peak RSS (VmHWM) over warm-up + scenarios a/b (nginx: master + 2 workers)" "MiB" lower
  put e_peak ociregistry 1 "$(kib_to_mib "$(rss_kib "$(pid_of oci)" VmHWM)")"
  put e_peak proxy 1 "$(kib_to_mib "$(rss_kib "$(pid_of proxy)" VmHWM)")"
  put e_peak nginx 1 "$(kib_to_mib "$(nginx_rss_kib VmHWM)")"
  stop_proc oci
  stop_proc proxy
  stop_proc nginx
fi
has t && scenario_t
has o && scenario_o
has i && scenario_i
has c && scenario_c
has d && scenario_d
if has e || has f; then scenario_ef; fi
has s && scenario_s
has p && scenario_p
T_END="$(now_ns)"
{
  echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "elapsed=$(awk -v a="$T_START" -v b="$T_END" 'BEGIN { printf "%.0f s", (b - a) / 1e9 }')"
} >>"$TMP/machine.txt"

# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
python3 "$HERE/report.py" --raw "$RAW" --rows "$ROWS" --machine "$TMP/machine.txt" --notes "$NOTES" --out "$OUT"
cat "$OUT/results.md"
if [[ "${NO_PLOT:-0}" != "1" ]]; then
  "$HERE/plot.sh" "$OUT" >>"$TMP/logs/plot.log" 2>&1 && log "plot: $OUT/results.png" || log "plot failed (see $TMP/logs/plot.log): $(tail -n 3 "$TMP/logs/plot.log" | tr '\n' ' ')"
fi
log "results: $OUT/results.md, $OUT/results.csv, $OUT/runs.csv"
