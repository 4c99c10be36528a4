#!/usr/bin/env bash
# Renders the Grafana dashboards of observability/grafana/dashboards from real data, for docs/observability.md:
#
#   1. two scripted upstreams (observability/render/render.py upstream: tests/observability/upstream.py plus
#      images with layers of their own), target/debug/ociregistry serve --metrics against them, and Debian's
#      prometheus with observability/prometheus.yml (target this server, scrape and evaluation every 1 s, own
#      temporary data directory);
#   2. RENDER_SECONDS (150) of traffic (render.py traffic): cold and warm pulls in two namespaces from two client
#      sites (127.0.0.0/24 and 127.0.1.0/24, metrics_client_networks), concurrent readers of cold blobs, errors,
#      an upstream outage, a slow upstream and a slow client (slow downloads), bursts of blob reads on a
#      blocking pool of 2 threads, an uncached blob, stale tags, evictions at max_cache_bytes and manual prunes;
#   3. for every panel of every dashboard, each query (Grafana variables replaced: $__rate_interval = 30s,
#      $job = ociregistry, $instance and $namespace = .*) through Prometheus's /api/v1/query_range, drawn with
#      matplotlib (a venv in target/render-venv) into docs/images/dashboard-process.png and
#      docs/images/dashboard-registry.png. Panels whose queries returned nothing are drawn "no data" and listed.
#
# Everything listens on 127.0.0.1; the EXIT trap stops every process. Needs prometheus (Debian package),
# curl, python3 (with venv and network access to PyPI the first time) and target/debug/ociregistry
# (OCIREGISTRY_BIN overrides). RENDER_OUT=DIR writes the images elsewhere; RENDER_KEEP=1 keeps the temp directory.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO_ROOT/observability/render"
OBS="$REPO_ROOT/observability"
OCIREGISTRY_BIN="${OCIREGISTRY_BIN:-$REPO_ROOT/target/debug/ociregistry}"
SECONDS_OF_TRAFFIC="${RENDER_SECONDS:-150}"
OUT="${RENDER_OUT:-$REPO_ROOT/docs/images}"
VENV="${RENDER_VENV:-$REPO_ROOT/target/render-venv}"

# shellcheck source=tests/lib/harness.sh
source "$REPO_ROOT/tests/lib/harness.sh"
HARNESS_NAME=render
HARNESS_KEEP="${RENDER_KEEP:-0}"

log() { printf 'render: %s\n' "$*"; }
die() { printf 'render: error: %s\n' "$*" >&2; exit 2; }

for c in prometheus curl python3; do
  command -v "$c" >/dev/null 2>&1 || die "$c is not installed (Debian: apt-get install -y prometheus curl python3-venv)"
done
[[ -x "$OCIREGISTRY_BIN" ]] || die "$OCIREGISTRY_BIN is missing (cargo build --bin ociregistry)"

if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  log "creating $VENV with matplotlib"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q matplotlib
fi
PY="$VENV/bin/python"

TMP="$(mktemp -d /tmp/ociregistry-render.XXXXXX)"
PIDDIR="$TMP/pids"
mkdir -p "$PIDDIR" "$TMP/logs" "$TMP/steps" "$OUT"
harness_traps harness_cleanup
# a copy: a cargo build elsewhere may replace target/debug/ociregistry during the run
cp "$OCIREGISTRY_BIN" "$TMP/ociregistry"
BIN="$TMP/ociregistry"

# The namespaces show in the legends: 127.0.0.1:5000 and :5001 when free, else any free ports.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if port_free 5000 && port_free 5001; then
  UPA=5000 UPB=5001
  USED_PORTS+="5000 5001 "
else
  pick_port UPA
  pick_port UPB
fi
pick_port OCIPORT
pick_port METRICSPORT
pick_port PROMPORT
NSA="127.0.0.1:$UPA"
NSB="127.0.0.1:$UPB"
OCI="http://127.0.0.1:$OCIPORT"
PROM="http://127.0.0.1:$PROMPORT"
log "upstreams $NSA and $NSB, ociregistry $OCI (metrics :$METRICSPORT), prometheus $PROM, temp $TMP"

start_bg upstream-a "$TMP/logs/upstream-a.log" "$PY" -u "$HERE/render.py" upstream "$UPA" a
start_bg upstream-b "$TMP/logs/upstream-b.log" "$PY" -u "$HERE/render.py" upstream "$UPB" b
wait_http "http://$NSA/v2/" 20 upstream-a
wait_http "http://$NSB/v2/" 20 upstream-b

# Short TTLs and a small ceiling, so that a few minutes show revalidations, stale tags and evictions; two client
# sites on loopback (the traffic binds 127.0.1.x for site-b); blob reads on a blocking pool of 2 threads, so
# that bursts of reads queue.
cat >"$TMP/config.yaml" <<EOF
default_registry: "$NSA"
tag_ttl: 20s
negative_ttl: 5s
max_cache_bytes: 32MiB
min_free_bytes: 1MiB
blob_io: buffered
blocking_threads: 2
metrics_client_networks:
  site-a: [127.0.0.0/24]
  site-b: [127.0.1.0/24]
registries:
  - name: "$NSA"
    scheme: http
  - name: "$NSB"
    scheme: http
EOF
start_bg ociregistry "$TMP/logs/ociregistry.log" env NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 \
  "$BIN" serve --listen "127.0.0.1:$OCIPORT" --metrics "$METRICSPORT" \
  --data-dir "$TMP/data" --config-file "$TMP/config.yaml"
wait_http "$OCI/v2/" 30 ociregistry
wait_http "http://127.0.0.1:$METRICSPORT/metrics" 10 ociregistry

mkdir -p "$TMP/prometheus/data"
sed -e "s/localhost:2112/127.0.0.1:$METRICSPORT/" -e 's/: 15s$/: 1s/' "$OBS/prometheus.yml" >"$TMP/prometheus/prometheus.yml"
grep -q "127.0.0.1:$METRICSPORT" "$TMP/prometheus/prometheus.yml" || die "could not point prometheus.yml at the server"
cp -r "$OBS/rules" "$TMP/prometheus/rules"
start_bg prometheus "$TMP/logs/prometheus.log" prometheus \
  --config.file="$TMP/prometheus/prometheus.yml" \
  --storage.tsdb.path="$TMP/prometheus/data" \
  --web.listen-address="127.0.0.1:$PROMPORT"
wait_http "$PROM/-/ready" 30 prometheus

START="$(date +%s)"
log "$(date -u '+%Y-%m-%d %H:%M:%S') UTC: 10 s idle, then ${SECONDS_OF_TRAFFIC} s of traffic"
sleep 10
"$PY" -u "$HERE/render.py" traffic "$OCI" "$NSA" "$NSB" "$TMP/data" "$BIN" "$SECONDS_OF_TRAFFIC"
log "15 s idle (the last rates settle, the last scrapes land)"
sleep 15
END="$(date +%s)"
is_running ociregistry || die "ociregistry exited (status $(cat "$PIDDIR/ociregistry.rc"))"
if grep -E ' (ERROR|panicked)' "$TMP/logs/ociregistry.log" | head -5; then
  log "warning: the server logged errors (above)"
fi

"$PY" "$HERE/render.py" plot "$PROM" "$START" "$END" "$OUT" \
  "$OBS/grafana/dashboards/process.json" "$OBS/grafana/dashboards/registry.json"
log "done: $(date -u '+%Y-%m-%d %H:%M') UTC, $((END - START)) s rendered"
