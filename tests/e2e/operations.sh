#!/usr/bin/env bash
# End-to-end suite for ociregistry's operations interface (docs: the admin socket / admin HTTP API and the CLI
# commands list, prune, load, pin, unpin, invalidate, stats), with real clients:
#   - Debian's docker-registry (Distribution 2.8) as the upstream registry (its access log tells what the cache
#     fetched),
#   - skopeo (push to the upstream; pull through ociregistry into oci: layouts, compared byte for byte),
#   - containerd + ctr (hosts.toml mirror, `?ns=` routing),
#   - curl (admin HTTP API over the Unix socket and over TCP with a bearer token; raw registry requests),
#   - the `ociregistry` CLI itself, against a running server ("admin mode": it talks to <data>/admin.sock) and
#     with the server stopped ("direct mode": it opens <data>/index.redb itself).
# Everything listens on 127.0.0.1 only; all state lives in one `mktemp -d` dir that is removed on exit, and every
# process started here is stopped by the EXIT trap (also on failure or Ctrl-C).
#
# Env:
#   OCIREGISTRY_BIN   binary under test (default: <repo>/target/debug/ociregistry)
#   OPS_KEEP=1        keep the temp dir (logs, layouts, data dirs) for debugging
#   OPS_VERBOSE=1     print every step's output, not only the output of failed steps
#   OPS_CMD_TIMEOUT   per-client-command timeout in seconds (default 60)
#   E2E_SNAPSHOTTER   containerd snapshotter used for unpacking (default: native)
#   OPS_INFRA_ONLY=1  only check the test infrastructure: upstream, images, pushes, skopeo and containerd pulls
#                     through a plain `ociregistry serve`, the 20 concurrent clients (no operations commands used)
#
# Output: one `PASS name` / `FAIL name` line per step (`SKIP name` for a feature the binary does not have), then
# exactly one line `operations: N passed, M failed`. Exit status: 0 iff no step failed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO_ROOT/tests/lib/harness.sh"
# MT_* media types, ACCEPT_MANIFESTS, expect_eq, sha256_of, header_value, put_blob, build_image, compare_layout
source "$REPO_ROOT/tests/e2e/lib-images.sh"
HARNESS_NAME=operations
HARNESS_KEEP="${OPS_KEEP:-0}"
HARNESS_VERBOSE="${OPS_VERBOSE:-0}"
HARNESS_FAIL_TAIL=60
OCIREGISTRY_BIN="${OCIREGISTRY_BIN:-$REPO_ROOT/target/debug/ociregistry}"
CMD_TIMEOUT="${OPS_CMD_TIMEOUT:-60}"
SNAPSHOTTER="${E2E_SNAPSHOTTER:-native}"
INFRA_ONLY="${OPS_INFRA_ONLY:-0}"
TAG="v1"
KIB=192          # random-data layer per platform of the multi-platform images (a few hundred KiB each)
CAP_KIB=1024     # random-data layer of the max_cache_bytes images (about 1 MiB each)
CAP_BYTES=$((3584 * 1024))   # max_cache_bytes of the capped instance: room for 3 of those images

log() { printf '%s\n' "$*"; }
die() { printf 'operations: error: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------------------
# Preconditions
# ---------------------------------------------------------------------------------------------------------
missing=()
for tool in docker-registry skopeo containerd ctr jq curl python3 tar gzip sha256sum timeout cmp find; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  die "missing tools: ${missing[*]} (run scripts/install-test-deps as root; Debian packages: docker-registry skopeo containerd jq curl python3)"
fi
[[ "$(id -u)" -eq 0 ]] || die "must run as root: the suite starts a real containerd"
[[ -x "$OCIREGISTRY_BIN" ]] || die "ociregistry binary not found or not executable: $OCIREGISTRY_BIN (cargo build first, or set OCIREGISTRY_BIN)"
OCIREGISTRY_BIN="$(cd "$(dirname "$OCIREGISTRY_BIN")" && pwd)/$(basename "$OCIREGISTRY_BIN")"
FIXTURE_REDB2="$REPO_ROOT/tests/fixtures/index-redb2.redb.gz"
[[ -f "$FIXTURE_REDB2" ]] || die "missing fixture $FIXTURE_REDB2"

# Short base dir: containerd's and ociregistry's unix socket paths must stay below 108 bytes.
TMP="$(mktemp -d /tmp/ociregistry-ops.XXXXXX)"
PIDDIR="$TMP/pids"
mkdir -p "$PIDDIR" "$TMP/steps" "$TMP/ok" "$TMP/expect" "$TMP/logs" "$TMP/marks" "$TMP/out"

harness_cleanup_hook() { unmount_below_tmp; }
harness_traps harness_cleanup

finish() {
  if [[ $FAILED -gt 0 ]]; then
    log "failed steps: ${FAILED_NAMES[*]}"
    dump_log_tails 30 400
  fi
  log "operations: $PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}

pick_port UPPORT
pick_port OCIPORT
pick_port CAPPORT
pick_port ADMINPORT
pick_port OLDPORT
pick_port DEADPORT   # nothing ever listens here (containerd's fallback `server`)
UP="127.0.0.1:$UPPORT"
OCI="127.0.0.1:$OCIPORT"
OCI_CAP="127.0.0.1:$CAPPORT"
ADMIN_TCP="127.0.0.1:$ADMINPORT"
DATA="$TMP/data"
DATA_CAP="$TMP/data-cap"
UPLOG="$TMP/logs/docker-registry.log"
echo "operations: temp dir $TMP; upstream $UP; ociregistry $OCI (data $DATA), capped $OCI_CAP; binary $OCIREGISTRY_BIN"

# ---------------------------------------------------------------------------------------------------------
# Helpers used inside steps
# ---------------------------------------------------------------------------------------------------------
sk() { timeout "$CMD_TIMEOUT" skopeo "$@"; }

# ops DATA_DIR CONFIG CMD ARGS...: the CLI as an operator runs it; stdout and stderr as the command writes them
ops_in() {
  local data=$1 conf=$2 cmd=$3
  shift 3
  timeout "$CMD_TIMEOUT" "$OCIREGISTRY_BIN" "$cmd" --config-file "$conf" --data-dir "$data" "$@"
}
ops() { ops_in "$DATA" "$TMP/config.yaml" "$@"; }
ops_cap() { ops_in "$DATA_CAP" "$TMP/cap.yaml" "$@"; }

# run_ops NAME CMD ARGS...: runs `ops CMD ARGS`, stdout to $TMP/out/NAME.out, stderr to $TMP/out/NAME.err, the
# exit status to $TMP/out/NAME.rc; prints all three. Never fails by itself. run_ops_cap: the same on the capped
# instance.
run_ops_with() { # OPS_FUNC LABEL NAME CMD ARGS...
  local ops_func=$1 label=$2 name=$3 rc=0
  shift 3
  "$ops_func" "$@" >"$TMP/out/$name.out" 2>"$TMP/out/$name.err" || rc=$?
  echo "$rc" >"$TMP/out/$name.rc"
  echo "\$ ociregistry $*$label -> exit $rc"
  echo "--- stdout:"; head -c 6000 "$TMP/out/$name.out"; echo
  echo "--- stderr:"; head -c 4000 "$TMP/out/$name.err"; echo
}
run_ops() { run_ops_with ops "" "$@"; }
run_ops_cap() { run_ops_with ops_cap " (capped instance)" "$@"; }
rc_of() { cat "$TMP/out/$1.rc"; }

# expect_mode NAME admin|direct: the first stderr line names the mode (spec: "using the server at ...admin.sock"
# / "no server is running; using .../index.redb directly")
expect_mode() {
  local first
  first="$(head -n 1 "$TMP/out/$1.err")"
  case $2 in
    admin)
      [[ "$first" =~ ^ociregistry:\ using\ the\ server\ at\ .*admin\.sock ]] \
        || { echo "first stderr line of '$1' is not the admin-mode line: '$first'" >&2; return 1; } ;;
    direct)
      [[ "$first" =~ ^ociregistry:\ no\ server\ is\ running\;\ using\ .*index\.redb\ directly ]] \
        || { echo "first stderr line of '$1' is not the direct-mode line: '$first'" >&2; return 1; } ;;
  esac
}

# images_json FILE: the image array of a `list --output json` document (spec: {"images":[...],"total":{...}})
images_json() { jq -c 'if type == "array" then . else .images end' "$1"; }
# refs_of FILE: the sorted references of a `list`/`prune` JSON document, one per line
refs_of() { jq -r '(if type == "array" then . else .images end) | .[].reference' "$1" | sort; }

# Log marks: `mark NAME FILE` remembers how many lines FILE has; `since NAME FILE` prints the lines added after.
mark() { local n=0; [[ -e "$2" ]] && n="$(wc -l <"$2")"; echo "$n" >"$TMP/marks/$1"; }
since() { local n; n="$(cat "$TMP/marks/$1")"; [[ -e "$2" ]] && tail -n "+$((n + 1))" "$2"; return 0; }
count() { grep -acE "$1" || true; }   # count lines on stdin matching the ERE

# docker-registry writes its access-log line after the response; give late lines a moment
settle_uplog() { sleep 0.5; }

# is_manifest VARIANT DIGEST: DIGEST is the variant's index or one of its platform manifests (not a blob)
is_manifest() { grep -qxF "$2" "$TMP/expect/$1/index.digest" "$TMP/expect/$1/"*.manifest; }

blob_file() { local h="${1#sha256:}"; echo "$2/blobs/sha256/${h:0:2}/$h"; }
blob_count() { find "$1/blobs/sha256" -type f 2>/dev/null | wc -l; }
# blob_bytes DATA: sum of the blob files' sizes (du -sb would add the 4 KiB of every xx/ directory)
blob_bytes() { find "$1/blobs/sha256" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }

