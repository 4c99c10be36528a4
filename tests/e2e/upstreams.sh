#!/usr/bin/env bash
# End-to-end suite for ociregistry's upstream access: real upstreams of every kind the config supports, and the
# SSRF rules that keep the cache from becoming an open proxy.
#
# Upstreams (all on 127.0.0.0/8):
#   plain    Debian's docker-registry (Distribution 2.8) over plain HTTP                      127.0.0.1:P_PLAIN
#   tls      docker-registry over TLS (private CA) with htpasswd basic auth                     127.0.0.1:P_TLS
#   mtls     nginx terminating TLS and REQUIRING a client certificate, in front of `plain`      127.0.0.1:P_MTLS
#   redir    nginx with basic auth in front of `plain` that answers blob GETs with 307 to
#            another host (an nginx on 127.0.0.3 that proxies to `plain` and logs Authorization) 127.0.0.1:P_REDIR
#   limited  nginx in front of `plain` answering manifest requests 429 + Retry-After while a
#            flag file exists                                                                   127.0.0.1:P_LIMIT
#   evil     listed nginx upstreams (http and https) that redirect to loopback / the metadata
#            address / http, or name an unlisted token realm; and traps on 127.0.0.5, 127.0.0.9
#            and 127.0.0.1 whose access logs must stay empty
#   tiers    containerd -> node ociregistry (mirrors: [site], mirror_fallback: false) -> site ociregistry ->
#            its own docker-registry (tests/e2e/upstreams-tiers.sh)
# Clients: skopeo (through an alias: skopeo cannot write host:port as a path component), real containerd
# (`ctr images pull --hosts-dir`, hosts.toml mirror, containerd sends ?ns=HOST:PORT) and curl.
# Everything lives in one `mktemp -d` dir that is removed on exit; every process started here is stopped by the
# EXIT trap (also on failure or Ctrl-C).
#
# Env:
#   OCIREGISTRY_BIN         binary under test (default: <repo>/target/debug/ociregistry)
#   UPSTREAMS_KEEP=1        keep the temp dir (logs, configs, certificates) for debugging
#   UPSTREAMS_VERBOSE=1     print every step's output, not only the output of failed steps
#   UPSTREAMS_INFRA_ONLY=1  only set up and check the upstreams, certificates, images and containerd (no
#                           ociregistry needed): for debugging the test infrastructure itself
#   UPSTREAMS_CMD_TIMEOUT   per-client-command timeout in seconds (default 60)
#   E2E_SNAPSHOTTER         containerd snapshotter used for unpacking (default: native)
#
# Output: one `PASS name` / `FAIL name` line per step, then exactly one line `upstreams: N passed, M failed`.
# Exit status: 0 iff no step failed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO_ROOT/tests/lib/harness.sh"
# MT_* media types, ACCEPT_MANIFESTS, expect_eq, sha256_of, header_value, put_blob, build_image, compare_layout
source "$REPO_ROOT/tests/e2e/lib-images.sh"
HARNESS_NAME=upstreams
HARNESS_KEEP="${UPSTREAMS_KEEP:-0}"
HARNESS_VERBOSE="${UPSTREAMS_VERBOSE:-0}"
HARNESS_FAIL_TAIL=60
INFRA_ONLY="${UPSTREAMS_INFRA_ONLY:-0}"
OCIREGISTRY_BIN="${OCIREGISTRY_BIN:-$REPO_ROOT/target/debug/ociregistry}"
CMD_TIMEOUT="${UPSTREAMS_CMD_TIMEOUT:-60}"
SNAPSHOTTER="${E2E_SNAPSHOTTER:-native}"
TAG="v1"
KIB=192   # random-data layer size per platform: small images, a few hundred KiB each

