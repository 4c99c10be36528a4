#!/usr/bin/env bash
# End-to-end suite for scale-out mode: ociregistry replicas sharing one bucket on a REAL 3-node Garage cluster
# (replication factor 3, consistent mode) on loopback, with Debian's docker-registry as the upstream and real
# skopeo and containerd as clients.
#
#   1. Replica A pulls an image through (skopeo): every blob, every manifest by digest and the tag land in the
#      bucket (a 20 MiB layer as a multipart upload), checked with signed S3 requests.
#   2. The upstream is stopped; replica B (empty data dir) serves the image to a real containerd by tag: the tag
#      is resolved from the bucket and every byte comes from it.
#   3. Garage node 3 is killed with SIGKILL in the middle of a pull through replica C (empty): the pull succeeds
#      (2 of 3 replicas answer). Node 3 comes back.
#   4. A blob the upstream serves corrupted is never published to the bucket (and not cached).
#   5. Cold pull storm: 8 clients through two fresh replicas at once: upstream GETs of the largest layer are
#      counted (at most one per replica) and printed.
#   6. Bucket sweep over the replicas' published reference sets: a blob only replica D still references
#      survives `prune --bucket`; blobs and manifests no replica references any more are deleted; the set of
#      stopped replica E, older than the grace, is deleted; a grace shorter than twice s3.refs_interval is
#      refused.
#   7. A replica without a local tier (s3.local_tier: false) serves whole blobs and Ranges from the bucket and
#      keeps no blob file of its own after publishing a cold fill.
#   8. The bucket is unreachable (all Garage nodes stopped): replica A still serves what its local tier holds;
#      a miss fails with a clear 5xx at once.
#
# Everything listens on 127.0.0.1; state lives in one `mktemp -d` dir removed on exit; every process started here
# is stopped by the EXIT trap.
#
# Env: OCIREGISTRY_BIN (default target/debug/ociregistry), SCALEOUT_KEEP=1, SCALEOUT_VERBOSE=1, GARAGE_BIN.
# Output: `PASS name` / `FAIL name` per step, then `scaleout: N passed, M failed`. Exit status 0 iff none failed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO_ROOT/tests/lib/harness.sh"
source "$REPO_ROOT/tests/lib/garage.sh"
source "$REPO_ROOT/tests/e2e/lib-images.sh"
HARNESS_NAME=scaleout
HARNESS_KEEP="${SCALEOUT_KEEP:-0}"
HARNESS_VERBOSE="${SCALEOUT_VERBOSE:-0}"
HARNESS_FAIL_TAIL=60
OCIREGISTRY_BIN="${OCIREGISTRY_BIN:-$REPO_ROOT/target/debug/ociregistry}"
CMD_TIMEOUT=90
SNAPSHOTTER="${E2E_SNAPSHOTTER:-native}"
TAG="v1"

log() { printf '%s\n' "$*"; }
die() { printf 'scaleout: error: %s\n' "$*" >&2; exit 2; }

for c in docker-registry skopeo containerd ctr jq curl python3; do
  command -v "$c" >/dev/null 2>&1 || die "missing tool: $c (run scripts/install-test-deps as root)"
done
GARAGE_BIN="$(_garage_bin)" || die "garage not found (scripts/install-test-deps installs it)"
[[ "$(id -u)" -eq 0 ]] || die "must run as root: the suite starts a real containerd"
[[ -x "$OCIREGISTRY_BIN" ]] || die "ociregistry binary not found: $OCIREGISTRY_BIN"
OCIREGISTRY_BIN="$(cd "$(dirname "$OCIREGISTRY_BIN")" && pwd)/$(basename "$OCIREGISTRY_BIN")"

TMP="$(mktemp -d /tmp/ociregistry-so.XXXXXX)"
PIDDIR="$TMP/pids"
mkdir -p "$PIDDIR" "$TMP/steps" "$TMP/ok" "$TMP/expect" "$TMP/logs"
harness_cleanup_hook() { unmount_below_tmp; }
harness_traps harness_cleanup