# largest_blob VARIANT ARCH: digest of the biggest blob of that platform (the random-data layer)
largest_blob() {
  local d="" x
  while read -r x; do
    if [[ -z "$d" || $(stat -c %s "$TMP/layout-$1/blobs/sha256/${x#sha256:}") -gt $(stat -c %s "$TMP/layout-$1/blobs/sha256/${d#sha256:}") ]]; then d="$x"; fi
  done <"$TMP/expect/$1/$2.blobs"
  echo "$d"
}

# ref VARIANT: the upstream reference of a test image (repository by variant family)
ref() {
  case $1 in
    s*) echo "$UP/shared/$1:$TAG" ;;
    p*) echo "$UP/prune/$1:$TAG" ;;
    m*) echo "$UP/cap/$1:$TAG" ;;
    r*) echo "$UP/recent/$1:$TAG" ;;
    *) echo "$UP/ops/$1:$TAG" ;;
  esac
}
repo_of() { local r; r="$(ref "$1")"; r="${r#"$UP"/}"; echo "${r%:*}"; }

# pull_skopeo OCI_ADDR VARIANT OUTNAME: skopeo copies the image (all platforms) through ociregistry into an oci:
# layout and checks it against what was pushed
pull_skopeo() {
  local addr=$1 v=$2 out="$TMP/pulls/$3"
  rm -rf "$out"
  mkdir -p "$TMP/pulls"
  sk copy --all --preserve-digests --src-tls-verify=false "docker://$addr/$(repo_of "$v"):$TAG" "oci:$out:$TAG"
  compare_layout "$TMP/layout-$v" "$out" "$v"
}

# manifest_status ADDR VARIANT -> HTTP status of GET manifest by tag through ociregistry
manifest_status() {
  curl -sS --max-time 20 -H "Accept: $ACCEPT_MANIFESTS" -o /dev/null -w '%{http_code}' \
    "http://$1/v2/$(repo_of "$2")/manifests/$TAG" || true
}

# admin_api PATH [CURL_ARGS...]: the admin HTTP API over the main instance's Unix socket; prints "STATUS" and
# leaves the body in $TMP/api.body
admin_api() {
  local path=$1
  shift
  curl -sS --max-time 20 --unix-socket "$DATA/admin.sock" -o "$TMP/api.body" -w '%{http_code}' "$@" "http://localhost$path"
}

# ---------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------
# build_single LAYOUT VARIANT KIB [SHARED_LAYER_GZ]: one linux/amd64 image manifest (no index): optionally a given
# (shared) gzip'd layer, then a layer of KIB KiB of random data; config with correct diff_ids; $TAG in
# index.json. Expect files in $TMP/expect/VARIANT: index.digest (= the manifest digest, what the tag points at),
# amd64.manifest, amd64.blobs, blobs.list (everything in the layout), own.blobs (config and the random layer:
# what no other image has), layer (the random layer's digest).
build_single() {
  local layout=$1 variant=$2 kib=$3 shared=${4:-}
  local work="$TMP/build/$variant" exp="$TMP/expect/$variant"
  mkdir -p "$layout/blobs/sha256" "$work/l/data" "$exp"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  local layers="[]" diffs="[]" d s diff_id
  if [[ -n $shared ]]; then
    cp "$shared" "$work/shared.tar.gz"
    diff_id="sha256:$(gzip -dc "$work/shared.tar.gz" | sha256sum | cut -d' ' -f1)"
    read -r d s < <(put_blob "$layout" "$work/shared.tar.gz")
    layers="$(jq -c --arg d "$d" --argjson s "$s" --arg mt "$MT_LAYER" '. + [{mediaType: $mt, digest: $d, size: $s}]' <<<"$layers")"
    diffs="$(jq -c --arg d "$diff_id" '. + [$d]' <<<"$diffs")"
    echo "$d" >>"$exp/amd64.blobs"
    echo "$d" >"$exp/shared"
  fi
  head -c "$((kib * 1024))" /dev/urandom >"$work/l/data/$variant.bin"
  tar --sort=name --mtime='@1704067200' --owner=0 --group=0 --numeric-owner -C "$work/l" -cf "$work/layer.tar" .
  diff_id="sha256:$(sha256_of "$work/layer.tar")"
  gzip -n -1 -c "$work/layer.tar" >"$work/layer.tar.gz"
  read -r d s < <(put_blob "$layout" "$work/layer.tar.gz")
  layers="$(jq -c --arg d "$d" --argjson s "$s" --arg mt "$MT_LAYER" '. + [{mediaType: $mt, digest: $d, size: $s}]' <<<"$layers")"
  diffs="$(jq -c --arg d "$diff_id" '. + [$d]' <<<"$diffs")"
  echo "$d" >>"$exp/amd64.blobs"
  echo "$d" >>"$exp/own.blobs"
  echo "$d" >"$exp/layer"
  jq -n -c --argjson diffs "$diffs" --arg v "$variant" '{architecture: "amd64", os: "linux",
    created: "2024-01-01T00:00:00Z", config: {Entrypoint: ["/bin/true"], Labels: {"org.opencontainers.image.title": $v}},
    rootfs: {type: "layers", diff_ids: $diffs}}' >"$work/config.json"
  local cd cs
  read -r cd cs < <(put_blob "$layout" "$work/config.json")
  echo "$cd" >>"$exp/amd64.blobs"
  echo "$cd" >>"$exp/own.blobs"
  jq -n -c --arg mt "$MT_MANIFEST" --arg cmt "$MT_CONFIG" --arg cd "$cd" --argjson cs "$cs" --argjson layers "$layers" '
    {schemaVersion: 2, mediaType: $mt, config: {mediaType: $cmt, digest: $cd, size: $cs}, layers: $layers}' \
    >"$work/manifest.json"
  local md ms
  read -r md ms < <(put_blob "$layout" "$work/manifest.json")
  echo "$md" >"$exp/amd64.manifest"
  echo "$md" >"$exp/index.digest"
  jq -n -c --arg mt "$MT_MANIFEST" --arg d "$md" --argjson s "$ms" --arg tag "$TAG" \
    '{schemaVersion: 2, manifests: [{mediaType: $mt, digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": $tag}}]}' \
    >"$layout/index.json"
  (cd "$layout/blobs/sha256" && ls | sed 's/^/sha256:/' | sort) >"$exp/blobs.list"
  echo "built $variant (single manifest $md, $(wc -l <"$exp/blobs.list") blobs$([[ -n $shared ]] && echo ", shares $(cat "$exp/shared")"))"
}

MULTI="a b c d e"          # multi-platform (amd64 + arm64/v8) images: load, pulls, list, prune, invalidate
PRUNE_TARGETS="p1 p2 p3 p4 p5 p6"
CAPPED="m1 m2 m3 m4 m5 m6 m7"

step_build_images() {
  local v
  for v in $MULTI; do build_image "$TMP/layout-$v" "$v" "$KIB"; done
  build_single "$TMP/layout-s1" s1 256
  build_single "$TMP/layout-s2" s2 64 "$TMP/layout-s1/blobs/sha256/$(sed 's/^sha256://' "$TMP/expect/s1/layer")"
  for v in $PRUNE_TARGETS r1; do build_single "$TMP/layout-$v" "$v" 64; done
  for v in $CAPPED; do build_single "$TMP/layout-$v" "$v" "$CAP_KIB"; done
}

step_start_upstream() {
  start_docker_registry "$UP" "$UPLOG" info
  echo "docker-registry serves http://$UP/v2/"
}

# restart the same docker-registry (same data, same port); its log is appended to
step_restart_upstream() {
  start_bg upstream "$UPLOG.restart" bash -c "exec docker-registry serve '$TMP/upstream/config.yml' >>'$UPLOG' 2>&1"
  wait_http "http://$UP/v2/" 30 upstream
  echo "docker-registry serves http://$UP/v2/ again"
}

step_stop_upstream() {
  echo "docker-registry stopped (status $(stop_bg upstream 10))"
  if curl -s -o /dev/null --max-time 2 "http://$UP/v2/"; then echo "upstream still answers" >&2; return 1; fi
}

step_push() {
  local v pids=() rc=0
  for v in $MULTI s1 s2 $PRUNE_TARGETS r1 $CAPPED; do
    sk copy --all --preserve-digests --dest-tls-verify=false "oci:$TMP/layout-$v:$TAG" "docker://$(ref "$v")" \
      >"$TMP/logs/push-$v.out" 2>&1 &
    pids+=("$!")
  done
  for v in "${pids[@]}"; do wait "$v" || rc=1; done
  [[ $rc -eq 0 ]] || { cat "$TMP"/logs/push-*.out >&2; return 1; }
  for v in $MULTI s1 s2 $PRUNE_TARGETS r1 $CAPPED; do
    sk inspect --raw --tls-verify=false "docker://$(ref "$v")" >"$TMP/push.raw"
    expect_eq "sha256:$(sha256_of "$TMP/push.raw")" "$(cat "$TMP/expect/$v/index.digest")" "upstream digest of $(ref "$v")"
  done
  rm -f "$TMP"/logs/push-*.out
  echo "pushed $(wc -w <<<"$MULTI s1 s2 $PRUNE_TARGETS r1 $CAPPED") images to $UP"
}

# ---------------------------------------------------------------------------------------------------------
# ociregistry
# ---------------------------------------------------------------------------------------------------------
write_configs() {
  # tag_ttl is long so that a pull of a cached tag does not go upstream unless the tag was invalidated
  cat >"$TMP/config.yaml" <<EOF
log_level: info
default_registry: "$UP"
tag_ttl: 10m
registries:
  - name: "$UP"
    scheme: http
EOF
  cat >"$TMP/cap.yaml" <<EOF
log_level: info
default_registry: "$UP"
tag_ttl: 10m
max_cache_bytes: "$((CAP_BYTES / 1024))KiB"
registries:
  - name: "$UP"
    scheme: http
EOF
}

