# shellcheck shell=bash
# Tiered caches, sourced by tests/e2e/upstreams.sh (after its helpers; the steps are run from there):
#
#   containerd ──?ns=UP──▶ node1 ociregistry ──?ns=UP──▶ site ociregistry ──▶ docker-registry (UP_TIER)
#   containerd ──?ns=UP──▶ node2 ociregistry ──?ns=UP──┘
#
# The nodes have `mirrors: [http://SITE]` and `mirror_fallback: false`, and list the upstream's name with an
# endpoint on a tarpit that logs every connection: a node that went direct (or fell back) would show there
# (and hang). Their tag_ttl is 2s, so after the site is stopped node1's tag is stale and still served.
# Every process is started with start_bg, so the suite's EXIT trap stops it.
#
# Uses from upstreams.sh and its libraries: pick_port, start_registry, start_oci, start_containerd, ctd_pull, ctr_,
# push, mark/since/count, build_image, expect_eq, TARPIT_PY, settle_access_log, KIB, TAG, P_DEAD, SNAPSHOTTER.

pick_port P_TIER_UP        # docker-registry, the upstream of the site
pick_port P_TIER_DIRECT    # tarpit: the nodes' own endpoint for the upstream's name, never to be contacted
pick_port OCI_SITE_PORT
pick_port OCI_NODE1_PORT
pick_port OCI_NODE2_PORT
UP_TIER="127.0.0.1:$P_TIER_UP"
TIER_DIRECT="127.0.0.1:$P_TIER_DIRECT"
OCI_SITE="127.0.0.1:$OCI_SITE_PORT"
OCI_NODE1="127.0.0.1:$OCI_NODE1_PORT"
OCI_NODE2="127.0.0.1:$OCI_NODE2_PORT"
# ns= as a node sends it (URL-encoded) and as containerd sends it: either spelling of UP_TIER
TIER_NS_RE="ns=127\.0\.0\.1(%3A|:)$P_TIER_UP([^0-9]|$)"

tier_ready() { [[ -e "$TMP/ok/tiers" ]] || { echo "tier setup did not complete" >&2; return 1; }; }

# tier_hosts DIR NODE: hosts.toml for UP_TIER naming only NODE as the mirror; containerd's fallback `server`
# is a dead port, so a pull can only succeed through NODE.
tier_hosts() {
  mkdir -p "$1/$UP_TIER"
  cat >"$1/$UP_TIER/hosts.toml" <<EOF
server = "http://127.0.0.1:$P_DEAD"

[host."http://$2"]
  capabilities = ["pull", "resolve"]
EOF
}

# tier_blobs: the linux/amd64 blobs (config and layers) of the tier image, one per line
tier_blobs() { grep -vxF "$(cat "$TMP/expect/tier/amd64.manifest")" "$TMP/expect/tier/amd64.blobs"; }

tier_direct_quiet() {
  local lines
  lines="$(since tierdirect "$TMP/logs/tier-direct.log")"
  [[ -z "$lines" ]] || { echo "a node contacted the upstream's own endpoint (not through the site): $lines" >&2; return 1; }
  echo "the nodes' direct endpoint $TIER_DIRECT saw no connection"
}

step_tier_setup() {
  start_registry reg-tier "$UP_TIER"
  wait_http "http://$UP_TIER/v2/" 30 reg-tier
  build_image "$TMP/layout-tier" tier "$KIB"
  build_image "$TMP/layout-tier-miss" tier-miss "$KIB"
  push tier "$UP_TIER/tier/app:$TAG" --dest-tls-verify=false
  push tier-miss "$UP_TIER/tier/miss:$TAG" --dest-tls-verify=false
  start_bg tier-direct "$TMP/logs/tier-direct.log" python3 -c "$TARPIT_PY" "$P_TIER_DIRECT"
  for _ in $(seq 1 50); do
    grep -q listening "$TMP/logs/tier-direct.log" 2>/dev/null && break
    sleep 0.1
  done
  grep -q listening "$TMP/logs/tier-direct.log"
  mark tierdirect "$TMP/logs/tier-direct.log"
  cat >"$TMP/site.yaml" <<EOF
log_level: info
default_registry: "$UP_TIER"
registries:
  - name: "$UP_TIER"
    scheme: http
EOF
  cat >"$TMP/node.yaml" <<EOF
log_level: info
default_registry: "$UP_TIER"
mirrors: ["http://$OCI_SITE"]
mirror_fallback: false
registries:
  - name: "$UP_TIER"
    scheme: http
    endpoints: ["http://$TIER_DIRECT"]
    tag_ttl: 2s
EOF
  start_oci oci-site "$OCI_SITE" "$TMP/site.yaml"
  start_oci oci-node1 "$OCI_NODE1" "$TMP/node.yaml"
  start_oci oci-node2 "$OCI_NODE2" "$TMP/node.yaml"
  tier_hosts "$TMP/hosts-node1" "$OCI_NODE1"
  tier_hosts "$TMP/hosts-node2" "$OCI_NODE2"
  start_containerd ctd-t1
  touch "$TMP/ok/tiers"
  echo "upstream $UP_TIER <- site $OCI_SITE <- nodes $OCI_NODE1, $OCI_NODE2 (direct endpoint: tarpit $TIER_DIRECT)"
}

