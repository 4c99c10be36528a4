#!/usr/bin/env bash
# The observability/ directory checked against the real server and a real Prometheus (scripts/test observability):
#
#   1. promtool check config observability/prometheus.yml, check rules, and the alerts' unit tests
#      (promtool test rules observability/rules/ociregistry.rules.test.yml);
#   2. the dashboards are Grafana JSON (schemaVersion, unique panel ids, every query on the ${datasource}
#      variable), the provisioning files name them, observability/start-containers passes `bash -n` and its
#      --dry-run prints the two containers;
#   3. target/debug/ociregistry serve --metrics PORT against tests/observability/upstream.py (a scripted upstream),
#      a pull sequence with curl (cold and cached pulls, a fill joined by 3 clients, an unknown tag, a failing
#      upstream, a blob too large for the disk, a blob from a slow upstream, a stale tag revalidated, a prune;
#      metrics_client_networks names the loopback clients' site), then GET /metrics: promtool check metrics
#      passes, and the sequence shows in it;
#   4. every metric name the dashboards and alert rules use is in that scrape (none missing: this fails
#      rather than skipping a metric the server does not export);
#   5. Debian's prometheus, started with observability/prometheus.yml (target and interval changed to this
#      server and 1 s) and the rules: its HTTP API returns ociregistry_http_requests_total with the values of
#      the scrape, every dashboard query is valid and returns data, the rules are healthy and
#      RateLimitNearlyExhausted fires (the upstream says 7 requests are left).
#
# Everything listens on 127.0.0.1 (free ports); the EXIT trap stops every process. Needs promtool and
# prometheus (Debian package prometheus: run as root and this script installs it), curl, python3, and
# target/debug/ociregistry (OCIREGISTRY_BIN overrides). OBS_KEEP=1 keeps the temp directory, OBS_VERBOSE=1
# prints every step's output.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OBS="$REPO_ROOT/observability"
HERE="$REPO_ROOT/tests/observability"
OCIREGISTRY_BIN="${OCIREGISTRY_BIN:-$REPO_ROOT/target/debug/ociregistry}"
PYTHON="${PYTHON:-python3}"

# shellcheck source=tests/lib/harness.sh
source "$REPO_ROOT/tests/lib/harness.sh"
HARNESS_NAME=observability
HARNESS_KEEP="${OBS_KEEP:-0}"
HARNESS_VERBOSE="${OBS_VERBOSE:-0}"
HARNESS_PYTHON="$PYTHON"

log() { printf 'observability: %s\n' "$*"; }
die() { printf 'observability: error: %s\n' "$*" >&2; exit 2; }

# --- prerequisites ----------------------------------------------------------------------------------------
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  if [[ "$(id -u)" -eq 0 ]]; then
    log "promtool/prometheus missing: installing Debian's prometheus package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends prometheus >/dev/null \
      || { apt-get update >/dev/null && apt-get install -y --no-install-recommends prometheus >/dev/null; }
    # The package's service is not wanted (policy-rc.d usually stops it from starting in containers).
  else
    die "promtool/prometheus missing; run as root: apt-get install -y prometheus (or scripts/install-test-deps)"
  fi
fi
for c in promtool prometheus curl "$PYTHON"; do
  command -v "$c" >/dev/null 2>&1 || die "$c is not installed"
done
[[ -x "$OCIREGISTRY_BIN" ]] || die "$OCIREGISTRY_BIN is missing (cargo build --bin ociregistry)"

TMP="$(mktemp -d /tmp/ociregistry-observability.XXXXXX)"
PIDDIR="$TMP/pids"
mkdir -p "$PIDDIR" "$TMP/steps" "$TMP/logs"
harness_traps harness_cleanup

pick_port UPPORT
pick_port OCIPORT
pick_port METRICSPORT
pick_port PROMPORT
UP="127.0.0.1:$UPPORT"
OCI="http://127.0.0.1:$OCIPORT"
METRICS="http://127.0.0.1:$METRICSPORT/metrics"
PROM="http://127.0.0.1:$PROMPORT"
SCRAPE="$TMP/scrape.txt"
DASHBOARDS=("$OBS/grafana/dashboards/process.json" "$OBS/grafana/dashboards/registry.json")
RULES="$OBS/rules/ociregistry.rules.yml"