# start_oci [EXTRA_FLAGS...]: the main instance on $OCI, data $DATA; its log is appended to across restarts
start_oci() {
  start_bg oci "$TMP/logs/ociregistry.out" bash -c 'exec "$@" >>"'"$TMP/logs/ociregistry.log"'" 2>&1' _ \
    "$OCIREGISTRY_BIN" serve --listen "$OCI" --data-dir "$DATA" --config-file "$TMP/config.yaml" "$@"
  wait_http "http://$OCI/v2/" 30 oci
  [[ "$INFRA_ONLY" == 1 ]] && return 0
  # the admin socket is there once the server answers (the CLI must find it right away)
  for _ in $(seq 1 50); do [[ -S "$DATA/admin.sock" ]] && break; sleep 0.1; done
  [[ -S "$DATA/admin.sock" ]] || { echo "no admin socket at $DATA/admin.sock after start" >&2; return 1; }
}

stop_oci() {
  local rc
  rc="$(stop_bg oci 15)"
  echo "ociregistry stopped (exit status $rc)"
  [[ "$rc" == 0 ]] || { echo "ociregistry exited $rc on SIGTERM (expected 0)" >&2; return 1; }
}

step_start_oci() {
  write_configs
  start_oci
  local mode
  mode="$(stat -c '%a' "$DATA/admin.sock")"
  echo "admin socket $DATA/admin.sock, mode $mode"
  expect_eq "$mode" 600 "mode of the admin socket"
  local code
  code="$(admin_api /admin/v1/stats)"
  expect_eq "$code" 200 "GET /admin/v1/stats over the socket"
  jq . "$TMP/api.body"
}

# ---------------------------------------------------------------------------------------------------------
# 1. load
# ---------------------------------------------------------------------------------------------------------
step_load_admin() {
  cat >"$TMP/images.txt" <<EOF
# images the e2e operations suite preloads
$(ref a)

   # an indented comment, then blank lines

$(ref b)
Bad Ref!
$UP/ops/missing:$TAG
# trailing comment
$(ref c)

EOF
  mark load1 "$UPLOG"
  run_ops load1 load --image-file "$TMP/images.txt" --platform linux/amd64 --platform linux/arm64/v8
  expect_mode load1 admin
  [[ "$(rc_of load1)" != 0 ]] || { echo "load exited 0 although two references failed" >&2; return 1; }
  local err="$TMP/out/load1.err" line
  line="$(grep -aF 'Bad Ref!' "$err" || true)"
  [[ -n "$line" ]] || { echo "stderr does not name the unparsable reference 'Bad Ref!'" >&2; return 1; }
  grep -aqiE 'invalid|pars|reference|format' <<<"$line" || { echo "no reason given for 'Bad Ref!': $line" >&2; return 1; }
  line="$(grep -aF "ops/missing" "$err" || true)"
  [[ -n "$line" ]] || { echo "stderr does not name the missing image $UP/ops/missing:$TAG" >&2; return 1; }
  # (the reason, not the name: "ops/missing" must not count as the word "missing")
  grep -aqiE 'not found|unknown|404|missing|does not exist|no such' <<<"${line//ops\/missing/}" \
    || { echo "no reason given for the missing image: $line" >&2; return 1; }
  if grep -aqF 'indented comment' "$err"; then
    echo "the indented comment line ('   # an indented comment ...') was treated as a reference" >&2; return 1
  fi
  for v in a b c; do
    line="$(grep -aF "$(repo_of "$v")" "$err" || true)"
    if grep -aqiE 'fail|error' <<<"$line"; then
      echo "stderr reports a failure for the good reference $(ref "$v")" >&2; return 1
    fi
  done
  # the good ones are cached: every blob of both platforms came from the upstream, and list shows them
  settle_uplog
  local d n
  for v in a b c; do
    while read -r d; do
      is_manifest "$v" "$d" && continue
      n="$(since load1 "$UPLOG" | count "\"GET /v2/$(repo_of "$v")/blobs/$d ")"
      [[ $n -ge 1 ]] || { echo "load did not fetch $d of $(ref "$v") from the upstream" >&2; return 1; }
    done <"$TMP/expect/$v/blobs.list"
  done
  run_ops list1 list --pattern "$UP/ops/*" --output json
  expect_eq "$(refs_of "$TMP/out/list1.out" | tr '\n' ' ')" "$(for v in a b c; do ref "$v"; done | sort | tr '\n' ' ')" \
    "images listed after the load"
}

step_load_again_cached() {
  grep -avE '^(Bad Ref!|.*ops/missing.*)$' "$TMP/images.txt" >"$TMP/images-good.txt"
  mark load2 "$UPLOG"
  run_ops load2 load --image-file "$TMP/images-good.txt" --platform linux/amd64 --platform linux/arm64/v8
  expect_mode load2 admin
  expect_eq "$(rc_of load2)" 0 "exit status of load with only good (cached) references"
  settle_uplog
  local n
  n="$(since load2 "$UPLOG" | count '"GET /v2/[^ ]*/blobs/')"
  echo "upstream blob GETs during the second load: $n"
  expect_eq "$n" 0 "upstream blob GETs when loading cached images again"
  # the summary table: one row per image, nothing fetched, status cached
  local v row
  for v in a b c; do
    row="$(grep -aF "$(ref "$v")" "$TMP/out/load2.out" || true)"
    [[ "$row" == *cached* ]] || { echo "the summary row of $(ref "$v") does not say cached: '$row'" >&2; return 1; }
  done
  # the same through the API: POST /admin/v1/load answers blobs_fetched 0
  mark load2api "$UPLOG"
  expect_eq "$(admin_api /admin/v1/load -X POST -H 'Content-Type: application/json' \
    -d "{\"image\":\"$(ref a)\",\"platforms\":[\"linux/amd64\",\"linux/arm64/v8\"]}")" 200 "POST /admin/v1/load of a cached image"
  jq -c . "$TMP/api.body"
  expect_eq "$(jq -r .digest "$TMP/api.body")" "$(cat "$TMP/expect/a/index.digest")" "digest in the load answer"
  expect_eq "$(jq -r .blobs_fetched "$TMP/api.body")" 0 "blobs_fetched of a cached image"
  expect_eq "$(jq -r .bytes_fetched "$TMP/api.body")" 0 "bytes_fetched of a cached image"
  expect_eq "$(jq -r .blobs "$TMP/api.body")" 6 "blobs of a (2 platforms x (config + 2 layers))"
  expect_eq "$(jq -r .manifests "$TMP/api.body")" 3 "manifests of a (index + 2)"
  settle_uplog
  expect_eq "$(since load2api "$UPLOG" | count '"GET /v2/[^ ]*/blobs/')" 0 "upstream blob GETs during POST /admin/v1/load"
}

step_stop_oci() { stop_oci; [[ ! -S "$DATA/admin.sock" ]] || echo "note: $DATA/admin.sock is still there after shutdown"; }

step_load_direct() {
  local args=() v row
  cat >"$TMP/images2.txt" <<EOF
# loaded with the server stopped

$(ref d)
$UP/ops/missing:$TAG
Bad Ref!
$(ref e)
EOF
  mark load3 "$UPLOG"
  run_ops load3 load --image-file "$TMP/images2.txt" --platform linux/amd64 --platform linux/arm64/v8
  expect_mode load3 direct
  [[ "$(rc_of load3)" != 0 ]] || { echo "direct-mode load exited 0 although two references failed" >&2; return 1; }
  local line
  line="$(grep -aF 'Bad Ref!' "$TMP/out/load3.err" || true)"
  grep -aqiE 'invalid|pars|reference|format' <<<"$line" || { echo "direct mode: 'Bad Ref!' not named with a reason: '$line'" >&2; return 1; }
  line="$(grep -aF 'ops/missing' "$TMP/out/load3.err" || true)"
  grep -aqiE 'not found|unknown|404|missing|does not exist|no such' <<<"${line//ops\/missing/}" \
    || { echo "direct mode: the missing image not named with a reason: '$line'" >&2; return 1; }
  for v in d e; do
    row="$(grep -aF "$(ref "$v")" "$TMP/out/load3.out" || true)"
    [[ "$row" == *loaded* ]] || { echo "the summary row of $(ref "$v") does not say loaded: '$row'" >&2; return 1; }
  done
  # single-platform images, several at once
  for v in s1 s2 $PRUNE_TARGETS r1; do args+=(--image "$(ref "$v")"); done
  run_ops load3b load "${args[@]}" --parallel 4
  expect_mode load3b direct
  expect_eq "$(rc_of load3b)" 0 "exit status of a direct-mode load of 9 single-platform images with --parallel 4"
  settle_uplog
  local n
  n="$(since load3 "$UPLOG" | count "\"GET /v2/ops/d/blobs/$(largest_blob d arm64) ")"
  expect_eq "$n" 1 "upstream GETs of d's arm64 random layer during the direct load"
  # a direct-mode load with a bad reference: non-zero, named on stderr
  run_ops load4 load --image "Bad Ref!" --image "$(ref d)"
  expect_mode load4 direct
  [[ "$(rc_of load4)" != 0 ]] || { echo "direct-mode load exited 0 although 'Bad Ref!' failed" >&2; return 1; }
  grep -aqF 'Bad Ref!' "$TMP/out/load4.err" || { echo "direct-mode stderr does not name 'Bad Ref!'" >&2; return 1; }
}

# The database is locked by the running server and no admin socket answers where the CLI looks: clear error, 1.
step_locked_no_socket() {
  run_ops locked list --admin-socket "$TMP/no-such.sock" --output json
  expect_eq "$(rc_of locked)" 1 "exit status of list with the DB locked and no server at the socket"
  grep -aqiE 'in use|locked|lock' "$TMP/out/locked.err" || { echo "the error does not say the index is in use" >&2; return 1; }
}

# ---------------------------------------------------------------------------------------------------------
# 2. pulls of loaded images with the upstream stopped
# ---------------------------------------------------------------------------------------------------------
step_skopeo_loaded() {
  local v
  for v in a b c d e s1 s2; do pull_skopeo "$OCI" "$v" "loaded-$v"; done
}

# start_mirror_containerd NAME: containerd (tests/lib/harness.sh) whose only mirror of the upstream is ociregistry;
# the fallback `server` is a dead port, so a pull can only succeed through ociregistry.
start_mirror_containerd() {
  mirror_hosts "$UP" "$OCI" "http://127.0.0.1:$DEADPORT"
  start_containerd "$1"
}