# node1 pulls cold through the site: containerd gets the pushed digests; node1 and the site saw the requests
# with ns=UP_TIER; the upstream served each amd64 blob exactly once (and no arm64 blob); nothing went direct.
step_tier_node1_cold() {
  tier_ready
  local reg="$TMP/logs/reg-tier.log" site="$TMP/logs/oci-site.log" node="$TMP/logs/oci-node1.log" d n
  mark t1reg "$reg"
  mark t1site "$site"
  mark t1node "$node"
  HOSTS_DIR="$TMP/hosts-node1" ctd_pull ctd-t1 tier "$UP_TIER/tier/app:$TAG"
  settle_access_log
  n="$(since t1node "$node" | grep -aF 'path=/v2/tier/app/' | count "$TIER_NS_RE")"
  echo "node1: $n requests for tier/app from containerd with ns=$UP_TIER"
  [[ $n -ge 4 ]] || { echo "containerd's requests did not reach node1 with ns=$UP_TIER" >&2; return 1; }
  local site_lines
  site_lines="$(since t1site "$site" | grep -aF 'path=/v2/tier/app/')"
  echo "site access log for tier/app during the pull:"
  sed 's/^.*access: /  /' <<<"$site_lines"
  n="$(count "$TIER_NS_RE" <<<"$site_lines")"
  [[ $n -ge 4 && $n -eq $(count . <<<"$site_lines") ]] || {
    echo "the site got $(count . <<<"$site_lines") requests for tier/app, $n with ns=$UP_TIER (want >= 4, all)" >&2
    return 1
  }
  for d in $(tier_blobs); do
    n="$(count "method=GET path=/v2/tier/app/blobs/$d query=ns=[^ ]* status=200 .*cache=miss" <<<"$site_lines")"
    expect_eq "$n" 1 "site GETs of blob $d with ns= (cache=miss)"
  done
  for d in $(tier_blobs); do
    n="$(since t1reg "$reg" | count "\"GET /v2/tier/app/blobs/$d ")"
    expect_eq "$n" 1 "upstream GETs of amd64 blob $d"
  done
  n="$(since t1reg "$reg" | count '"GET /v2/tier/app/blobs/')"
  expect_eq "$n" "$(tier_blobs | wc -l)" "upstream blob GETs in all (amd64 only: no arm64 blob fetched)"
  tier_direct_quiet
}

# A second node (fresh data dir, same site) pulls the same image: the site serves it from its cache, the
# upstream sees no blob GET.
step_tier_node2_from_site() {
  tier_ready
  local reg="$TMP/logs/reg-tier.log" site="$TMP/logs/oci-site.log" d n
  start_containerd ctd-t2
  [[ -z "$(ctr_ ctd-t2 content ls -q)" ]] || { echo "fresh containerd content store is not empty" >&2; return 1; }
  [[ ! -e "$TMP/data-oci-node2/blobs" || -z "$(find "$TMP/data-oci-node2/blobs" -type f)" ]] ||
    { echo "node2's blob store is not empty" >&2; return 1; }
  mark t2reg "$reg"
  mark t2site "$site"
  HOSTS_DIR="$TMP/hosts-node2" ctd_pull ctd-t2 tier "$UP_TIER/tier/app:$TAG"
  settle_access_log
  local site_lines
  site_lines="$(since t2site "$site" | grep -aF 'path=/v2/tier/app/')"
  echo "site access log for tier/app during node2's pull:"
  sed 's/^.*access: /  /' <<<"$site_lines"
  for d in $(tier_blobs); do
    n="$(count "method=GET path=/v2/tier/app/blobs/$d query=ns=[^ ]* status=200 .*cache=hit" <<<"$site_lines")"
    expect_eq "$n" 1 "site GETs of blob $d for node2 (cache=hit)"
  done
  echo "upstream log during node2's pull:"
  since t2reg "$reg" | grep -a '"[A-Z]* /v2/' | sed 's/^/  /' || true
  n="$(since t2reg "$reg" | count '"GET /v2/tier/app/blobs/')"
  expect_eq "$n" 0 "upstream blob GETs while node2 pulled (the site served them)"
  tier_direct_quiet
}

