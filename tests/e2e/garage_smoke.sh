#!/usr/bin/env bash
# Self-check of tests/lib/garage.sh: a real 3-node Garage cluster (replication 3, consistent mode) on 127.0.0.1.
#
#   1. cluster start (timed)
#   2. PUT an object through node 1, GET it byte-exact through nodes 1, 2 and 3; list it
#   3. kill -9 node 3: GET / HEAD / list through node 1 and node 2 still work, and a new PUT (plain and multipart)
#      through node 1 succeeds (quorum 2 of 3); the new object is readable through node 2
#   4. kill -9 node 2 as well (1 of 3 up): GET and PUT through node 1 fail (no quorum, 5xx); restart node 2
#   5. restart node 3: it serves the objects written while it was down
#   6. S3 semantics the ociregistry S3 backend relies on: ranged GET (206 + bytes), multipart invisible until
#      Complete, presigned GET, and If-None-Match: * on PUT (Garage 2.5 ignores it: the step records what it does)
#   7. cluster stop: no garage process left
#
# Env: GARAGE_SMOKE_KEEP=1 keeps the temp dir (configs, node logs), GARAGE_SMOKE_VERBOSE=1 prints every step's
# output. Output: `PASS name` / `FAIL name` lines, then `garage-smoke: N passed, M failed`; exit 0 iff none failed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO_ROOT/tests/lib/harness.sh"
source "$REPO_ROOT/tests/lib/garage.sh"
HARNESS_NAME=garage-smoke
HARNESS_KEEP="${GARAGE_SMOKE_KEEP:-0}"
HARNESS_VERBOSE="${GARAGE_SMOKE_VERBOSE:-0}"

log() { printf '%s\n' "$*"; }
die() { printf 'garage-smoke: error: %s\n' "$*" >&2; exit 2; }

for tool in curl jq openssl python3 sha256sum cmp; do
  command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool (run scripts/install-test-deps as root)"
done
command -v garage >/dev/null 2>&1 || [[ -x /root/.cargo/bin/garage ]] || [[ -n "${GARAGE_BIN:-}" ]] ||
  die "garage not found (run scripts/install-test-deps, or set GARAGE_BIN)"

TMP="$(mktemp -d /tmp/ociregistry-garage.XXXXXX)"
PIDDIR="$TMP/pids"
mkdir -p "$PIDDIR" "$TMP/steps" "$TMP/logs" "$TMP/files"
harness_traps harness_cleanup

finish() {
  if [[ $FAILED -gt 0 ]]; then
    log "failed steps: ${FAILED_NAMES[*]}"
    garage_dump_logs 40 2>&1
  fi
  log "garage-smoke: $PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}

# expect_code WANT DESC CMD...: run CMD (a garage_s3 / curl call printing only the HTTP status), compare
expect_code() {
  local want=$1 desc=$2 got
  shift 2
  got="$("$@")" || true
  if [[ "$got" != "$want" ]]; then
    echo "$desc: HTTP $got, expected $want"
    return 1
  fi
  echo "$desc: HTTP $got"
}

# get_via N KEY FILE: GET KEY through node N, byte-compare with FILE
get_via() {
  local n=$1 key=$2 f=$3 code
  code="$(GARAGE_S3_NODE=$n garage_s3 GET "$key" -o "$TMP/files/got" -w '%{http_code}')" || true
  [[ "$code" == 200 ]] || { echo "GET $key via node $n: HTTP $code"; return 1; }
  cmp -s "$f" "$TMP/files/got" || { echo "GET $key via node $n: content differs"; return 1; }
  echo "GET $key via node $n: 200, $(stat -c %s "$f") bytes, identical"
}

put_via() { # N KEY FILE
  GARAGE_S3_NODE=$1 garage_s3 PUT "$2" -T "$3" -o /dev/null -w '%{http_code}'
}

# multipart_via N KEY FILE [COMPLETE_CURL_ARGS...]: Create + one UploadPart + Complete through node N; prints the
# Complete's HTTP status. Between UploadPart and Complete it records GET KEY's status in $TMP/files/mp-before.
multipart_via() {
  local n=$1 key=$2 f=$3 up etag
  shift 3
  export GARAGE_S3_NODE=$n
  up="$(garage_s3 POST "$key?uploads=" -f | sed -n 's:.*<UploadId>\(.*\)</UploadId>.*:\1:p')"
  [[ -n "$up" ]] || { echo "CreateMultipartUpload gave no UploadId" >&2; return 1; }
  etag="$(garage_s3 PUT "$key?partNumber=1&uploadId=$up" -T "$f" -f -D - -o /dev/null |
    tr -d '\r' | awk -F': ' 'tolower($1) == "etag" { print $2 }')"
  [[ -n "$etag" ]] || { echo "UploadPart gave no ETag" >&2; return 1; }
  garage_s3 GET "$key" -o /dev/null -w '%{http_code}' >"$TMP/files/mp-before" || true
  garage_s3 POST "$key?uploadId=$up" "$@" -H 'Content-Type: application/xml' -o /dev/null -w '%{http_code}' \
    --data-binary "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>$etag</ETag></Part></CompleteMultipartUpload>"
}