ctr_() { local name=$1; shift; timeout "$CMD_TIMEOUT" ctr --address "$TMP/$name/ctd.sock" "$@"; }

# ctd_pull CTD VARIANT: `ctr images pull` (with unpack) of linux/amd64 through hosts.toml (ns= route)
ctd_pull() {
  local ctd=$1 variant=$2 r
  r="$(ref "$variant")"
  [[ -e "$TMP/ok/$ctd" ]] || { echo "containerd $ctd is not running" >&2; return 1; }
  local before after
  before="$(grep -acF "/v2/$(repo_of "$variant")/" "$TMP/logs/ociregistry.log" || true)"
  ctr_ "$ctd" images pull --hosts-dir "$TMP/hosts" --plain-http --platform linux/amd64 --snapshotter "$SNAPSHOTTER" "$r"
  after="$(grep -acF "/v2/$(repo_of "$variant")/" "$TMP/logs/ociregistry.log" || true)"
  local target have d
  target="$(ctr_ "$ctd" images ls | awk -v r="$r" '$1 == r { print $3 }')"
  expect_eq "$target" "$(cat "$TMP/expect/$variant/index.digest")" "containerd image target digest of $r"
  have="$(ctr_ "$ctd" content ls -q)"
  while read -r d; do
    grep -qxF "$d" <<<"$have" || { echo "blob $d (linux/amd64) missing from containerd's content store" >&2; return 1; }
  done <"$TMP/expect/$variant/amd64.blobs"
  local line
  line="$(ctr_ "$ctd" images check --snapshotter "$SNAPSHOTTER" "name==$r" | awk -v r="$r" '$1 == r')"
  [[ "$line" == *complete* ]] || { echo "image $r not complete in containerd: $line" >&2; return 1; }
  [[ "$(awk '{ print $NF }' <<<"$line")" == "true" ]] || { echo "image $r not unpacked by containerd" >&2; return 1; }
  echo "containerd pulled and unpacked $r ($target); ociregistry logged $((after - before)) requests for it"
  [[ $((after - before)) -ge 4 ]] || { echo "containerd's requests did not reach ociregistry" >&2; return 1; }
}

step_ctd_loaded() {
  start_mirror_containerd ctd1
  ctd_pull ctd1 a
  ctd_pull ctd1 d
  local ns
  ns="$(grep -acE "ns=127\.0\.0\.1(%3A|:)$UPPORT" "$TMP/logs/ociregistry.log" || true)"
  echo "access-log lines with ns=$UP: $ns"
  echo "containerd stopped (status $(stop_bg ctd1 10))"
  rm -f "$TMP/ok/ctd1"
}

# ---------------------------------------------------------------------------------------------------------
# 3. list
# ---------------------------------------------------------------------------------------------------------
# normalized FILE: the images of a list document, sorted by reference, without the fields that change when
# something is pulled (last_pulled, pull_count: recorded asynchronously)
normalized() { jq -S '(if type == "array" then . else .images end) | map(del(.last_pulled, .pull_count)) | sort_by(.reference)' "$1"; }

