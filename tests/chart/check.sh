#!/usr/bin/env bash
# The Helm chart charts/ociregistry checked offline (no cluster): PASS/FAIL per check, exit 1 on any failure.
#
#   1. files/ holds exact copies of observability/rules/ociregistry.rules.yml and the two Grafana dashboards;
#      README.md is what generate-readme.py makes of values.yaml + values.schema.json (every value documented);
#   2. helm lint --strict with the default values and every values file of tests/chart/values/;
#   3. helm template of each: the native manifests valid against the Kubernetes JSON schemas of 1.26 and 1.37
#      (kubernetes-validate --strict: unknown fields fail; schemas bundled in the package, no network), and the
#      scenario's expectations (tests/chart/manifests.py expect);
#   4. the CRDs: the PrometheusRule's groups equal the rules file and pass `promtool check rules`; the
#      ServiceMonitor's fields match the metrics Service; the dashboard ConfigMap carries the sidecar label and
#      the dashboards unchanged; NOTES.txt renders the hosts.toml set-up;
#   5. bad values are rejected (schema: helm lint; rules across values: helm template), and the test password
#      and key never appear in the rendered ConfigMap;
#   6. the containerd configurator's script (from the rendered DaemonSet) run with sh on a temp directory;
#   7. the binary accepts the rendered configs: `ociregistry serve --config-file <rendered config.yaml>` with
#      --data-dir/--listen on a temp dir and 127.0.0.1 (flags override the pod's paths): the default config
#      answers /readyz; a config with an htpasswd-protected upstream (Debian docker-registry on 127.0.0.1) pulls
#      an image through with skopeo, byte for byte, using the password from the rendered Secret; the full
#      deployment config (TLS with client certificates required, upstream TLS files, pruning, ...) serves /readyz
#      over HTTPS only to a client with a certificate; the pull again under the pod's conditions (uid/gid 65532,
#      no capabilities, read-only root filesystem, Secret files 0440 group 65532); air-gapped preparation as docs/kubernetes.md describes it
#      (`ociregistry load` into a data dir with the rendered config, the dir copied, the upstream stopped, the
#      rendered airGapped config serving the image, an uncached one answered 404), and a real containerd
#      fetching that image with the hosts.toml the rendered configurator script wrote (?ns= in the access log).
#      Tiered caches: a site release and a node release (values/daemonset-tiered-node.yaml, mirrors pointed at
#      the site) chain: skopeo pulls through the node, the site sees ?ns=; with the site down the node serves
#      what it cached and an uncached image is a 502 without any request to the upstream.
#      Scale-out on S3: values s3.* against a real 3-node Garage cluster (tests/lib/garage.sh): two replicas
#      (own host names via unshare --uts, own data dirs) run the rendered config with the rendered S3 Secret's
#      files; the second serves an image from the bucket with the upstream stopped; the s3.existingSecret
#      variant's config reaches the bucket too.
#    In 7, the rendered config names files where the pod mounts its Secrets (/etc/ociregistry/secrets,
#    /etc/ociregistry/tls, /etc/ociregistry/s3); the test writes the rendered Secrets' keys into a temp directory
#    and rewrites exactly those path prefixes in the extracted config to it. Nothing else in the config is changed.
#
# Installs what is missing (as root): helm via shared/tools/install-helm.sh, Debian packages prometheus
# (promtool), docker-registry, skopeo, containerd, apache2-utils (htpasswd), jq, openssl, curl; a venv target/chart-venv
# with kubernetes-validate and PyYAML (created only when missing). OCIREGISTRY_BIN overrides the binary
# (default target/debug/ociregistry). Garage (the S3 step) must be installed already (scripts/install-test-deps).
# CHART_KEEP=1 keeps the temp dir, CHART_VERBOSE=1 prints every step's output.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CHART="$REPO_ROOT/charts/ociregistry"
HERE="$REPO_ROOT/tests/chart"
OCIREGISTRY_BIN="${OCIREGISTRY_BIN:-$REPO_ROOT/target/debug/ociregistry}"
VENV="$REPO_ROOT/target/chart-venv"
KV_PIN="kubernetes-validate==1.37.0"
K8S_VERSIONS="1.26.0 1.37.0"

# shellcheck source=tests/lib/harness.sh
source "$REPO_ROOT/tests/lib/harness.sh"
HARNESS_NAME=chart
HARNESS_KEEP="${CHART_KEEP:-0}"
HARNESS_VERBOSE="${CHART_VERBOSE:-0}"

log() { printf 'chart: %s\n' "$*"; }
die() { printf 'chart: error: %s\n' "$*" >&2; exit 2; }