check() { "$PYTHON" "$HERE/metrics_check.py" "$@"; }

finish() {
  if [[ $FAILED -gt 0 ]]; then
    log "failed: ${FAILED_NAMES[*]}"
    dump_log_tails 15 300
  fi
  log "$PASSED passed, $FAILED failed ($SECONDS s)"
  [[ $FAILED -eq 0 ]]
}

# --- 1. promtool ------------------------------------------------------------------------------------------
step_promtool_config() { promtool check config "$OBS/prometheus.yml"; }
step_promtool_rules() { promtool check rules "$RULES"; }
step_promtool_test_rules() {
  (cd "$OBS/rules" && promtool test rules ociregistry.rules.test.yml)
  # every alert of the rules has a test group of its own
  local alert
  for alert in $(sed -n 's/^ *- alert: *//p' "$RULES"); do
    grep -q "alertname: $alert\$" "$OBS/rules/ociregistry.rules.test.yml" || { echo "no unit test of $alert" >&2; return 1; }
  done
}

# --- 2. Grafana files, start-containers -------------------------------------------------------------------
step_grafana_files() {
  "$PYTHON" - "${DASHBOARDS[@]}" <<'EOF'
import json, sys
bad = 0
uids = set()
for path in sys.argv[1:]:
    d = json.load(open(path))
    assert 36 <= d["schemaVersion"] <= 41, f"{path}: schemaVersion {d['schemaVersion']}"
    assert d["uid"] not in uids, f"{path}: uid {d['uid']} used twice"
    uids.add(d["uid"])
    names = [v["name"] for v in d["templating"]["list"]]
    assert "datasource" in names, f"{path}: no datasource variable"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), f"{path}: duplicate panel ids"
    targets = 0
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, f"{path}: {p['title']} is wider than the grid"
        assert p["datasource"]["uid"] == "${datasource}", f"{path}: {p['title']} does not use ${{datasource}}"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", f"{path}: {p['title']} target on another data source"
            targets += 1
    print(f"{path}: {d['title']}: {len(ids)} panels, {targets} queries")
EOF
  grep -q 'url: http://localhost:9090' "$OBS/grafana/provisioning/datasources/prometheus.yml"
  grep -q 'uid: prometheus' "$OBS/grafana/provisioning/datasources/prometheus.yml"
  grep -q 'path: /observability/grafana/dashboards' "$OBS/grafana/provisioning/dashboards/ociregistry.yml"
}

step_start_containers() {
  bash -n "$OBS/start-containers"
  local out
  out="$("$OBS/start-containers" --dry-run --engine podman)"
  printf '%s\n' "$out"
  grep -q '^podman run -d --name ociregistry-prometheus --network host .*prom/prometheus' <<<"$out"
  grep -q '^podman run -d --name ociregistry-grafana --network host .*grafana/grafana' <<<"$out"
  grep -q 'http://localhost:3000 .*admin / admin' <<<"$out"
  out="$("$OBS/start-containers" --dry-run --stop --engine docker)"
  grep -q '^docker rm -f ociregistry-grafana' <<<"$out"
}

# --- 3. the server and a pull sequence --------------------------------------------------------------------
step_start_upstream() {
  start_bg upstream "$TMP/logs/upstream.log" "$PYTHON" -u "$HERE/upstream.py" "$UPPORT"
  wait_http "http://$UP/v2/" 20 upstream
}

step_start_server() {
  cat >"$TMP/config.yaml" <<EOF
default_registry: "$UP"
tag_ttl: 1s
max_cache_bytes: 1GiB
metrics_client_networks:
  loopback: [127.0.0.0/8]
registries:
  - name: "$UP"
    scheme: http
EOF
  start_bg ociregistry "$TMP/logs/ociregistry.log" env NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 \
    "$OCIREGISTRY_BIN" serve --listen "127.0.0.1:$OCIPORT" --metrics "$METRICSPORT" \
    --data-dir "$TMP/data" --config-file "$TMP/config.yaml"
  wait_http "$OCI/v2/" 30 ociregistry
  wait_http "$METRICS" 10 ociregistry
}