step_list_admin_direct() {
  run_ops list_admin list --output json
  expect_mode list_admin admin
  expect_eq "$(rc_of list_admin)" 0 "exit status of list (admin mode)"
  stop_oci
  run_ops list_direct list --output json
  local rc_direct
  rc_direct="$(rc_of list_direct)"
  start_oci
  expect_mode list_direct direct
  expect_eq "$rc_direct" 0 "exit status of list (direct mode)"
  if diff -q <(jq -S . "$TMP/out/list_admin.out") <(jq -S . "$TMP/out/list_direct.out") >/dev/null; then
    echo "list --output json: admin and direct mode identical, last_pulled and pull_count included"
  else
    echo "note: admin and direct list differ in volatile fields:"
    diff <(jq -S . "$TMP/out/list_admin.out") <(jq -S . "$TMP/out/list_direct.out") | head -20 || true
  fi
  normalized "$TMP/out/list_admin.out" >"$TMP/list_admin.norm"
  normalized "$TMP/out/list_direct.out" >"$TMP/list_direct.norm"
  if ! diff -u "$TMP/list_admin.norm" "$TMP/list_direct.norm"; then
    echo "list --output json differs between admin and direct mode (without last_pulled, pull_count)" >&2; return 1
  fi
  local want v
  want="$(for v in a b c d e s1 s2 $PRUNE_TARGETS r1; do ref "$v"; done | sort | tr '\n' ' ')"
  expect_eq "$(refs_of "$TMP/out/list_admin.out" | tr '\n' ' ')" "$want" "references listed"
  # per-image facts: digest = what the tag points at; platforms of a multi-platform image; size covers the blobs
  local img
  for v in a s2; do
    img="$(jq -c --arg r "$(ref "$v")" '(if type == "array" then . else .images end) | .[] | select(.reference == $r)' "$TMP/out/list_admin.out")"
    echo "$img"
    expect_eq "$(jq -r .digest <<<"$img")" "$(cat "$TMP/expect/$v/index.digest")" "digest of $(ref "$v") in list"
    expect_eq "$(jq -r .registry <<<"$img")" "$UP" "registry of $(ref "$v")"
    expect_eq "$(jq -r .repository <<<"$img")" "$(repo_of "$v")" "repository of $(ref "$v")"
    expect_eq "$(jq -r .tag <<<"$img")" "$TAG" "tag of $(ref "$v")"
    expect_eq "$(jq -r .pinned <<<"$img")" false "pinned of $(ref "$v")"
  done
  img="$(jq -c --arg r "$(ref a)" '(if type == "array" then . else .images end) | .[] | select(.reference == $r)' "$TMP/out/list_admin.out")"
  expect_eq "$(jq -r '.platforms | sort | join(",")' <<<"$img")" "linux/amd64,linux/arm64/v8" "platforms of $(ref a)"
  local blobsum
  blobsum="$(for d in $(cat "$TMP/expect/a/blobs.list"); do stat -c %s "$TMP/layout-a/blobs/sha256/${d#sha256:}"; done | awk '{ s += $1 } END { print s }')"
  [[ "$(jq -r .size <<<"$img")" -ge $((blobsum * 9 / 10)) ]] || { echo "size of $(ref a) in list ($(jq -r .size <<<"$img")) is far below its content ($blobsum bytes)" >&2; return 1; }
}

step_list_pattern_table() {
  run_ops lp1 list --pattern "$UP/ops/a" --output json
  expect_eq "$(refs_of "$TMP/out/lp1.out" | tr '\n' ' ')" "$(ref a) " "list --pattern $UP/ops/a"
  run_ops lp2 list --pattern "$UP/ops/*" --output json
  expect_eq "$(refs_of "$TMP/out/lp2.out" | tr '\n' ' ')" "$(for v in $MULTI; do ref "$v"; done | sort | tr '\n' ' ')" "list --pattern $UP/ops/*"
  run_ops lp3 list --pattern "**/prune/*" --output json
  expect_eq "$(refs_of "$TMP/out/lp3.out" | tr '\n' ' ')" "$(for v in $PRUNE_TARGETS; do ref "$v"; done | sort | tr '\n' ' ')" "list --pattern **/prune/*"
  run_ops lp4 list --pattern "*/ops/*" --output json
  expect_eq "$(refs_of "$TMP/out/lp4.out" | wc -l)" "$(wc -w <<<"$MULTI")" "list --pattern */ops/* (the registry is one path component)"
  run_ops lp5 list --pattern "$UP/nothing/*" --output json
  expect_eq "$(refs_of "$TMP/out/lp5.out" | wc -l)" 0 "list --pattern matching nothing"
  run_ops lt list
  expect_eq "$(rc_of lt)" 0 "exit status of list (table)"
  grep -aqF "$UP/ops/a" "$TMP/out/lt.out" || { echo "table output lacks $UP/ops/a" >&2; return 1; }
  grep -aqE '[0-9]+(\.[0-9]+)? ?(KiB|MiB|kB|KB|MB)\b' "$TMP/out/lt.out" || { echo "table output has no human-readable sizes" >&2; return 1; }
  run_ops ly list --pattern "$UP/ops/a" --output yaml
  expect_eq "$(rc_of ly)" 0 "exit status of list --output yaml"
  grep -aqF "$(cat "$TMP/expect/a/index.digest")" "$TMP/out/ly.out" || { echo "yaml output lacks a's digest" >&2; return 1; }
}

step_stats() {
  run_ops st stats --output json
  expect_mode st admin
  expect_eq "$(rc_of st)" 0 "exit status of stats"
  local f="$TMP/out/st.out" k
  for k in version schema_version db blobs_dir manifests tags blobs blob_bytes images pins max_cache_bytes free_bytes; do
    jq -e --arg k "$k" 'has($k)' "$f" >/dev/null || { echo "stats lacks \"$k\"" >&2; return 1; }
  done
  expect_eq "$(jq -r .images "$f")" 14 "stats.images (a-e, s1, s2, p1-p6, r1)"
  expect_eq "$(jq -r .max_cache_bytes "$f")" null "stats.max_cache_bytes without a ceiling"
  expect_eq "$(jq -r .blobs "$f")" "$(blob_count "$DATA")" "stats.blobs vs blob files on disk"
  expect_eq "$(jq -r .blob_bytes "$f")" "$(blob_bytes "$DATA")" "stats.blob_bytes vs the blob files' sizes"
  # the same through the HTTP API
  expect_eq "$(admin_api /admin/v1/stats)" 200 "GET /admin/v1/stats"
  expect_eq "$(jq -r .images "$TMP/api.body")" 14 "images in GET /admin/v1/stats"
}

# ---------------------------------------------------------------------------------------------------------
# 4. prune
# ---------------------------------------------------------------------------------------------------------
step_prune_dry_run() {
  sleep 1.1   # --older-than 0s: every image is older than "now" by at least a second
  local before files
  before="$(blob_count "$DATA")"
  find "$DATA/blobs" -type f | sort >"$TMP/files.before"
  run_ops pdry prune --dry-run --pattern "$UP/ops/c" --older-than 0s --output json
  expect_eq "$(rc_of pdry)" 0 "exit status of prune --dry-run"
  local f="$TMP/out/pdry.out"
  expect_eq "$(jq -r .dry_run "$f")" true "dry_run in the answer"
  expect_eq "$(refs_of "$f" | tr '\n' ' ')" "$(ref c) " "images prune --dry-run would remove"
  # c shares nothing: every blob of c would go
  local own
  own="$(for d in $(cat "$TMP/expect/c/blobs.list"); do stat -c %s "$TMP/layout-c/blobs/sha256/${d#sha256:}"; done | awk '{ s += $1 } END { print s }')"
  echo "c's blobs and manifests total $own bytes; prune --dry-run reports bytes_freed $(jq -r .bytes_freed "$f"), blobs $(jq -r .blobs "$f"), manifests $(jq -r .manifests "$f")"
  local bf
  bf="$(jq -r .bytes_freed "$f")"
  [[ "$bf" -gt 0 && "$bf" -le $((own + 65536)) && "$bf" -ge $((own * 9 / 10)) ]] \
    || { echo "bytes_freed $bf does not match c's content ($own bytes)" >&2; return 1; }
  expect_eq "$(jq -r .manifests "$f")" 3 "manifests prune --dry-run would remove (index + 2 platform manifests)"
  expect_eq "$(jq -r .blobs "$f")" 6 "blobs prune --dry-run would remove (2 x (config + 2 layers))"
  # nothing deleted
  expect_eq "$(blob_count "$DATA")" "$before" "blob files after prune --dry-run"
  find "$DATA/blobs" -type f | sort | diff -u "$TMP/files.before" - || { echo "prune --dry-run changed the blob files" >&2; return 1; }
  run_ops pdry_list list --pattern "$UP/ops/c" --output json
  expect_eq "$(refs_of "$TMP/out/pdry_list.out" | tr '\n' ' ')" "$(ref c) " "c still listed after the dry run"
  expect_eq "$(manifest_status "$OCI" c)" 200 "c's tag through ociregistry after the dry run (upstream down)"
  # --keep-latest 1: every repository here holds one image, so nothing would go; --by created with a far age: nothing
  run_ops pdry_k prune --dry-run --pattern "$UP/ops/*" --older-than 0s --keep-latest 1 --output json
  expect_eq "$(refs_of "$TMP/out/pdry_k.out" | wc -l)" 0 "images prune --dry-run --keep-latest 1 would remove (one image per repository)"
  run_ops pdry_c prune --dry-run --by created --older-than 3650d --output json
  expect_eq "$(refs_of "$TMP/out/pdry_c.out" | wc -l)" 0 "images prune --dry-run --by created --older-than 3650d would remove"
  # table output of the dry run
  run_ops pdry_t prune --dry-run --pattern "$UP/ops/c" --older-than 0s
  expect_eq "$(rc_of pdry_t)" 0 "exit status of prune --dry-run (table)"
  grep -aqF "$UP/ops/c" "$TMP/out/pdry_t.out" || { echo "table of prune --dry-run does not name the image" >&2; return 1; }
}

# A pull a moment ago counts for --older-than even before the server has written its batched access times to
# the index (docs/design.md: "a background task writes the whole batch every few seconds").
step_prune_recent_pull() {
  # r1 was loaded (direct mode) long before and never pulled since; pull it now, then prune at once
  sleep 2.5
  expect_eq "$(manifest_status "$OCI" r1)" 200 "r1's tag through ociregistry"
  local now
  now="$(date +%s)"
  run_ops prec prune --dry-run --pattern "$UP/recent/*" --older-than 2s --output json
  run_ops prec_list list --pattern "$UP/recent/*" --output json
  run_ops prec2 prune --pattern "$UP/recent/*" --older-than 2s --output json
  local lp
  lp="$(jq -r '(if type == "array" then . else .images end) | .[0].last_pulled' "$TMP/out/prec_list.out")"
  echo "r1 pulled at $now; list (admin mode) right after shows last_pulled $lp"
  expect_eq "$(rc_of prec)" 0 "exit status of prune --dry-run"
  expect_eq "$(rc_of prec2)" 0 "exit status of prune"
  local fail=0 d
  [[ "$(refs_of "$TMP/out/prec.out" | wc -l)" -eq 0 ]] || { echo "prune --dry-run --older-than 2s would remove r1, pulled $(( $(date +%s) - now )) s before" >&2; fail=1; }
  [[ "$(refs_of "$TMP/out/prec2.out" | wc -l)" -eq 0 ]] || { echo "prune --older-than 2s REMOVED r1, pulled moments before" >&2; fail=1; }
  # (informational: list reading the index before the server's 10 s access-time flush shows an older time)
  [[ $((now - lp)) -le 2 ]] || echo "note: list shows r1 last pulled $((now - lp)) s before the pull that just happened" >&2
  while read -r d; do
    [[ -f "$(blob_file "$d" "$DATA")" ]] || { echo "r1's blob $d is gone" >&2; fail=1; }
  done <"$TMP/expect/r1/own.blobs"
  [[ $fail -eq 0 ]]
}

step_prune_shared() {
  local shared s1own f
  shared="$(cat "$TMP/expect/s2/shared")"
  expect_eq "$shared" "$(cat "$TMP/expect/s1/layer")" "layer s1 and s2 share"
  [[ -f "$(blob_file "$shared" "$DATA")" ]] || { echo "shared blob $shared not cached before the prune" >&2; return 1; }
  run_ops ps prune --pattern "$UP/shared/s1" --older-than 0s --output json
  expect_eq "$(rc_of ps)" 0 "exit status of prune"
  f="$TMP/out/ps.out"
  expect_eq "$(jq -r .dry_run "$f")" false "dry_run in the answer"
  expect_eq "$(refs_of "$f" | tr '\n' ' ')" "$(ref s1) " "images pruned"
  expect_eq "$(jq -r .blobs "$f")" 1 "blobs removed (s1's config; its layer is shared with s2)"
  [[ -f "$(blob_file "$shared" "$DATA")" ]] || { echo "the blob shared with the kept image s2 was deleted" >&2; return 1; }
  while read -r s1own; do
    [[ "$s1own" == "$shared" ]] && continue
    [[ ! -e "$(blob_file "$s1own" "$DATA")" ]] || { echo "s1's own blob $s1own is still on disk" >&2; return 1; }
  done <"$TMP/expect/s1/own.blobs"
  run_ops ps_list list --pattern "$UP/shared/*" --output json
  expect_eq "$(refs_of "$TMP/out/ps_list.out" | tr '\n' ' ')" "$(ref s2) " "images left in shared/"
  # s2 still pulls completely with the upstream stopped; s1 is gone
  pull_skopeo "$OCI" s2 after-prune-s2
  # s1's tag is no longer cached: ociregistry asks the (stopped) upstream and answers 502 UNAVAILABLE
  local st
  st="$(manifest_status "$OCI" s1)"
  echo "s1's tag through ociregistry after the prune (upstream down): $st"
  [[ "$st" != 200 ]] || { echo "the pruned s1 is still served" >&2; return 1; }
}

# 5. Prune while 20 clients (10 skopeo, 10 curl) pull other, cached images with the upstream down: any blob the
# prune wrongly deleted, or a read that races a deletion, shows as a client failure.
conc_curl_client() { # ID
  local id=$1 i=0 v url d
  while :; do
    for v in a b d e; do
      url="http://$OCI/v2/$(repo_of "$v")"
      code="$(curl -sS --max-time 30 -H "Accept: $ACCEPT_MANIFESTS" -o "$TMP/conc/c$id.m" -w '%{http_code}' "$url/manifests/$TAG" 2>&1)" || true
      if [[ "$code" != 200 || "sha256:$(sha256_of "$TMP/conc/c$id.m")" != "$(cat "$TMP/expect/$v/index.digest")" ]]; then
        echo "curl client $id: $v manifest -> $code" >>"$TMP/conc/failures"
      fi
      while read -r d; do
        is_manifest "$v" "$d" && continue
        code="$(curl -sS --max-time 30 -o "$TMP/conc/c$id.b" -w '%{http_code}' "$url/blobs/$d" 2>&1)" || true
        if [[ "$code" != 200 || "sha256:$(sha256_of "$TMP/conc/c$id.b")" != "$d" ]]; then
          echo "curl client $id: $v blob $d -> $code" >>"$TMP/conc/failures"
        fi
      done <"$TMP/expect/$v/blobs.list"
    done
    i=$((i + 1))
    echo "curl client $id: round $i done" >>"$TMP/conc/rounds"
    [[ $i -ge 2 && -e "$TMP/conc/stop" ]] && break
    [[ $i -ge 40 ]] && break
  done
}
conc_skopeo_client() { # ID
  local id=$1 i=0 v
  local vs=(a b d e)
  while :; do
    v="${vs[$(((id + i) % 4))]}"
    if ! pull_skopeo "$OCI" "$v" "conc-s$id" >"$TMP/conc/s$id.log" 2>&1; then
      echo "skopeo client $id: $v round $i: $(tail -n 3 "$TMP/conc/s$id.log" | tr '\n' ' ')" >>"$TMP/conc/failures"
    fi
    i=$((i + 1))
    echo "skopeo client $id: round $i done" >>"$TMP/conc/rounds"
    [[ $i -ge 2 && -e "$TMP/conc/stop" ]] && break
    [[ $i -ge 20 ]] && break
  done
}

step_prune_concurrent() {
  mkdir -p "$TMP/conc"
  : >"$TMP/conc/failures"
  : >"$TMP/conc/rounds"
  local pids=() i v p
  for i in $(seq 1 10); do conc_curl_client "$i" & pids+=("$!"); done
  for i in $(seq 1 10); do conc_skopeo_client "$i" & pids+=("$!"); done
  sleep 1
  local prune_fail=0
  [[ "$INFRA_ONLY" == 1 ]] && PRUNE_TARGETS=""
  for v in $PRUNE_TARGETS; do
    run_ops "pc-$v" prune --pattern "$UP/prune/$v" --older-than 0s --output json >/dev/null
    if [[ "$(rc_of "pc-$v")" != 0 || "$(refs_of "$TMP/out/pc-$v.out" | tr '\n' ' ')" != "$(ref "$v") " ]]; then
      echo "prune of $(ref "$v") during the pulls: exit $(rc_of "pc-$v"), $(head -c 500 "$TMP/out/pc-$v.out") $(head -c 500 "$TMP/out/pc-$v.err")" >&2
      prune_fail=1
    fi
    sleep 0.3
  done
  touch "$TMP/conc/stop"
  for p in "${pids[@]}"; do wait "$p" || true; done
  echo "$(wc -l <"$TMP/conc/rounds") client rounds (20 clients: 10 curl, 10 skopeo), $(wc -l <"$TMP/conc/failures") failures"
  if [[ -s "$TMP/conc/failures" ]]; then head -n 20 "$TMP/conc/failures" >&2; return 1; fi
  [[ $prune_fail -eq 0 ]] || return 1
  [[ "$INFRA_ONLY" == 1 ]] && return 0
  run_ops pc_list list --pattern "$UP/prune/*" --output json
  expect_eq "$(refs_of "$TMP/out/pc_list.out" | wc -l)" 0 "prune/ images left"
  for v in $PRUNE_TARGETS; do
    while read -r d; do
      [[ ! -e "$(blob_file "$d" "$DATA")" ]] || { echo "pruned $v's blob $d is still on disk" >&2; return 1; }
    done <"$TMP/expect/$v/own.blobs"
  done
}

# ---------------------------------------------------------------------------------------------------------
# 6. crash leftovers
# ---------------------------------------------------------------------------------------------------------
# stray NAME AGE: a blob file with content matching its name and no index entry (a fill that crashed between
# landing and being recorded, or a removal that crashed before the unlink), modification time AGE ago; prints
# its path. The sweep (docs/design.md) removes such files once they are older than 10 minutes.
stray() {
  local f h p
  f="$TMP/stray-$1.bin"
  head -c 100000 /dev/urandom >"$f"
  h="$(sha256_of "$f")"
  p="$DATA/blobs/sha256/${h:0:2}/$h"
  mkdir -p "$(dirname "$p")"
  cp "$f" "$p"
  touch -d "$2 ago" "$p"
  echo "$p"
}

step_crash_leftovers() {
  stop_oci
  run_ops cl_st0 stats --output json
  local blobs0 bytes0
  blobs0="$(jq -r .blobs "$TMP/out/cl_st0.out")"
  bytes0="$(jq -r .blob_bytes "$TMP/out/cl_st0.out")"
  local old1 fresh old2
  old1="$(stray old1 '1 hour')"
  fresh="$(stray fresh '10 seconds')"
  # a blob the index knows, gone from disk: e's arm64 random layer
  local gone gf gsize
  gone="$(largest_blob e arm64)"
  gf="$(blob_file "$gone" "$DATA")"
  [[ -f "$gf" ]] || { echo "precondition: $gf should be cached" >&2; return 1; }
  gsize="$(stat -c %s "$gf")"
  rm -f "$gf"
  echo "strays (not indexed, 100000 bytes each): $old1 (1 h old), $fresh (10 s old); removed $gf ($gsize bytes, indexed)"
  # prune with nothing old enough to remove: the sweep still runs after it
  run_ops cl_prune prune --older-than 3650d --output json
  expect_mode cl_prune direct
  expect_eq "$(rc_of cl_prune)" 0 "exit status of prune (direct mode)"
  expect_eq "$(refs_of "$TMP/out/cl_prune.out" | wc -l)" 0 "images removed by prune --older-than 3650d"
  [[ ! -e "$old1" ]] || { echo "the 1 h old stray blob file is still there after prune" >&2; return 1; }
  [[ -e "$fresh" ]] || { echo "the 10 s old stray blob file was swept (the sweep's grace period is 10 minutes)" >&2; return 1; }
  echo "prune swept the old stray and kept the fresh one"
  run_ops cl_st1 stats --output json
  echo "stats before: blobs $blobs0, blob_bytes $bytes0; after: blobs $(jq -r .blobs "$TMP/out/cl_st1.out"), blob_bytes $(jq -r .blob_bytes "$TMP/out/cl_st1.out")"
  expect_eq "$(jq -r .blobs "$TMP/out/cl_st1.out")" "$((blobs0 - 1))" "stats.blobs after the missing blob file was noticed"
  expect_eq "$(jq -r .blob_bytes "$TMP/out/cl_st1.out")" "$((bytes0 - gsize))" "stats.blob_bytes after the missing blob file was noticed"
  # the sweep at server start-up
  old2="$(stray old2 '2 hours')"
  start_oci
  for _ in $(seq 1 50); do [[ -e "$old2" ]] || break; sleep 0.1; done
  [[ ! -e "$old2" ]] || { echo "the 2 h old stray blob file is still there 5 s after the server started" >&2; return 1; }
  echo "server start-up swept another old stray"
  # e re-pulls with the upstream up, and the missing layer comes from the upstream again
  mark cl "$UPLOG"
  pull_skopeo "$OCI" e after-sweep-e
  settle_uplog
  expect_eq "$(since cl "$UPLOG" | count "\"GET /v2/ops/e/blobs/$gone ")" 1 "upstream GETs of the missing blob"
  [[ -f "$gf" ]] || { echo "the missing blob was not cached again" >&2; return 1; }
}

# ---------------------------------------------------------------------------------------------------------
# 8. invalidate
# ---------------------------------------------------------------------------------------------------------
step_invalidate() {
  local n
  mark inv0 "$UPLOG"
  expect_eq "$(manifest_status "$OCI" a)" 200 "a's tag through ociregistry"
  settle_uplog
  n="$(since inv0 "$UPLOG" | count '"(GET|HEAD) /v2/ops/a/manifests/')"
  expect_eq "$n" 0 "upstream manifest requests for a cached tag within tag_ttl (baseline)"
  run_ops inv invalidate "$(ref a)"
  expect_mode inv admin
  expect_eq "$(rc_of inv)" 0 "exit status of invalidate"
  mark inv1 "$UPLOG"
  expect_eq "$(manifest_status "$OCI" a)" 200 "a's tag through ociregistry after invalidate"
  settle_uplog
  since inv1 "$UPLOG" | grep -a '/v2/ops/a/' || true
  n="$(since inv1 "$UPLOG" | count '"GET /v2/ops/a/manifests/')"
  [[ $n -ge 1 ]] || { echo "no upstream manifest GET after invalidate" >&2; return 1; }
  pull_skopeo "$OCI" a after-invalidate-a
  # invalidating something not cached
  run_ops inv2 invalidate "$UP/ops/never-cached:$TAG"
  [[ "$(rc_of inv2)" != 0 ]] || { echo "invalidate of a never-cached reference exited 0 (the API answers 404 NOT_CACHED)" >&2; return 1; }
  # invalidate by digest drops the whole image (manifests and blobs no other image holds)
  local cd
  cd="$(cat "$TMP/expect/c/index.digest")"
  run_ops invd invalidate "$UP/ops/c@$cd"
  expect_eq "$(rc_of invd)" 0 "exit status of invalidate by digest"
  run_ops invd_list list --pattern "$UP/ops/c" --output json
  expect_eq "$(refs_of "$TMP/out/invd_list.out" | wc -l)" 0 "c listed after invalidate by digest"
  while read -r d; do
    is_manifest c "$d" && continue
    [[ ! -e "$(blob_file "$d" "$DATA")" ]] || { echo "c's blob $d is still on disk after invalidate by digest" >&2; return 1; }
  done <"$TMP/expect/c/blobs.list"
  # the HTTP API
  expect_eq "$(admin_api /admin/v1/invalidate -X POST -H 'Content-Type: application/json' -d "{\"reference\":\"$(ref b)\"}")" 200 \
    "POST /admin/v1/invalidate"
  jq . "$TMP/api.body"
  jq -e --arg t "$(ref b)" '.tags | index($t) != null' "$TMP/api.body" >/dev/null \
    || jq -e '.tags | length >= 1' "$TMP/api.body" >/dev/null || { echo "invalidate answer lists no tag" >&2; return 1; }
}

# ---------------------------------------------------------------------------------------------------------
# 7. max_cache_bytes, pin, unpin (a second instance with a ceiling)
# ---------------------------------------------------------------------------------------------------------
start_cap() {
  start_bg oci-cap "$TMP/logs/ociregistry-cap.log" "$OCIREGISTRY_BIN" serve --listen "$OCI_CAP" \
    --data-dir "$DATA_CAP" --config-file "$TMP/cap.yaml"
  wait_http "http://$OCI_CAP/v2/" 30 oci-cap
  for _ in $(seq 1 50); do [[ -S "$DATA_CAP/admin.sock" ]] && break; sleep 0.1; done
}

cap_img_bytes() { # VARIANT: bytes of the image's blob files in the layout
  local d
  for d in $(cat "$TMP/expect/$1/amd64.blobs"); do stat -c %s "$TMP/layout-$1/blobs/sha256/${d#sha256:}"; done | awk '{ s += $1 } END { print s }'
}

cap_refs() { run_ops_cap "$1" list --pattern "$UP/cap/*" --output json >/dev/null; refs_of "$TMP/out/$1.out" | tr '\n' ' '; }

step_cap_pin() {
  start_cap
  run_ops_cap cst stats --output json
  expect_eq "$(jq -r .max_cache_bytes "$TMP/out/cst.out")" "$CAP_BYTES" "stats.max_cache_bytes"
  run_ops_cap cload load --image "$(ref m1)"
  expect_mode cload admin
  expect_eq "$(rc_of cload)" 0 "exit status of load m1"
  run_ops_cap cpin pin "$(ref m1)"
  expect_mode cpin admin
  expect_eq "$(rc_of cpin)" 0 "exit status of pin"
  local slack
  slack="$(cap_img_bytes m2)"
  echo "ceiling $CAP_BYTES bytes; slack allowed right after a pull: one image ($slack bytes); settled: the ceiling"
  local v now settled max_now=0
  for v in m2 m3 m4 m5 m6; do
    sleep 1.1   # distinct last_pulled seconds: eviction order is well defined
    pull_skopeo "$OCI_CAP" "$v" "cap-$v" >/dev/null
    now="$(blob_bytes "$DATA_CAP")"
    settled="$now"
    for _ in $(seq 1 120); do
      [[ "$settled" -le "$CAP_BYTES" ]] && break
      sleep 0.1
      settled="$(blob_bytes "$DATA_CAP")"
    done
    echo "after pulling $v: blob files $now bytes right away, $settled bytes settled (du -sb blobs/sha256: $(du -sb "$DATA_CAP/blobs/sha256" | cut -f1)); cached: $(cap_refs "c-$v")"
    [[ $now -gt $max_now ]] && max_now=$now
    [[ "$now" -le $((CAP_BYTES + slack)) ]] || { echo "blob files $now bytes > ceiling + one image ($((CAP_BYTES + slack)))" >&2; return 1; }
    [[ "$settled" -le "$CAP_BYTES" ]] || { echo "blob files still $settled bytes > ceiling $CAP_BYTES after 12 s" >&2; return 1; }
  done
  echo "largest size seen right after a pull: $max_now bytes"
  local refs
  refs="$(cap_refs cap_final)"
  [[ " $refs" == *" $(ref m1) "* ]] || { echo "the pinned image m1 was evicted: $refs" >&2; return 1; }
  [[ " $refs" != *" $(ref m2) "* ]] || { echo "the oldest unpinned image m2 was not evicted: $refs" >&2; return 1; }
  [[ " $refs" == *" $(ref m6) "* ]] || { echo "the image pulled last (m6) was evicted: $refs" >&2; return 1; }
  jq -e --arg r "$(ref m1)" '(if type == "array" then . else .images end) | .[] | select(.reference == $r) | .pinned' \
    "$TMP/out/cap_final.out" >/dev/null || { echo "m1 not shown as pinned" >&2; return 1; }
  local d
  for d in $(cat "$TMP/expect/m1/amd64.blobs"); do
    [[ -f "$(blob_file "$d" "$DATA_CAP")" ]] || { echo "pinned m1's blob $d is gone" >&2; return 1; }
  done
  mark cm1 "$UPLOG"
  pull_skopeo "$OCI_CAP" m1 cap-m1
  settle_uplog
  expect_eq "$(since cm1 "$UPLOG" | count '"GET /v2/cap/m1/blobs/')" 0 "upstream blob GETs when pulling the pinned m1"
}

step_unpin() {
  local code
  code="$(curl -sS --max-time 20 --unix-socket "$DATA_CAP/admin.sock" -o "$TMP/pins.json" -w '%{http_code}' http://localhost/admin/v1/pins)"
  expect_eq "$code" 200 "GET /admin/v1/pins"
  jq -c . "$TMP/pins.json"
  expect_eq "$(jq -r '.pins | map(.reference) | join(" ")' "$TMP/pins.json")" "$(ref m1)" "pins"
  run_ops_cap cunpin unpin "$(ref m1)"
  expect_eq "$(rc_of cunpin)" 0 "exit status of unpin"
  curl -sS --max-time 20 --unix-socket "$DATA_CAP/admin.sock" -o "$TMP/pins.json" http://localhost/admin/v1/pins
  expect_eq "$(jq -r '.pins | length' "$TMP/pins.json")" 0 "pins after unpin"
  # cached now, least recently pulled first: m5, m6, m1 (pulled at the end of the previous step). Three more
  # pulls push all three out, m1 included now that it is no longer pinned.
  local v
  for v in m7 m2 m3; do
    sleep 1.1
    pull_skopeo "$OCI_CAP" "$v" "cap-$v" >/dev/null
  done
  local settled
  for _ in $(seq 1 120); do
    settled="$(blob_bytes "$DATA_CAP")"
    [[ "$settled" -le "$CAP_BYTES" ]] && break
    sleep 0.1
  done
  local refs
  refs="$(cap_refs cap_unpinned)"
  echo "cached after unpin and two more pulls: $refs ($settled bytes)"
  [[ " $refs" != *" $(ref m1) "* ]] || { echo "m1 was not evicted after unpin although older than everything cached" >&2; return 1; }
  # unpin of something not pinned
  run_ops_cap cunpin2 unpin "$(ref m1)"
  echo "unpin of a reference that is not pinned: exit $(rc_of cunpin2)"
}

# Eviction order counts a pull seconds ago, before the server has written it to the index (every 10 s).
step_cap_recent_pull() {
  # cached now, pulled in this order: m7, m2, m3. Pull m7 again, then a new image: m2 is the least recently
  # pulled and must go, not m7.
  local refs
  refs="$(cap_refs cap_pre)"
  echo "cached: $refs"
  sleep 1.1
  pull_skopeo "$OCI_CAP" m7 cap-m7-again >/dev/null
  sleep 1.1
  pull_skopeo "$OCI_CAP" m4 cap-m4-again >/dev/null
  local settled
  for _ in $(seq 1 120); do
    settled="$(blob_bytes "$DATA_CAP")"
    [[ "$settled" -le "$CAP_BYTES" ]] && break
    sleep 0.1
  done
  refs="$(cap_refs cap_post)"
  echo "cached after pulling m7 again and then m4: $refs ($settled bytes)"
  [[ " $refs" == *" $(ref m7) "* ]] || { echo "m7, pulled 1 s before, was evicted (its pull was not yet in the index)" >&2; return 1; }
  [[ " $refs" != *" $(ref m2) "* ]] || { echo "m2, the least recently pulled, was not evicted" >&2; return 1; }
}

step_stop_cap() { echo "capped instance stopped (status $(stop_bg oci-cap 15))"; }

# ---------------------------------------------------------------------------------------------------------
# admin HTTP API details (Unix socket)
# ---------------------------------------------------------------------------------------------------------
step_api_errors() {
  local code
  code="$(admin_api "/admin/v1/images?pattern=127.0.0.1:*/ops/e")"
  expect_eq "$code" 200 "GET /admin/v1/images?pattern="
  expect_eq "$(jq -r '.images | length' "$TMP/api.body")" 1 "images matching 127.0.0.1:*/ops/e"
  jq -e '.total | has("images") and has("blobs") and has("bytes")' "$TMP/api.body" >/dev/null || { echo "no total in /admin/v1/images" >&2; return 1; }
  code="$(admin_api /admin/v1/nope)"
  expect_eq "$code" 404 "unknown admin path"
  expect_eq "$(jq -r .error.code "$TMP/api.body")" NOT_FOUND "error code of an unknown admin path"
  code="$(admin_api /admin/v1/stats -X DELETE -D "$TMP/api.h")"
  expect_eq "$code" 405 "DELETE /admin/v1/stats"
  expect_eq "$(jq -r .error.code "$TMP/api.body")" METHOD_NOT_ALLOWED "error code of a wrong method"
  # the spec (schema/admin-openapi.yaml) says Allow is GET or POST; the server may add HEAD for GET endpoints
  [[ ",$(header_value "$TMP/api.h" Allow | tr -d ' ')," == *,GET,* ]] \
    || { echo "Allow header of the 405 is '$(header_value "$TMP/api.h" Allow)', not listing GET" >&2; return 1; }
  echo "Allow: $(header_value "$TMP/api.h" Allow)"
  code="$(admin_api /admin/v1/prune -X POST -H 'Content-Type: application/json' -d '{not json')"
  expect_eq "$code" 400 "POST /admin/v1/prune with a broken body"
  expect_eq "$(jq -r .error.code "$TMP/api.body")" BAD_REQUEST "error code of a broken body"
  code="$(admin_api /admin/v1/pin -X POST -H 'Content-Type: application/json' -d "{\"reference\":\"$UP/ops/never-cached:$TAG\"}")"
  expect_eq "$code" 404 "pin of an image that is not cached"
  expect_eq "$(jq -r .error.code "$TMP/api.body")" NOT_CACHED "error code of pinning an uncached image"
  # pinned images are not pruned by pattern; the API refuses or skips them
  code="$(admin_api /admin/v1/pin -X POST -H 'Content-Type: application/json' -d "{\"reference\":\"$(ref d)\"}")"
  expect_eq "$code" 200 "POST /admin/v1/pin d"
  code="$(admin_api /admin/v1/prune -X POST -H 'Content-Type: application/json' \
    -d "{\"older_than\":\"0s\",\"by\":\"last-pulled\",\"pattern\":\"$UP/ops/d\",\"keep_latest\":null,\"dry_run\":true}")"
  echo "dry-run prune of the pinned d: $code $(head -c 400 "$TMP/api.body")"
  if [[ $code == 200 ]]; then
    expect_eq "$(jq -r '.images | length' "$TMP/api.body")" 0 "images a prune would remove when the only match is pinned"
  else
    expect_eq "$code" 409 "prune of a pinned image"
  fi
  # removing a pinned image (invalidate by digest) is refused; a tag invalidation only drops the mapping
  local dref
  dref="$UP/ops/d@$(cat "$TMP/expect/d/index.digest")"
  code="$(admin_api /admin/v1/invalidate -X POST -H 'Content-Type: application/json' -d "{\"reference\":\"$dref\"}")"
  expect_eq "$code" 409 "invalidate by digest of the pinned d"
  expect_eq "$(jq -r .error.code "$TMP/api.body")" PINNED "error code of invalidating a pinned image by digest"
  run_ops pinned_cli invalidate "$dref"
  [[ "$(rc_of pinned_cli)" != 0 ]] || { echo "ociregistry invalidate by digest of a pinned image exited 0" >&2; return 1; }
  local d
  while read -r d; do
    is_manifest d "$d" && continue
    [[ -f "$(blob_file "$d" "$DATA")" ]] || { echo "pinned d's blob $d is gone" >&2; return 1; }
  done <"$TMP/expect/d/blobs.list"
  # the digest of a platform manifest of a cached index: 400 (invalidate the index instead)
  code="$(admin_api /admin/v1/invalidate -X POST -H 'Content-Type: application/json' \
    -d "{\"reference\":\"$UP/ops/e@$(cat "$TMP/expect/e/amd64.manifest")\"}")"
  expect_eq "$code" 400 "invalidate of a platform manifest's digest"
  expect_eq "$(jq -r .error.code "$TMP/api.body")" BAD_REQUEST "error code of invalidating a platform manifest's digest"
  code="$(admin_api /admin/v1/unpin -X POST -H 'Content-Type: application/json' -d "{\"reference\":\"$(ref d)\"}")"
  expect_eq "$code" 200 "POST /admin/v1/unpin d"
  expect_eq "$(jq -r .removed "$TMP/api.body")" true "removed in the unpin answer"
}

# ---------------------------------------------------------------------------------------------------------
# admin API on TCP with a bearer token
# ---------------------------------------------------------------------------------------------------------
ADMIN_TCP_SUPPORTED=0
SERVE_HELP="$("$OCIREGISTRY_BIN" serve --help 2>&1 || true)"
if grep -q -- '--admin-listen' <<<"$SERVE_HELP"; then ADMIN_TCP_SUPPORTED=1; fi

step_admin_tcp() {
  stop_oci
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/admin.token"
  echo >>"$TMP/admin.token"   # trailing newline: the token is the trimmed content
  chmod 0600 "$TMP/admin.token"
  start_oci --admin-listen "$ADMIN_TCP" --admin-token-file "$TMP/admin.token"
  local url="http://$ADMIN_TCP/admin/v1/stats" code tok
  tok="$(tr -d '\n' <"$TMP/admin.token")"
  for _ in $(seq 1 50); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)"
    [[ $code != 000 ]] && break
    sleep 0.1
  done
  code="$(curl -sS --max-time 10 -o "$TMP/tcp.body" -w '%{http_code}' "$url")"
  expect_eq "$code" 401 "admin TCP without a token"
  expect_eq "$(jq -r .error.code "$TMP/tcp.body")" UNAUTHORIZED "error code without a token"
  code="$(curl -sS --max-time 10 -o "$TMP/tcp.body" -w '%{http_code}' -H "Authorization: Bearer wrong$tok" "$url")"
  expect_eq "$code" 401 "admin TCP with a wrong token"
  code="$(curl -sS --max-time 10 -o "$TMP/tcp.body" -w '%{http_code}' -H "Authorization: Bearer $tok" "$url")"
  expect_eq "$code" 200 "admin TCP with the token"
  jq -e .images "$TMP/tcp.body" >/dev/null
  # the CLI through --server / --token-file
  local rc=0
  timeout "$CMD_TIMEOUT" "$OCIREGISTRY_BIN" list --config-file "$TMP/config.yaml" --server "http://$ADMIN_TCP" \
    --token-file "$TMP/admin.token" --pattern "$UP/ops/a" --output json >"$TMP/out/tcp.out" 2>"$TMP/out/tcp.err" || rc=$?
  cat "$TMP/out/tcp.err"
  expect_eq "$rc" 0 "exit status of list --server --token-file"
  expect_eq "$(refs_of "$TMP/out/tcp.out" | tr '\n' ' ')" "$(ref a) " "list through the TCP admin API"
  rc=0
  timeout "$CMD_TIMEOUT" "$OCIREGISTRY_BIN" list --config-file "$TMP/config.yaml" --server "http://$ADMIN_TCP" \
    --output json >"$TMP/out/tcp2.out" 2>"$TMP/out/tcp2.err" || rc=$?
  echo "list --server without a token: exit $rc: $(head -c 300 "$TMP/out/tcp2.err")"
  [[ $rc != 0 ]] || { echo "list --server without a token succeeded" >&2; return 1; }
}