# ---------------------------------------------------------------------------------------------------------
step_put_get_all() {
  head -c 3000000 /dev/urandom >"$TMP/files/a"
  expect_code 200 "PUT blobs/a via node 1 (3 MB)" put_via 1 blobs/a "$TMP/files/a"
  get_via 1 blobs/a "$TMP/files/a"
  get_via 2 blobs/a "$TMP/files/a"
  get_via 3 blobs/a "$TMP/files/a"
  garage_s3_list blobs/ -f | grep -q '<Key>blobs/a</Key>'
  echo "ListObjectsV2 prefix=blobs/ via node 1 lists blobs/a"
  # a key with characters that must be percent-encoded (garage_s3 encodes the key)
  expect_code 200 "PUT blobs/sha256:x+y=z via node 1" put_via 1 'blobs/sha256:x+y=z' "$TMP/files/a"
  get_via 3 'blobs/sha256:x+y=z' "$TMP/files/a"
  garage_s3_list 'blobs/sha256:' -f | grep -q '<Key>blobs/sha256:x+y=z</Key>'
  echo "ListObjectsV2 prefix=blobs/sha256: lists blobs/sha256:x+y=z"
}

step_one_node_down() {
  garage_node_kill 3
  echo "node 3 killed (SIGKILL)"
  get_via 1 blobs/a "$TMP/files/a"
  get_via 2 blobs/a "$TMP/files/a"
  expect_code 200 "HEAD blobs/a via node 1" garage_s3 HEAD blobs/a -o /dev/null -w '%{http_code}'
  GARAGE_S3_NODE=2 garage_s3_list blobs/ -f | grep -q '<Key>blobs/a</Key>'
  echo "ListObjectsV2 via node 2 lists blobs/a"
  head -c 2000000 /dev/urandom >"$TMP/files/b"
  expect_code 200 "PUT blobs/b via node 1 (node 3 down)" put_via 1 blobs/b "$TMP/files/b"
  get_via 2 blobs/b "$TMP/files/b"
  head -c 6000000 /dev/urandom >"$TMP/files/c"
  expect_code 200 "multipart upload blobs/c via node 2 (node 3 down)" multipart_via 2 blobs/c "$TMP/files/c"
  get_via 1 blobs/c "$TMP/files/c"
}

step_two_nodes_down() {
  garage_node_kill 2
  echo "node 2 killed too: only node 1 up"
  local code
  code="$(GARAGE_S3_TIMEOUT=60 garage_s3 GET blobs/a -o /dev/null -w '%{http_code}')" || true
  echo "GET blobs/a via node 1 with 2 of 3 nodes down: HTTP $code"
  [[ "$code" == 5* ]] || { echo "expected a 5xx (no read quorum)"; return 1; }
  code="$(GARAGE_S3_TIMEOUT=60 put_via 1 blobs/d "$TMP/files/a")" || true
  echo "PUT blobs/d via node 1 with 2 of 3 nodes down: HTTP $code"
  [[ "$code" == 5* ]] || { echo "expected a 5xx (no write quorum)"; return 1; }
  garage_node_start 2
  echo "node 2 restarted"
  get_via 1 blobs/a "$TMP/files/a"
}