# expect STATUS CURL_ARGS...: one request, its status must be STATUS.
expect() {
  local want=$1 got
  shift
  got="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" || true)"
  [[ "$got" == "$want" ]] || { echo "curl $*: status $got, expected $want" >&2; return 1; }
  echo "$want curl $*"
}

sha256_of() { "$PYTHON" -c 'import hashlib, sys; print("sha256:" + hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"; }

step_pull_sequence() {
  local manifest config layer huge i code pids=()
  expect 200 "$OCI/v2/"
  expect 200 -I "$OCI/v2/good/app/manifests/v1" # cold: from the upstream
  manifest="$(curl -sf "$OCI/v2/good/app/manifests/v1")"
  config="$(printf '%s' "$manifest" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["config"]["digest"])')"
  layer="$(printf '%s' "$manifest" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["digest"])')"
  expect 200 "$OCI/v2/good/app/manifests/v1"
  expect 200 -I "$OCI/v2/good/app/manifests/v1"
  expect 200 "$OCI/v2/good/app/blobs/$config" # miss
  expect 200 "$OCI/v2/good/app/blobs/$config" # hit
  # 4 clients at once on a layer the upstream sends in 1.6 s: one fill, 3 joins
  for i in 1 2 3 4; do
    curl -sf --max-time 20 -o "$TMP/layer.$i" "$OCI/v2/good/app/blobs/$layer" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i"; done
  for i in 1 2 3 4; do
    [[ "$(sha256_of "$TMP/layer.$i")" == "$layer" ]] || { echo "client $i got a wrong layer" >&2; return 1; }
  done
  echo "4 concurrent pulls of $layer ok"
  expect 200 "$OCI/v2/good/app/blobs/$layer" # hit
  expect 404 "$OCI/v2/good/app/manifests/nope"   # MANIFEST_UNKNOWN
  expect 404 "$OCI/v2/good/app/blobs/sha256:$(printf '%064d' 0)"
  expect 502 "$OCI/v2/broken/app/manifests/v1"   # the upstream answers 500
  # referrers: the upstream has no referrers API (404); the answer is not the point, the endpoint label is
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$OCI/v2/good/app/referrers/$(sha256_of <(printf '%s' "$manifest"))" || true)"
  [[ "$code" == 200 || "$code" == 404 ]] || { echo "referrers: status $code, expected 200 or 404" >&2; return 1; }
  echo "$code referrers"
  # a blob that announces 2^60 bytes: no disk holds it, so it is streamed uncached; the client stops early
  huge="sha256:$(printf 'a blob no disk can hold' | sha256sum | cut -d' ' -f1)"
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 --max-filesize 1048576 "$OCI/v2/good/app/blobs/$huge" || true)"
  [[ "$code" == "200" ]] || { echo "the huge blob: status $code, expected 200 (streamed uncached)" >&2; return 1; }
  echo "200 huge blob (streamed uncached, client stopped early)"
  # a slow upstream: BIG (1.5 MiB, no manifest's) comes in 2.4 s, under metrics_slow_download_bytes_per_sec's
  # 1 MiB/s: a slow download (cache miss)
  big="sha256:$("$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]); import upstream; print(upstream.digest(upstream.BIG))' "$HERE" | cut -d: -f2)"
  curl -sf --max-time 20 -o "$TMP/big" "$OCI/v2/good/app/blobs/$big"
  [[ "$(sha256_of "$TMP/big")" == "$big" ]] || { echo "the slow blob arrived wrong" >&2; return 1; }
  for i in $(seq 1 50); do
    curl -sf "$METRICS" >"$SCRAPE"
    [[ -n "$(check sample "$SCRAPE" ociregistry_slow_downloads_total)" ]] && break
    sleep 0.1
  done
  echo "slow downloads: $(check sample "$SCRAPE" ociregistry_slow_downloads_total)"
  # tag_ttl is 1 s: the tag is stale now, served while revalidated in the background
  sleep 1.2
  expect 200 "$OCI/v2/good/app/manifests/v1"
  # an image of its own, pruned by the operator (a manual prune)
  expect 200 "$OCI/v2/good/old/manifests/v1"
  "$OCIREGISTRY_BIN" prune --data-dir "$TMP/data" --pattern "$UP/good/old:v1"
  expect 200 -I "$OCI/v2/good/app/manifests/v1" # still there
  # the revalidation is done in the background: wait for it
  for i in $(seq 1 50); do
    curl -sf "$METRICS" >"$SCRAPE"
    [[ -n "$(check sample "$SCRAPE" ociregistry_tag_revalidations_total)" ]] && break
    sleep 0.1
  done
}

