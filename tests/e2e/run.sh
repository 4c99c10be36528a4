#!/usr/bin/env bash
# End-to-end suite for ociregistry against real third-party software:
#   - Debian's docker-registry (Distribution 2.8) as the upstream registry,
#   - skopeo as a registry client (push to the upstream, pull through ociregistry),
#   - containerd + ctr as a mirror client (hosts.toml, `?ns=` routing),
#   - curl for raw HTTP checks of the in-path route.
# Everything listens on 127.0.0.1 only; all state lives in one `mktemp -d` dir that is removed on exit,
# and every process started here is stopped by the EXIT trap (also on failure or Ctrl-C).
#
# Env:
#   OCIREGISTRY_BIN   binary under test (default: <repo>/target/debug/ociregistry)
#   E2E_KEEP=1        keep the temp dir (logs, layouts) for debugging
#   E2E_VERBOSE=1     print every step's output, not only the output of failed steps
#   E2E_SNAPSHOTTER   containerd snapshotter used for unpacking (default: native; see below)
#   E2E_CMD_TIMEOUT   per-client-command timeout in seconds (default 180)
#
# Output: one `PASS name` / `FAIL name` line per step, then exactly one line `e2e: N passed, M failed`.
# Exit status: 0 iff no step failed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO_ROOT/tests/lib/harness.sh"
HARNESS_NAME=e2e
HARNESS_KEEP="${E2E_KEEP:-0}"
HARNESS_VERBOSE="${E2E_VERBOSE:-0}"
HARNESS_FAIL_TAIL=60
OCIREGISTRY_BIN="${OCIREGISTRY_BIN:-$REPO_ROOT/target/debug/ociregistry}"
CMD_TIMEOUT="${E2E_CMD_TIMEOUT:-180}"
# containerd's default snapshotter (overlayfs) needs kernel overlay support for the unpack mounts, which is
# not guaranteed inside CI sandboxes/containers; `native` (plain copies) works anywhere as root and still
# makes containerd decompress every layer and verify it against the config's rootfs.diff_ids.
SNAPSHOTTER="${E2E_SNAPSHOTTER:-native}"
TAG="v1"
REPO_APP="e2e/app"   # pulled by skopeo (default-registry route), curl (in-path route) and containerd (ns route)
REPO_CTD="e2e/ctd"   # pulled only by containerd, so its first pull through the mirror is cold

# MT_* media types, ACCEPT_MANIFESTS, expect_eq, sha256_of, header_value, put_blob, build_image, compare_layout
source "$REPO_ROOT/tests/e2e/lib-images.sh"

