# shellcheck shell=bash
# A real 3-node Garage (S3-compatible object store) cluster on 127.0.0.1 for the end-to-end tests.
# Sourced (never executed) after tests/lib/harness.sh, by a script running with `set -euo pipefail`:
#   source "$REPO_ROOT/tests/lib/harness.sh"
#   source "$REPO_ROOT/tests/lib/garage.sh"
# Processes are started with harness.sh's start_bg (names garage1..garage3, pids in $PIDDIR), so the harness's
# EXIT trap (`harness_traps harness_cleanup` -> stop_all_bg) stops them whatever way the test exits; when the
# caller has installed no EXIT trap at all, garage_cluster_start installs one that calls garage_cluster_stop.
#
# Cluster: replication_factor 3, consistency_mode "consistent", db_engine sqlite, S3 region `garage`, path-style
# S3 only (no root_domain), one zone per node (z1..z3, capacity 1G each), layout version 1, a fresh rpc_secret
# (openssl rand -hex 32) per run, bucket `ociregistry` with one key allowed --read --write --owner.
# Quorums with 3 replicas in consistent mode are 2 of 3 for reads and writes: with one node down (garage_node_kill)
# PUT, GET, HEAD, list and multipart still succeed through either of the two others; with two down they fail (503).
#
# Globals the caller may set (before calling garage_cluster_start):
#   GARAGE_BIN        the garage binary (default: `garage` on PATH, else /root/.cargo/bin/garage, where
#                     scripts/install-test-deps puts it)
#   GARAGE_START_TIMEOUT  seconds to wait for each phase of a start or restart (default 30)
#   GARAGE_RUST_LOG   RUST_LOG of the nodes (default garage=info)
#   PIDDIR            as for harness.sh's start_bg (default: DIR/pids when unset)
#   GARAGE_S3_NODE    node (1-3) garage_s3 / garage_s3_list / garage_s3_presign talk to (default 1)
#   GARAGE_S3_TIMEOUT curl --max-time of garage_s3 (default 30)
#
# Functions:
#   garage_cluster_start DIR  create DIR (configs node{1,2,3}.toml, meta{1,2,3}/, data{1,2,3}/, logs node{1,2,3}.log,
#                     node ids node{1,2,3}.id), start the three nodes, connect them, apply the layout, wait until
#                     `garage health` says HEALTHY (3 storage nodes up, all partitions fully healthy), create the
#                     bucket and the key, and wait until the S3 API of every node answers a signed ListObjectsV2
#                     with 200 (about 2.5-3 s in all). Call it in the MAIN shell (not in a run_step subshell): it
#                     picks ports with pick_port and exports
#                       GARAGE_S3_ENDPOINTS  "http://127.0.0.1:P1 http://127.0.0.1:P2 http://127.0.0.1:P3"
#                       GARAGE_S3_ENDPOINT   node 1's endpoint
#                       GARAGE_REGION=garage GARAGE_BUCKET=ociregistry GARAGE_KEY_ID GARAGE_SECRET
#                       GARAGE_PIDS          "PID1 PID2 PID3" (the garage server pids at start time)
#                       GARAGE_DIR           DIR
#                     It also writes DIR/key-id and DIR/secret (mode 600, no newline) and DIR/env (mode 600:
#                     `export VAR=value` lines of the variables above, for `source` by other processes).
#                     Quiet on success; on failure prints the tails of the node logs to stderr and returns 1.
#   garage_node_kill N        SIGKILL node N and wait until it is gone (the others notice at once: with one node
#                             down requests succeed without delay).
#   garage_node_start N       start node N again with the same config, metadata and data (log appended to
#                             DIR/nodeN.log), connect it to the running nodes both ways (`node connect`: a restarted
#                             node does not dial its peers itself and their reconnection backoff takes 8 s, then
#                             30 s), wait until the S3 API of every running node answers a signed ListObjectsV2 with
#                             200 and, when all three nodes run again, until health is HEALTHY. No-op if N runs.
#   garage_cluster_stop       stop the nodes still running (SIGTERM, then SIGKILL after 10 s). Idempotent.
#   garage_cli N ARGS...      `garage -c DIR/nodeN.toml ARGS...` (the admin CLI, talking RPC to node N).
#   garage_s3 METHOD KEY [CURL_ARGS...]  one signed S3 request (curl --aws-sigv4 "aws:amz:garage:s3", header
#                     `x-amz-content-sha256: UNSIGNED-PAYLOAD`, which Garage requires on every request) to node
#                     $GARAGE_S3_NODE, path-style: $endpoint/$GARAGE_BUCKET/KEY. KEY is the raw object key, which
#                     garage_s3 percent-encodes (all but A-Za-z0-9-._~ and `/`: `blobs/sha256:ab` is sent as
#                     blobs/sha256%3Aab; curl would sign `:` raw and Garage answer 403); the part after the first
#                     `?` is the query string, sent as written; a KEY starting with `?` addresses the bucket
#                     itself ($endpoint/$GARAGE_BUCKET?...). METHOD HEAD uses curl --head. Runs
#                     `curl -sS` plus CURL_ARGS (e.g. -o FILE -w '%{http_code}', -T FILE or -T - to upload,
#                     -H 'Range: bytes=0-9'); returns curl's status (not the HTTP status: add -f or
#                     -w '%{http_code}' to check it). curl 7.88 signs the query string exactly as written, so a
#                     query must be what SigV4 canonicalizes to, else 403 "Invalid signature": parameters in sorted
#                     order, values percent-encoded with upper-case hex (`prefix=a%2Fb`, not `prefix=a/b`), and
#                     `=` after valueless ones: `KEY?uploads=` (CreateMultipartUpload),
#                     `KEY?partNumber=1&uploadId=ID` (UploadPart), `KEY?uploadId=ID` (Complete: POST, Abort:
#                     DELETE), `?list-type=2&max-keys=1`.
#   garage_s3_list PREFIX [CURL_ARGS...]  ListObjectsV2 under PREFIX (encodes it).
#   garage_s3_presign METHOD KEY [EXPIRES_S] [NODE]  print a presigned URL (query-string SigV4) for KEY.
#   garage_s3_url N           node N's S3 endpoint.
#   garage_dump_logs [LINES]  print the last LINES (default 30) lines of every node log to stderr.