# --- prerequisites ----------------------------------------------------------------------------------------
apt_install() { # PACKAGE...
  [[ "$(id -u)" -eq 0 ]] || die "missing: $*; run as root: apt-get install -y $*"
  log "installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "$@" >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "$@" >/dev/null; }
}
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
for c in jq openssl curl; do command -v "$c" >/dev/null 2>&1 || need+=("$c"); done
[[ ${#need[@]} -eq 0 ]] || apt_install "${need[@]}"
if ! command -v helm >/dev/null 2>&1; then
  installer=""
  for f in "${HELM_INSTALLER:-}" "$REPO_ROOT/../shared/tools/install-helm.sh" /work/shared/tools/install-helm.sh; do
    [[ -n "$f" && -f "$f" ]] && { installer=$f; break; }
  done
  [[ -n "$installer" ]] || die "helm is missing and shared/tools/install-helm.sh was not found (set HELM_INSTALLER)"
  log "helm missing: installing with $installer"
  bash "$installer" >/dev/null
  export PATH="/usr/local/bin:$PATH" # where the installer puts helm
  command -v helm >/dev/null 2>&1 || die "helm is still missing after $installer"
fi
if [[ ! -x "$VENV/bin/kubernetes-validate" ]]; then
  log "creating $VENV ($KV_PIN, PyYAML)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "$KV_PIN" pyyaml
fi
PY="$VENV/bin/python"
[[ -x "$OCIREGISTRY_BIN" ]] || die "$OCIREGISTRY_BIN is missing (cargo build --bin ociregistry)"

TMP="$(mktemp -d /tmp/ociregistry-chart.XXXXXX)"
PIDDIR="$TMP/pids"
mkdir -p "$PIDDIR" "$TMP/steps" "$TMP/logs" "$TMP/r"
harness_cleanup_hook() { unmount_below_tmp; }
harness_traps harness_cleanup
HARNESS_PYTHON="$PY"

manifests() { "$PY" "$HERE/manifests.py" "$@"; }
# shellcheck source=tests/e2e/lib-images.sh
source "$REPO_ROOT/tests/e2e/lib-images.sh"
TAG=v1 # the tag build_image writes into the layout

finish() {
  if [[ $FAILED -gt 0 ]]; then
    log "failed: ${FAILED_NAMES[*]}"
    dump_log_tails 15 300
  fi
  log "$PASSED passed, $FAILED failed ($SECONDS s)"
  [[ $FAILED -eq 0 ]]
}

# Test certificates: a CA, a server certificate for 127.0.0.1/localhost and a client certificate.
make_certs() {
  local d="$TMP/certs"
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=chart-test-ca -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth') -out "$d/server.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=chart-test-client -keyout "$d/client.key" -out "$d/client.csr" 2>/dev/null
  openssl x509 -req -in "$d/client.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
    -extfile <(printf 'extendedKeyUsage=clientAuth') -out "$d/client.crt" 2>/dev/null
}
make_certs
CERTS="$TMP/certs"
TLS_FILES=(--set-file "serverTls.cert=$CERTS/server.crt" --set-file "serverTls.key=$CERTS/server.key"
  --set-file "serverTls.ca=$CERTS/ca.crt")

SCENARIOS=(default)
for f in "$HERE"/values/*.yaml; do SCENARIOS+=("$(basename "$f" .yaml)"); done
scenario_args() { # SCENARIO -> helm arguments
  local s=$1
  [[ $s == default ]] && return 0
  printf '%s\n' -f "$HERE/values/$s.yaml"
  [[ $s == deployment-full ]] && printf '%s\n' "${TLS_FILES[@]}"
  return 0
}

# --- 1. copies and README ------------------------------------------------------------------------------------
step_copies() {
  local fix="cp observability/rules/ociregistry.rules.yml charts/ociregistry/files/ && cp observability/grafana/dashboards/*.json charts/ociregistry/files/dashboards/"
  cmp "$REPO_ROOT/observability/rules/ociregistry.rules.yml" "$CHART/files/ociregistry.rules.yml" \
    || { echo "stale copy; run: $fix" >&2; return 1; }
  local orig=() n
  for f in "$REPO_ROOT"/observability/grafana/dashboards/*.json; do
    n="$(basename "$f")"
    orig+=("$n")
    cmp "$f" "$CHART/files/dashboards/$n" || { echo "stale copy; run: $fix" >&2; return 1; }
  done
  [[ "$(cd "$CHART/files/dashboards" && ls ./*.json | sed 's|^\./||' | tr '\n' ' ')" == "$(printf '%s ' "${orig[@]}")" ]] \
    || { echo "files/dashboards/ and observability/grafana/dashboards/ hold different files" >&2; return 1; }
  echo "rules and ${#orig[@]} dashboards are identical copies"
}

step_readme() {
  "$PY" "$CHART/generate-readme.py" --check
  # The check can fail: a copy of the chart with one description removed, one value added without schema,
  # and a stale README must each be refused.
  local c="$TMP/readme-chart"
  rm -rf "$c" && cp -r "$CHART" "$c"
  sed -i '/^# -- Grace period on pod deletion/d' "$c/values.yaml"
  if "$PY" "$c/generate-readme.py" --check 2>"$TMP/readme.err"; then echo "undocumented value accepted" >&2; return 1; fi
  grep -F 'terminationGracePeriodSeconds has no `# --` description' "$TMP/readme.err"
  rm -rf "$c" && cp -r "$CHART" "$c"
  printf '# -- A value the schema does not know.\nnewValue: 1\n' >>"$c/values.yaml"
  if "$PY" "$c/generate-readme.py" --check 2>"$TMP/readme.err"; then echo "value outside the schema accepted" >&2; return 1; fi
  grep -F 'newValue is not in values.schema.json' "$TMP/readme.err"
  rm -rf "$c" && cp -r "$CHART" "$c"
  sed -i 's/^# -- Log line format/# -- The log line format/' "$c/values.yaml"
  if "$PY" "$c/generate-readme.py" --check >/dev/null 2>"$TMP/readme.err"; then echo "stale README accepted" >&2; return 1; fi
  grep -F 'README.md is stale' "$TMP/readme.err"
}

# --- 2, 3. lint, template, validate ---------------------------------------------------------------------------
step_lint() { # SCENARIO
  local args
  mapfile -t args < <(scenario_args "$1")
  helm lint --strict "$CHART" "${args[@]}"
}

step_template() { # SCENARIO
  local s=$1 args v
  mapfile -t args < <(scenario_args "$s")
  helm template t "$CHART" --namespace ns "${args[@]}" >"$TMP/r/$s.yaml"
  manifests split "$TMP/r/$s.yaml" "$TMP/r/$s.native.yaml" "$TMP/r/$s.crd.yaml"
  for v in $K8S_VERSIONS; do
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "$TMP/r/$s.native.yaml"
    echo "valid against Kubernetes $v (strict)"
  done
  manifests expect "$s" "$TMP/r/$s.yaml"
}

# --- 4. CRDs and NOTES -----------------------------------------------------------------------------------------
step_rules() {
  manifests rules "$TMP/r/deployment-full.yaml" "$TMP/rules.yml" "$REPO_ROOT/observability/rules/ociregistry.rules.yml"
  promtool check rules "$TMP/rules.yml"
}

step_servicemonitor() {
  local s
  for s in deployment-full daemonset-hostpath; do manifests servicemonitor "$TMP/r/$s.yaml"; done
}

step_dashboards() {
  manifests dashboards "$TMP/r/deployment-full.yaml" "$REPO_ROOT/observability/grafana/dashboards"
}

# NOTES.txt is not rendered by `helm template`; a copy of the chart renders it into a ConfigMap.
render_notes() { # OUT HELM_ARGS...
  local out=$1
  shift
  rm -rf "$TMP/notes-chart"
  cp -r "$CHART" "$TMP/notes-chart"
  cp "$CHART/templates/NOTES.txt" "$TMP/notes-chart/files/notes.txt"
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ tpl (.Files.Get "files/notes.txt") . | quote }}\n' \
    >"$TMP/notes-chart/templates/zz-notes.yaml"
  helm template t "$TMP/notes-chart" --namespace ns "$@" --show-only templates/zz-notes.yaml \
    | "$PY" -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["data"]["notes"])' >"$out"
}

step_notes() {
  render_notes "$TMP/notes-default.txt"
  grep -F 'config_path = "/etc/containerd/certs.d"' "$TMP/notes-default.txt"
  grep -F '[host."http://localhost:31080"]' "$TMP/notes-default.txt"
  grep -F 'capabilities = ["pull", "resolve"]' "$TMP/notes-default.txt"
  grep -F 'kubectl -n ns exec deploy/t-ociregistry -- /ociregistry list' "$TMP/notes-default.txt"
  render_notes "$TMP/notes-ds.txt" -f "$HERE/values/daemonset-hostpath.yaml"
  grep -F 'http://<node IP>:5080' "$TMP/notes-ds.txt"
  grep -F 'kubectl -n ns exec ds/t-ociregistry -- /ociregistry list' "$TMP/notes-ds.txt"
  render_notes "$TMP/notes-tls.txt" -f "$HERE/values/deployment-full.yaml" "${TLS_FILES[@]}" --set service.type=NodePort
  grep -F '[host."https://localhost:31443"]' "$TMP/notes-tls.txt"
  grep -F 'skip_verify = true' "$TMP/notes-tls.txt"
}

# docs/kubernetes.md shows the default config file as the chart renders it; the two must stay equal.
step_docs_default_config() {
  manifests config "$TMP/r/default.yaml" "$TMP/default-config-doc.yaml"
  "$PY" - "$REPO_ROOT/docs/kubernetes.md" "$TMP/default-config-doc.yaml" <<'PY'
import re, sys, yaml
doc = open(sys.argv[1]).read()
m = re.search(r"a ConfigMap with the server's config file.*?```yaml\n(.*?)```", doc, re.S)
assert m, "docs/kubernetes.md: no config block after 'a ConfigMap with the server's config file'"
shown = yaml.safe_load(m.group(1))
rendered = yaml.safe_load(open(sys.argv[2]))
if shown != rendered:
    sys.exit(f"docs/kubernetes.md shows {shown}\nthe chart renders {rendered}")
print(f"docs/kubernetes.md's default config = the rendered one ({len(rendered)} keys)")
PY
}

# --- 5. negative checks ------------------------------------------------------------------------------------------
# expect_rejected HOW MESSAGE_PART HELM_ARGS...: `helm lint --strict` (HOW=lint) or `helm template` (HOW=template)
# must fail, and its output must contain MESSAGE_PART (so it fails for the reason meant).
expect_rejected() {
  local how=$1 msg=$2 out rc
  shift 2
  set +e
  if [[ $how == lint ]]; then
    out="$(helm lint --strict "$CHART" "$@" 2>&1)"
  else
    out="$(helm template t "$CHART" "$@" 2>&1)"
  fi
  rc=$?
  set -e
  if [[ $rc -eq 0 ]]; then
    echo "NOT rejected: helm $how $*" >&2
    return 1
  fi
  if [[ "$out" != *"$msg"* ]]; then
    echo "rejected, but not with '$msg': helm $how $*" >&2
    echo "$out" | tail -5 >&2
    return 1
  fi
  echo "rejected ($how): $* -> ...$msg..."
}

step_negative() {
  local bad=0
  expect_rejected lint 'mode must be one of the following' --set mode=statefulset || bad=1
  expect_rejected lint 'containerPort: Invalid type' --set containerPort=http || bad=1
  expect_rejected lint 'service.nodePort: Invalid type' --set-string service.nodePort=31080 || bad=1
  expect_rejected lint 'Additional property replicas is not allowed' --set replicas=2 || bad=1
  expect_rejected lint 'Additional property hostpath is not allowed' --set persistence.hostpath.path=/x || bad=1
  expect_rejected lint 'service.type must be one of the following' --set service.type=Ingress || bad=1
  expect_rejected lint 'serverTls.clientAuth must be one of the following' --set serverTls.clientAuth=require || bad=1
  expect_rejected lint 'config' --set config.listen=0.0.0.0:9999 || bad=1
  expect_rejected lint 'persistence.type must be one of the following' --set persistence.type=nfs || bad=1
  expect_rejected lint 'maxCacheBytes' --set maxCacheBytes=50GB5 || bad=1
  expect_rejected lint 'pruning.olderThan' --set pruning.olderThan=30 || bad=1
  expect_rejected lint 'registries.0' --set 'registries[0].name=quay.io' --set 'registries[0].auth.user=x' || bad=1
  expect_rejected lint 'registries.0' --set 'registries[0].scheme=https' || bad=1
  expect_rejected lint 'mirrors.0' --set 'mirrors[0]=site-ociregistry:8080' || bad=1
  expect_rejected lint 'mirrors.0' --set 'mirrors[0]=http://site-ociregistry:8080/v2' || bad=1
  expect_rejected lint 'mirrorFallback: Invalid type' --set-string mirrorFallback=no || bad=1
  expect_rejected lint 'config' --set 'config.mirror_fallback=false' || bad=1
  expect_rejected template 'cannot use persistence.type pvc' --set mode=daemonset --set persistence.type=pvc || bad=1
  expect_rejected template 'needs persistence.type emptyDir' --set replicaCount=3 || bad=1
  expect_rejected template 'serverTls.enabled needs serverTls.cert' --set serverTls.enabled=true || bad=1
  expect_rejected template 'needs serverTls.ca' --set serverTls.enabled=true --set serverTls.clientAuth=verify \
    --set-file "serverTls.cert=$CERTS/server.crt" --set-file "serverTls.key=$CERTS/server.key" || bad=1
  expect_rejected template 'observability.enabled needs metrics.port' --set observability.enabled=true || bad=1
  expect_rejected template 'works in mode daemonset only' --set containerdConfigurator.enabled=true || bad=1
  expect_rejected template 'needs daemonset.hostPort or daemonset.hostNetwork' --set mode=daemonset \
    --set containerdConfigurator.enabled=true --set daemonset.hostPort=null || bad=1
  expect_rejected template 'existingSecret is set' --set existingSecret=creds --set 'registries[0].name=quay.io' \
    --set 'registries[0].auth.username=u' --set 'registries[0].auth.password=p' || bad=1
  expect_rejected template 'auth needs password' --set 'registries[0].name=quay.io' --set 'registries[0].auth.username=u' || bad=1
  expect_rejected template 'takes one of password' --set 'registries[0].name=quay.io' --set 'registries[0].auth.username=u' \
    --set 'registries[0].auth.password=p' --set 'registries[0].auth.password_env=E' || bad=1
  expect_rejected template 'metrics.port must differ' --set metrics.port=8080 || bad=1
  # scale-out on S3
  local s3=(--set s3.enabled=true --set s3.endpoint=http://minio:9000 --set s3.bucket=ociregistry)
  expect_rejected lint 's3.bucket' --set s3.bucket=Bad_Bucket || bad=1
  expect_rejected lint 's3.endpoint' --set s3.endpoint=minio:9000 || bad=1
  expect_rejected lint 's3.endpoint' --set s3.endpoint=http://key:secret@minio:9000 || bad=1
  expect_rejected lint 's3.prefix' --set s3.prefix=/site-a/ || bad=1
  expect_rejected lint 'Additional property replicaId is not allowed' --set s3.replicaId=x || bad=1
  expect_rejected lint 'config' --set config.s3.bucket=ociregistry || bad=1
  expect_rejected template 's3.enabled needs s3.endpoint' --set s3.enabled=true --set s3.accessKeyId=a \
    --set s3.secretAccessKey=b || bad=1
  expect_rejected template 's3.enabled needs s3.accessKeyId and s3.secretAccessKey' "${s3[@]}" --set s3.accessKeyId=a || bad=1
  expect_rejected template 's3.existingSecret is set' "${s3[@]}" --set s3.existingSecret=creds --set s3.secretAccessKey=b || bad=1
  expect_rejected template 's3.ca and s3.caFile exclude each other' "${s3[@]}" --set s3.accessKeyId=a \
    --set s3.secretAccessKey=b --set s3.ca=PEM --set s3.caFile=/x/ca.crt || bad=1
  expect_rejected template 'needs persistence.type emptyDir' "${s3[@]}" --set s3.existingSecret=creds \
    --set persistence.type=pvc --set replicaCount=3 || bad=1
  return $bad
}

step_no_credentials_in_configmap() {
  # Each credential must be in a rendered Secret (decoded), so that its absence from the ConfigMap means
  # something; neither it nor its base64 form may appear anywhere in the ConfigMap.
  "$PY" - "$TMP/r/deployment-full.yaml" 's3cr3t-Chart-PW' 'MIIBfake-client-key-Chart-KEY' 'BEGIN PRIVATE KEY' \
    "$(sed -n 2p "$CERTS/server.key")" <<'PY'
import base64, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cms = [d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {})]
assert len(cms) == 1, len(cms)
cm_text = yaml.safe_dump(cms[0])
assert "password_file: /etc/ociregistry/secrets/registry.corp.example_5443-password" in cms[0]["data"]["config.yaml"], \
    "the ConfigMap does not reference the password file"
secrets = "\n".join(base64.b64decode(v).decode() for d in docs if d["kind"] == "Secret" for v in d["data"].values())
bad = False
for cred in sys.argv[2:]:
    if cred not in secrets:
        print(f"'{cred}' is in no rendered Secret: the check would prove nothing"); bad = True
    if cred in cm_text or base64.b64encode(cred.encode()).decode()[:16] in cm_text:
        print(f"credential '{cred}' is in the rendered ConfigMap"); bad = True
sys.exit(1 if bad else 0)
PY
  echo "no password or private key in the ConfigMap; each is in a Secret"
  # the bucket's credentials (values/s3-replicas.yaml) likewise
  "$PY" - "$TMP/r/s3-replicas.yaml" 'GKchartTestAccessKeyId' 'Chart-S3-secret-access-key-5e1f' <<'PY'
import base64, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm_text = yaml.safe_dump([d for d in docs if d["kind"] == "ConfigMap"])
secrets = "\n".join(base64.b64decode(v).decode() for d in docs if d["kind"] == "Secret" for v in d["data"].values())
bad = False
for cred in sys.argv[2:]:
    if cred not in secrets:
        print(f"'{cred}' is in no rendered Secret: the check would prove nothing"); bad = True
    if cred in cm_text or base64.b64encode(cred.encode()).decode()[:16] in cm_text:
        print(f"credential '{cred}' is in the rendered ConfigMap"); bad = True
sys.exit(1 if bad else 0)
PY
  echo "no S3 credential in the ConfigMap; each is in the S3 Secret"
}

# --- 6. containerd configurator ----------------------------------------------------------------------------------
step_configurator() {
  manifests script "$TMP/r/daemonset-hostpath.yaml" containerd-configurator "$TMP/configurator.sh"
  local d="$TMP/certs.d" env=()
  mapfile -t env <"$TMP/configurator.sh.env"
  mkdir -p "$d"
  env -i PATH="$PATH" "${env[@]}" CERTS_DIR="$d" HOST_IP=10.1.2.3 sh "$TMP/configurator.sh"
  local r
  for r in _default docker.io; do
    cat >"$TMP/expected.toml" <<'EOF'
# Written by the ociregistry chart (ns/t): pull through the cache on this node.
[host."http://10.1.2.3:5080"]
  capabilities = ["pull", "resolve"]
EOF
    diff "$TMP/expected.toml" "$d/$r/hosts.toml"
  done
  [[ ! -e "$d/_default/hosts.toml.tmp" ]]
  # overwrite=false leaves an existing file alone; IPv6 node addresses get brackets.
  echo '# mine' >"$d/docker.io/hosts.toml"
  env -i PATH="$PATH" "${env[@]}" CERTS_DIR="$d" HOST_IP=fd00::5 OVERWRITE=false sh "$TMP/configurator.sh"
  grep -qx '# mine' "$d/docker.io/hosts.toml"
  env -i PATH="$PATH" "${env[@]}" CERTS_DIR="$d" HOST_IP=fd00::5 sh "$TMP/configurator.sh"
  grep -qF '[host."http://[fd00::5]:5080"]' "$d/docker.io/hosts.toml"
  # the TLS variant (hostNetwork, containerPort 5443)
  manifests script "$TMP/r/daemonset-hostnetwork-tls.yaml" containerd-configurator "$TMP/configurator-tls.sh"
  mapfile -t env <"$TMP/configurator-tls.sh.env"
  rm -rf "$d" && mkdir -p "$d"
  env -i PATH="$PATH" "${env[@]}" CERTS_DIR="$d" HOST_IP=10.1.2.3 sh "$TMP/configurator-tls.sh"
  grep -qF '[host."https://10.1.2.3:5443"]' "$d/_default/hosts.toml"
  grep -qx '  skip_verify = true' "$d/_default/hosts.toml"
  ls "$d"
}

# --- 7. the binary and the rendered configs ----------------------------------------------------------------------
# rewrite_paths CONFIG SECRETS_DIR TLS_DIR: the pod's Secret mount points -> temp dirs (nothing else changes)
rewrite_paths() {
  sed -i -e "s|/etc/ociregistry/secrets/|$2/|g" -e "s|/etc/ociregistry/tls/|$3/|g" "$1"
}

step_serve_default() {
  manifests config "$TMP/r/default.yaml" "$TMP/default-config.yaml"
  pick_port P
  start_bg serve-default "$TMP/logs/serve-default.log" \
    "$OCIREGISTRY_BIN" serve --config-file "$TMP/default-config.yaml" --data-dir "$TMP/data-default" --listen "127.0.0.1:$P"
  wait_http "http://127.0.0.1:$P/readyz" 30 serve-default
  curl -fsS "http://127.0.0.1:$P/healthz"
  echo
  stop_bg serve-default
}

step_pull_through() {
  # An upstream with basic auth (htpasswd) on loopback, holding one image.
  pick_port UPPORT
  local up="127.0.0.1:$UPPORT" pw='Chart-Pull-PW-7d1f'
  mkdir -p "$TMP/upstream/data"
  htpasswd -Bbn chartuser "$pw" >"$TMP/upstream/htpasswd"
  cat >"$TMP/upstream/config.yml" <<CFG
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $TMP/upstream/data}, delete: {enabled: true}}
http: {addr: $up}
auth: {htpasswd: {realm: chart-test, path: $TMP/upstream/htpasswd}}
CFG
  start_bg upstream "$TMP/logs/upstream.log" docker-registry serve "$TMP/upstream/config.yml"
  printf '%s %s\n' "$up" "$pw" >"$TMP/upstream.addr"
  for _ in $(seq 1 100); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$up/v2/")" == 401 ]] && break
    sleep 0.1
  done
  build_image "$TMP/layout" chartapp 64
  skopeo copy -q --all --preserve-digests --dest-tls-verify=false --dest-creds "chartuser:$pw" \
    "oci:$TMP/layout:v1" "docker://$up/chart/app:v1"

  # The chart's values for it: credentials inline (-> the chart's Secret), an alias for the in-path form.
  pick_port P
  pick_port MP
  cat >"$TMP/pull-values.yaml" <<VALUES
registries:
  - name: $up
    scheme: http
    aliases: [upstream]
    auth:
      username: chartuser
      password: $pw
metrics:
  port: $MP
pruning:
  olderThan: 30d
maxCacheBytes: 1GiB
VALUES
  helm template t "$CHART" -f "$TMP/pull-values.yaml" >"$TMP/r/pull.yaml"
  manifests config "$TMP/r/pull.yaml" "$TMP/pull-config.yaml"
  if grep -qF "$pw" "$TMP/pull-config.yaml"; then echo "password in the config" >&2; return 1; fi
  manifests secret "$TMP/r/pull.yaml" -upstreams "$TMP/pull-secrets"
  rewrite_paths "$TMP/pull-config.yaml" "$TMP/pull-secrets" "$TMP/none"
  grep -n 'password_file' "$TMP/pull-config.yaml"
  start_bg serve-pull "$TMP/logs/serve-pull.log" \
    "$OCIREGISTRY_BIN" serve --config-file "$TMP/pull-config.yaml" --data-dir "$TMP/data-pull" --listen "127.0.0.1:$P"
  wait_http "http://127.0.0.1:$P/readyz" 30 serve-pull

  # Pulled through the alias (in-path form) ...
  skopeo copy -q --all --src-tls-verify=false "docker://127.0.0.1:$P/upstream/chart/app:v1" "oci:$TMP/out:v1"
  compare_layout "$TMP/layout" "$TMP/out" chartapp
  # ... and the way containerd asks (?ns=): the index by tag, answered from the cache now.
  local accept="application/vnd.oci.image.index.v1+json"
  curl -fsS -o /dev/null -D "$TMP/ns.headers" -H "Accept: $accept" \
    "http://127.0.0.1:$P/v2/chart/app/manifests/v1?ns=$up"
  expect_eq "$(header_value "$TMP/ns.headers" Docker-Content-Digest)" "$(cat "$TMP/expect/chartapp/index.digest")" "digest via ?ns="
  # The metrics port of the rendered config serves the pulls.
  curl -fsS "http://127.0.0.1:$MP/metrics" >"$TMP/metrics.txt"
  grep -E "^ociregistry_manifest_pulls_total\{namespace=\"$up\",source=\"upstream\"\} [1-9]" "$TMP/metrics.txt"
  grep -E '^ociregistry_max_cache_bytes 1073741824$' "$TMP/metrics.txt"
  # What `kubectl exec ... -- /ociregistry list` does in the pod: OCIREGISTRY_CONFIG names the config file.
  OCIREGISTRY_CONFIG="$TMP/pull-config.yaml" "$OCIREGISTRY_BIN" list --data-dir "$TMP/data-pull" >"$TMP/list.txt"
  cat "$TMP/list.txt"
  grep -F "$up/chart/app:v1" "$TMP/list.txt"
  # A wrong password in the Secret fails the pull: the password really came from the rendered Secret.
  stop_bg serve-pull
  printf 'wrong-password' >"$TMP/pull-secrets/127.0.0.1_$UPPORT-password"
  start_bg serve-bad "$TMP/logs/serve-bad.log" \
    "$OCIREGISTRY_BIN" serve --config-file "$TMP/pull-config.yaml" --data-dir "$TMP/data-bad" --listen "127.0.0.1:$P"
  wait_http "http://127.0.0.1:$P/readyz" 30 serve-bad
  if skopeo copy -q --all --src-tls-verify=false "docker://127.0.0.1:$P/upstream/chart/app:v1" "oci:$TMP/out-bad:v1" 2>"$TMP/bad.err"; then
    echo "the pull worked with a wrong password" >&2
    return 1
  fi
  echo "with a wrong password in the Secret the pull fails: $(tail -1 "$TMP/bad.err" | cut -c1-160)"
  stop_bg serve-bad
}

step_serve_full_tls() {
  # deployment-full with real PEM files for the upstream's CA and client certificate (the values file has
  # placeholders), client certificates required on the server.
  pick_port P
  pick_port MP
  helm template t "$CHART" -f "$HERE/values/deployment-full.yaml" "${TLS_FILES[@]}" \
    --set-file "registries[0].tls.ca=$CERTS/ca.crt" --set-file "registries[0].tls.cert=$CERTS/client.crt" \
    --set-file "registries[0].tls.key=$CERTS/client.key" --set "metrics.port=$MP" >"$TMP/r/full-real.yaml"
  manifests config "$TMP/r/full-real.yaml" "$TMP/full-config.yaml"
  manifests secret "$TMP/r/full-real.yaml" -upstreams "$TMP/full-secrets"
  manifests secret "$TMP/r/full-real.yaml" -tls "$TMP/full-tls"
  rewrite_paths "$TMP/full-config.yaml" "$TMP/full-secrets" "$TMP/full-tls"
  cat "$TMP/full-config.yaml"
  DOCKERHUB_TOKEN=not-used start_bg serve-full "$TMP/logs/serve-full.log" \
    "$OCIREGISTRY_BIN" serve --config-file "$TMP/full-config.yaml" --data-dir "$TMP/data-full" --listen "127.0.0.1:$P"
  local url="https://127.0.0.1:$P/readyz" code=""
  for _ in $(seq 1 100); do
    is_running serve-full || { echo "serve exited" >&2; return 1; }
    code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CERTS/ca.crt" --cert "$CERTS/client.crt" --key "$CERTS/client.key" "$url" || true)"
    [[ $code == 200 ]] && break
    sleep 0.1
  done
  expect_eq "$code" 200 "/readyz over HTTPS with a client certificate"
  if curl -s -o /dev/null --cacert "$CERTS/ca.crt" "$url"; then
    echo "/readyz answered a client without a certificate (clientAuth verify)" >&2
    return 1
  fi
  echo "without a client certificate the handshake is refused"
  curl -fsS "http://127.0.0.1:$MP/metrics" | grep -E '^ociregistry_max_cache_bytes 85899345920$'
  stop_bg serve-full
}

# Tiered caches as docs/scale-out.md sets them up: a site release (mode deployment) listing a plain docker-registry,
# and a node release (values/daemonset-tiered-node.yaml: mirrors = the site, mirrorFallback false) whose
# mirrors entry is pointed at the site's local address. skopeo pulls through the node; the site's access log
# shows the node's requests with ?ns=; with the site stopped an uncached image fails at once (502), although
# the upstream is up and the node lists it: the node never goes direct.
step_tiered() {
  pick_port UPT
  pick_port SP
  pick_port NP
  local up="127.0.0.1:$UPT"
  start_docker_registry "$up" "$TMP/logs/tier-up.log" info tier-up
  build_image "$TMP/layout-tier" chart-tier 64
  skopeo copy -q --all --preserve-digests --dest-tls-verify=false "oci:$TMP/layout-tier:v1" "docker://$up/chart/tier:v1"
  skopeo copy -q --all --preserve-digests --dest-tls-verify=false "oci:$TMP/layout-tier:v1" "docker://$up/chart/other:v1"
  # the site: an ordinary release listing the upstream
  helm template site "$CHART" --namespace registry --set "registries[0].name=$up" --set "registries[0].scheme=http" \
    >"$TMP/r/tier-site.yaml"
  manifests config "$TMP/r/tier-site.yaml" "$TMP/tier-site-config.yaml"
  # the node: the scenario's values; its site URL and registries for this upstream (the alias is for skopeo)
  cat >"$TMP/tier-node-values.yaml" <<VALUES
mirrors: [http://127.0.0.1:$SP]
registries:
  - name: $up
    scheme: http
    aliases: [upstream]
VALUES
  helm template node "$CHART" --namespace registry -f "$HERE/values/daemonset-tiered-node.yaml" \
    -f "$TMP/tier-node-values.yaml" >"$TMP/r/tier-node.yaml"
  manifests config "$TMP/r/tier-node.yaml" "$TMP/tier-node-config.yaml"
  cat "$TMP/tier-node-config.yaml"
  grep -x 'mirror_fallback: false' "$TMP/tier-node-config.yaml"
  grep -x -- "- http://127.0.0.1:$SP" "$TMP/tier-node-config.yaml"
  start_bg tier-site "$TMP/logs/tier-site.log" \
    "$OCIREGISTRY_BIN" serve --config-file "$TMP/tier-site-config.yaml" --data-dir "$TMP/data-tier-site" --listen "127.0.0.1:$SP"
  start_bg tier-node "$TMP/logs/tier-node.log" \
    "$OCIREGISTRY_BIN" serve --config-file "$TMP/tier-node-config.yaml" --data-dir "$TMP/data-tier-node" --listen "127.0.0.1:$NP"
  wait_http "http://127.0.0.1:$SP/readyz" 30 tier-site
  wait_http "http://127.0.0.1:$NP/readyz" 30 tier-node
  skopeo copy -q --all --src-tls-verify=false "docker://127.0.0.1:$NP/upstream/chart/tier:v1" "oci:$TMP/out-tier:v1"
  compare_layout "$TMP/layout-tier" "$TMP/out-tier" chart-tier
  settle_access_log
  local n
  n="$(grep -aF 'path=/v2/chart/tier/' "$TMP/logs/tier-site.log" | grep -acE "query=ns=127\.0\.0\.1(%3A|:)$UPT( |$)" || true)"
  echo "site: $n requests for chart/tier with ns=$up (from the node)"
  [[ $n -ge 4 ]] || { echo "the node's requests did not reach the site with ns=$up" >&2; return 1; }
  stop_bg tier-site
  local r before
  before="$(wc -l <"$TMP/logs/tier-up.log")"
  r="$(curl -s -o "$TMP/tier-miss.body" -w '%{http_code} %{time_total}' --max-time 10 \
    "http://127.0.0.1:$NP/v2/chart/other/manifests/v1?ns=$up")"
  echo "site down, uncached image: ${r% *} in ${r#* }s: $(head -c 200 "$TMP/tier-miss.body")"
  expect_eq "${r% *}" 502 "uncached manifest with the site down (mirrorFallback false, upstream up)"
  if tail -n "+$((before + 1))" "$TMP/logs/tier-up.log" | grep -aE '"[A-Z]+ /v2/'; then
    echo "the node went to the upstream directly" >&2
    return 1
  fi
  skopeo copy -q --all --src-tls-verify=false "docker://127.0.0.1:$NP/upstream/chart/tier:v1" "oci:$TMP/out-tier2:v1"
  compare_layout "$TMP/layout-tier" "$TMP/out-tier2" chart-tier
  echo "with the site down the node still serves what it cached"
  stop_bg tier-node
  stop_bg tier-up
}

# The pod's conditions, emulated: the server runs as 65532:65532 (runAsUser/runAsGroup, fsGroup as a
# supplementary group) without capabilities and with no_new_privs, in a mount namespace where the root filesystem
# is read-only (readOnlyRootFilesystem) and only the data directory is writable; the config file and the
# Secret's files are root-owned, the Secret's with the chart's defaultMode 0440 and group 65532 (as kubelet
# does with fsGroup). It pulls the image through, and `ociregistry list` run as the same uid (what
# `kubectl exec` does) reaches it over the admin socket in the data directory.
step_pod_conditions() {
  local up pw P
  read -r up pw <"$TMP/upstream.addr"
  local pod="$TMP/pod"
  mkdir -p "$pod/etc" "$pod/secrets" "$pod/data"
  chmod 0711 "$TMP" # mktemp -d is 0700; the server's uid must reach $pod (as it reaches /etc in a pod)
  chmod 0755 "$pod" "$pod/etc" "$pod/secrets"
  chown 65532:65532 "$pod/data"
  manifests secret "$TMP/r/pull.yaml" -upstreams "$pod/secrets" # fresh: the previous step spoiled its copy
  chown root:65532 "$pod/secrets/"*
  chmod 0440 "$pod/secrets/"*
  manifests config "$TMP/r/pull.yaml" "$pod/etc/config.yaml"
  rewrite_paths "$pod/etc/config.yaml" "$pod/secrets" "$TMP/none"
  chmod 0644 "$pod/etc/config.yaml"
  pick_port P
  start_bg serve-pod "$TMP/logs/serve-pod.log" unshare -m --propagation private sh -c '
    set -e
    mount -o remount,bind,ro /
    mount --bind "$1" "$1"
    mount -o remount,bind,rw "$1"
    if touch /tmp/ociregistry-chart-rofs-probe 2>/dev/null; then echo "root filesystem is writable" >&2; exit 1; fi
    cd /
    export OCIREGISTRY_CONFIG="$2"
    exec setpriv --reuid 65532 --regid 65532 --groups 65532 --no-new-privs --inh-caps=-all --bounding-set=-all \
      "$3" serve --config-file "$2" --data-dir "$1" --listen "$4"' \
    _ "$pod/data" "$pod/etc/config.yaml" "$OCIREGISTRY_BIN" "127.0.0.1:$P"
  wait_http "http://127.0.0.1:$P/readyz" 30 serve-pod
  grep -o 'pid=[0-9]* uid=65532$' "$TMP/logs/serve-pod.log"
  skopeo copy -q --all --src-tls-verify=false "docker://127.0.0.1:$P/upstream/chart/app:v1" "oci:$TMP/out-pod:v1"
  compare_layout "$TMP/layout" "$TMP/out-pod" chartapp
  OCIREGISTRY_CONFIG="$pod/etc/config.yaml" setpriv --reuid 65532 --regid 65532 --groups 65532 \
    "$OCIREGISTRY_BIN" list --data-dir "$pod/data" >"$TMP/pod-list.txt" 2>"$TMP/pod-list.err"
  cat "$TMP/pod-list.err" "$TMP/pod-list.txt"
  grep -F "using the server at $pod/data/admin.sock" "$TMP/pod-list.err"
  grep -F "$up/chart/app:v1" "$TMP/pod-list.txt"
  # Everything the server wrote is in the data directory and belongs to it.
  find "$pod/data" ! -user 65532 | grep . && { echo "files in the data dir not owned by 65532" >&2; return 1; }
  stop_bg serve-pod
}

# Air-gapped preparation as docs/kubernetes.md describes it: on a connected workstation, `ociregistry load`
# (no server running: it opens the index directly) with a config rendered from the same values fills a data
# directory; the directory is copied (to the node's hostPath / the volume) and the server runs on it with
# airGapped: true while the upstream is down.
step_air_gapped() {
  local up pw
  read -r up pw <"$TMP/upstream.addr"
  cat >"$TMP/airgap-values.yaml" <<VALUES
registries:
  - name: $up
    scheme: http
    aliases: [upstream]
    auth:
      username: chartuser
      password: $pw
VALUES
  helm template t "$CHART" -f "$TMP/airgap-values.yaml" >"$TMP/r/airgap-load.yaml"
  manifests config "$TMP/r/airgap-load.yaml" "$TMP/airgap-load-config.yaml"
  manifests secret "$TMP/r/airgap-load.yaml" -upstreams "$TMP/airgap-secrets"
  rewrite_paths "$TMP/airgap-load-config.yaml" "$TMP/airgap-secrets" "$TMP/none"
  "$OCIREGISTRY_BIN" load --config-file "$TMP/airgap-load-config.yaml" --data-dir "$TMP/workstation-data" \
    --image "$up/chart/app:v1" | tee "$TMP/load.txt"
  grep -E "^$up/chart/app:v1 .* loaded$" "$TMP/load.txt"
  cp -a "$TMP/workstation-data" "$TMP/node-data"
  stop_bg upstream
  if curl -s -o /dev/null "http://$up/v2/"; then echo "upstream still answers" >&2; return 1; fi
  helm template t "$CHART" -f "$TMP/airgap-values.yaml" --set airGapped=true >"$TMP/r/airgap.yaml"
  manifests config "$TMP/r/airgap.yaml" "$TMP/airgap-config.yaml"
  grep -x 'air_gapped: true' "$TMP/airgap-config.yaml"
  rewrite_paths "$TMP/airgap-config.yaml" "$TMP/airgap-secrets" "$TMP/none"
  pick_port P
  start_bg serve-airgap "$TMP/logs/serve-airgap.log" \
    "$OCIREGISTRY_BIN" serve --config-file "$TMP/airgap-config.yaml" --data-dir "$TMP/node-data" --listen "127.0.0.1:$P"
  wait_http "http://127.0.0.1:$P/readyz" 30 serve-airgap
  skopeo copy -q --all --src-tls-verify=false "docker://127.0.0.1:$P/upstream/chart/app:v1" "oci:$TMP/out-airgap:v1"
  compare_layout "$TMP/layout" "$TMP/out-airgap" chartapp
  # Not cached -> 404 at once (air-gapped), not a wait for the dead upstream.
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$P/v2/chart/other/manifests/v1?ns=$up")"
  expect_eq "$code" 404 "uncached manifest while air-gapped"
  echo "$P" >"$TMP/airgap.port" # the next step's containerd pulls from this server, then stops it
}

# containerd as the client, configured by the configurator: the script from the rendered DaemonSet writes
# _default/hosts.toml (HOST_IP 127.0.0.1, PORT the air-gapped server's), and a real containerd fetches the image
# with that hosts dir. The upstream is down and needs a password containerd does not have, so only the mirror
# can have served it; its access log must show containerd's ?ns= requests.
step_containerd_configured() {
  local up pw P
  read -r up pw <"$TMP/upstream.addr"
  P="$(cat "$TMP/airgap.port")"
  local d="$TMP/ctd-hosts" env=()
  mapfile -t env <"$TMP/configurator.sh.env"
  mkdir -p "$d"
  env -i PATH="$PATH" "${env[@]}" CERTS_DIR="$d" HOST_IP=127.0.0.1 PORT="$P" REGISTRIES=_default sh "$TMP/configurator.sh"
  start_containerd ctd
  timeout 60 ctr --address "$TMP/ctd/ctd.sock" content fetch --hosts-dir "$d" --plain-http --platform linux/amd64 \
    "$up/chart/app:v1" >"$TMP/ctr-fetch.out" 2>&1 || { tail -5 "$TMP/ctr-fetch.out" >&2; return 1; }
  local have blob
  have="$(timeout 10 ctr --address "$TMP/ctd/ctd.sock" content ls -q)"
  while read -r blob; do
    grep -qxF "$blob" <<<"$have" || { echo "blob $blob missing from containerd's content store" >&2; return 1; }
  done <"$TMP/expect/chartapp/amd64.blobs"
  local n
  local ns_re="${up%%:*}(:|%3A)${up##*:}" # containerd URL-encodes the colon
  settle_access_log
  n="$(grep -cE "path=/v2/chart/app/(manifests|blobs)/[^ ]* query=ns=${ns_re//./\\.} " "$TMP/logs/serve-airgap.log" || true)"
  echo "containerd's requests with ns=$up in the mirror's access log: $n"
  [[ $n -ge 4 ]] || { echo "containerd did not pull through the mirror" >&2; return 1; }
  stop_bg ctd
  stop_bg serve-airgap
}

# Scale-out on S3 (values s3.*) against a real 3-node Garage cluster (tests/lib/garage.sh, started in the main
# shell below): the config and the S3 Secret rendered from s3.accessKeyId/secretAccessKey (the mount point
# /etc/ociregistry/s3 rewritten to a temp dir holding the Secret's keys, nothing else changed) run two replicas,
# each with its own host name (unshare --uts, as pods have their own: replica_id is left to it) and data dir.
# Replica A pulls an image through from a plain docker-registry and publishes it to the bucket under the prefix;
# with the upstream stopped, replica B (empty data dir) serves the same image byte for byte: from the bucket.
# The s3.existingSecret variant's config, given a directory with the keys access-key-id and secret-access-key,
# reaches the bucket too ("shared bucket reachable").
start_replica() { # NAME CONFIG PORT
  start_bg "s3-$1" "$TMP/logs/s3-$1.log" unshare --uts sh -c 'hostname "$1" && exec "$2" serve --config-file "$3" \
    --data-dir "$4" --listen "$5"' _ "chart-$1" "$OCIREGISTRY_BIN" "$2" "$TMP/data-s3-$1" "127.0.0.1:$3"
  wait_http "http://127.0.0.1:$3/readyz" 30 "s3-$1"
  grep -aF 'shared bucket reachable' "$TMP/logs/s3-$1.log" | grep -aF "replica=\"chart-$1\""
}

step_s3_garage() {
  [[ -n "${GARAGE_S3_ENDPOINT:-}" ]] || { echo "the Garage cluster did not start" >&2; return 1; }
  pick_port UPS
  pick_port PA
  pick_port PB
  pick_port PC
  local up="127.0.0.1:$UPS"
  start_docker_registry "$up" "$TMP/logs/s3-up.log" info s3-up
  build_image "$TMP/layout-s3" chart-s3 64
  skopeo copy -q --all --preserve-digests --dest-tls-verify=false "oci:$TMP/layout-s3:v1" "docker://$up/chart/s3:v1"
  cat >"$TMP/s3-values.yaml" <<VALUES
replicaCount: 3
registries:
  - name: $up
    scheme: http
    aliases: [upstream]
s3:
  enabled: true
  endpoint: $GARAGE_S3_ENDPOINT
  bucket: $GARAGE_BUCKET
  prefix: chart-test/
  region: $GARAGE_REGION
  accessKeyId: $GARAGE_KEY_ID
  secretAccessKey: $GARAGE_SECRET
VALUES
  helm template t "$CHART" -f "$TMP/s3-values.yaml" >"$TMP/r/s3-garage.yaml"
  manifests config "$TMP/r/s3-garage.yaml" "$TMP/s3-config.yaml"
  if grep -qF "$GARAGE_SECRET" "$TMP/s3-config.yaml"; then echo "the secret access key is in the config" >&2; return 1; fi
  manifests secret "$TMP/r/s3-garage.yaml" -s3 "$TMP/s3-secrets"
  sed -i "s|/etc/ociregistry/s3/|$TMP/s3-secrets/|g" "$TMP/s3-config.yaml"
  cat "$TMP/s3-config.yaml"
  start_replica a "$TMP/s3-config.yaml" "$PA"
  skopeo copy -q --all --src-tls-verify=false "docker://127.0.0.1:$PA/upstream/chart/s3:v1" "oci:$TMP/out-s3a:v1"
  compare_layout "$TMP/layout-s3" "$TMP/out-s3a" chart-s3
  # published under the prefix (uploads finish after the pull; wait for them)
  local n=0
  for _ in $(seq 1 100); do
    n="$(garage_s3_list chart-test/blobs/ | grep -o '<Key>chart-test/blobs/sha256/' | wc -l || true)"
    [[ $n -ge 3 ]] && break
    sleep 0.2
  done
  echo "blobs in the bucket under chart-test/: $n"
  [[ $n -ge 3 ]] || { echo "replica A did not publish the image's blobs" >&2; return 1; }
  stop_bg s3-up
  start_replica b "$TMP/s3-config.yaml" "$PB"
  skopeo copy -q --all --src-tls-verify=false "docker://127.0.0.1:$PB/upstream/chart/s3:v1" "oci:$TMP/out-s3b:v1"
  compare_layout "$TMP/layout-s3" "$TMP/out-s3b" chart-s3
  echo "replica B served the image with the upstream stopped: from the bucket"
  stop_bg s3-a
  stop_bg s3-b
  # existingSecret: the same bucket, the keys in a directory standing for that Secret
  helm template t "$CHART" -f "$TMP/s3-values.yaml" --set s3.accessKeyId= --set s3.secretAccessKey= \
    --set s3.existingSecret=garage-creds >"$TMP/r/s3-garage-existing.yaml"
  if grep -q '^kind: Secret' "$TMP/r/s3-garage-existing.yaml"; then echo "a Secret rendered with s3.existingSecret" >&2; return 1; fi
  manifests config "$TMP/r/s3-garage-existing.yaml" "$TMP/s3-existing-config.yaml"
  mkdir -p "$TMP/s3-existing"
  printf '%s\n' "$GARAGE_KEY_ID" >"$TMP/s3-existing/access-key-id"
  printf '%s\n' "$GARAGE_SECRET" >"$TMP/s3-existing/secret-access-key"
  sed -i "s|/etc/ociregistry/s3/|$TMP/s3-existing/|g" "$TMP/s3-existing-config.yaml"
  start_replica c "$TMP/s3-existing-config.yaml" "$PC"
  stop_bg s3-c
}

log "helm $(helm version --short), promtool $(promtool --version 2>&1 | head -1 | awk '{print $3}'), temp $TMP"
run_step "files/ are exact copies of observability/ (rules, dashboards)" step_copies
run_step "README.md is generated from values.yaml and values.schema.json, every value documented" step_readme
for s in "${SCENARIOS[@]}"; do
  run_step "helm lint --strict ($s)" step_lint "$s"
done
for s in "${SCENARIOS[@]}"; do
  run_step "helm template ($s): valid Kubernetes $K8S_VERSIONS (strict), expectations met" step_template "$s"
done
run_step "PrometheusRule = observability rules; promtool check rules" step_rules
run_step "ServiceMonitor fields match the metrics Service" step_servicemonitor
run_step "dashboard ConfigMap: grafana_dashboard label, dashboards unchanged" step_dashboards
run_step "NOTES.txt: containerd config_path and hosts.toml" step_notes
run_step "docs/kubernetes.md shows the default config the chart renders" step_docs_default_config
run_step "bad values are rejected (lint: schema; template: cross-value rules)" step_negative
run_step "credentials never in the ConfigMap" step_no_credentials_in_configmap
run_step "containerd configurator script writes hosts.toml" step_configurator
run_step "ociregistry serve accepts the default rendered config; /readyz 200" step_serve_default
run_step "rendered config + Secret: pull through an htpasswd upstream with skopeo" step_pull_through
run_step "tiered caches: node release (mirrors, mirrorFallback false) -> site release -> upstream; site down" step_tiered
run_step "pod conditions: uid 65532, no capabilities, read-only root, Secret files 0440 group 65532" step_pod_conditions
run_step "air-gapped: load on a workstation, copy the data dir, serve the airGapped config" step_air_gapped
run_step "containerd pulls through the configurator's hosts.toml (?ns=, upstream down)" step_containerd_configured
run_step "rendered full config (TLS, client auth, upstream TLS files): /readyz over HTTPS" step_serve_full_tls
# shellcheck source=tests/lib/garage.sh
source "$REPO_ROOT/tests/lib/garage.sh"
garage_cluster_start "$TMP/garage" || log "the Garage cluster did not start"
run_step "scale-out on S3: rendered config + S3 Secret, two replicas on Garage, the second serves from the bucket" step_s3_garage
garage_cluster_stop
finish || exit 1