log() { printf '%s\n' "$*"; }
die() { printf 'e2e: error: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------------------
# Preconditions
# ---------------------------------------------------------------------------------------------------------
missing=()
for tool in docker-registry skopeo containerd ctr jq curl tar gzip sha256sum timeout cmp; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  die "missing tools: ${missing[*]} (run scripts/install-test-deps as root; Debian packages: docker-registry skopeo containerd jq curl)"
fi
# containerd (a system daemon: content store, snapshotter, metadata db) needs root.
[[ "$(id -u)" -eq 0 ]] || die "must run as root: the suite starts a real containerd"
[[ -x "$OCIREGISTRY_BIN" ]] || die "ociregistry binary not found or not executable: $OCIREGISTRY_BIN (cargo build first, or set OCIREGISTRY_BIN)"
OCIREGISTRY_BIN="$(cd "$(dirname "$OCIREGISTRY_BIN")" && pwd)/$(basename "$OCIREGISTRY_BIN")"

# Short base dir: containerd's unix socket path must stay below 108 bytes.
TMP="$(mktemp -d /tmp/ociregistry-e2e.XXXXXX)"
PIDDIR="$TMP/pids"
mkdir -p "$PIDDIR" "$TMP/steps" "$TMP/ok" "$TMP/expect" "$TMP/logs"

# ---------------------------------------------------------------------------------------------------------
# Process management, cleanup and steps: tests/lib/harness.sh (start_bg / is_running / stop_bg record each
# background process's real pid and exit status in $PIDDIR; the EXIT trap stops every process, also on
# failure or Ctrl-C). run_step NAME FUNC ARGS... runs FUNC in a subshell with errexit active, captures its
# output and prints PASS/FAIL; steps exchange data only through files in $TMP. run_step must NOT be called in a
# conditional context; it leaves the result in STEP_OK (1 = passed); critical_step aborts the suite when a
# prerequisite fails.
# ---------------------------------------------------------------------------------------------------------
# Snapshotters may leave mounts below the temp dir (overlayfs); never leave any behind.
harness_cleanup_hook() { unmount_below_tmp; }
harness_traps harness_cleanup

finish() {
  if [[ $FAILED -gt 0 ]]; then
    log "failed steps: ${FAILED_NAMES[*]}"
    dump_log_tails 40 600
  fi
  log "e2e: $PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}

# ---------------------------------------------------------------------------------------------------------
# Helpers used inside steps (pick_port, wait_http: tests/lib/harness.sh; expect_eq, sha256_of, header_value:
# tests/e2e/lib-images.sh)
# ---------------------------------------------------------------------------------------------------------
# largest_blob VARIANT ARCH: digest of the biggest blob of that platform (the random-data layer)
largest_blob() {
  local d="" x
  while read -r x; do
    if [[ -z "$d" || $(stat -c %s "$TMP/layout-$1/blobs/sha256/${x#sha256:}") -gt $(stat -c %s "$TMP/layout-$1/blobs/sha256/${d#sha256:}") ]]; then d="$x"; fi
  done <"$TMP/expect/$1/$2.blobs"
  echo "$d"
}

sk() { timeout "$CMD_TIMEOUT" skopeo "$@"; }

# ---------------------------------------------------------------------------------------------------------
# Step implementations
# ---------------------------------------------------------------------------------------------------------
pick_port UPPORT
pick_port OCIPORT
pick_port DEADPORT   # nothing ever listens here
UP="127.0.0.1:$UPPORT"
OCI="127.0.0.1:$OCIPORT"
echo "e2e: temp dir $TMP; upstream $UP; ociregistry $OCI; binary $OCIREGISTRY_BIN"

step_start_upstream() {
  start_docker_registry "$UP" "$TMP/logs/docker-registry.log" info
  echo "docker-registry serves http://$UP/v2/"
}

step_build_images() {
  build_image "$TMP/layout-app" app 4096
  build_image "$TMP/layout-ctd" ctd 2048
}

step_push() { # VARIANT REPO
  local variant=$1 repo=$2
  sk copy --all --preserve-digests --dest-tls-verify=false \
    "oci:$TMP/layout-$variant:$TAG" "docker://$UP/$repo:$TAG"
  local raw="$TMP/push-$variant.raw"
  sk inspect --raw --tls-verify=false "docker://$UP/$repo:$TAG" >"$raw"
  expect_eq "sha256:$(sha256_of "$raw")" "$(cat "$TMP/expect/$variant/index.digest")" "upstream index digest of $repo:$TAG"
  echo "pushed $repo:$TAG, upstream index digest $(cat "$TMP/expect/$variant/index.digest")"
}

write_ociregistry_config() {
  # default_registry points at the upstream because skopeo (like every docker-reference-based client) cannot
  # express the in-path form /v2/127.0.0.1:PORT/repo: a ':' is not allowed in a repository path component
  # ("invalid reference format"). The in-path route is checked with curl instead, the ns route with
  # containerd. tag_ttl is short so that the upstream-down steps exercise stale-if-error for tags.
  cat >"$TMP/config.yaml" <<EOF
log_level: info
default_registry: $UP
tag_ttl: 2s
registries:
  - name: $UP
    scheme: http
  - name: "127.0.0.1:$DEADPORT"
    scheme: http
EOF
}

# start_ociregistry LOGNAME: --listen/--data-dir/--config-file exactly as an operator would
start_ociregistry() {
  local logname=$1
  start_bg ociregistry "$TMP/logs/$logname.log" "$OCIREGISTRY_BIN" serve \
    --listen "$OCI" --data-dir "$TMP/data" --config-file "$TMP/config.yaml"
  wait_http "http://$OCI/v2/" 30 ociregistry
}

step_start_ociregistry() {
  write_ociregistry_config
  start_ociregistry ociregistry
  # contract: once bound, a line `listening on http://ADDR` with the real address appears on stderr
  local line addr=""
  for _ in $(seq 1 50); do
    line="$(grep -aoE 'listening on http://[0-9.:]+' "$TMP/logs/ociregistry.log" | head -n 1 || true)"
    if [[ -n "$line" ]]; then addr="${line#listening on http://}"; break; fi
    sleep 0.1
  done
  expect_eq "$addr" "$OCI" "address in the 'listening on http://' log line"
  echo "ociregistry answers 200 on http://$OCI/v2/ and logged '$line'"
}

step_base_endpoint() {
  local h="$TMP/base.h" b="$TMP/base.b" code
  code="$(curl -sS -D "$h" -o "$b" -w '%{http_code}' "http://$OCI/v2/")"
  expect_eq "$code" 200 "GET /v2/ status"
  expect_eq "$(header_value "$h" Docker-Distribution-API-Version)" "registry/2.0" "Docker-Distribution-API-Version header"
  expect_eq "$(jq -c . "$b")" "{}" "GET /v2/ body"
}

# skopeo, a real client, pulls the whole multi-platform image through ociregistry (default-registry route)
step_skopeo_pull() { # OUTNAME
  local out="$TMP/$1"
  sk copy --all --preserve-digests --src-tls-verify=false \
    "docker://$OCI/$REPO_APP:$TAG" "oci:$out:$TAG"
  compare_layout "$TMP/layout-app" "$out" app
  # and the manifests as seen by skopeo directly, by tag and by digest
  sk inspect --raw --tls-verify=false "docker://$OCI/$REPO_APP:$TAG" >"$TMP/$1.index.raw"
  expect_eq "sha256:$(sha256_of "$TMP/$1.index.raw")" "$(cat "$TMP/expect/app/index.digest")" "index via skopeo inspect --raw"
  local arch md
  for arch in amd64 arm64; do
    md="$(cat "$TMP/expect/app/$arch.manifest")"
    sk inspect --raw --tls-verify=false "docker://$OCI/$REPO_APP@$md" >"$TMP/$1.$arch.raw"
    expect_eq "sha256:$(sha256_of "$TMP/$1.$arch.raw")" "$md" "$arch manifest via skopeo inspect --raw"
  done
}

# http_get URL ACCEPT OUTFILE HEADERFILE [METHOD] -> prints status
http_get() {
  local url=$1 accept=$2 body=$3 hdr=$4 method=${5:-GET}
  if [[ $method == HEAD ]]; then
    curl -sS -I -H "Accept: $accept" -D "$hdr" -o /dev/null -w '%{http_code}' --max-time 60 "$url"
    : >"$body"
  else
    curl -sS -H "Accept: $accept" -D "$hdr" -o "$body" -w '%{http_code}' --max-time 120 "$url"
  fi
}

# check_object URL DIGEST KIND(manifest|blob) [EXPECTED_CONTENT_TYPE]
check_object() {
  local url=$1 digest=$2 kind=$3 ctype=${4:-} accept code
  local b="$TMP/obj.b" h="$TMP/obj.h"
  if [[ $kind == manifest ]]; then accept="$ACCEPT_MANIFESTS"; else accept="*/*"; fi
  code="$(http_get "$url" "$accept" "$b" "$h")"
  expect_eq "$code" 200 "GET $url status"
  expect_eq "sha256:$(sha256_of "$b")" "$digest" "sha256 of GET $url body"
  expect_eq "$(header_value "$h" Docker-Content-Digest)" "$digest" "Docker-Content-Digest of GET $url"
  expect_eq "$(header_value "$h" Content-Length)" "$(stat -c %s "$b")" "Content-Length of GET $url"
  if [[ -n "$ctype" ]]; then
    expect_eq "$(header_value "$h" Content-Type)" "$ctype" "Content-Type of GET $url"
  fi
  # HEAD agrees with GET
  code="$(http_get "$url" "$accept" "$b.head" "$h.head" HEAD)"
  expect_eq "$code" 200 "HEAD $url status"
  expect_eq "$(header_value "$h.head" Docker-Content-Digest)" "$digest" "Docker-Content-Digest of HEAD $url"
  expect_eq "$(header_value "$h.head" Content-Length)" "$(stat -c %s "$b")" "Content-Length of HEAD $url"
}

# In-path route /v2/127.0.0.1:UPPORT/e2e/app/...: index by tag, both manifests by digest, every blob by digest
step_inpath_curl() {
  local base="http://$OCI/v2/$UP/$REPO_APP" arch d
  check_object "$base/manifests/$TAG" "$(cat "$TMP/expect/app/index.digest")" manifest "$MT_INDEX"
  for arch in amd64 arm64; do
    check_object "$base/manifests/$(cat "$TMP/expect/app/$arch.manifest")" "$(cat "$TMP/expect/app/$arch.manifest")" manifest "$MT_MANIFEST"
    while read -r d; do
      [[ "$d" == "$(cat "$TMP/expect/app/$arch.manifest")" ]] && continue
      check_object "$base/blobs/$d" "$d" blob "application/octet-stream"
    done <"$TMP/expect/app/$arch.blobs"
  done
  echo "in-path route: index, 2 manifests and all blobs byte-exact with matching headers"
}

# ?ns= must select the upstream: the same repo/tag with ns naming a dead registry must fail with 502
# UNAVAILABLE (if ns were ignored, the default registry would answer 200), and ns naming the live upstream
# must give the index.
step_ns_routing() {
  local b="$TMP/ns.b" h="$TMP/ns.h" code
  code="$(http_get "http://$OCI/v2/$REPO_APP/manifests/$TAG?ns=$UP" "$ACCEPT_MANIFESTS" "$b" "$h")"
  expect_eq "$code" 200 "GET /v2/$REPO_APP/manifests/$TAG?ns=$UP status"
  expect_eq "sha256:$(sha256_of "$b")" "$(cat "$TMP/expect/app/index.digest")" "index digest via ns=$UP"
  # A listed upstream that is down: 502 UNAVAILABLE, without the connection error's text.
  code="$(http_get "http://$OCI/v2/$REPO_APP/manifests/$TAG?ns=127.0.0.1%3A$DEADPORT" "$ACCEPT_MANIFESTS" "$b" "$h")"
  expect_eq "$code" 502 "GET /v2/$REPO_APP/manifests/$TAG?ns=127.0.0.1%3A$DEADPORT status (unreachable upstream)"
  expect_eq "$(header_value "$h" Content-Type | cut -d';' -f1)" "application/json" "Content-Type of the error"
  expect_eq "$(jq -r '.errors[0].code' "$b")" "UNAVAILABLE" "error code for unreachable ns upstream"
  # same for the in-path route
  code="$(http_get "http://$OCI/v2/127.0.0.1:$DEADPORT/$REPO_APP/manifests/$TAG" "$ACCEPT_MANIFESTS" "$b" "$h")"
  expect_eq "$code" 502 "GET /v2/127.0.0.1:$DEADPORT/$REPO_APP/manifests/$TAG status (unreachable upstream)"
  expect_eq "$(jq -r '.errors[0].code' "$b")" "UNAVAILABLE" "error code for unreachable in-path upstream"
  if grep -qi "refused" "$b"; then echo "connection detail leaked to the client: $(cat "$b")" >&2; return 1; fi
  # An unlisted loopback upstream is not contacted at all: 403 DENIED naming the key that would allow it.
  local unlisted=$((DEADPORT == 65535 ? DEADPORT - 1 : DEADPORT + 1))
  code="$(http_get "http://$OCI/v2/127.0.0.1:$unlisted/$REPO_APP/manifests/$TAG" "$ACCEPT_MANIFESTS" "$b" "$h")"
  expect_eq "$code" 403 "GET /v2/127.0.0.1:$unlisted/... status (unlisted loopback upstream)"
  expect_eq "$(jq -r '.errors[0].code' "$b")" "DENIED" "error code for an unlisted loopback upstream"
  jq -r '.errors[0].message' "$b" | grep -q "registries:"
}

# Range request on a cached multi-MiB blob (containerd resumes interrupted downloads with Range).
step_range() {
  local d big h="$TMP/range.h" b="$TMP/range.b" code
  # the largest amd64 layer of app = the random-data layer
  big="$(ls -S "$TMP/layout-app/blobs/sha256" | head -n 1)"
  d="sha256:$big"
  code="$(curl -sS -H 'Range: bytes=1000-1999' -D "$h" -o "$b" -w '%{http_code}' --max-time 60 "http://$OCI/v2/$REPO_APP/blobs/$d")"
  expect_eq "$code" 206 "GET blob with Range: bytes=1000-1999 status"
  expect_eq "$(stat -c %s "$b")" 1000 "length of the 206 body"
  cmp "$b" <(tail -c +1001 "$TMP/layout-app/blobs/sha256/$big" | head -c 1000)
  expect_eq "$(header_value "$h" Content-Range)" "bytes 1000-1999/$(stat -c %s "$TMP/layout-app/blobs/sha256/$big")" "Content-Range"
}

# Several clients read the same cold blob at once: all get the right bytes, the upstream sees ONE GET for it.
# The arm64 random-data layer of e2e/ctd is never requested before this step (containerd pulls linux/amd64).
step_concurrent_cold() {
  local d
  d="$(largest_blob ctd arm64)"
  local before
  before="$(grep -acE "\"GET /v2/$REPO_CTD/blobs/$d " "$TMP/logs/docker-registry.log" || true)"
  expect_eq "$before" 0 "upstream GETs of $d before the step"
  local i pids=()
  for i in 1 2 3 4; do
    curl -sS -o "$TMP/conc.$i" --max-time 120 "http://$OCI/v2/$UP/$REPO_CTD/blobs/$d" &
    pids+=("$!")
  done
  for i in "${pids[@]}"; do wait "$i"; done
  for i in 1 2 3 4; do
    expect_eq "sha256:$(sha256_of "$TMP/conc.$i")" "$d" "digest of concurrent reader $i's body"
  done
  # docker-registry writes its access-log line after the response: wait for it, then a little longer so
  # that a second (wrong) upstream GET would show up too
  local n=0
  for _ in $(seq 1 50); do
    n="$(grep -acE "\"GET /v2/$REPO_CTD/blobs/$d " "$TMP/logs/docker-registry.log" || true)"
    [[ "$n" -ge 1 ]] && break
    sleep 0.1
  done
  sleep 1
  n="$(grep -acE "\"GET /v2/$REPO_CTD/blobs/$d " "$TMP/logs/docker-registry.log" || true)"
  expect_eq "$n" 1 "number of upstream GETs for $d after 4 concurrent cold readers"
}