step_scrape() {
  curl -sf -D "$TMP/scrape.headers" "$METRICS" >"$SCRAPE"
  grep -qi '^content-type: text/plain; version=0.0.4' "$TMP/scrape.headers"
  echo "$(grep -vc '^#' "$SCRAPE") samples"
  promtool check metrics <"$SCRAPE"
}

# The pull sequence, as the scrape tells it (the names the dashboards use are step_names' business).
step_sequence_counted() {
  local -a expectations=(
    "ociregistry_http_requests_total endpoint=manifest status=200"
    "ociregistry_http_requests_total endpoint=manifest status=502"
    "ociregistry_http_errors_total code=MANIFEST_UNKNOWN"
    "ociregistry_manifest_pulls_total namespace=$UP source=cache"
    "ociregistry_manifest_pulls_total namespace=$UP source=upstream"
    "ociregistry_blob_pulls_total namespace=$UP source=cache"
    "ociregistry_blob_pulls_total namespace=$UP source=upstream"
    "ociregistry_fill_joins_total"
    "ociregistry_uncached_blobs_total"
    "ociregistry_upstream_errors_total namespace=$UP reason=5xx"
    "ociregistry_stale_tags_served_total namespace=$UP reason=revalidating"
    "ociregistry_tag_revalidations_total namespace=$UP result=unchanged"
    "ociregistry_prune_runs_total trigger=manual"
    "ociregistry_pruned_images_total trigger=manual"
    "ociregistry_hot_cache_requests_total result=hit"
    "ociregistry_slow_downloads_total cache=miss"
    "ociregistry_client_requests_total network=loopback cache=hit"
    "ociregistry_client_requests_total network=loopback cache=miss"
  )
  local e v bad=0
  for e in "${expectations[@]}"; do
    # shellcheck disable=SC2086
    v="$(check sample "$SCRAPE" $e)"
    if [[ -z "$v" || "$v" == 0 ]]; then
      echo "expected a positive $e, got ${v:-no series}" >&2
      bad=1
    else
      echo "$e = $v"
    fi
  done
  v="$(check sample "$SCRAPE" ociregistry_upstream_ratelimit_remaining "namespace=$UP")"
  [[ "$v" == 7 ]] || { echo "ociregistry_upstream_ratelimit_remaining{namespace=$UP} is ${v:-missing}, the upstream said 7" >&2; bad=1; }
  v="$(check sample "$SCRAPE" ociregistry_max_cache_bytes)"
  [[ "$v" == 1073741824 ]] || { echo "ociregistry_max_cache_bytes is ${v:-missing}, configured 1GiB" >&2; bad=1; }
  [[ $bad -eq 0 ]]
}

# --- 4. names ---------------------------------------------------------------------------------------------
step_names() { check names "$SCRAPE" "${DASHBOARDS[@]}" "$RULES"; }