GARAGE_NODES=3
GARAGE_REGION=garage
GARAGE_BUCKET=ociregistry

_garage_bin() {
  if [[ -n "${GARAGE_BIN:-}" ]]; then
    printf '%s\n' "$GARAGE_BIN"
  elif command -v garage >/dev/null 2>&1; then
    command -v garage
  elif [[ -x /root/.cargo/bin/garage ]]; then
    printf '%s\n' /root/.cargo/bin/garage
  else
    echo "garage not found (run scripts/install-test-deps, or set GARAGE_BIN)" >&2
    return 1
  fi
}

garage_cli() { # N ARGS...
  local n=$1
  shift
  "$GARAGE_BIN" -c "$GARAGE_DIR/node$n.toml" "$@"
}

garage_s3_url() { # N
  local eps
  read -r -a eps <<<"$GARAGE_S3_ENDPOINTS"
  printf '%s\n' "${eps[$(($1 - 1))]}"
}

garage_dump_logs() { # [LINES]
  local i
  for i in $(seq 1 "$GARAGE_NODES"); do
    [[ -e "$GARAGE_DIR/node$i.log" ]] || continue
    printf '%s\n' "----- tail of $GARAGE_DIR/node$i.log -----" >&2
    tail -n "${1:-30}" "$GARAGE_DIR/node$i.log" | cut -c1-400 | sed 's/^/    /' >&2
  done
}

garage_s3() { # METHOD KEY [CURL_ARGS...]
  local method=$1 key=$2 url
  shift 2
  url="$(garage_s3_url "${GARAGE_S3_NODE:-1}")/$GARAGE_BUCKET"
  if [[ "$key" == "?"* ]]; then
    url+="$key"
  elif [[ "$key" == *"?"* ]]; then
    url+="/$(_garage_uri "${key%%\?*}" 1)?${key#*\?}"
  else
    url+="/$(_garage_uri "$key" 1)"
  fi
  local m=(-X "$method")
  [[ "$method" == HEAD ]] && m=(--head)
  curl -sS --max-time "${GARAGE_S3_TIMEOUT:-30}" "${m[@]}" \
    --aws-sigv4 "aws:amz:$GARAGE_REGION:s3" --user "$GARAGE_KEY_ID:$GARAGE_SECRET" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@" "$url"
}