# containerd ---------------------------------------------------------------------------------------------
# start_mirror_containerd NAME: containerd (tests/lib/harness.sh) with ociregistry as the mirror of the upstream;
# the upstream itself stays the fallback `server`.
start_mirror_containerd() {
  mirror_hosts "$UP" "$OCI" "http://$UP"
  start_containerd "$1"
}

ctr_() { # NAME ARGS...
  local name=$1
  shift
  timeout "$CMD_TIMEOUT" ctr --address "$TMP/$name/ctd.sock" "$@"
}

# ctd_pull CTD VARIANT REPO: real `ctr images pull` (with unpack) of linux/amd64 through the mirror, then
# verify the image target digest and that the amd64 manifest, config and layers are in the content store
# and that the image is complete and unpacked.
ctd_pull() {
  local ctd=$1 variant=$2 repo=$3
  [[ -e "$TMP/ok/$ctd" ]] || { echo "containerd $ctd is not running" >&2; return 1; }
  local ref="$UP/$repo:$TAG"
  ctr_ "$ctd" images pull --hosts-dir "$TMP/hosts" --plain-http --platform linux/amd64 \
    --snapshotter "$SNAPSHOTTER" "$ref"
  local target
  target="$(ctr_ "$ctd" images ls | awk -v r="$ref" '$1 == r { print $3 }')"
  expect_eq "$target" "$(cat "$TMP/expect/$variant/index.digest")" "containerd image target digest of $ref"
  local have d
  have="$(ctr_ "$ctd" content ls -q)"
  while read -r d; do
    if ! grep -qxF "$d" <<<"$have"; then
      echo "blob $d (linux/amd64) missing from containerd's content store" >&2
      return 1
    fi
  done <"$TMP/expect/$variant/amd64.blobs"
  # `ctr images check` (with the snapshotter used for the pull): all content present and unpacked
  local check line
  check="$(ctr_ "$ctd" images check --snapshotter "$SNAPSHOTTER" "name==$ref")"
  echo "$check"
  line="$(awk -v r="$ref" '$1 == r' <<<"$check")"
  [[ "$line" == *complete* ]] || { echo "image $ref not complete in containerd" >&2; return 1; }
  [[ "$(awk '{ print $NF }' <<<"$line")" == "true" ]] || { echo "image $ref not unpacked by containerd" >&2; return 1; }
  echo "containerd pulled and unpacked $ref ($target)"
}