# ---------------------------------------------------------------------------------------------------------
# 9. a database from another version
# ---------------------------------------------------------------------------------------------------------
step_old_db() {
  local old="$TMP/data-old" sum rc=0
  mkdir -p "$old/blobs"
  gzip -dc "$FIXTURE_REDB2" >"$old/index.redb"
  sum="$(sha256_of "$old/index.redb")"
  timeout 20 "$OCIREGISTRY_BIN" serve --listen "127.0.0.1:$OLDPORT" --data-dir "$old" \
    --config-file "$TMP/config.yaml" >"$TMP/out/old-serve.out" 2>&1 || rc=$?
  echo "serve on the old index: exit $rc"
  tail -n 5 "$TMP/out/old-serve.out"
  [[ $rc != 0 && $rc != 124 ]] || { echo "serve did not exit with an error (status $rc; 124 = still running after 20 s)" >&2; return 1; }
  grep -aqiE 'format' "$TMP/out/old-serve.out" || { echo "serve's message does not mention the file format" >&2; return 1; }
  grep -aqiE 'older ociregistry' "$TMP/out/old-serve.out" || { echo "serve's message does not mention an older ociregistry" >&2; return 1; }
  expect_eq "$(sha256_of "$old/index.redb")" "$sum" "sha256 of the old index after serve"
  rc=0
  timeout 20 "$OCIREGISTRY_BIN" list --config-file "$TMP/config.yaml" --data-dir "$old" --output json \
    >"$TMP/out/old-list.out" 2>"$TMP/out/old-list.err" || rc=$?
  echo "list on the old index: exit $rc"
  cat "$TMP/out/old-list.err"
  [[ $rc != 0 && $rc != 124 ]] || { echo "list did not exit with an error (status $rc)" >&2; return 1; }
  grep -aqiE 'format' "$TMP/out/old-list.err" || { echo "list's message does not mention the file format" >&2; return 1; }
  grep -aqiE 'older ociregistry' "$TMP/out/old-list.err" || { echo "list's message does not mention an older ociregistry" >&2; return 1; }
  expect_eq "$(sha256_of "$old/index.redb")" "$sum" "sha256 of the old index after list"
  [[ ! -S "$old/admin.sock" ]] || echo "note: an admin socket was left in $old"
}