log() { printf '%s\n' "$*"; }
die() { printf 'upstreams: error: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------------------
# Preconditions
# ---------------------------------------------------------------------------------------------------------
missing=()
for tool in docker-registry nginx htpasswd openssl skopeo containerd ctr jq curl python3 tar gzip sha256sum timeout cmp; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  die "missing tools: ${missing[*]} (run scripts/install-test-deps as root; Debian packages: docker-registry nginx-light apache2-utils openssl skopeo containerd jq curl python3)"
fi
[[ "$(id -u)" -eq 0 ]] || die "must run as root: the suite starts a real containerd"
if [[ "$INFRA_ONLY" != "1" ]]; then
  [[ -x "$OCIREGISTRY_BIN" ]] || die "ociregistry binary not found or not executable: $OCIREGISTRY_BIN (cargo build first, or set OCIREGISTRY_BIN)"
  OCIREGISTRY_BIN="$(cd "$(dirname "$OCIREGISTRY_BIN")" && pwd)/$(basename "$OCIREGISTRY_BIN")"
fi

# Short base dir: containerd's unix socket path must stay below 108 bytes.
TMP="$(mktemp -d /tmp/ociregistry-up.XXXXXX)"
PIDDIR="$TMP/pids"
mkdir -p "$PIDDIR" "$TMP/steps" "$TMP/ok" "$TMP/expect" "$TMP/logs" "$TMP/marks"

harness_cleanup_hook() { unmount_below_tmp; }
harness_traps harness_cleanup

finish() {
  if [[ $FAILED -gt 0 ]]; then
    log "failed steps: ${FAILED_NAMES[*]}"
    dump_log_tails 20 300
  fi
  log "upstreams: $PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}

# ---------------------------------------------------------------------------------------------------------
# Addresses. Every upstream is named by the host[:port] clients use; ociregistry instances run side by side
# with different configs (main: everything configured right; neg: TLS registries without credentials / client
# certificate; ssrf: defaults plus the two "evil" upstreams; pass: the TLS registry with auth: passthrough).
# ---------------------------------------------------------------------------------------------------------
pick_port P_PLAIN
pick_port P_TLS
pick_port P_MTLS
pick_port P_REDIR
pick_port P_REDIR_T
pick_port P_LIMIT
pick_port P_EVIL
pick_port P_EVILS
pick_port P_TRAP5
pick_port P_TRAP9
pick_port P_TRAPLIT
pick_port P_DEAD        # nothing ever listens here (containerd's fallback `server`)
pick_port OCI_MAIN_PORT
pick_port OCI_NEG_PORT
pick_port OCI_SSRF_PORT
pick_port OCI_PASS_PORT
pick_port OCI_TLS_PORT
UP_PLAIN="127.0.0.1:$P_PLAIN"
UP_TLS="127.0.0.1:$P_TLS"
UP_MTLS="127.0.0.1:$P_MTLS"
UP_REDIR="127.0.0.1:$P_REDIR"
REDIR_TARGET="127.0.0.3:$P_REDIR_T"
UP_LIMIT="127.0.0.1:$P_LIMIT"
UP_EVIL="127.0.0.1:$P_EVIL"
UP_EVILS="127.0.0.1:$P_EVILS"
TRAP5="127.0.0.5:$P_TRAP5"
TRAP9="127.0.0.9:$P_TRAP9"
TRAPLIT="127.0.0.1:$P_TRAPLIT"
OCI_MAIN="127.0.0.1:$OCI_MAIN_PORT"
OCI_NEG="127.0.0.1:$OCI_NEG_PORT"
OCI_SSRF="127.0.0.1:$OCI_SSRF_PORT"
OCI_PASS="127.0.0.1:$OCI_PASS_PORT"
OCI_TLS="127.0.0.1:$OCI_TLS_PORT"    # ociregistry serving HTTPS and requiring client certificates
USER_NAME="cacheuser"
USER_PASS="s3cret-pass"
CERTS="$TMP/certs"
echo "upstreams: temp dir $TMP; plain $UP_PLAIN, tls $UP_TLS, mtls $UP_MTLS, redir $UP_REDIR -> $REDIR_TARGET, limited $UP_LIMIT; ociregistry main $OCI_MAIN"

# ---------------------------------------------------------------------------------------------------------
# Helpers used inside steps
# ---------------------------------------------------------------------------------------------------------
sk() { timeout "$CMD_TIMEOUT" skopeo "$@"; }
cu() { curl -sS --max-time 20 "$@"; }   # never retried, never follows redirects

ctr_() { # NAME ARGS...
  local name=$1
  shift
  timeout "$CMD_TIMEOUT" ctr --address "$TMP/$name/ctd.sock" "$@"
}

# largest_blob VARIANT ARCH: digest of the biggest blob of that platform (the random-data layer)
largest_blob() {
  local d="" x
  while read -r x; do
    if [[ -z "$d" || $(stat -c %s "$TMP/layout-$1/blobs/sha256/${x#sha256:}") -gt $(stat -c %s "$TMP/layout-$1/blobs/sha256/${d#sha256:}") ]]; then d="$x"; fi
  done <"$TMP/expect/$1/$2.blobs"
  echo "$d"
}

# Log marks: `mark NAME FILE` remembers how many lines FILE has; `since NAME FILE` prints the lines added after.
mark() { local n=0; [[ -e "$2" ]] && n="$(wc -l <"$2")"; echo "$n" >"$TMP/marks/$1"; }
since() { local n; n="$(cat "$TMP/marks/$1")"; [[ -e "$2" ]] && tail -n "+$((n + 1))" "$2"; return 0; }
count() { grep -acE "$1" || true; }   # count lines on stdin matching the ERE

# wait_tcp HOST PORT [TIMEOUT_S] [NAME]: until something accepts connections (no HTTP request is sent, so
# nothing shows in access logs)
wait_tcp() {
  local h=$1 p=$2 t=${3:-20} name=${4:-}
  for _ in $(seq 1 $((t * 10))); do
    if [[ -n "$name" ]] && ! is_running "$name"; then
      echo "$name exited (status $(cat "$PIDDIR/$name.rc" 2>/dev/null)) before $h:$p accepted connections" >&2
      return 1
    fi
    if (exec 3<>"/dev/tcp/$h/$p") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$h:$p did not accept connections within ${t}s" >&2
  return 1
}

# get_status URL BODY HEADERS [CURL_ARGS...] -> prints the HTTP status (000 when no answer); manifest Accept
get_status() {
  local url=$1 body=$2 hdr=$3
  shift 3
  curl -sS --max-time 20 -H "Accept: $ACCEPT_MANIFESTS" -D "$hdr" -o "$body" -w '%{http_code}' "$@" "$url" 2>/dev/null || true
}

# manifest_digest URL [CURL_ARGS...] -> "STATUS DIGEST" (DIGEST = sha256 of the body)
manifest_digest() {
  local url=$1 b h code
  shift
  b="$(mktemp "$TMP/md.XXXXXX")"
  h="$b.h"
  code="$(get_status "$url" "$b" "$h" "$@")"
  echo "$code sha256:$(sha256_of "$b")"
}

# ---------------------------------------------------------------------------------------------------------
# Certificates and passwords
# ---------------------------------------------------------------------------------------------------------
step_certs() {
  mkdir -p "$CERTS/skopeo-ca" "$CERTS/skopeo-client"
  cd "$CERTS"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 2 -subj "/CN=ociregistry upstreams test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req "${ec[@]}" -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext 2>/dev/null
  openssl req "${ec[@]}" -keyout client.key -out client.csr -subj "/CN=ociregistry-cache" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth" >client.ext
  openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 -extfile client.ext 2>/dev/null
  openssl verify -CAfile ca.crt server.crt client.crt
  # a client certificate from another CA, which the mTLS-serving ociregistry must refuse
  openssl req -x509 "${ec[@]}" -keyout other-ca.key -out other-ca.crt -days 2 -subj "/CN=another CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req "${ec[@]}" -keyout stranger.key -out stranger.csr -subj "/CN=stranger" 2>/dev/null
  openssl x509 -req -in stranger.csr -CA other-ca.crt -CAkey other-ca.key -CAcreateserial -out stranger.crt -days 2 \
    -extfile client.ext 2>/dev/null
  # skopeo's cert dirs: ca.crt only (a *.key there is read as a client certificate); or CA + client pair
  cp ca.crt skopeo-ca/
  cp ca.crt skopeo-client/
  cp client.crt skopeo-client/client.cert
  cp client.key skopeo-client/client.key
  # docker-registry wants bcrypt; nginx's auth_basic reads apr1 (MD5) reliably
  htpasswd -Bbn "$USER_NAME" "$USER_PASS" >htpasswd.bcrypt
  htpasswd -bn "$USER_NAME" "$USER_PASS" >htpasswd.apr1
  printf '%s\n' "$USER_PASS" >password.txt
  chmod 0600 ./*.key password.txt
  echo "CA, server certificate (IP:127.0.0.1, DNS:localhost), client certificate and htpasswd files in $CERTS"
}

# ---------------------------------------------------------------------------------------------------------
# Upstream registries (docker-registry) and nginx fronts
# ---------------------------------------------------------------------------------------------------------
# start_registry NAME ADDR [EXTRA_HTTP_YAML] [EXTRA_TOP_YAML]
start_registry() {
  local name=$1 addr=$2 http_extra=${3:-} top_extra=${4:-}
  local d="$TMP/$name"
  mkdir -p "$d/data"
  cat >"$d/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $d/data
  delete:
    enabled: true
http:
  addr: $addr
$http_extra
$top_extra
EOF
  start_bg "$name" "$TMP/logs/$name.log" docker-registry serve "$d/config.yml"
}

step_start_registries() {
  start_registry reg-plain "$UP_PLAIN"
  start_registry reg-tls "$UP_TLS" "  tls:
    certificate: $CERTS/server.crt
    key: $CERTS/server.key" "auth:
  htpasswd:
    realm: ociregistry-upstreams-test
    path: $CERTS/htpasswd.bcrypt"
  wait_http "http://$UP_PLAIN/v2/" 30 reg-plain
  local code=""
  for _ in $(seq 1 300); do
    is_running reg-tls || { echo "reg-tls exited" >&2; return 1; }
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$CERTS/ca.crt" "https://$UP_TLS/v2/" || true)"
    [[ $code == 401 ]] && break
    sleep 0.1
  done
  expect_eq "$code" 401 "anonymous GET https://$UP_TLS/v2/ (verified against the private CA)"
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$CERTS/ca.crt" -u "$USER_NAME:$USER_PASS" "https://$UP_TLS/v2/")"
  expect_eq "$code" 200 "GET https://$UP_TLS/v2/ with basic auth"
  echo "docker-registry plain at http://$UP_PLAIN, TLS+htpasswd at https://$UP_TLS"
}

# start_nginx NAME SERVER_BLOCKS: one single-process nginx (master_process off: no worker can outlive the
# process the harness stops), all paths inside $TMP/nginx-NAME, error log $TMP/logs/nginx-NAME.error.log.
# Access-log format `up`: server address, request line, status, and the Authorization header as received.
start_nginx() {
  local name=$1 servers=$2 d="$TMP/nginx-$1"
  mkdir -p "$d/tmp" "$d/html"
  cat >"$d/nginx.conf" <<EOF
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $TMP/logs/nginx-$name.error.log info;
events { worker_connections 256; }
http {
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  root $d/html;
  default_type application/octet-stream;
  log_format up '\$server_addr:\$server_port "\$request" \$status \$body_bytes_sent auth="\$http_authorization"';
  access_log off;
  client_max_body_size 0;
  proxy_http_version 1.1;
  proxy_buffering off;
  proxy_request_buffering off;
  proxy_set_header Host \$http_host;
  proxy_read_timeout 60s;
$servers
}
EOF
  nginx -t -q -p "$d" -e "$TMP/logs/nginx-$name.error.log" -c "$d/nginx.conf"
  start_bg "nginx-$name" "$TMP/logs/nginx-$name.out.log" nginx -p "$d" -e "$TMP/logs/nginx-$name.error.log" \
    -c "$d/nginx.conf" -g 'daemon off;'
}

TLS_SERVER="ssl_certificate $CERTS/server.crt; ssl_certificate_key $CERTS/server.key;"

step_start_nginx() {
  # mTLS: TLS terminated here, client certificate signed by the CA required
  start_nginx mtls "
  server {
    listen $UP_MTLS ssl;
    $TLS_SERVER
    ssl_client_certificate $CERTS/ca.crt;
    ssl_verify_client on;
    access_log $TMP/logs/mtls.access.log up;
    location / { proxy_pass http://$UP_PLAIN; }
  }"
  # redirect: basic auth first (try_files runs after the access phase, a plain `return` would run before it),
  # then blob GETs go to another host; that host proxies to the same registry and logs Authorization.
  start_nginx redir "
  server {
    listen $UP_REDIR;
    access_log $TMP/logs/redir-front.access.log up;
    auth_basic \"redir-front\";
    auth_basic_user_file $CERTS/htpasswd.apr1;
    location ~ ^/v2/.+/blobs/sha256: { try_files /__never__ @to_target; }
    location @to_target { return 307 http://$REDIR_TARGET\$request_uri; }
    location / { proxy_set_header Authorization \"\"; proxy_pass http://$UP_PLAIN; }
  }
  server {
    listen $REDIR_TARGET;
    access_log $TMP/logs/redir-target.access.log up;
    location / { proxy_set_header Authorization \"\"; proxy_pass http://$UP_PLAIN; }
  }"
  # 429 switch for manifest requests
  start_nginx limited "
  server {
    listen $UP_LIMIT;
    access_log $TMP/logs/limited.access.log up;
    location ~ ^/v2/.+/manifests/ {
      if (-f $TMP/flag429) {
        add_header Retry-After 30 always;
        return 429 '{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"rate limited by the test\"}]}';
      }
      proxy_pass http://$UP_PLAIN;
    }
    location / { proxy_pass http://$UP_PLAIN; }
  }"
  # Listed upstreams that try to send the cache elsewhere.
  start_nginx evil "
  server {
    listen $UP_EVIL;
    access_log $TMP/logs/evil.access.log up;
    location ~ ^/v2/ssrf/loop/blobs/ { return 307 http://$TRAP9\$request_uri; }
    location ~ ^/v2/ssrf/meta/blobs/ { return 307 http://169.254.169.254/latest/meta-data/; }
    location ~ ^/v2/ssrf/realm/ {
      add_header WWW-Authenticate 'Bearer realm=\"http://$TRAP9/token\",service=\"evil\",scope=\"repository:ssrf/realm:pull\"' always;
      return 401 '{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}';
    }
    location / { proxy_pass http://$UP_PLAIN; }
  }
  server {
    listen $UP_EVILS ssl;
    $TLS_SERVER
    access_log $TMP/logs/evils.access.log up;
    location ~ ^/v2/ssrf/down/blobs/ { return 307 http://$UP_EVIL\$request_uri; }
    location / { proxy_pass http://$UP_PLAIN; }
  }"
  # Traps: must never be contacted by the cache. 127.0.0.5 fronts the running plain registry (a real,
  # working registry an SSRF would reach); 127.0.0.9 is the redirect target and token realm; TRAPLIT catches
  # numeric spellings of 127.0.0.1 that name its port; 127.0.0.1:443 and :80 (when free) catch port-less ones.
  local extra_listen="" p
  for p in 443 80; do
    if python3 -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $p))" 2>/dev/null; then
      extra_listen+="listen 127.0.0.1:$p; "
      echo "$p" >>"$TMP/trap-default-ports"
    fi
  done
  start_nginx trap "
  server {
    listen $TRAP5;
    access_log $TMP/logs/trap.access.log up;
    location / { proxy_pass http://$UP_PLAIN; }
  }
  server {
    listen $TRAP9;
    listen $TRAPLIT;
    $extra_listen
    access_log $TMP/logs/trap.access.log up;
    location /token { return 418 'realm-secret-teapot'; }
    location / { return 200 'ssrf-secret-payload'; }
  }"
  touch "$TMP/logs/trap.access.log"
  wait_tcp 127.0.0.1 "$P_MTLS" 20 nginx-mtls
  wait_tcp 127.0.0.1 "$P_REDIR" 20 nginx-redir
  wait_tcp 127.0.0.3 "$P_REDIR_T" 20 nginx-redir
  wait_tcp 127.0.0.1 "$P_LIMIT" 20 nginx-limited
  wait_tcp 127.0.0.1 "$P_EVIL" 20 nginx-evil
  wait_tcp 127.0.0.1 "$P_EVILS" 20 nginx-evil
  wait_tcp 127.0.0.5 "$P_TRAP5" 20 nginx-trap
  wait_tcp 127.0.0.9 "$P_TRAP9" 20 nginx-trap
  wait_tcp 127.0.0.1 "$P_TRAPLIT" 20 nginx-trap
  echo "nginx: mtls $UP_MTLS, redir $UP_REDIR -> $REDIR_TARGET, limited $UP_LIMIT, evil $UP_EVIL / $UP_EVILS, traps $TRAP5 $TRAP9 $TRAPLIT ${extra_listen}"
}

# ---------------------------------------------------------------------------------------------------------
# Images: every upstream kind gets its own images (a containerd or ociregistry store that already holds a blob
# would not fetch it again, so shared content would hide which upstream served it)
# ---------------------------------------------------------------------------------------------------------
VARIANTS="plain plain-ctd tls tls-ctd mtls mtls-ctd redir redir-ctd moved-a moved-b limited ssrf pass"
step_build_images() {
  local v
  for v in $VARIANTS; do build_image "$TMP/layout-$v" "$v" "$KIB"; done
}

# push VARIANT DEST_REF [SKOPEO_DEST_ARGS...]: copy the layout (digests are checked when pulling)
push() {
  local v=$1 ref=$2
  shift 2
  sk copy --all --preserve-digests "$@" "oci:$TMP/layout-$v:$TAG" "docker://$ref"
  echo "pushed $v to $ref"
}

step_push() {
  local noverify=(--dest-tls-verify=false)
  local tlsargs=(--dest-cert-dir "$CERTS/skopeo-ca" --dest-creds "$USER_NAME:$USER_PASS")
  push plain "$UP_PLAIN/plain/app:$TAG" "${noverify[@]}"
  push plain-ctd "$UP_PLAIN/plain/ctd:$TAG" "${noverify[@]}"
  push tls "$UP_TLS/tls/app:$TAG" "${tlsargs[@]}"
  push tls-ctd "$UP_TLS/tls/ctd:$TAG" "${tlsargs[@]}"
  push pass "$UP_TLS/pass/app:$TAG" "${tlsargs[@]}"
  # mtls, redir, limited and the evil upstreams front the plain registry
  push mtls "$UP_PLAIN/mtls/app:$TAG" "${noverify[@]}"
  push mtls-ctd "$UP_PLAIN/mtls/ctd:$TAG" "${noverify[@]}"
  push redir "$UP_PLAIN/redir/app:$TAG" "${noverify[@]}"
  push redir-ctd "$UP_PLAIN/redir/ctd:$TAG" "${noverify[@]}"
  push moved-a "$UP_PLAIN/moved/app:$TAG" "${noverify[@]}"
  push limited "$UP_PLAIN/limited/app:$TAG" "${noverify[@]}"
  push ssrf "$UP_PLAIN/ssrf/loop:$TAG" "${noverify[@]}"
  push ssrf "$UP_PLAIN/ssrf/meta:$TAG" "${noverify[@]}"
  push ssrf "$UP_PLAIN/ssrf/down:$TAG" "${noverify[@]}"
}

# The upstreams behave as intended when a client talks to them directly (no ociregistry involved).
step_upstreams_direct() {
  local raw="$TMP/direct.raw" code b="$TMP/direct.b" h="$TMP/direct.h"
  # TLS + htpasswd: verified with the CA, credentials needed
  sk inspect --raw --cert-dir "$CERTS/skopeo-ca" --creds "$USER_NAME:$USER_PASS" "docker://$UP_TLS/tls/app:$TAG" >"$raw"
  expect_eq "sha256:$(sha256_of "$raw")" "$(cat "$TMP/expect/tls/index.digest")" "index digest at $UP_TLS"
  if sk inspect --raw --cert-dir "$CERTS/skopeo-ca" "docker://$UP_TLS/tls/app:$TAG" >/dev/null 2>&1; then
    echo "$UP_TLS answered without credentials" >&2
    return 1
  fi
  # mTLS: with the client certificate fine, without it nginx refuses
  sk inspect --raw --cert-dir "$CERTS/skopeo-client" "docker://$UP_MTLS/mtls/app:$TAG" >"$raw"
  expect_eq "sha256:$(sha256_of "$raw")" "$(cat "$TMP/expect/mtls/index.digest")" "index digest at $UP_MTLS"
  code="$(get_status "https://$UP_MTLS/v2/mtls/app/manifests/$TAG" "$b" "$h" --cacert "$CERTS/ca.crt")"
  expect_eq "$code" 400 "GET https://$UP_MTLS/... without a client certificate (nginx: no required SSL certificate)"
  # redirect: manifests need auth; a blob GET (with auth) is a 307 to the target, which serves it without auth
  code="$(get_status "http://$UP_REDIR/v2/redir/app/manifests/$TAG" "$b" "$h")"
  expect_eq "$code" 401 "GET http://$UP_REDIR/... without credentials"
  local d
  d="$(largest_blob redir amd64)"
  code="$(cu -o /dev/null -D "$h" -w '%{http_code}' "http://$UP_REDIR/v2/redir/app/blobs/$d")"
  expect_eq "$code" 401 "blob GET at $UP_REDIR without credentials (auth before the redirect)"
  code="$(cu -o /dev/null -D "$h" -w '%{http_code}' -u "$USER_NAME:$USER_PASS" "http://$UP_REDIR/v2/redir/app/blobs/$d")"
  expect_eq "$code" 307 "blob GET at $UP_REDIR with credentials"
  expect_eq "$(header_value "$h" Location)" "http://$REDIR_TARGET/v2/redir/app/blobs/$d" "Location of the 307"
  cu -o "$b" "http://$REDIR_TARGET/v2/redir/app/blobs/$d"
  expect_eq "sha256:$(sha256_of "$b")" "$d" "blob served by the redirect target"
  sk copy --all --src-tls-verify=false --src-creds "$USER_NAME:$USER_PASS" \
    "docker://$UP_REDIR/redir/app:$TAG" "oci:$TMP/direct-redir:$TAG"
  compare_layout "$TMP/layout-redir" "$TMP/direct-redir" redir
  # 429 switch
  code="$(get_status "http://$UP_LIMIT/v2/limited/app/manifests/$TAG" "$b" "$h")"
  expect_eq "$code" 200 "GET $UP_LIMIT manifest, switch off"
  touch "$TMP/flag429"
  code="$(get_status "http://$UP_LIMIT/v2/limited/app/manifests/$TAG" "$b" "$h")"
  rm -f "$TMP/flag429"
  expect_eq "$code" 429 "GET $UP_LIMIT manifest, switch on"
  expect_eq "$(header_value "$h" Retry-After)" 30 "Retry-After of the 429"
  code="$(cu -o /dev/null -w '%{http_code}' "http://$UP_LIMIT/v2/limited/app/blobs/$(largest_blob limited amd64)")"
  expect_eq "$code" 200 "blob GET at $UP_LIMIT (the switch only covers manifests)"
  # evil upstreams
  code="$(cu -o /dev/null -D "$h" -w '%{http_code}' "http://$UP_EVIL/v2/ssrf/loop/blobs/$(largest_blob ssrf amd64)")"
  expect_eq "$code" 307 "evil loop redirect"
  expect_eq "$(header_value "$h" Location)" "http://$TRAP9/v2/ssrf/loop/blobs/$(largest_blob ssrf amd64)" "evil loop Location"
  code="$(cu -o /dev/null -D "$h" -w '%{http_code}' "http://$UP_EVIL/v2/ssrf/meta/blobs/$(largest_blob ssrf amd64)")"
  expect_eq "$(header_value "$h" Location)" "http://169.254.169.254/latest/meta-data/" "evil meta Location"
  code="$(get_status "http://$UP_EVIL/v2/ssrf/realm/manifests/$TAG" "$b" "$h")"
  expect_eq "$code" 401 "evil realm status"
  header_value "$h" WWW-Authenticate
  code="$(cu -o /dev/null -D "$h" -w '%{http_code}' --cacert "$CERTS/ca.crt" "https://$UP_EVILS/v2/ssrf/down/blobs/$(largest_blob ssrf amd64)")"
  expect_eq "$(header_value "$h" Location)" "http://$UP_EVIL/v2/ssrf/down/blobs/$(largest_blob ssrf amd64)" "evil https -> http Location"
  code="$(get_status "https://$UP_EVILS/v2/ssrf/down/manifests/$TAG" "$b" "$h" --cacert "$CERTS/ca.crt")"
  expect_eq "$code" 200 "manifest via the evil https upstream"
  code="$(get_status "http://$TRAP5/v2/ssrf/loop/manifests/$TAG" "$b" "$h")"
  expect_eq "$code" 200 "manifest via the 127.0.0.5 trap (a working registry)"
  code="$(cu -o "$b" -w '%{http_code}' "http://$TRAP9/token")"
  expect_eq "$code" 418 "trap realm status"
  # the direct checks above are not part of what the traps must never see
  : >"$TMP/logs/trap.access.log"
  echo "all upstreams answer directly as configured"
}

# ---------------------------------------------------------------------------------------------------------
# containerd
# ---------------------------------------------------------------------------------------------------------
# write_hosts MIRROR: hosts.toml for every upstream host: ociregistry is the only mirror and the `server`
# fallback is a dead port, so a pull can only succeed through ociregistry.
write_hosts() {
  local mirror=$1 up
  for up in "$UP_PLAIN" "$UP_TLS" "$UP_MTLS" "$UP_REDIR"; do
    mkdir -p "$TMP/hosts/$up"
    cat >"$TMP/hosts/$up/hosts.toml" <<EOF
server = "http://127.0.0.1:$P_DEAD"

[host."http://$mirror"]
  capabilities = ["pull", "resolve"]
EOF
  done
}


# ctd_pull CTD VARIANT REF: real `ctr images pull` (with unpack) of linux/amd64 through the hosts dir; the image
# target is the pushed index, every linux/amd64 blob is in the content store, the image is complete and unpacked.
ctd_pull() {
  local ctd=$1 variant=$2 ref=$3
  [[ -e "$TMP/ok/$ctd" ]] || { echo "containerd $ctd is not running" >&2; return 1; }
  ctr_ "$ctd" images pull --hosts-dir "${HOSTS_DIR:-$TMP/hosts}" --plain-http --platform linux/amd64 \
    --snapshotter "$SNAPSHOTTER" "$ref"
  local target
  target="$(ctr_ "$ctd" images ls | awk -v r="$ref" '$1 == r { print $3 }')"
  expect_eq "$target" "$(cat "$TMP/expect/$variant/index.digest")" "containerd image target digest of $ref"
  local have d
  have="$(ctr_ "$ctd" content ls -q)"
  while read -r d; do
    grep -qxF "$d" <<<"$have" || { echo "blob $d (linux/amd64) missing from containerd's content store" >&2; return 1; }
  done <"$TMP/expect/$variant/amd64.blobs"
  local check line
  check="$(ctr_ "$ctd" images check --snapshotter "$SNAPSHOTTER" "name==$ref")"
  line="$(awk -v r="$ref" '$1 == r' <<<"$check")"
  [[ "$line" == *complete* ]] || { echo "image $ref not complete in containerd: $check" >&2; return 1; }
  [[ "$(awk '{ print $NF }' <<<"$line")" == "true" ]] || { echo "image $ref not unpacked by containerd" >&2; return 1; }
  echo "containerd pulled and unpacked $ref ($target)"
}

# Infrastructure mode only: containerd pulls straight from the plain registry (checks containerd itself).
step_ctd_direct() {
  mkdir -p "$TMP/hosts-direct/$UP_PLAIN"
  printf 'server = "http://%s"\n' "$UP_PLAIN" >"$TMP/hosts-direct/$UP_PLAIN/hosts.toml"
  ctr_ ctd1 images pull --hosts-dir "$TMP/hosts-direct" --plain-http --platform linux/amd64 \
    --snapshotter "$SNAPSHOTTER" "$UP_PLAIN/plain/ctd:$TAG"
  ctr_ ctd1 images ls
}

# ---------------------------------------------------------------------------------------------------------
# ociregistry instances
# ---------------------------------------------------------------------------------------------------------
write_configs() {
  cat >"$TMP/main.yaml" <<EOF
log_level: info
default_registry: "$UP_PLAIN"
tag_ttl: 10m
registries:
  - name: "$UP_PLAIN"
    scheme: http
    aliases: [plain]
    tag_ttl: 2s
  - name: "$UP_TLS"
    scheme: https
    aliases: [tlsreg]
    tls:
      ca_file: $CERTS/ca.crt
    auth:
      username: $USER_NAME
      password_file: $CERTS/password.txt
  - name: "$UP_MTLS"
    aliases: [mtls]
    tls:
      ca_file: $CERTS/ca.crt
      cert_file: $CERTS/client.crt
      key_file: $CERTS/client.key
  - name: "$UP_REDIR"
    scheme: http
    aliases: [redir]
    auth:
      username: $USER_NAME
      password: "$USER_PASS"
  - name: "$REDIR_TARGET"
    scheme: http
  - name: "$UP_LIMIT"
    scheme: http
    aliases: [limited]
    tag_ttl: 2s
EOF
  # the TLS registries, configured without credentials / without a client certificate
  cat >"$TMP/neg.yaml" <<EOF
log_level: info
default_registry: "$UP_PLAIN"
registries:
  - name: "$UP_PLAIN"
    scheme: http
  - name: "$UP_TLS"
    aliases: [tlsreg]
    tls:
      ca_file: $CERTS/ca.crt
  - name: "$UP_MTLS"
    aliases: [mtls]
    tls:
      ca_file: $CERTS/ca.crt
EOF
  # defaults (unlisted_upstreams: public) plus the two evil upstreams
  cat >"$TMP/ssrf.yaml" <<EOF
log_level: info
default_registry: "$UP_EVIL"
registries:
  - name: "$UP_EVIL"
    scheme: http
  - name: "$UP_EVILS"
    tls:
      ca_file: $CERTS/ca.crt
EOF
  cat >"$TMP/pass.yaml" <<EOF
log_level: info
default_registry: "$UP_TLS"
registries:
  - name: "$UP_PLAIN"
    scheme: http
    aliases: [plain]
  - name: "$UP_TLS"
    aliases: [tlsreg]
    tls:
      ca_file: $CERTS/ca.crt
    auth: passthrough
EOF
}

# start_oci NAME ADDR CONFIG [EXTRA_FLAGS...]: data dir $TMP/data-NAME, log $TMP/logs/NAME.log (appended to
# on restart: the process name stays, the log name gets a suffix given in OCI_LOG)
start_oci() {
  local name=$1 addr=$2 conf=$3
  shift 3
  start_bg "$name" "$TMP/logs/${OCI_LOG:-$name}.log" "$OCIREGISTRY_BIN" serve \
    --listen "$addr" --data-dir "$TMP/data-$name" --config-file "$conf" "$@"
  wait_http "http://$addr/v2/" 30 "$name"
}

step_start_ocis() {
  write_configs
  start_oci oci-main "$OCI_MAIN" "$TMP/main.yaml"
  start_oci oci-neg "$OCI_NEG" "$TMP/neg.yaml"
  start_oci oci-ssrf "$OCI_SSRF" "$TMP/ssrf.yaml"
  start_oci oci-pass "$OCI_PASS" "$TMP/pass.yaml"
  write_hosts "$OCI_MAIN"
  echo "ociregistry main $OCI_MAIN, neg $OCI_NEG, ssrf $OCI_SSRF, pass $OCI_PASS"
}

# ---------------------------------------------------------------------------------------------------------
# Pulls through each upstream kind
# ---------------------------------------------------------------------------------------------------------
# skopeo_pull ALIAS REPO VARIANT UPSTREAM_LOG BLOB_REGEX_PREFIX: skopeo copies the whole multi-platform image
# through ociregistry (main) by alias; the layout must equal what was pushed; the upstream's log must show the
# GET of the largest amd64 layer (it really came from that upstream, through that route).
skopeo_pull() {
  local alias=$1 repo=$2 variant=$3 uplog=$4 out="$TMP/pull-$3"
  sk copy --all --preserve-digests --src-tls-verify=false \
    "docker://$OCI_MAIN/$alias/$repo:$TAG" "oci:$out:$TAG"
  compare_layout "$TMP/layout-$variant" "$out" "$variant"
  local d n
  d="$(largest_blob "$variant" amd64)"
  n="$(count "\"GET /v2/$repo/blobs/$d " <"$uplog")"
  echo "upstream log $(basename "$uplog"): $n GET(s) of $repo's amd64 layer $d"
  [[ $n -ge 1 ]] || { echo "the upstream never served $d: not fetched through it" >&2; return 1; }
}

# ctd_pull_through VARIANT UPSTREAM REPO UPSTREAM_LOG: containerd (mirror = ociregistry main, ?ns=UPSTREAM)
# pulls cold; ociregistry's log shows containerd's requests with ns=, the upstream's log the layer GET.
ctd_pull_through() {
  local variant=$1 up=$2 repo=$3 uplog=$4 before after d
  local ocilog="$TMP/logs/oci-main.log"
  before="$(count "/v2/$repo/(manifests|blobs)/" <"$ocilog")"
  ctd_pull ctd1 "$variant" "$up/$repo:$TAG"
  settle_access_log
  after="$(count "/v2/$repo/(manifests|blobs)/" <"$ocilog")"
  echo "ociregistry access log: $((after - before)) requests for /v2/$repo/ during the pull"
  [[ $((after - before)) -ge 4 ]] || { echo "containerd's requests did not reach ociregistry" >&2; return 1; }
  # containerd names the upstream with ?ns=HOST:PORT (URL-encoded); ociregistry's access log shows the query
  local ns
  ns="$(grep -aF "/v2/$repo/" "$ocilog" | count "ns=127\.0\.0\.1(%3A|:)${up##*:}([^0-9]|$)")"
  echo "ociregistry access-log lines for /v2/$repo/ with ns=$up: $ns"
  [[ $ns -ge 4 ]] || { echo "containerd's requests for $repo did not carry ns=$up" >&2; return 1; }
  d="$(largest_blob "$variant" amd64)"
  [[ "$(count "\"GET /v2/$repo/blobs/$d " <"$uplog")" -ge 1 ]] || { echo "upstream log $(basename "$uplog") shows no GET of $d" >&2; return 1; }
  echo "upstream $(basename "$uplog") served $d"
}

step_plain_skopeo() { skopeo_pull plain plain/app plain "$TMP/logs/reg-plain.log"; }
step_plain_ctd() { ctd_pull_through plain-ctd "$UP_PLAIN" plain/ctd "$TMP/logs/reg-plain.log"; }

# neg instance: the TLS registry configured without credentials -> its 401 reaches the client as an error
step_tls_no_auth_fails() {
  local b="$TMP/neg.b" h="$TMP/neg.h" code
  mark regtls "$TMP/logs/reg-tls.log"
  if sk inspect --raw --tls-verify=false "docker://$OCI_NEG/tlsreg/tls/app:$TAG" >"$b" 2>"$TMP/neg.err"; then
    echo "skopeo got the manifest through a config without credentials" >&2
    return 1
  fi
  echo "skopeo failed as expected: $(tail -n 1 "$TMP/neg.err")"
  code="$(get_status "http://$OCI_NEG/v2/tlsreg/tls/app/manifests/$TAG" "$b" "$h")"
  echo "curl: status $code, body $(head -c 300 "$b")"
  [[ $code != 2* ]] || { echo "status $code for a registry that needs credentials" >&2; return 1; }
  [[ $code != 000 ]] || { echo "no answer" >&2; return 1; }
  local n
  n="$(since regtls "$TMP/logs/reg-tls.log" | count '"(GET|HEAD) /v2/tls/app/manifests/[^ ]* HTTP/[0-9.]+" 401 ')"
  echo "docker-registry (TLS) answered 401 to ociregistry $n time(s)"
  [[ $n -ge 1 ]] || { echo "the TLS registry never saw (and refused) the request: TLS or routing problem, not auth" >&2; return 1; }
}

step_tls_skopeo() { skopeo_pull tlsreg tls/app tls "$TMP/logs/reg-tls.log"; }
step_tls_ctd() { ctd_pull_through tls-ctd "$UP_TLS" tls/ctd "$TMP/logs/reg-tls.log"; }

# neg instance: the mTLS front configured without a client certificate -> nginx refuses, the client errors
step_mtls_no_cert_fails() {
  local b="$TMP/neg.b" h="$TMP/neg.h" code
  mark mtls "$TMP/logs/mtls.access.log"
  if sk inspect --raw --tls-verify=false "docker://$OCI_NEG/mtls/mtls/app:$TAG" >"$b" 2>"$TMP/neg.err"; then
    echo "skopeo got the manifest without a client certificate" >&2
    return 1
  fi
  echo "skopeo failed as expected: $(tail -n 1 "$TMP/neg.err")"
  code="$(get_status "http://$OCI_NEG/v2/mtls/mtls/app/manifests/$TAG" "$b" "$h")"
  echo "curl: status $code, body $(head -c 300 "$b")"
  [[ $code != 2* && $code != 000 ]] || { echo "status $code without a client certificate" >&2; return 1; }
  if grep -aqiE 'required SSL|certificate|400 Bad|nginx' "$b"; then
    echo "the upstream's error text reached the client: $(cat "$b")" >&2
    return 1
  fi
  # the request reached nginx (TLS handshake fine, CA trusted) and nginx refused it: 400 no client cert
  local lines
  lines="$(since mtls "$TMP/logs/mtls.access.log")"
  echo "mtls nginx log: ${lines:-<empty>}"
  [[ "$(count '/v2/mtls/app/manifests/[^ ]* HTTP/[0-9.]+" 400 ' <<<"$lines")" -ge 1 ]] || {
    echo "nginx did not refuse a manifest request for lack of a client certificate" >&2; return 1; }
}

step_mtls_skopeo() { skopeo_pull mtls mtls/app mtls "$TMP/logs/mtls.access.log"; }
step_mtls_ctd() { ctd_pull_through mtls-ctd "$UP_MTLS" mtls/ctd "$TMP/logs/mtls.access.log"; }

# check_redirect VARIANT REPO: every blob GET the target saw for REPO came without Authorization, and the
# largest amd64 layer was served by it (200); the front saw that blob's GET with credentials and sent 307.
check_redirect() {
  local variant=$1 repo=$2 d lines front
  d="$(largest_blob "$variant" amd64)"
  lines="$(since redirt "$TMP/logs/redir-target.access.log")"
  front="$(since redirf "$TMP/logs/redir-front.access.log")"
  echo "redirect front log (new lines):"
  sed 's/^/  /' <<<"$front" | sed -E 's/(auth="Basic )[^"]*/\1<redacted>/'
  echo "redirect target log (new lines):"
  sed 's/^/  /' <<<"$lines"
  [[ "$(count "\"GET /v2/$repo/blobs/$d HTTP/[0-9.]+\" 307 .*auth=\"Basic " <<<"$front")" -ge 1 ]] || {
    echo "the front never answered an authenticated GET of $d with 307" >&2; return 1; }
  [[ "$(count "\"GET /v2/$repo/blobs/$d HTTP/[0-9.]+\" 200 " <<<"$lines")" -ge 1 ]] || {
    echo "the redirect target never served $d: the blob was not fetched via the redirect" >&2; return 1; }
  local leaked
  leaked="$(grep -avE 'auth="-"$' <<<"$lines" | grep -a . || true)"
  if [[ -n "$leaked" ]]; then
    echo "Authorization reached the redirect target (another host):" >&2
    echo "$leaked" >&2
    return 1
  fi
  echo "blob $d fetched via the redirect target, no Authorization header arrived there"
}

step_redir_skopeo() {
  mark redirt "$TMP/logs/redir-target.access.log"
  mark redirf "$TMP/logs/redir-front.access.log"
  skopeo_pull redir redir/app redir "$TMP/logs/redir-target.access.log"
  check_redirect redir redir/app
}

step_redir_ctd() {
  mark redirt "$TMP/logs/redir-target.access.log"
  mark redirf "$TMP/logs/redir-front.access.log"
  ctd_pull_through redir-ctd "$UP_REDIR" redir/ctd "$TMP/logs/redir-target.access.log"
  check_redirect redir-ctd redir/ctd
}

# ---------------------------------------------------------------------------------------------------------
# SSRF table (ociregistry "ssrf": default policy, only the two evil upstreams listed)
# ---------------------------------------------------------------------------------------------------------
# expect_refused URL ALLOWED_STATUSES(regex) WHAT: status matches; the body is a registry error; prints it
expect_refused() {
  local url=$1 allowed=$2 what=$3 b="$TMP/ssrf.b" h="$TMP/ssrf.h" code
  code="$(get_status "$url" "$b" "$h")"
  echo "$what: $url -> $code $(head -c 400 "$b")"
  [[ $code =~ ^($allowed)$ ]] || { echo "$what: status $code, expected $allowed" >&2; return 1; }
}

# trap_quiet WHAT: nothing reached a trap since the mark `trap`
trap_quiet() {
  local lines
  lines="$(since trap "$TMP/logs/trap.access.log")"
  if [[ -n "$lines" ]]; then
    echo "$1: the cache contacted a trap:" >&2
    echo "$lines" >&2
    return 1
  fi
}

step_ssrf_inpath_loopback() {
  mark trap "$TMP/logs/trap.access.log"
  local b="$TMP/ssrf.b" code ok=1 url
  for url in "http://$OCI_SSRF/v2/$TRAP5/x/manifests/$TAG" "http://$OCI_SSRF/v2/x/manifests/$TAG?ns=$TRAP5" \
    "http://$OCI_SSRF/v2/$TRAP5/ssrf/loop/blobs/$(largest_blob ssrf arm64)"; do
    expect_refused "$url" 403 "unlisted loopback $TRAP5" || ok=0
    [[ "$(jq -r '.errors[0].code' "$b" 2>/dev/null)" == DENIED ]] || { echo "error code is not DENIED" >&2; ok=0; }
    jq -r '.errors[0].message' "$b" 2>/dev/null | grep -qF "127.0.0.5" || { echo "message does not name the host 127.0.0.5" >&2; ok=0; }
    jq -r '.errors[0].message' "$b" 2>/dev/null | grep -qF "registries:" || { echo "message does not name the key registries:" >&2; ok=0; }
  done
  sleep 0.5
  trap_quiet "unlisted loopback" || ok=0
  [[ $ok -eq 1 ]]
}

step_ssrf_numeric_hosts() {
  mark trap "$TMP/logs/trap.access.log"
  local ns ok=1 url
  for ns in 2130706433 0x7f.1 127.0.0.1:00000 "2130706433:$P_TRAPLIT" "0x7f.1:$P_TRAPLIT" "0x7f000001:$P_TRAPLIT" \
    "127.1:$P_TRAPLIT" "0177.0.0.1:$P_TRAPLIT" "127.0.0.1:0$P_TRAPLIT" "$TRAPLIT"; do
    expect_refused "http://$OCI_SSRF/v2/x/manifests/$TAG?ns=$ns" "400|403" "ns=$ns" || ok=0
  done
  for url in "2130706433:$P_TRAPLIT/x" "0x7f.1:$P_TRAPLIT/x" "127.1:$P_TRAPLIT/x" "$TRAPLIT/x"; do
    expect_refused "http://$OCI_SSRF/v2/$url/manifests/$TAG" "400|403" "in-path $url" || ok=0
  done
  sleep 0.5
  trap_quiet "numeric host spellings" || ok=0
  [[ $ok -eq 1 ]]
}

# ssrf_blob_refused UPSTREAM REPO UPSTREAM_LOG WHAT DIGEST: a blob GET through a listed upstream that redirects
# somewhere forbidden: the client gets an error, the upstream did answer with its 307, nothing was stored.
# Each case uses its own blob, so that one case's blob cannot be answered from the cache in another.
ssrf_blob_refused() {
  local up=$1 repo=$2 uplog=$3 what=$4 d=$5 ok=1
  expect_refused "http://$OCI_SSRF/v2/$up/$repo/blobs/$d" "4[0-9][0-9]|5[0-9][0-9]" "$what" || ok=0
  # an upstream failure is a generic 502 UNAVAILABLE: where the upstream tried to send the cache stays in the log
  if [[ "$(jq -r '.errors[0].code' "$TMP/ssrf.b" 2>/dev/null)" == UNAVAILABLE ]] &&
    grep -aqE '127\.0\.0\.9|169\.254|http://' "$TMP/ssrf.b"; then
    echo "$what: the 502 body carries the upstream's redirect details: $(cat "$TMP/ssrf.b")" >&2
    ok=0
  fi
  [[ "$(count "\"GET /v2/$repo/blobs/$d HTTP/[0-9.]+\" 307 " <"$uplog")" -ge 1 ]] || {
    echo "$what: the listed upstream never sent its redirect (log $(basename "$uplog"))" >&2; ok=0; }
  local f="$TMP/data-oci-ssrf/blobs/sha256/${d:7:2}/${d#sha256:}"
  [[ ! -e "$f" ]] || { echo "$what: the blob was stored at $f" >&2; ok=0; }
  [[ $ok -eq 1 ]]
}

step_ssrf_redirect_loopback() {
  mark trap "$TMP/logs/trap.access.log"
  local ok=1 b="$TMP/ssrf.b" h="$TMP/ssrf.h" code
  # sanity: the listed upstream itself works (manifests are proxied to the plain registry)
  code="$(get_status "http://$OCI_SSRF/v2/$UP_EVIL/ssrf/loop/manifests/$TAG" "$b" "$h")"
  expect_eq "$code" 200 "manifest through the listed evil upstream" || ok=0
  ssrf_blob_refused "$UP_EVIL" ssrf/loop "$TMP/logs/evil.access.log" "307 to unlisted loopback $TRAP9" \
    "$(largest_blob ssrf amd64)" || ok=0
  ssrf_blob_refused "$UP_EVIL" ssrf/meta "$TMP/logs/evil.access.log" "307 to http://169.254.169.254/latest/meta-data/" \
    "$(head -n 1 "$TMP/expect/ssrf/amd64.blobs")" || ok=0
  grep -aqF 'ssrf-secret-payload' "$b" && { echo "trap payload reached the client" >&2; ok=0; }
  sleep 0.5
  trap_quiet "redirect to loopback / metadata" || ok=0
  [[ $ok -eq 1 ]]
}

step_ssrf_redirect_downgrade() {
  mark evil "$TMP/logs/evil.access.log"
  local ok=1 b="$TMP/ssrf.b" h="$TMP/ssrf.h" code
  code="$(get_status "http://$OCI_SSRF/v2/$UP_EVILS/ssrf/down/manifests/$TAG" "$b" "$h")"
  expect_eq "$code" 200 "manifest through the listed https upstream" || ok=0
  ssrf_blob_refused "$UP_EVILS" ssrf/down "$TMP/logs/evils.access.log" "https upstream's 307 to http://$UP_EVIL" \
    "$(head -n 1 "$TMP/expect/ssrf/arm64.blobs")" || ok=0
  sleep 0.5
  local lines
  lines="$(since evil "$TMP/logs/evil.access.log" | grep -aF "/v2/ssrf/down/blobs/" || true)"
  if [[ -n "$lines" ]]; then
    echo "the http redirect target was contacted (https -> http downgrade followed):" >&2
    echo "$lines" >&2
    ok=0
  fi
  [[ $ok -eq 1 ]]
}

step_ssrf_realm() {
  mark trap "$TMP/logs/trap.access.log"
  mark evil "$TMP/logs/evil.access.log"
  local ok=1 b="$TMP/ssrf.b"
  expect_refused "http://$OCI_SSRF/v2/$UP_EVIL/ssrf/realm/manifests/$TAG" "4[0-9][0-9]|5[0-9][0-9]" "Bearer realm on $TRAP9" || ok=0
  [[ "$(since evil "$TMP/logs/evil.access.log" | count '/v2/ssrf/realm/manifests/[^ ]* HTTP/[0-9.]+" 401 ')" -ge 1 ]] || {
    echo "the listed upstream never sent its 401 challenge" >&2; ok=0; }
  if grep -aqiE 'realm-secret|teapot|418' "$b"; then echo "the realm's answer leaked to the client: $(cat "$b")" >&2; ok=0; fi
  sleep 0.5
  trap_quiet "unlisted token realm" || ok=0
  [[ $ok -eq 1 ]]
}

# ---------------------------------------------------------------------------------------------------------
# Tags: moved tag (stale-while-revalidate), 429 back-off, passthrough
# ---------------------------------------------------------------------------------------------------------
step_tag_moved() {
  local url="http://$OCI_MAIN/v2/plain/moved/app/manifests/$TAG" a b st d t
  a="$(cat "$TMP/expect/moved-a/index.digest")"
  b="$(cat "$TMP/expect/moved-b/index.digest")"
  read -r st d < <(manifest_digest "$url")
  expect_eq "$st $d" "200 $a" "first GET of moved/app:$TAG (image A)"
  push moved-b "$UP_PLAIN/moved/app:$TAG" --dest-tls-verify=false
  sleep 3   # tag_ttl of the plain registry is 2s
  mark moved "$TMP/logs/reg-plain.log"
  local hb="$TMP/moved.h" bb="$TMP/moved.b"
  t="$(curl -sS --max-time 20 -H "Accept: $ACCEPT_MANIFESTS" -D "$hb" -o "$bb" -w '%{http_code} %{time_total}' "$url")"
  echo "first GET after expiry: $t, digest sha256:$(sha256_of "$bb")"
  expect_eq "${t%% *} sha256:$(sha256_of "$bb")" "200 $a" "first answer after the TTL expired (stale-while-revalidate: old digest)"
  awk -v t="${t##* }" 'BEGIN { exit !(t < 1.0) }' || { echo "the stale answer took ${t##* }s" >&2; return 1; }
  local i got=""
  for i in $(seq 1 20); do
    sleep 0.5
    read -r st d < <(manifest_digest "$url")
    if [[ "$st $d" == "200 $b" ]]; then got=1; break; fi
  done
  [[ -n "$got" ]] || { echo "the tag never moved to image B ($b); last: $st $d" >&2; return 1; }
  echo "after revalidation (~$((i / 2))s): new digest $b"
  local n
  n="$(since moved "$TMP/logs/reg-plain.log" | count '"(GET|HEAD) /v2/moved/app/manifests/v1 HTTP')"
  echo "the plain registry saw $n request(s) for moved/app:v1 since the TTL expired"
  [[ $n -ge 1 ]] || { echo "no revalidation request reached the upstream" >&2; return 1; }
  read -r st d < <(manifest_digest "http://$OCI_MAIN/v2/plain/moved/app/manifests/$b")
  expect_eq "$st $d" "200 $b" "image B by digest"
}

step_429() {
  local url="http://$OCI_MAIN/v2/limited/limited/app/manifests" l st d h="$TMP/429.h" b="$TMP/429.b" code
  local alog="$TMP/logs/limited.access.log"
  l="$(cat "$TMP/expect/limited/index.digest")"
  rm -f "$TMP/flag429"
  read -r st d < <(manifest_digest "$url/$TAG")
  expect_eq "$st $d" "200 $l" "limited/app:$TAG cached (switch off)"
  sleep 3   # tag_ttl 2s
  mark lim "$alog"
  touch "$TMP/flag429"
  read -r st d < <(manifest_digest "$url/$TAG")
  expect_eq "$st $d" "200 $l" "cached tag past its TTL while the upstream answers 429 (served stale)"
  for _ in $(seq 1 30); do
    [[ "$(since lim "$alog" | count '" 429 ')" -ge 1 ]] && break
    sleep 0.1
  done
  sleep 0.3   # nginx logs after sending: give ociregistry a moment to take in the 429 it got
  code="$(get_status "$url/never" "$b" "$h")"
  echo "never-cached tag: $code, Retry-After: '$(header_value "$h" Retry-After)', body $(head -c 300 "$b")"
  expect_eq "$code" 429 "never-cached tag while rate limited"
  [[ -n "$(header_value "$h" Retry-After)" ]] || { echo "no Retry-After header on the 429" >&2; return 1; }
  local i
  for i in 1 2 3; do
    read -r st d < <(manifest_digest "$url/$TAG")
    expect_eq "$st $d" "200 $l" "cached tag, repeat $i"
    code="$(get_status "$url/never" "$b" "$h")"
    expect_eq "$code" 429 "never-cached tag, repeat $i"
    sleep 0.3
  done
  sleep 1
  local lines n
  lines="$(since lim "$alog")"
  echo "limited nginx log during the back-off window:"
  sed 's/^/  /' <<<"$lines"
  n="$(count '" 429 ' <<<"$lines")"
  echo "ociregistry sent $n request(s) that got 429, for 8 client requests"
  expect_eq "$n" 1 "requests answered 429 upstream during the back-off window (Retry-After: 30)"
  rm -f "$TMP/flag429"
}

step_passthrough() {
  local url="http://$OCI_PASS/v2/tlsreg/pass/app/manifests/$TAG" p st d b="$TMP/pass.b" h="$TMP/pass.h" code
  p="$(cat "$TMP/expect/pass/index.digest")"
  read -r st d < <(manifest_digest "$url" -u "$USER_NAME:$USER_PASS")
  expect_eq "$st $d" "200 $p" "manifest with the right credentials (passthrough)"
  mark passreg "$TMP/logs/reg-tls.log"
  code="$(get_status "$url" "$b" "$h" -u "$USER_NAME:wrong-password")"
  echo "wrong credentials: $code $(head -c 200 "$b")"
  expect_eq "$code" 401 "cached manifest with wrong credentials"
  # the cache asked the upstream whether these credentials may read pass/app, and it said no
  local n
  n="$(since passreg "$TMP/logs/reg-tls.log" | count '"(GET|HEAD) /v2/pass/app/[^ ]* HTTP/[0-9.]+" 401 ')"
  echo "the TLS registry answered 401 to $n request(s) for pass/app after the wrong-credential request (checked upstream)"
  [[ $n -ge 1 ]] || { echo "the wrong credentials were never checked with the upstream" >&2; return 1; }
  code="$(get_status "$url" "$b" "$h")"
  echo "no credentials: $code, WWW-Authenticate: '$(header_value "$h" WWW-Authenticate)'"
  expect_eq "$code" 401 "cached manifest without credentials"
  # a blob of the cached image is guarded the same way
  local dl
  dl="$(largest_blob pass amd64)"
  code="$(cu -o /dev/null -w '%{http_code}' -u "$USER_NAME:$USER_PASS" "http://$OCI_PASS/v2/tlsreg/pass/app/blobs/$dl")"
  expect_eq "$code" 200 "blob with the right credentials"
  code="$(cu -o /dev/null -w '%{http_code}' -u "$USER_NAME:wrong-password" "http://$OCI_PASS/v2/tlsreg/pass/app/blobs/$dl")"
  expect_eq "$code" 401 "cached blob with wrong credentials"
}

# Content cached for a passthrough registry must not come out through another route by digest: not through
# another repository name on it, nor through an anonymous registry (the plain one, listed in the pass instance)
# that does not have it.
step_passthrough_other_routes() {
  local st d ok=1 b="$TMP/pass.b" h="$TMP/pass.h" code dl md
  dl="$(largest_blob pass amd64)"
  md="$(cat "$TMP/expect/pass/amd64.manifest")"
  # precondition: cached by step_passthrough
  code="$(cu -o /dev/null -w '%{http_code}' -u "$USER_NAME:$USER_PASS" "http://$OCI_PASS/v2/tlsreg/pass/app/blobs/$dl")"
  expect_eq "$code" 200 "blob with the right credentials"
  local url
  for url in "http://$OCI_PASS/v2/plain/other/repo/blobs/$dl" "http://$OCI_PASS/v2/plain/pass/app/blobs/$dl" \
    "http://$OCI_PASS/v2/plain/pass/app/manifests/$md" "http://$OCI_PASS/v2/tlsreg/other/repo/blobs/$dl" \
    "http://$OCI_PASS/v2/other/repo/blobs/$dl"; do
    code="$(get_status "$url" "$b" "$h")"
    echo "$url without credentials -> $code $(head -c 200 "$b" | tr -c '[:print:]' '?')"
    if [[ $code == 2* ]]; then
      echo "passthrough-protected content served without credentials via $url" >&2
      ok=0
    fi
  done
  [[ $ok -eq 1 ]]
}

# ---------------------------------------------------------------------------------------------------------
# Air-gapped
# ---------------------------------------------------------------------------------------------------------
# A tarpit accepts connections, logs each one and never answers (an upstream that hangs).
TARPIT_PY='
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
held = []
print("listening", flush=True)
while True:
    c, a = s.accept(); held.append(c); print("connection from %s:%d" % a, flush=True)
'

step_stop_upstreams() {
  local n
  for n in oci-main nginx-mtls nginx-redir nginx-limited nginx-evil nginx-trap reg-plain reg-tls ctd1; do
    echo "$n stopped: $(stop_bg "$n" 10)"
  done
  rm -f "$TMP/ok/ctd1"
  # the plain and TLS registries' ports now hang instead of refusing
  start_bg tarpit-plain "$TMP/logs/tarpit-plain.log" python3 -c "$TARPIT_PY" "$P_PLAIN"
  start_bg tarpit-tls "$TMP/logs/tarpit-tls.log" python3 -c "$TARPIT_PY" "$P_TLS"
  for _ in $(seq 1 50); do
    grep -q listening "$TMP/logs/tarpit-plain.log" 2>/dev/null && grep -q listening "$TMP/logs/tarpit-tls.log" 2>/dev/null && break
    sleep 0.1
  done
  grep -q listening "$TMP/logs/tarpit-plain.log" && grep -q listening "$TMP/logs/tarpit-tls.log"
  mark tpp "$TMP/logs/tarpit-plain.log"
  mark tpt "$TMP/logs/tarpit-tls.log"
  OCI_LOG=oci-main-airgapped start_oci oci-main "$OCI_MAIN" "$TMP/main.yaml" --air-gapped
  echo "upstreams stopped (tarpits on $UP_PLAIN and $UP_TLS); ociregistry restarted with --air-gapped on the same data dir"
}

tarpits_quiet() {
  local lines
  lines="$(since tpp "$TMP/logs/tarpit-plain.log"; since tpt "$TMP/logs/tarpit-tls.log")"
  [[ -z "$lines" ]] || { echo "air-gapped ociregistry contacted an upstream: $lines" >&2; return 1; }
}

step_air_skopeo() {
  local out="$TMP/pull-air-plain" out2="$TMP/pull-air-tls"
  sk copy --all --preserve-digests --src-tls-verify=false "docker://$OCI_MAIN/plain/plain/app:$TAG" "oci:$out:$TAG"
  compare_layout "$TMP/layout-plain" "$out" plain
  sk copy --all --preserve-digests --src-tls-verify=false "docker://$OCI_MAIN/tlsreg/tls/app:$TAG" "oci:$out2:$TAG"
  compare_layout "$TMP/layout-tls" "$out2" tls
  tarpits_quiet
}

step_air_ctd() {
  start_containerd ctd2
  [[ -z "$(ctr_ ctd2 content ls -q)" ]] || { echo "fresh containerd content store is not empty" >&2; return 1; }
  ctd_pull ctd2 plain-ctd "$UP_PLAIN/plain/ctd:$TAG"
  ctd_pull ctd2 tls-ctd "$UP_TLS/tls/ctd:$TAG"
  tarpits_quiet
}

step_air_miss() {
  local b="$TMP/air.b" h="$TMP/air.h" r code t url
  for url in "http://$OCI_MAIN/v2/plain/plain/app/manifests/never-cached" \
    "http://$OCI_MAIN/v2/never/app/manifests/$TAG?ns=$UP_PLAIN" \
    "http://$OCI_MAIN/v2/plain/plain/app/blobs/sha256:$(printf 'never' | sha256sum | cut -d' ' -f1)"; do
    r="$(curl -sS --max-time 20 -H "Accept: $ACCEPT_MANIFESTS" -D "$h" -o "$b" -w '%{http_code} %{time_total}' "$url")"
    code="${r%% *}"
    t="${r##* }"
    echo "$url -> $code in ${t}s: $(head -c 200 "$b")"
    expect_eq "$code" 404 "status of a miss while air-gapped"
    awk -v t="$t" 'BEGIN { exit !(t < 1.0) }' || { echo "the 404 took ${t}s (>= 1s)" >&2; return 1; }
  done
  tarpits_quiet
}


# ---------------------------------------------------------------------------------------------------------
# ociregistry serving HTTPS with client certificates required (mTLS), for skopeo and containerd
# ---------------------------------------------------------------------------------------------------------
curl_tls() { curl -sS --max-time 20 --cacert "$CERTS/ca.crt" "$@"; }

step_serve_tls_start() {
  cat >"$TMP/tls.yaml" <<EOF
log_level: info
default_registry: "$UP_PLAIN"
server_tls:
  cert_file: $CERTS/server.crt
  key_file: $CERTS/server.key
  client_ca_file: $CERTS/ca.crt
  client_auth: require
registries:
  - name: "$UP_PLAIN"
    scheme: http
    aliases: [plain]
EOF
  start_bg oci-tls "$TMP/logs/oci-tls.log" "$OCIREGISTRY_BIN" serve --listen "$OCI_TLS" \
    --data-dir "$TMP/data-oci-tls" --config-file "$TMP/tls.yaml"
  for _ in $(seq 1 100); do
    is_running oci-tls || { echo "ociregistry (TLS) exited" >&2; return 1; }
    if [[ "$(curl_tls --cert "$CERTS/client.crt" --key "$CERTS/client.key" -o /dev/null -w '%{http_code}' \
      "https://$OCI_TLS/v2/" 2>/dev/null)" == "200" ]]; then
      grep -a "listening on https://" "$TMP/logs/oci-tls.log"
      return 0
    fi
    sleep 0.1
  done
  echo "ociregistry did not answer over TLS" >&2
  return 1
}

step_serve_mtls_handshake() {
  local before after
  settle_access_log
  before="$(count 'access:' <"$TMP/logs/oci-tls.log")"
  if curl_tls -o /dev/null "https://$OCI_TLS/v2/" 2>"$TMP/tls-none.err"; then
    echo "a client without a certificate was served" >&2; return 1
  fi
  echo "no certificate: $(tail -n 1 "$TMP/tls-none.err")"
  if curl_tls --cert "$CERTS/stranger.crt" --key "$CERTS/stranger.key" -o /dev/null "https://$OCI_TLS/v2/" \
    2>"$TMP/tls-stranger.err"; then
    echo "a client with another CA's certificate was served" >&2; return 1
  fi
  echo "another CA's certificate: $(tail -n 1 "$TMP/tls-stranger.err")"
  settle_access_log
  after="$(count 'access:' <"$TMP/logs/oci-tls.log")"
  expect_eq "$after" "$before" "requests that reached ociregistry from refused clients"
  expect_eq "$(curl_tls --cert "$CERTS/client.crt" --key "$CERTS/client.key" -o /dev/null -w '%{http_code}' \
    "https://$OCI_TLS/v2/")" 200 "GET /v2/ with the right client certificate"
}

step_serve_mtls_skopeo() {
  local out="$TMP/pull-served-tls"
  if sk inspect --raw --cert-dir "$CERTS/skopeo-ca" "docker://$OCI_TLS/plain/plain/app:$TAG" >/dev/null 2>"$TMP/sk-nocert.err"; then
    echo "skopeo without a client certificate was served" >&2; return 1
  fi
  echo "skopeo without a client certificate: $(tail -n 1 "$TMP/sk-nocert.err")"
  sk copy --all --preserve-digests --src-cert-dir "$CERTS/skopeo-client" \
    "docker://$OCI_TLS/plain/plain/app:$TAG" "oci:$out:$TAG"
  compare_layout "$TMP/layout-plain" "$out" plain
}

step_serve_mtls_ctd() {
  mkdir -p "$TMP/hosts-tls/$UP_PLAIN"
  cat >"$TMP/hosts-tls/$UP_PLAIN/hosts.toml" <<EOF
server = "http://127.0.0.1:$P_DEAD"

[host."https://$OCI_TLS"]
  capabilities = ["pull", "resolve"]
  ca = "$CERTS/ca.crt"
  client = [["$CERTS/client.crt", "$CERTS/client.key"]]
EOF
  local before after
  before="$(count '/v2/plain/app/' <"$TMP/logs/oci-tls.log")"
  HOSTS_DIR="$TMP/hosts-tls" ctd_pull ctd1 plain "$UP_PLAIN/plain/app:$TAG"
  after="$(count '/v2/plain/app/' <"$TMP/logs/oci-tls.log")"
  echo "TLS ociregistry served $((after - before)) requests for plain/app to containerd"
  [[ $((after - before)) -ge 3 ]] || { echo "containerd did not pull through the TLS mirror" >&2; return 1; }
}

# Tiered caches (containerd -> node ociregistry -> site ociregistry -> docker-registry): step_tier_* functions
source "$REPO_ROOT/tests/e2e/upstreams-tiers.sh"

# ---------------------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------------------
critical_step "certificates (private CA, server with IP SAN, client) and htpasswd" step_certs
critical_step "docker-registry upstreams start (plain HTTP; TLS + htpasswd)" step_start_registries
critical_step "nginx upstreams start (mTLS, 307 redirect, 429 switch, evil, traps)" step_start_nginx
critical_step "build OCI image layouts" step_build_images
critical_step "skopeo pushes every image to its upstream" step_push
critical_step "upstreams answer directly as configured (auth, client cert, 307, 429, evil redirects)" step_upstreams_direct
critical_step "containerd starts" start_containerd ctd1

if [[ "$INFRA_ONLY" == "1" ]]; then
  run_step "containerd pulls straight from the plain registry (infrastructure check)" step_ctd_direct
  finish || exit 1
  exit 0
fi

critical_step "ociregistry instances start (main, neg, ssrf, pass)" step_start_ocis
run_step "plain HTTP: skopeo pull through alias, same digests, layer fetched from the registry" step_plain_skopeo
run_step "plain HTTP: containerd pull via mirror (ns=), cold, unpacked" step_plain_ctd
run_step "TLS+htpasswd without auth in the config: upstream 401, client gets an error" step_tls_no_auth_fails
run_step "TLS+htpasswd with auth: skopeo pull, same digests" step_tls_skopeo
run_step "TLS+htpasswd with auth: containerd pull via mirror" step_tls_ctd
run_step "mTLS without cert_file/key_file: nginx refuses, client gets an error" step_mtls_no_cert_fails
run_step "mTLS with client certificate: skopeo pull, same digests" step_mtls_skopeo
run_step "mTLS with client certificate: containerd pull via mirror" step_mtls_ctd
run_step "307 redirect to another host: skopeo pull, blobs via the target, no Authorization there" step_redir_skopeo
run_step "307 redirect to another host: containerd pull, no Authorization at the target" step_redir_ctd
run_step "SSRF: unlisted loopback upstream (in-path and ns=) -> 403 DENIED, never contacted" step_ssrf_inpath_loopback
run_step "SSRF: numeric/odd spellings of 127.0.0.1 in ns= and the path -> 400/403, never contacted" step_ssrf_numeric_hosts
run_step "SSRF: listed upstream redirects to unlisted loopback / 169.254.169.254 -> refused, nothing fetched" step_ssrf_redirect_loopback
run_step "SSRF: listed https upstream redirects to http -> refused" step_ssrf_redirect_downgrade
run_step "SSRF: Bearer realm on an unlisted loopback host -> refused, realm never contacted, nothing leaked" step_ssrf_realm
run_step "tag moved upstream: stale digest at once after TTL, new digest after revalidation" step_tag_moved
run_step "429 with Retry-After: cached tag served, uncached 429 + Retry-After, upstream backed off" step_429
run_step "auth: passthrough: right credentials 200, wrong 401 (even cached), none 401" step_passthrough
run_step "auth: passthrough: cached content not served by digest via other repositories/registries" step_passthrough_other_routes
run_step "tiers: docker-registry <- site ociregistry <- two node ociregistries (mirrors, mirror_fallback: false) start" step_tier_setup
run_step "tiers: containerd pulls via node1 -> site (ns= at both), one upstream GET per blob, never direct" step_tier_node1_cold
run_step "tiers: containerd pulls via a fresh node2 -> site: served by the site, no upstream blob GET" step_tier_node2_from_site
run_step "tiers: site down: node1 serves its cached image (tag past TTL) to a fresh containerd" step_tier_site_down_cached
run_step "tiers: site down: an uncached image fails fast (502/503, ctr fails), node1 never goes direct" step_tier_site_down_miss
critical_step "ociregistry serving HTTPS with client certificates required starts" step_serve_tls_start
run_step "serving mTLS: no certificate and another CA's certificate refused at the handshake, the right one served" step_serve_mtls_handshake
run_step "serving mTLS: skopeo without a certificate refused, with --src-cert-dir pulls, same digests" step_serve_mtls_skopeo
run_step "serving mTLS: containerd pulls via hosts.toml with ca and client certificate" step_serve_mtls_ctd
critical_step "stop every upstream, restart ociregistry --air-gapped on the same data dir" step_stop_upstreams
run_step "air-gapped: skopeo pulls cached images (tags past TTL), no upstream contacted" step_air_skopeo
run_step "air-gapped: fresh containerd pulls cached images" step_air_ctd
run_step "air-gapped: never-cached tag/blob -> 404 in under 1 s" step_air_miss

finish || exit 1