count_log_lines() { # REGEX
  grep -acE "$1" "$TMP/logs/ociregistry.log" || true
}

# The first containerd pull of e2e/ctd is cold: ociregistry must fetch everything from the upstream while
# streaming it to containerd. Proof that it went through ociregistry: new access-log lines for /v2/e2e/ctd/
# (nothing else ever requests that repository from ociregistry).
# ctd_pull_through CTD VARIANT REPO: containerd pulls REPO through the mirror; at least 5 requests for it
# (manifest by tag, the amd64 manifest, config and 2 layers) must show in ociregistry's access log.
ctd_pull_through() {
  local before after
  before="$(count_log_lines "/v2/$3/(manifests|blobs)/")"
  ctd_pull "$1" "$2" "$3"
  settle_access_log
  after="$(count_log_lines "/v2/$3/(manifests|blobs)/")"
  echo "ociregistry access log: $((after - before)) requests for /v2/$3/ during the pull"
  [[ $((after - before)) -ge 5 ]] || { echo "containerd's requests did not reach ociregistry" >&2; return 1; }
}

step_ctd_pull_cold() {
  ctd_pull_through ctd1 ctd "$REPO_CTD"
  local ns
  ns="$(grep -acE "ns=127\.0\.0\.1(%3A|:)$UPPORT" "$TMP/logs/ociregistry.log" || true)"
  echo "access-log lines showing ns=$UP: $ns (informational: the contract does not require the query in the log)"
}