step_restart_catch_up() {
  garage_node_start 3
  echo "node 3 restarted"
  get_via 3 blobs/b "$TMP/files/b"
  get_via 3 blobs/c "$TMP/files/c"
}

step_s3_semantics() {
  printf '0123456789abcdefghij' >"$TMP/files/r"
  expect_code 200 "PUT sem/r" put_via 1 sem/r "$TMP/files/r"
  local code body
  code="$(garage_s3 GET sem/r -H 'Range: bytes=5-9' -o "$TMP/files/range" -w '%{http_code}')"
  body="$(cat "$TMP/files/range")"
  echo "GET sem/r Range: bytes=5-9: HTTP $code, body '$body'"
  [[ "$code" == 206 && "$body" == 56789 ]]

  printf 'multipart-body' >"$TMP/files/mp"
  expect_code 200 "CompleteMultipartUpload sem/mp" multipart_via 1 sem/mp "$TMP/files/mp"
  echo "GET sem/mp between UploadPart and Complete: HTTP $(cat "$TMP/files/mp-before")"
  [[ "$(cat "$TMP/files/mp-before")" == 404 ]]
  get_via 2 sem/mp "$TMP/files/mp"

  code="$(curl -sS -o "$TMP/files/presigned" -w '%{http_code}' "$(garage_s3_presign GET sem/r 60 2)")"
  echo "presigned GET sem/r via node 2: HTTP $code"
  [[ "$code" == 200 ]] && cmp -s "$TMP/files/r" "$TMP/files/presigned"

  printf 'second' >"$TMP/files/r2"
  code="$(garage_s3 PUT sem/r -T "$TMP/files/r2" -H 'If-None-Match: *' -o /dev/null -w '%{http_code}')"
  body="$(garage_s3 GET sem/r)"
  echo "PUT sem/r (exists) with If-None-Match: * -> HTTP $code; content now '$body'"
  if [[ "$code" == 412 ]]; then
    echo "  conditional create honoured"
    [[ "$body" == 0123456789abcdefghij ]]
  else
    echo "  NOT honoured: the existing object was overwritten (Garage 2.5.0 ignores If-None-Match on PUT)"
  fi
}

step_stop() {
  local pids p
  pids="$(for n in 1 2 3; do cat "$PIDDIR/garage$n.pid"; done)"
  garage_cluster_stop
  for p in $pids; do
    if kill -0 "$p" 2>/dev/null; then echo "garage pid $p still running"; return 1; fi
  done
  echo "all garage processes gone ($(echo $pids))"
}

# ---------------------------------------------------------------------------------------------------------
t0=$(date +%s%N)
if garage_cluster_start "$TMP/garage" >"$TMP/steps/start.log" 2>&1; then
  PASSED=$((PASSED + 1))
  log "PASS cluster start ($(( ($(date +%s%N) - t0) / 1000000 )) ms; S3 endpoints: $GARAGE_S3_ENDPOINTS)"
else
  FAILED=$((FAILED + 1))
  FAILED_NAMES+=("cluster start")
  log "FAIL cluster start"
  sed 's/^/    /' "$TMP/steps/start.log"
  finish || exit 1
fi
run_step "PUT via node 1, GET via nodes 1, 2, 3" step_put_get_all
run_step "node 3 killed: reads and writes through nodes 1 and 2" step_one_node_down
run_step "nodes 2 and 3 down: no quorum; node 2 restarted" step_two_nodes_down
run_step "node 3 restarted: serves what was written while it was down" step_restart_catch_up
run_step "S3 semantics: range, multipart visibility, presigned GET, If-None-Match" step_s3_semantics
run_step "cluster stop" step_stop
finish