# _garage_write_config N: DIR/nodeN.toml with the ports of _GARAGE_RPC_PORTS / _GARAGE_S3_PORTS / _GARAGE_ADMIN_PORTS
_garage_write_config() {
  local n=$1 d=$GARAGE_DIR
  mkdir -p "$d/meta$n" "$d/data$n"
  (
    umask 077
    cat >"$d/node$n.toml" <<CFG
metadata_dir = "$d/meta$n"
data_dir = "$d/data$n"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 3
consistency_mode = "consistent"

rpc_bind_addr = "127.0.0.1:${_GARAGE_RPC_PORTS[$n]}"
rpc_public_addr = "127.0.0.1:${_GARAGE_RPC_PORTS[$n]}"
rpc_secret = "$_GARAGE_RPC_SECRET"

[s3_api]
s3_region = "$GARAGE_REGION"
api_bind_addr = "127.0.0.1:${_GARAGE_S3_PORTS[$n]}"

[admin]
api_bind_addr = "127.0.0.1:${_GARAGE_ADMIN_PORTS[$n]}"
CFG
  )
}

# _garage_spawn N: start node N (output appended to DIR/nodeN.log; `exec` keeps the pid start_bg records).
_garage_spawn() {
  local n=$1
  start_bg "garage$n" /dev/null env NO_COLOR=1 RUST_LOG="${GARAGE_RUST_LOG:-garage=info}" \
    bash -c 'exec "$0" -c "$1" server >>"$2" 2>&1' "$GARAGE_BIN" "$GARAGE_DIR/node$n.toml" "$GARAGE_DIR/node$n.log"
}