step_ctd_pull_warm() {
  ctd_pull_through ctd1 app "$REPO_APP"
}

# contract: blobs are stored content-addressed as <data-dir>/blobs/sha256/ab/abcdef...
step_cache_store() {
  local v d h f n=0
  for v in app ctd; do
    local list="$TMP/expect/$v/blobs.list"
    [[ $v == ctd ]] && list="$TMP/expect/$v/amd64.blobs"   # containerd fetched linux/amd64 only
    while read -r d; do
      h="${d#sha256:}"
      f="$TMP/data/blobs/sha256/${h:0:2}/$h"
      if [[ ! -f "$f" ]]; then
        # manifests may legitimately live in the index database instead of the blob store
        if grep -qxF "$d" "$TMP/expect/$v/"*.manifest 2>/dev/null || [[ "$d" == "$(cat "$TMP/expect/$v/index.digest")" ]]; then
          continue
        fi
        echo "blob $d not found at $f" >&2
        return 1
      fi
      expect_eq "sha256:$(sha256_of "$f")" "$d" "content of cached $f"
      n=$((n + 1))
    done <"$list"
  done
  [[ -f "$TMP/data/index.redb" ]] || { echo "missing $TMP/data/index.redb" >&2; return 1; }
  echo "$n blobs stored content-addressed under $TMP/data/blobs, index.redb present"
}