finish() {
  if [[ $FAILED -gt 0 ]]; then
    log "failed steps: ${FAILED_NAMES[*]}"
    dump_log_tails 20 300
  fi
  log "scaleout: $PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}

pick_port P_UP
pick_port P_DEAD
pick_port P_METRICS_A
pick_port P_METRICS_B
for r in a b c d e f; do pick_port "P_$r"; done
UP="127.0.0.1:$P_UP"
declare -A ADDR=([a]="127.0.0.1:$P_a" [b]="127.0.0.1:$P_b" [c]="127.0.0.1:$P_c" [d]="127.0.0.1:$P_d" [e]="127.0.0.1:$P_e" [f]="127.0.0.1:$P_f")

sk() { timeout "$CMD_TIMEOUT" skopeo "$@"; }
cu() { curl -sS --max-time 20 "$@"; }
ctr_() { local name=$1; shift; timeout "$CMD_TIMEOUT" ctr --address "$TMP/$name/ctd.sock" "$@"; }
count() { grep -acE "$1" || true; }
largest_blob() { # VARIANT ARCH: digest of the largest blob of that platform
  local d best="" max=-1 s
  while read -r d; do
    s="$(stat -c %s "$TMP/layout-$1/blobs/sha256/${d#sha256:}")"
    if ((s > max)); then max=$s; best=$d; fi
  done <"$TMP/expect/$1/$2.blobs"
  echo "$best"
}
# s3_status KEY: HTTP status of a HEAD of KEY in the bucket (through a live node)
s3_status() { GARAGE_S3_NODE="${GARAGE_S3_NODE:-1}" garage_s3 HEAD "$1" -o /dev/null -w '%{http_code}' || true; }

# start_replica NAME [S3_YAML] [TOP_YAML]: an ociregistry replica on the shared bucket, data dir $TMP/data-NAME;
# S3_YAML lines go into its s3: block, TOP_YAML lines at the top level
start_replica() {
  local name=$1 extra=${2:-} top=${3:-}
  cat >"$TMP/$name.yaml" <<EOF
log_level: info
$top
default_registry: "$UP"
upstream_timeout: 10s
registries:
  - name: "$UP"
    scheme: http
    aliases: [up]
s3:
  endpoint: "$GARAGE_S3_ENDPOINT"
  bucket: "$GARAGE_BUCKET"
  prefix: "site1"
  region: "$GARAGE_REGION"
  access_key_id_file: "$GARAGE_DIR/key-id"
  secret_access_key_file: "$GARAGE_DIR/secret"
  replica_id: "$name"
  timeout: 10s
  refs_interval: 2s
$extra
EOF
  start_bg "oci-$name" "$TMP/logs/oci-$name.log" "$OCIREGISTRY_BIN" serve \
    --listen "${ADDR[$name]}" --data-dir "$TMP/data-$name" --config-file "$TMP/$name.yaml"
  wait_http "http://${ADDR[$name]}/v2/" 30 "oci-$name"
}

# wait_for_object KEY [SECONDS]: until the bucket has KEY (publishing runs after the fill)
wait_for_object() {
  local i
  for i in $(seq 1 $((${2:-15} * 10))); do
    [[ "$(s3_status "$1")" == 200 ]] && return 0
    sleep 0.1
  done
  echo "bucket object $1 did not appear" >&2
  return 1
}

ctd_pull() { # CTD VARIANT REF
  local ctd=$1 variant=$2 ref=$3 target
  ctr_ "$ctd" images pull --hosts-dir "$TMP/hosts" --plain-http --platform linux/amd64 --snapshotter "$SNAPSHOTTER" "$ref"
  target="$(ctr_ "$ctd" images ls | awk -v r="$ref" '$1 == r { print $3 }')"
  expect_eq "$target" "$(cat "$TMP/expect/$variant/index.digest")" "containerd image target of $ref"
  local check
  check="$(ctr_ "$ctd" images check --snapshotter "$SNAPSHOTTER" "name==$ref")"
  [[ "$check" == *complete* ]] || { echo "image $ref not complete: $check" >&2; return 1; }
}

# mirror_to NAME: containerd's hosts.toml sends $UP to replica NAME only (fallback: a dead port)
mirror_to() {
  mkdir -p "$TMP/hosts/$UP"
  cat >"$TMP/hosts/$UP/hosts.toml" <<EOF
server = "http://127.0.0.1:$P_DEAD"

[host."http://${ADDR[$1]}"]
  capabilities = ["pull", "resolve"]
EOF
}

# ---------------------------------------------------------------------------------------------------------
step_setup() {
  build_image "$TMP/layout-one" one 2048
  build_image "$TMP/layout-big" big 20480
  build_image "$TMP/layout-bad" bad 256
  build_image "$TMP/layout-storm" storm 8192
  build_image "$TMP/layout-gc" gc 128
  build_image "$TMP/layout-nl" nl 1024
  start_docker_registry "$UP" "$TMP/logs/upstream.log" info
  local v
  for v in one big bad storm gc nl; do
    sk copy --all --preserve-digests --dest-tls-verify=false "oci:$TMP/layout-$v:$TAG" "docker://$UP/$v/app:$TAG"
  done
  start_replica a "" "metrics: 127.0.0.1:$P_METRICS_A"
  start_replica b "" "metrics: 127.0.0.1:$P_METRICS_B"
  start_replica c
  start_containerd ctd1
  start_containerd ctd2
}

step_publish() {
  sk copy --all --preserve-digests --src-tls-verify=false "docker://${ADDR[a]}/up/one/app:$TAG" "oci:$TMP/pull-one:$TAG"
  compare_layout "$TMP/layout-one" "$TMP/pull-one" one
  sk copy --all --preserve-digests --src-tls-verify=false "docker://${ADDR[a]}/up/big/app:$TAG" "oci:$TMP/pull-big:$TAG"
  compare_layout "$TMP/layout-big" "$TMP/pull-big" big
  local v d n=0 m=0
  for v in one big; do
    while read -r d; do
      if [[ -n "$(jq -r 'select(.mediaType != null) | .mediaType' "$TMP/layout-$v/blobs/sha256/${d#sha256:}" 2>/dev/null | grep -E 'manifest|index' || true)" ]]; then
        wait_for_object "site1/manifests/sha256/${d#sha256:}"
        m=$((m + 1))
      else
        wait_for_object "site1/blobs/sha256/${d#sha256:}"
        n=$((n + 1))
      fi
    done <"$TMP/expect/$v/blobs.list"
  done
  echo "bucket holds all $n blobs and $m manifests of one and big"
  wait_for_object "site1/tags/$UP/one/app/_tags/$TAG"
  local body
  body="$(GARAGE_S3_NODE=2 garage_s3 GET "site1/tags/$UP/one/app/_tags/$TAG")"
  expect_eq "$body" "$(cat "$TMP/expect/one/index.digest")" "tag record in the bucket"
  # the 20 MiB layer went up as a multipart upload (Garage reports its ETag as md5-of-parts "…-N")
  local big etag
  big="$(largest_blob big amd64)"
  etag="$(GARAGE_S3_NODE=3 garage_s3 HEAD "site1/blobs/sha256/${big#sha256:}" -D - -o /dev/null | header_value /dev/stdin etag)"
  echo "ETag of the 20 MiB layer: $etag"
  [[ "$etag" == *-2\"* || "$etag" == *-2 ]] || { echo "expected a 2-part multipart upload" >&2; return 1; }
  grep -q "blob published to the shared bucket" "$TMP/logs/oci-a.log"
  # the scrape counts what was published: 12 distinct blobs, 6 manifests, 2 tags
  sleep 1
  local scrape
  scrape="$(cu "http://127.0.0.1:$P_METRICS_A/metrics")"
  expect_eq "$(bucket_metric "$scrape" blob_put ok)" 12 "bucket_requests_total{blob_put,ok} on replica A"
  expect_eq "$(bucket_metric "$scrape" manifest_put ok)" 6 "bucket_requests_total{manifest_put,ok} on replica A"
  expect_eq "$(bucket_metric "$scrape" tag_put ok)" 2 "bucket_requests_total{tag_put,ok} on replica A"
}

# bucket_metric SCRAPE OPERATION RESULT: the value of ociregistry_bucket_requests_total for that pair (0 if absent)
bucket_metric() {
  awk -v op="$2" -v res="$3" '
    $1 ~ /^ociregistry_bucket_requests_total\{/ && index($1, "operation=\"" op "\"") && index($1, "result=\"" res "\"") { v = $2 }
    END { print (v == "" ? 0 : v) }' <<<"$1"
}

step_replica_b_without_upstream() {
  stop_bg upstream
  mirror_to b
  ctd_pull ctd1 one "$UP/one/app:$TAG"
  grep -q "tag resolved from the shared bucket" "$TMP/logs/oci-b.log" ||
    { echo "replica B did not resolve the tag from the bucket" >&2; return 1; }
  local scrape hits
  scrape="$(cu "http://127.0.0.1:$P_METRICS_B/metrics")"
  hits="$(bucket_metric "$scrape" blob_get hit)"
  echo "replica B: $hits blob GETs answered by the bucket, $(bucket_metric "$scrape" tag_get hit) tag record(s) read"
  grep '^ociregistry_bucket_requests_total' <<<"$scrape"
  [[ $hits -ge 3 ]] || { echo "replica B read fewer than 3 blobs (config + 2 layers) from the bucket" >&2; return 1; }
  expect_eq "$(bucket_metric "$scrape" tag_get hit)" 1 "bucket_requests_total{tag_get,hit} on replica B"
  echo "containerd pulled one through replica B with the upstream stopped"
}

step_garage_node_killed_mid_pull() {
  mirror_to c
  # the 20 MiB image through replica C (empty): kill node 3 right after the pull started
  ( ctd_pull ctd2 big "$UP/big/app:$TAG" ) >"$TMP/kill-pull.log" 2>&1 &
  local pid=$! big
  big="$(largest_blob big amd64)"
  sleep 0.3
  garage_node_kill 3
  # the kill must land before replica C had the 20 MiB layer whole, or this step would prove nothing
  if grep -q "blob cached digest=$big" "$TMP/logs/oci-c.log"; then
    echo "the 20 MiB layer was already cached when node 3 was killed: not a mid-pull kill" >&2
    wait "$pid" || true
    return 1
  fi
  if ! wait "$pid"; then
    cat "$TMP/kill-pull.log" >&2
    return 1
  fi
  cat "$TMP/kill-pull.log"
  echo "pull through replica C succeeded with Garage node 3 killed mid-pull"
  garage_node_start 3
}

step_corrupt_upstream_not_published() {
  start_docker_registry "$UP" "$TMP/logs/upstream.log" info
  local d f
  d="$(largest_blob bad amd64)"
  f="$(find "$TMP/upstream/data" -path "*/blobs/sha256/*/${d#sha256:}/data")"
  [[ -f "$f" ]] || { echo "upstream file of $d not found" >&2; return 1; }
  # same length, different bytes
  head -c "$(stat -c %s "$f")" /dev/urandom >"$f"
  local code
  code="$(cu -o /dev/null -w '%{http_code}' "http://${ADDR[a]}/v2/up/bad/app/blobs/$d" || true)"
  echo "GET of the corrupted blob through replica A: HTTP $code (body cut short or refused)"
  sleep 2
  expect_eq "$(s3_status "site1/blobs/sha256/${d#sha256:}")" 404 "bucket status of the corrupted blob"
  [[ ! -e "$TMP/data-a/blobs/sha256/${d:7:2}/${d#sha256:}" ]] || { echo "corrupted blob cached locally" >&2; return 1; }
  grep -q "blob fill failed" "$TMP/logs/oci-a.log"
}

step_pull_storm() {
  start_replica d
  start_replica e
  local big pids=() i r
  big="$(largest_blob storm amd64)"
  local before
  before="$(count "\"GET /v2/storm/app/blobs/$big " <"$TMP/logs/upstream.log")"
  for i in $(seq 1 8); do
    if ((i % 2)); then r=d; else r=e; fi
    cu -o "$TMP/storm-$i" "http://${ADDR[$r]}/v2/up/storm/app/blobs/$big" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i"; done
  for i in $(seq 1 8); do
    expect_eq "sha256:$(sha256_of "$TMP/storm-$i")" "$big" "storm client $i body"
  done
  local gets
  gets=$(($(count "\"GET /v2/storm/app/blobs/$big " <"$TMP/logs/upstream.log") - before))
  echo "pull storm: 8 clients on 2 replicas -> $gets upstream GET(s) of the 8 MiB layer (1 per replica at most)"
  [[ $gets -ge 1 && $gets -le 2 ]]
}

step_no_local_tier() {
  # replica F keeps no blob on its own disk: everything is streamed from the bucket
  start_replica f "  local_tier: false"   # (the last lines of the s3: block)
  # in the bucket already (pulled through A): served from it, whole and byte-exact
  sk copy --all --preserve-digests --src-tls-verify=false "docker://${ADDR[f]}/up/big/app:$TAG" "oci:$TMP/pull-big-f:$TAG"
  compare_layout "$TMP/layout-big" "$TMP/pull-big-f" big
  # a Range is a ranged GET on the bucket
  local big want got code
  big="$(largest_blob big amd64)"
  code="$(cu -o "$TMP/range.out" -w '%{http_code}' -H 'Range: bytes=1000000-1999999' "http://${ADDR[f]}/v2/up/big/app/blobs/$big")"
  expect_eq "$code" 206 "status of a ranged GET through replica F"
  want="$(dd if="$TMP/layout-big/blobs/sha256/${big#sha256:}" bs=1000000 skip=1 count=1 status=none | sha256sum | cut -d' ' -f1)"
  got="$(sha256_of "$TMP/range.out")"
  expect_eq "$got" "$want" "bytes 1000000-1999999 of the 20 MiB layer"
  # a cold image: fetched from the upstream, published, and then not kept on F's disk
  sk copy --all --preserve-digests --src-tls-verify=false "docker://${ADDR[f]}/up/nl/app:$TAG" "oci:$TMP/pull-nl:$TAG"
  compare_layout "$TMP/layout-nl" "$TMP/pull-nl" nl
  local nlblob
  nlblob="$(largest_blob nl amd64)"
  wait_for_object "site1/blobs/sha256/${nlblob#sha256:}"
  sleep 1
  local files
  files="$(find "$TMP/data-f/blobs/sha256" -type f 2>/dev/null | wc -l)"
  echo "blob files on replica F's disk: $files"
  expect_eq "$files" 0 "blob files kept by a replica without a local tier"
  # and a second pull of it is served from the bucket
  sk copy --all --preserve-digests --src-tls-verify=false "docker://${ADDR[f]}/up/nl/app:$TAG" "oci:$TMP/pull-nl2:$TAG"
  compare_layout "$TMP/layout-nl" "$TMP/pull-nl2" nl
}

step_sweep() {
  # replica A pulls gc, then forgets it (a local prune): no replica references gc's blobs any more. storm's layer
  # is referenced by replicas D and E only, one's by A, B and C.
  sk copy --all --preserve-digests --src-tls-verify=false "docker://${ADDR[a]}/up/gc/app:$TAG" "oci:$TMP/pull-gc:$TAG"
  local gcblob stormblob oneblob
  gcblob="$(largest_blob gc amd64)"
  stormblob="$(largest_blob storm amd64)"
  oneblob="$(largest_blob one amd64)"
  wait_for_object "site1/blobs/sha256/${gcblob#sha256:}"
  timeout 60 "$OCIREGISTRY_BIN" prune --data-dir "$TMP/data-a" --pattern "$UP/gc/app:*" | tee "$TMP/prune-gc.out"
  grep -q "removed 1 images" "$TMP/prune-gc.out"
  # every replica publishes its reference set every 2 s (s3.refs_interval); the grace must be at least twice that.
  # Replica E goes away: its set grows older than the grace and no longer counts (storm's layer stays: D has it)
  stop_bg oci-e >/dev/null
  sleep 5
  if timeout 60 "$OCIREGISTRY_BIN" prune --data-dir "$TMP/data-a" --bucket --bucket-grace 1s >"$TMP/sweep-short.out" 2>&1; then
    echo "a grace shorter than twice refs_interval was accepted" >&2
    return 1
  fi
  grep -q "at least twice" "$TMP/sweep-short.out"
  timeout 60 "$OCIREGISTRY_BIN" prune --data-dir "$TMP/data-a" --bucket --bucket-grace 4s --dry-run | tee "$TMP/sweep-dry.out"
  expect_eq "$(s3_status "site1/blobs/sha256/${gcblob#sha256:}")" 200 "bucket status of the gc layer after a dry run"
  timeout 60 "$OCIREGISTRY_BIN" prune --data-dir "$TMP/data-a" --bucket --bucket-grace 4s | tee "$TMP/sweep.out"
  grep -qE "bucket: 5 replica reference sets \(a, b, c, d, f\), 1 stale ones of gone replicas \(e\)" "$TMP/sweep.out"
  expect_eq "$(s3_status "site1/replicas/e.refs")" 404 "the stale reference set of replica E after the sweep"
  expect_eq "$(s3_status "site1/replicas/d.refs")" 200 "the reference set of replica D after the sweep"
  expect_eq "$(s3_status "site1/blobs/sha256/${gcblob#sha256:}")" 404 "bucket status of the unreferenced gc layer"
  expect_eq "$(s3_status "site1/manifests/sha256/$(cut -d: -f2 "$TMP/expect/gc/index.digest")")" 404 "bucket status of gc's index"
  expect_eq "$(s3_status "site1/blobs/sha256/${stormblob#sha256:}")" 200 "bucket status of storm's layer (replicas D and E reference it)"
  expect_eq "$(s3_status "site1/blobs/sha256/${oneblob#sha256:}")" 200 "bucket status of one's layer (A, B and C reference it)"
}

step_bucket_down() {
  garage_cluster_stop
  local t0 t1 code
  # cached on replica A's local tier: still served
  sk copy --all --preserve-digests --src-tls-verify=false "docker://${ADDR[a]}/up/one/app:$TAG" "oci:$TMP/pull-one-again:$TAG"
  compare_layout "$TMP/layout-one" "$TMP/pull-one-again" one
  # a miss (replica B never had storm's layer, upstream up): goes to the upstream after the bucket fails
  t0=$(date +%s)
  code="$(cu -o /dev/null -w '%{http_code}' "http://${ADDR[b]}/v2/up/storm/app/blobs/$(largest_blob storm arm64)" || true)"
  t1=$(date +%s)
  echo "replica B miss with the bucket down: HTTP $code in $((t1 - t0)) s"
  expect_eq "$code" 200 "a miss with the bucket down is fetched from the upstream"
  stop_bg upstream
  code="$(cu -o /dev/null -w '%{http_code}' "http://${ADDR[b]}/v2/up/gc/app/manifests/$TAG" || true)"
  echo "replica B miss with bucket and upstream down: HTTP $code"
  [[ "$code" == 5* ]]
}

PASSED=0
FAILED=0
FAILED_NAMES=()
log "scaleout: temp dir $TMP; upstream $UP; replicas ${ADDR[*]}"
garage_cluster_start "$TMP/garage" || die "the Garage cluster did not start"
log "scaleout: Garage at $GARAGE_S3_ENDPOINTS"
critical_step setup step_setup
run_step publish step_publish
run_step replica_b_without_upstream step_replica_b_without_upstream
run_step garage_node_killed_mid_pull step_garage_node_killed_mid_pull
run_step corrupt_upstream_not_published step_corrupt_upstream_not_published
run_step pull_storm step_pull_storm
run_step no_local_tier step_no_local_tier
run_step sweep step_sweep
run_step bucket_down step_bucket_down
finish || exit 1