# _garage_wait DESC TIMEOUT_S CMD...: retry CMD (quietly) every 0.1 s until it succeeds; fails early when a node
# exited.
_garage_wait() {
  local desc=$1 t=$2 i n
  shift 2
  for i in $(seq 1 $((t * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    for n in $(seq 1 "$GARAGE_NODES"); do
      if [[ -e "$GARAGE_DIR/node$n.wanted" ]] && ! is_running "garage$n"; then
        echo "garage: node $n exited (status $(cat "$PIDDIR/garage$n.rc" 2>/dev/null)) while waiting for $desc" >&2
        return 1
      fi
    done
    sleep 0.1
  done
  echo "garage: timed out after ${t}s waiting for $desc" >&2
  return 1
}

# _garage_s3_ready N: node N answers a signed ListObjectsV2 on the bucket with 200 (before the bucket and key
# exist: the S3 port answers at all, with any HTTP status).
_garage_s3_ready() {
  local code
  if [[ -n "${GARAGE_KEY_ID:-}" ]]; then
    code="$(GARAGE_S3_NODE=$1 GARAGE_S3_TIMEOUT=2 garage_s3 GET '?list-type=2&max-keys=1' -o /dev/null -w '%{http_code}')" || return 1
    [[ "$code" == 200 ]]
  else
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$(garage_s3_url "$1")/")" || return 1
    [[ "$code" != 000 ]]
  fi
}

_garage_healthy() { # -> true when `garage health` says HEALTHY: 3 storage nodes up, all 256 partitions fully healthy
  local out
  out="$(garage_cli 1 health 2>/dev/null)" || return 1
  grep -Eq '^Cluster health: +HEALTHY' <<<"$out" && grep -Eq '^Storage nodes up: +3$' <<<"$out"
}

garage_cluster_start() { # DIR
  local d n t=${GARAGE_START_TIMEOUT:-30}
  GARAGE_BIN="$(_garage_bin)" || return 1
  mkdir -p "$1"
  d="$(cd "$1" && pwd)"
  export GARAGE_DIR="$d"
  : "${PIDDIR:=$d/pids}"
  mkdir -p "$PIDDIR"
  if [[ -z "$(trap -p EXIT)" ]]; then
    trap 'garage_cluster_stop' EXIT
  fi
  _GARAGE_RPC_PORTS=() _GARAGE_S3_PORTS=() _GARAGE_ADMIN_PORTS=()
  GARAGE_S3_ENDPOINTS=""
  _GARAGE_RPC_SECRET="$(openssl rand -hex 32)"
  unset GARAGE_KEY_ID GARAGE_SECRET
  for n in $(seq 1 "$GARAGE_NODES"); do
    pick_port "_GARAGE_RPC_PORTS[$n]" || return 1
    pick_port "_GARAGE_S3_PORTS[$n]" || return 1
    pick_port "_GARAGE_ADMIN_PORTS[$n]" || return 1
    GARAGE_S3_ENDPOINTS+="${GARAGE_S3_ENDPOINTS:+ }http://127.0.0.1:${_GARAGE_S3_PORTS[$n]}"
    _garage_write_config "$n"
  done
  export GARAGE_S3_ENDPOINTS GARAGE_S3_ENDPOINT="http://127.0.0.1:${_GARAGE_S3_PORTS[1]}"
  export GARAGE_REGION GARAGE_BUCKET

  if ! _garage_cluster_setup "$d" "$t"; then
    echo "garage: cluster start in $d failed" >&2
    garage_dump_logs 30
    return 1
  fi
}

_garage_cluster_setup() { # DIR TIMEOUT
  local d=$1 t=$2 n id ids=() out p
  for n in $(seq 1 "$GARAGE_NODES"); do
    touch "$d/node$n.wanted"
    _garage_spawn "$n" || return 1
  done
  for n in $(seq 1 "$GARAGE_NODES"); do
    _garage_wait "node $n's RPC" "$t" garage_cli "$n" node id -q || return 1
    id="$(garage_cli "$n" node id -q 2>/dev/null)" || return 1
    ids[n]="${id%%@*}"
    printf '%s\n' "$id" >"$d/node$n.id"
    if [[ $n -gt 1 ]]; then
      garage_cli 1 node connect "${ids[n]}@127.0.0.1:${_GARAGE_RPC_PORTS[$n]}" >"$d/setup.log" 2>&1 \
        || { cat "$d/setup.log" >&2; return 1; }
    fi
  done
  for n in $(seq 1 "$GARAGE_NODES"); do
    garage_cli 1 layout assign -z "z$n" -c 1G "${ids[n]}" >"$d/setup.log" 2>&1 || { cat "$d/setup.log" >&2; return 1; }
  done
  garage_cli 1 layout apply --version 1 >"$d/setup.log" 2>&1 || { cat "$d/setup.log" >&2; return 1; }
  _garage_wait "cluster health HEALTHY" "$t" _garage_healthy || { garage_cli 1 status >&2 || true; garage_cli 1 health >&2 || true; return 1; }

  garage_cli 1 bucket create "$GARAGE_BUCKET" >"$d/setup.log" 2>&1 || { cat "$d/setup.log" >&2; return 1; }
  out="$(garage_cli 1 json-api CreateKey "{\"name\":\"$GARAGE_BUCKET-test\"}" 2>"$d/setup.log")" \
    || { cat "$d/setup.log" >&2; return 1; }
  GARAGE_KEY_ID="$(jq -er .accessKeyId <<<"$out")" || { echo "garage: CreateKey answered: $out" >&2; return 1; }
  GARAGE_SECRET="$(jq -er .secretAccessKey <<<"$out")" || { echo "garage: CreateKey answered: $out" >&2; return 1; }
  export GARAGE_KEY_ID GARAGE_SECRET
  garage_cli 1 bucket allow --read --write --owner "$GARAGE_BUCKET" --key "$GARAGE_KEY_ID" >"$d/setup.log" 2>&1 \
    || { cat "$d/setup.log" >&2; return 1; }
  for n in $(seq 1 "$GARAGE_NODES"); do
    _garage_wait "node $n's S3 API (signed ListObjectsV2 = 200)" "$t" _garage_s3_ready "$n" || return 1
  done

  GARAGE_PIDS=""
  for n in $(seq 1 "$GARAGE_NODES"); do GARAGE_PIDS+="${GARAGE_PIDS:+ }$(cat "$PIDDIR/garage$n.pid")"; done
  export GARAGE_PIDS
  (
    umask 077
    printf '%s' "$GARAGE_KEY_ID" >"$d/key-id"
    printf '%s' "$GARAGE_SECRET" >"$d/secret"
    for p in GARAGE_DIR GARAGE_S3_ENDPOINTS GARAGE_S3_ENDPOINT GARAGE_REGION GARAGE_BUCKET GARAGE_KEY_ID GARAGE_SECRET GARAGE_PIDS; do
      printf 'export %s=%q\n' "$p" "${!p}"
    done >"$d/env"
  )
  chmod 600 "$d/key-id" "$d/secret" "$d/env"
}

garage_node_kill() { # N
  local n=$1 pid i
  rm -f "$GARAGE_DIR/node$n.wanted"
  pid="$(cat "$PIDDIR/garage$n.pid" 2>/dev/null)" || return 0
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    [[ -e "$PIDDIR/garage$n.rc" ]] && return 0
    sleep 0.1
  done
  echo "garage: node $n (pid $pid) still there 5 s after SIGKILL" >&2
  return 1
}

garage_node_start() { # N
  local n=$1 m all=1 t=${GARAGE_START_TIMEOUT:-30}
  if is_running "garage$n"; then return 0; fi
  touch "$GARAGE_DIR/node$n.wanted"
  _garage_spawn "$n" || return 1
  # A restarted node does not dial its peers at once and they retry with a backoff (8 s, then 30 s, ...):
  # connect it to every running node explicitly, so that it is back in the cluster within a second.
  if ! _garage_wait "node $n's RPC after restart" "$t" garage_cli "$n" node id -q; then
    garage_dump_logs 30
    return 1
  fi
  for m in $(seq 1 "$GARAGE_NODES"); do
    [[ $m -ne $n ]] || continue
    if is_running "garage$m"; then
      garage_cli "$n" node connect "$(cat "$GARAGE_DIR/node$m.id")" >/dev/null 2>&1 || true
      garage_cli "$m" node connect "$(cat "$GARAGE_DIR/node$n.id")" >/dev/null 2>&1 || true
    else
      all=0
    fi
  done
  for m in $(seq 1 "$GARAGE_NODES"); do
    is_running "garage$m" || continue
    if ! _garage_wait "node $m's S3 API after the restart of node $n" "$t" _garage_s3_ready "$m"; then
      garage_dump_logs 30
      return 1
    fi
  done
  if [[ $all -eq 1 ]] && ! _garage_wait "cluster health HEALTHY after restart" "$t" _garage_healthy; then
    garage_dump_logs 30
    return 1
  fi
}

garage_cluster_stop() {
  local n
  [[ -n "${GARAGE_DIR:-}" && -n "${PIDDIR:-}" ]] || return 0
  for n in $(seq 1 "$GARAGE_NODES"); do
    rm -f "$GARAGE_DIR/node$n.wanted"
    if is_running "garage$n"; then stop_bg "garage$n" 10 >/dev/null; fi
  done
  return 0
}

# garage_s3_list PREFIX [CURL_ARGS...]: ListObjectsV2 of the bucket under PREFIX (percent-encoded here: curl 7.88
# signs the query string as given, and Garage canonicalizes it with %XX upper-case escapes in sorted order).
garage_s3_list() { # PREFIX [CURL_ARGS...]
  local prefix=$1
  shift
  garage_s3 GET "?list-type=2&prefix=$(_garage_uri "$prefix")" "$@"
}

# _garage_uri STRING [KEEP_SLASH]: RFC 3986 percent-encoding (upper-case hex) of STRING; `/` kept when KEEP_SLASH=1.
_garage_uri() {
  local s
  s="$(jq -rn --arg s "$1" '$s|@uri')"
  if [[ "${2:-0}" == 1 ]]; then s="${s//%2F//}"; fi
  printf '%s' "$s"
}

_garage_hmac() { # HEXKEY DATA -> hex
  printf '%s' "$2" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$1" | sed 's/^.*= //'
}

# garage_s3_presign METHOD KEY [EXPIRES_S] [NODE]: print a presigned (query-string SigV4, UNSIGNED-PAYLOAD) URL
# for KEY in the bucket on node NODE (default ${GARAGE_S3_NODE:-1}), valid EXPIRES_S seconds (default 300).
garage_s3_presign() {
  local method=$1 key=$2 expires=${3:-300} node=${4:-${GARAGE_S3_NODE:-1}}
  local ep host path now day scope query creq sts k
  ep="$(garage_s3_url "$node")"
  host="${ep#http://}"
  path="/$GARAGE_BUCKET/$(_garage_uri "$key" 1)"
  now="$(date -u +%Y%m%dT%H%M%SZ)"
  day="${now%%T*}"
  scope="$day/$GARAGE_REGION/s3/aws4_request"
  query="X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=$(_garage_uri "$GARAGE_KEY_ID/$scope")&X-Amz-Date=$now"
  query+="&X-Amz-Expires=$expires&X-Amz-SignedHeaders=host"
  creq="$method"$'\n'"$path"$'\n'"$query"$'\n'"host:$host"$'\n\n'"host"$'\n'"UNSIGNED-PAYLOAD"
  sts="AWS4-HMAC-SHA256"$'\n'"$now"$'\n'"$scope"$'\n'"$(printf '%s' "$creq" | sha256sum | cut -d' ' -f1)"
  k="$(printf '%s' "$day" | openssl dgst -sha256 -mac HMAC -macopt "key:AWS4$GARAGE_SECRET" | sed 's/^.*= //')"
  k="$(_garage_hmac "$k" "$GARAGE_REGION")"
  k="$(_garage_hmac "$k" s3)"
  k="$(_garage_hmac "$k" aws4_request)"
  printf '%s%s?%s&X-Amz-Signature=%s\n' "$ep" "$path" "$query" "$(_garage_hmac "$k" "$sts")"
}