step_final_stop() { stop_oci; }

# ---------------------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------------------
critical_step "upstream docker-registry starts" step_start_upstream
critical_step "build OCI image layouts (multi-platform, single with a shared layer, prune targets, 1 MiB images)" step_build_images
critical_step "skopeo pushes every image to the upstream" step_push
if [[ "$INFRA_ONLY" == 1 ]]; then
  write_configs
  critical_step "ociregistry serve starts (infrastructure check)" start_oci
  run_step "skopeo pulls every image through ociregistry (infrastructure check)" step_skopeo_loaded
  run_step "containerd pulls through hosts.toml (infrastructure check)" step_ctd_loaded
  run_step "20 concurrent clients, no prune (infrastructure check)" step_prune_concurrent
  finish || exit 1
  exit 0
fi
critical_step "ociregistry serve starts; admin socket mode 0600 answers GET /admin/v1/stats" step_start_oci
run_step "load --image-file (comments, blanks, 3 good, 'Bad Ref!', a missing image) via the server: good ones loaded, exit != 0, failures named with reasons" step_load_admin
run_step "load again: every blob already cached, no upstream blob GET" step_load_again_cached
run_step "ociregistry exits 0 on SIGTERM" step_stop_oci
run_step "load in direct mode (server stopped): --image-file (2 good, bad, missing: exit != 0, named), --image x9 --parallel 4 (exit 0)" step_load_direct
critical_step "ociregistry serve starts again" start_oci
run_step "DB locked by the server and no socket at --admin-socket: clear error, exit 1" step_locked_no_socket
critical_step "stop the upstream docker-registry" step_stop_upstream
run_step "upstream down: skopeo pulls every loaded image (all platforms), byte-exact" step_skopeo_loaded
run_step "upstream down: containerd pulls loaded images via hosts.toml (ns=) and unpacks them" step_ctd_loaded
run_step "list --output json: admin mode == direct mode; digests, platforms, sizes" step_list_admin_direct
run_step "list --pattern filters (exact, *, **), table with human sizes, yaml" step_list_pattern_table
run_step "stats --output json matches the blob files on disk" step_stats
run_step "prune --dry-run: reports the image, counts and bytes_freed, deletes nothing" step_prune_dry_run
run_step "prune --older-than 2s right after a pull (access times not yet flushed) keeps the image" step_prune_recent_pull
run_step "prune of an image sharing a layer: shared blob kept, kept image pulls completely (upstream down)" step_prune_shared
run_step "prune while 20 clients pull other images (upstream down): zero failures" step_prune_concurrent
critical_step "upstream docker-registry starts again" step_restart_upstream
run_step "crash leftovers: old stray blob files swept (prune, start-up), fresh one kept, deleted blob uncounted and re-fetched" step_crash_leftovers
run_step "invalidate: a tag -> next pull goes upstream (new manifest GET); a digest -> the image's blobs are gone; not cached -> error" step_invalidate
run_step "admin API over the socket: images?pattern, 404/405/400 errors, NOT_CACHED, pin/unpin, pinned not pruned" step_api_errors
run_step "max_cache_bytes: blob files stay under the ceiling, pinned image survives, oldest evicted" step_cap_pin
run_step "unpin: pin list empties, the unpinned image is evicted like any other" step_unpin
run_step "max_cache_bytes: an image pulled 1 s before (access time not yet flushed) is not the one evicted" step_cap_recent_pull
run_step "capped instance stops" step_stop_cap
if [[ $ADMIN_TCP_SUPPORTED -eq 1 ]]; then
  run_step "admin API on TCP: no/wrong token 401, bearer token 200, CLI --server --token-file" step_admin_tcp
else
  log "SKIP admin API on TCP with a bearer token (serve has no --admin-listen in this build)"
fi
run_step "index from an older version (redb 2): serve and list refuse with a clear message, file unchanged" step_old_db
run_step "ociregistry exits 0 on SIGTERM at the end" step_final_stop

finish || exit 1