# --- 5. Prometheus ----------------------------------------------------------------------------------------
step_start_prometheus() {
  mkdir -p "$TMP/prometheus/data"
  # the shipped config, pointed at this server and scraping every second
  sed -e "s/localhost:2112/127.0.0.1:$METRICSPORT/" -e 's/: 15s$/: 1s/' "$OBS/prometheus.yml" >"$TMP/prometheus/prometheus.yml"
  grep -q "127.0.0.1:$METRICSPORT" "$TMP/prometheus/prometheus.yml"
  grep -q 'scrape_interval: 1s' "$TMP/prometheus/prometheus.yml"
  cp -r "$OBS/rules" "$TMP/prometheus/rules"
  promtool check config "$TMP/prometheus/prometheus.yml" >/dev/null
  start_bg prometheus "$TMP/logs/prometheus.log" prometheus \
    --config.file="$TMP/prometheus/prometheus.yml" \
    --storage.tsdb.path="$TMP/prometheus/data" \
    --web.listen-address="127.0.0.1:$PROMPORT"
  wait_http "$PROM/-/ready" 30 prometheus
}

step_prometheus_series() {
  local i n=0
  for i in $(seq 1 150); do
    is_running prometheus || { echo "prometheus exited" >&2; return 1; }
    n="$(curl -sf "$PROM/api/v1/query?query=ociregistry_http_requests_total" \
      | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))' || echo 0)"
    [[ "$n" -gt 0 ]] && break
    sleep 0.1
  done
  [[ "$n" -gt 0 ]] || { echo "prometheus has no ociregistry_http_requests_total after 15 s" >&2; return 1; }
  echo "ociregistry_http_requests_total: $n series after $((i / 10)).$((i % 10)) s"
  # no request since the scrape: Prometheus holds exactly its values
  curl -sf "$METRICS" >"$TMP/scrape2.txt"
  check same-series "$TMP/scrape2.txt" "$PROM" ociregistry_http_requests_total
}

step_prometheus_dashboards() {
  # rates over 1m need two samples; a few scrapes
  sleep 3
  check dashboard-queries "$PROM" "${DASHBOARDS[@]}"
}

step_prometheus_rules() {
  local i
  for i in $(seq 1 50); do
    check rules "$PROM" ociregistry RateLimitNearlyExhausted >"$TMP/rules.out" 2>&1 && break
    sleep 0.1
  done
  cat "$TMP/rules.out"
  check rules "$PROM" ociregistry RateLimitNearlyExhausted >/dev/null
}

step_server_healthy() {
  is_running ociregistry || { echo "ociregistry exited (status $(cat "$PIDDIR/ociregistry.rc"))" >&2; return 1; }
  if grep -E ' (ERROR|panicked)' "$TMP/logs/ociregistry.log"; then
    echo "the server logged errors" >&2
    return 1
  fi
}

log "upstream $UP, ociregistry $OCI (metrics $METRICS), prometheus $PROM, temp $TMP"
run_step "promtool check config observability/prometheus.yml" step_promtool_config
run_step "promtool check rules observability/rules/ociregistry.rules.yml" step_promtool_rules
run_step "promtool test rules: every alert fires and stays quiet as its unit tests say" step_promtool_test_rules
run_step "Grafana dashboards and provisioning files" step_grafana_files
run_step "observability/start-containers: bash -n, --dry-run" step_start_containers
critical_step "scripted upstream starts on $UP (tests/observability/upstream.py)" step_start_upstream
critical_step "ociregistry serve --metrics $METRICSPORT starts" step_start_server
run_step "pull sequence (cold, cached, joined fill, errors, uncached blob, slow download, stale tag, prune)" step_pull_sequence
critical_step "GET /metrics answers; promtool check metrics passes" step_scrape
run_step "the scrape counts the pull sequence" step_sequence_counted
run_step "every metric name of the dashboards and alert rules is in the scrape" step_names
critical_step "prometheus starts with observability/prometheus.yml and the rules" step_start_prometheus
run_step "prometheus's API returns ociregistry_http_requests_total with the scrape's values" step_prometheus_series
run_step "every dashboard query is valid PromQL and returns data" step_prometheus_dashboards
run_step "the alert rules are healthy in prometheus; RateLimitNearlyExhausted fires" step_prometheus_rules
run_step "ociregistry survived, logged no error" step_server_healthy
finish || exit 1