# Contract: one access-log line per request on stderr containing method, path, status and
# `cache=hit|miss|-`. Checked on containerd's requests for the amd64 random-data layers: e2e/ctd's was cold
# (cache=miss), e2e/app's had been cached by the earlier skopeo pull (cache=hit). The log is matched as
# written, the way harnesses read it.
step_access_log() {
  local logf="$TMP/logs/ociregistry.log" d lines
  settle_access_log
  d="$(largest_blob ctd amd64)"
  lines="$(grep -aF "/v2/$REPO_CTD/blobs/$d" "$logf" | grep -aF 'ns=' || true)"
  [[ -n "$lines" ]] || { echo "no access-log line for containerd's GET /v2/$REPO_CTD/blobs/$d?ns=..." >&2; return 1; }
  echo "containerd's cold layer request as logged:"
  echo "$lines" | cat -v
  grep -aqE 'GET' <<<"$lines" || { echo "access-log line lacks the method GET" >&2; return 1; }
  grep -aqE '(^|[^0-9a-f])200([^0-9a-f]|$)' <<<"$lines" || { echo "access-log line lacks the status 200" >&2; return 1; }
  grep -aqE 'cache=miss' <<<"$lines" || { echo "access-log line for a cold blob lacks 'cache=miss'" >&2; return 1; }
  d="$(largest_blob app amd64)"
  lines="$(grep -aF "/v2/$REPO_APP/blobs/$d" "$logf" | grep -aF 'ns=' || true)"
  [[ -n "$lines" ]] || { echo "no access-log line for containerd's GET /v2/$REPO_APP/blobs/$d?ns=..." >&2; return 1; }
  echo "containerd's warm layer request as logged:"
  echo "$lines" | cat -v
  grep -aqE 'cache=hit' <<<"$lines" || { echo "access-log line for a cached blob lacks 'cache=hit'" >&2; return 1; }
  if grep -aq $'\e\[' "$logf"; then
    echo "note: the log contains ANSI escape sequences although stderr is a file, not a terminal" >&2
  fi
}