# The site stops: node1 still serves the image (its tag now past node1's 2s TTL) to a fresh containerd.
step_tier_site_down_cached() {
  tier_ready
  echo "site stopped: $(stop_bg oci-site 10)"
  if curl -s -o /dev/null --max-time 2 "http://$OCI_SITE/v2/"; then echo "the site still answers" >&2; return 1; fi
  sleep 2.5   # node1's tag_ttl (2s) has certainly passed since the pull
  start_containerd ctd-t3
  local node="$TMP/logs/oci-node1.log" n
  mark t3node "$node"
  HOSTS_DIR="$TMP/hosts-node1" ctd_pull ctd-t3 tier "$UP_TIER/tier/app:$TAG"
  settle_access_log
  n="$(since t3node "$node" | grep -aF 'path=/v2/tier/app/blobs/' | count 'status=200 .*cache=hit')"
  echo "node1 served $n blob GETs from its cache with the site down"
  [[ $n -ge $(tier_blobs | wc -l) ]] || { echo "node1 did not serve the blobs from its cache" >&2; return 1; }
  tier_direct_quiet
}

# With the site down, what node1 never cached fails at once with 502/503 (curl), and a containerd pull of it
# fails within seconds; the node does not go direct (mirror_fallback: false).
step_tier_site_down_miss() {
  tier_ready
  local b="$TMP/tier-miss.b" h="$TMP/tier-miss.h" r code t url blob
  blob="$(grep -vxF "$(cat "$TMP/expect/tier-miss/amd64.manifest")" "$TMP/expect/tier-miss/amd64.blobs" | tail -n 1)"
  for url in "http://$OCI_NODE1/v2/tier/miss/manifests/$TAG?ns=$UP_TIER" \
    "http://$OCI_NODE1/v2/tier/miss/blobs/$blob?ns=$UP_TIER"; do
    r="$(curl -sS --max-time 20 -H "Accept: $ACCEPT_MANIFESTS" -D "$h" -o "$b" -w '%{http_code} %{time_total}' "$url")"
    code="${r%% *}"
    t="${r##* }"
    echo "$url -> $code in ${t}s: $(head -c 300 "$b")"
    [[ $code == 502 || $code == 503 ]] || { echo "a miss with the site down answered $code, expected 502 or 503" >&2; return 1; }
    grep -q '"errors"' "$b" || { echo "no OCI error body" >&2; return 1; }
    awk -v t="$t" 'BEGIN { exit !(t < 2.0) }' || { echo "the miss took ${t}s (>= 2s)" >&2; return 1; }
  done
  local start end rc=0
  start="$(date +%s.%N)"
  ctr_ ctd-t3 images pull --hosts-dir "$TMP/hosts-node1" --plain-http --platform linux/amd64 \
    --snapshotter "$SNAPSHOTTER" "$UP_TIER/tier/miss:$TAG" >"$TMP/tier-miss.ctr" 2>&1 || rc=$?
  end="$(date +%s.%N)"
  echo "ctr pull of the uncached image: exit $rc after $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')s:"
  tail -n 3 "$TMP/tier-miss.ctr" | sed 's/^/  /'
  [[ $rc -ne 0 && $rc -ne 124 ]] || { echo "ctr pull of an uncached image with the site down did not fail cleanly (exit $rc)" >&2; return 1; }
  awk -v a="$start" -v b="$end" 'BEGIN { exit !(b - a < 20) }' || { echo "the failing pull took 20 s or more" >&2; return 1; }
  tier_direct_quiet
}