step_stop_upstream() {
  local rc
  rc="$(stop_bg upstream 10)"
  echo "docker-registry stopped (status $rc)"
  if curl -s -o /dev/null --max-time 2 "http://$UP/v2/"; then
    echo "upstream still answers" >&2
    return 1
  fi
  # make every cached tag mapping older than tag_ttl (2s), so tag lookups must use stale-if-error
  sleep 3
}

# A brand-new containerd (empty content store) pulls both images while the upstream is down: only
# ociregistry can serve them.
step_ctd_fresh_pull_upstream_down() {
  stop_bg ctd1 10 >/dev/null
  rm -f "$TMP/ok/ctd1"
  start_mirror_containerd ctd2
  local have
  have="$(ctr_ ctd2 content ls -q)"
  [[ -z "$have" ]] || { echo "fresh containerd content store is not empty" >&2; return 1; }
  ctd_pull ctd2 app "$REPO_APP"
  ctd_pull ctd2 ctd "$REPO_CTD"
}

step_graceful_shutdown() {
  local rc
  rc="$(stop_bg ociregistry 15)"
  expect_eq "$rc" 0 "ociregistry exit status after SIGTERM"
}

# Restart on the same data dir (upstream still down): the persisted index and blobs serve everything.
step_restart_persistence() {
  start_ociregistry ociregistry-restart
  sk copy --all --preserve-digests --src-tls-verify=false \
    "docker://$OCI/$REPO_APP:$TAG" "oci:$TMP/pull-restart:$TAG"
  compare_layout "$TMP/layout-app" "$TMP/pull-restart" app
  check_object "http://$OCI/v2/$UP/$REPO_CTD/manifests/$TAG" "$(cat "$TMP/expect/ctd/index.digest")" manifest "$MT_INDEX"
}

# ---------------------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------------------
critical_step "upstream docker-registry starts" step_start_upstream
critical_step "build OCI image layouts (2 platforms, gzip'd tar layers)" step_build_images
critical_step "skopeo pushes $REPO_APP:$TAG (index) to upstream" step_push app "$REPO_APP"
critical_step "skopeo pushes $REPO_CTD:$TAG (index) to upstream" step_push ctd "$REPO_CTD"
critical_step "ociregistry serve starts and answers GET /v2/" step_start_ociregistry
run_step "GET /v2/ headers and body" step_base_endpoint
run_step "skopeo pull --all through ociregistry (cold, default-registry route): same index and blob digests" step_skopeo_pull pull-cold
run_step "in-path route /v2/$UP/$REPO_APP: manifests and blobs byte-exact" step_inpath_curl
run_step "ns= query selects the upstream (listed dead -> 502 UNAVAILABLE, unlisted loopback -> 403 DENIED)" step_ns_routing
run_step "Range request on a blob -> 206 with the right bytes" step_range
run_step "4 concurrent cold readers of one blob -> 1 upstream GET, all bodies correct" step_concurrent_cold
run_step "containerd starts" start_mirror_containerd ctd1
run_step "containerd pulls $REPO_CTD via mirror (cold, ns route) and unpacks" step_ctd_pull_cold
run_step "containerd pulls $REPO_APP via mirror (warm, ns route) and unpacks" step_ctd_pull_warm
run_step "access log: method, path, status, cache=miss (cold) / cache=hit (warm)" step_access_log
run_step "cache store holds content-addressed blobs" step_cache_store
run_step "stop upstream docker-registry" step_stop_upstream
run_step "skopeo pull --all with upstream down (tag past tag_ttl: stale-if-error): same digests" step_skopeo_pull pull-upstream-down
run_step "fresh containerd pulls both images with upstream down (only ociregistry can serve)" step_ctd_fresh_pull_upstream_down
run_step "ociregistry exits 0 on SIGTERM" step_graceful_shutdown
run_step "ociregistry restarted on same data dir serves from persisted cache (upstream down)" step_restart_persistence

finish || exit 1
