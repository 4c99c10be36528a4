#!/usr/bin/env bash
# Container image test: builds the ociregistry image (scripts/build-image, ./Dockerfile) in a Docker engine of
# its own, checks what is in it, runs it against a local upstream reached by a host name, and dogfoods: the
# image is pushed to a local docker-registry and pulled back through an ociregistry container by containerd.
#
#   tests/image/check.sh
#
# Needs root (dockerd), Debian's docker.io (dockerd + docker CLI; runc and containerd come with it),
# docker-registry, skopeo, containerd/ctr, jq, curl, binutils, python3. Loopback only; nothing is pulled from
# the Internet.
#
# Name resolution in the image (static glibc): the container reaches the upstream as upstream.test (only in
# its /etc/hosts, --add-host) and as upstream.dns.test (only known to tests/image/dns_stub.py on
# 127.0.0.153:53, the container's /etc/resolv.conf); neither name resolves on the host.
#
# The Docker engine: `dockerd` with its own data/exec roots under a temp dir, --bridge=none --iptables=false
# --storage-driver=vfs (works inside containers without overlayfs or iptables); containers use --network host.
# When dockerd is not installed or cannot start, the test prints `SKIP: no Docker engine: <reason>` and exits 0,
# or fails (exit 1) when OCIREGISTRY_REQUIRE_DOCKER=1.
#
# Environment:
#   OCIREGISTRY_REQUIRE_DOCKER  1 = a missing/unstartable Docker engine is a failure, not a skip
#   DOCKER                      docker CLI (default /usr/bin/docker, Debian's, if present, else `docker`)
#   IMAGE_BINARY                passed to scripts/build-image: a prebuilt static binary, cargo is skipped
#   IMAGE_MAX_BYTES             size limit of the image (default 41943040 = 40 MiB)
#   IMAGE_KEEP=1                keep the temp dir (logs, step outputs)
#   IMAGE_VERBOSE=1             print every step's output
#
# Every check prints PASS/FAIL NAME; the exit status is non-zero if any failed. Everything started here
# (containers, dockerd and its containerd, docker-registry, containerd instances) is stopped on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO_ROOT="$PWD"
# shellcheck source=tests/lib/harness.sh
source "$REPO_ROOT/tests/lib/harness.sh"
# shellcheck source=tests/e2e/lib-images.sh
source "$REPO_ROOT/tests/e2e/lib-images.sh"

# A short temp path: the Docker and containerd unix sockets live below it (sun_path is 108 bytes).
TMP="$(mktemp -d /tmp/ociimg.XXXXXX)"
PIDDIR="$TMP/pids"
mkdir -p "$TMP/pids" "$TMP/logs" "$TMP/steps"
HARNESS_NAME=image
HARNESS_KEEP="${IMAGE_KEEP:-0}"
HARNESS_VERBOSE="${IMAGE_VERBOSE:-0}"
CMD_TIMEOUT=180

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
IMAGE="ociregistry:$VERSION"
MAX_BYTES="${IMAGE_MAX_BYTES:-41943040}"
if [[ -z "${DOCKER:-}" ]]; then
  if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
DK="$TMP/docker" # dockerd's data root, exec root, socket, pid file
export DOCKER_HOST="unix://$DK/sock"
CNAME="ocireg-image-test-$$" # the ociregistry container
VOLUME="ocireg-image-data-$$"
TAG=v1

die() {
  echo "image: $*" >&2
  exit 1
}

dk() { timeout "$CMD_TIMEOUT" "$DOCKER" "$@"; }
sk() { timeout "$CMD_TIMEOUT" skopeo "$@"; }
ctr_() { # CTD ARGS...
  local name=$1
  shift
  timeout "$CMD_TIMEOUT" ctr --address "$TMP/$name/ctd.sock" "$@"
}

image_cleanup() {
  local rc=$?
  set +e
  if [[ -S "$DK/sock" ]]; then
    timeout 60 "$DOCKER" rm -f "$CNAME" "$CNAME-2" >/dev/null 2>&1
  fi
  # dockerd (SIGTERM, through stop_all_bg) stops its own containerd; a containerd it left behind (dockerd
  # killed) is found through the pid file under dockerd's exec root.
  ( exit "$rc" )
  harness_cleanup
}
harness_cleanup_hook() {
  local p
  p="$(cat "$DK/exec/containerd/containerd.pid" 2>/dev/null)"
  if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null; fi
  unmount_below_tmp
}
harness_traps image_cleanup

finish() {
  echo
  echo "image: $PASSED passed, $FAILED failed"
  if [[ $FAILED -gt 0 ]]; then
    echo "image: failed: ${FAILED_NAMES[*]}"
    dump_log_tails 25 220
    return 1
  fi
  return 0
}

# ---------------------------------------------------------------------------------------------------------
# Tools, then the Docker engine (the only thing whose absence is a skip)
# ---------------------------------------------------------------------------------------------------------
missing=()
for tool in docker-registry skopeo containerd ctr jq curl tar gzip sha256sum timeout cmp readelf objcopy python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] || die "missing tools: ${missing[*]} (Debian: docker-registry skopeo containerd jq curl binutils python3)"

no_engine() { # REASON
  if [[ "${OCIREGISTRY_REQUIRE_DOCKER:-0}" == "1" ]]; then
    echo "FAIL: no Docker engine: $1 (OCIREGISTRY_REQUIRE_DOCKER=1)"
    exit 1
  fi
  echo "SKIP: no Docker engine: $1"
  echo "SKIP: (install Debian's docker.io and run as root; OCIREGISTRY_REQUIRE_DOCKER=1 makes this a failure)"
  exit 0
}

start_dockerd() {
  command -v dockerd >/dev/null 2>&1 || no_engine "dockerd not installed (Debian package docker.io)"
  command -v "$DOCKER" >/dev/null 2>&1 || no_engine "docker CLI '$DOCKER' not found"
  mkdir -p "$DK/root" "$DK/exec"
  echo '{}' >"$DK/daemon.json" # not /etc/docker/daemon.json
  start_bg dockerd "$TMP/logs/dockerd.log" dockerd \
    --config-file "$DK/daemon.json" --data-root "$DK/root" --exec-root "$DK/exec" \
    -H "$DOCKER_HOST" --pidfile "$DK/pid" \
    --bridge=none --iptables=false --storage-driver=vfs ||
    no_engine "could not start dockerd"
  local i
  for i in $(seq 1 600); do
    if ! is_running dockerd; then
      no_engine "dockerd exited with status $(cat "$PIDDIR/dockerd.rc"): $(grep -avE '^\s*$' "$TMP/logs/dockerd.log" | tail -n 3 | tr '\n' ' ' | cut -c1-600)"
    fi
    if [[ -S "$DK/sock" ]] && timeout 10 "$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1; then
      echo "image: dockerd $("$DOCKER" version --format '{{.Server.Version}}') up at $DOCKER_HOST (vfs, no bridge)" \
        "after $((i / 10)).$((i % 10)) s"
      return 0
    fi
    sleep 0.1
  done
  no_engine "dockerd did not answer on $DOCKER_HOST within 60 s: $(tail -n 3 "$TMP/logs/dockerd.log" | tr '\n' ' ' | cut -c1-600)"
}

echo "image: temp dir $TMP"
start_dockerd

pick_port UPPORT
pick_port OCIPORT
pick_port METRICSPORT
pick_port DEADPORT # nothing listens here: containerd's fallback `server`, so only the mirror can serve
UP="127.0.0.1:$UPPORT"
UPNAME="upstream.test:$UPPORT"      # resolvable only inside the container, via /etc/hosts (--add-host)
DNS_ADDR=127.0.0.153                # dns_stub.py on DNS_ADDR:53 (not 127.0.0.53: systemd-resolved)
DNSNAME="upstream.dns.test:$UPPORT" # resolvable only inside the container, via DNS (the stub)
OCI="127.0.0.1:$OCIPORT"

# ---------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------
step_build() {
  local start
  start=$(date +%s)
  DOCKER="$DOCKER" "$REPO_ROOT/scripts/build-image"
  echo "scripts/build-image took $(($(date +%s) - start)) s"
  dk image inspect "$IMAGE" >/dev/null
}

step_size() {
  local size
  size="$(dk image inspect --format '{{.Size}}' "$IMAGE")"
  echo "image size: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f MiB", s / 1048576 }')), limit $MAX_BYTES"
  [[ "$size" -lt "$MAX_BYTES" ]] || { echo "image larger than $MAX_BYTES bytes" >&2; return 1; }
}

step_config() {
  local cfg
  cfg="$(dk image inspect --format '{{json .Config}}' "$IMAGE")"
  jq . <<<"$cfg"
  expect_eq "$(jq -r .User <<<"$cfg")" "65532:65532" "image user"
  expect_eq "$(jq -c .Entrypoint <<<"$cfg")" '["/ociregistry"]' "entrypoint"
  expect_eq "$(jq -c .Cmd <<<"$cfg")" '["serve","--listen","0.0.0.0:8080","--data-dir","/var/lib/ociregistry"]' "cmd"
  expect_eq "$(jq -c '.ExposedPorts | keys' <<<"$cfg")" '["8080/tcp"]' "exposed ports"
  expect_eq "$(jq -c '.Volumes | keys' <<<"$cfg")" '["/var/lib/ociregistry"]' "volumes"
  expect_eq "$(jq -r '.Labels["org.opencontainers.image.version"]' <<<"$cfg")" "$VERSION" "version label"
  expect_eq "$(jq -r '.Labels["org.opencontainers.image.title"]' <<<"$cfg")" "ociregistry" "title label"
}

# Exactly these paths, across all layers (docker save): the binary, three /etc files and the data directory.
step_contents() {
  local save="$TMP/save" l
  mkdir -p "$save"
  dk save "$IMAGE" | tar -x -C "$save"
  : >"$TMP/contents.txt"
  for l in $(jq -r '.[0].Layers[]' "$save/manifest.json"); do
    tar -tvf "$save/$l" >>"$TMP/contents.txt"
  done
  cat "$TMP/contents.txt"
  local got
  got="$(awk '{ print $NF }' "$TMP/contents.txt" | sed 's:/$::' | sort -u | tr '\n' ' ')"
  expect_eq "$got" "etc etc/group etc/nsswitch.conf etc/passwd ociregistry var var/lib var/lib/ociregistry " "image contents"
  grep -qE '^drwx.* 65532/65532 .* var/lib/ociregistry/?$' "$TMP/contents.txt" ||
    { echo "/var/lib/ociregistry is not owned by 65532:65532" >&2; return 1; }
  grep -qE '^-rwx.* 0/0|^-rwx.* root/root' <(grep -E ' ociregistry$' "$TMP/contents.txt") ||
    { echo "/ociregistry is not a root-owned executable" >&2; return 1; }
  # the binary in the image is static: no NEEDED entries, no interpreter
  for l in $(jq -r '.[0].Layers[]' "$save/manifest.json"); do
    if tar -tf "$save/$l" | grep -qx ociregistry; then tar -xOf "$save/$l" ociregistry >"$TMP/bin.in.image"; fi
  done
  if readelf -d "$TMP/bin.in.image" | grep -q '(NEEDED)'; then
    echo "the binary in the image is dynamically linked" >&2
    return 1
  fi
  if readelf -l "$TMP/bin.in.image" | grep -q 'Requesting program interpreter'; then
    echo "the binary in the image has an ELF interpreter" >&2
    return 1
  fi
  echo "static binary: no NEEDED entries, no program interpreter"
}

step_no_shell() {
  local sh rc
  for sh in /bin/sh /bin/bash /bin/busybox; do
    set +e
    dk run --rm --network host --entrypoint "$sh" "$IMAGE" -c 'echo shell' >"$TMP/sh.out" 2>&1
    rc=$?
    set -e
    cat "$TMP/sh.out"
    [[ $rc -ne 0 ]] || { echo "$sh runs in the image" >&2; return 1; }
    if grep -qx 'shell' "$TMP/sh.out"; then echo "$sh ran" >&2; return 1; fi
    echo "$sh: exit $rc (not in the image)"
  done
}

step_version() {
  local out
  out="$(dk run --rm --network host "$IMAGE" version)"
  echo "$out"
  expect_eq "$out" "ociregistry $VERSION" "ociregistry version in the container"
}

step_upstream() {
  start_docker_registry "$UP" "$TMP/logs/docker-registry.log" info
  build_image "$TMP/layout-app" app 2048
  sk copy --all --preserve-digests --dest-tls-verify=false "oci:$TMP/layout-app:$TAG" "docker://$UP/e2e/app:$TAG"
  # the name the container uses for the upstream must not resolve on the host: the test then proves that
  # the binary in the image resolved it (through the container's /etc/hosts)
  local n
  for n in upstream.test upstream.dns.test; do
    if getent hosts "$n" >/dev/null 2>&1; then
      echo "$n resolves on the host; the name resolution checks would prove nothing" >&2
      return 1
    fi
  done
  echo "pushed e2e/app:$TAG (index $(cat "$TMP/expect/app/index.digest")) to $UP; upstream.test does not resolve on the host"
  start_bg dns "$TMP/logs/dns_stub.log" python3 "$REPO_ROOT/tests/image/dns_stub.py" \
    "$DNS_ADDR" upstream.dns.test 127.0.0.1 "$TMP/dns-queries.log"
  local i
  for i in $(seq 1 50); do
    grep -q 'dns_stub:' "$TMP/logs/dns_stub.log" 2>/dev/null && break
    is_running dns || { cat "$TMP/logs/dns_stub.log" >&2; return 1; }
    sleep 0.1
  done
  cat "$TMP/logs/dns_stub.log"
}

write_config() {
  mkdir -p "$TMP/config"
  # Only listed hosts: the image reaches upstream.test:PORT by name (first part of the test) and the same
  # docker-registry as 127.0.0.1:PORT (dogfood: containerd's ns= names it so).
  cat >"$TMP/config/config.yaml" <<EOF
log_level: info
default_registry: $UPNAME
unlisted_upstreams: deny
registries:
  - name: $UPNAME
    scheme: http
    aliases: [upstream]
  - name: $DNSNAME
    scheme: http
    aliases: [viadns]
  - name: $UP
    scheme: http
EOF
  # the container's resolver: only the DNS stub (no search domains, quick retries)
  printf 'nameserver %s\noptions timeout:2 attempts:2\n' "$DNS_ADDR" >"$TMP/config/resolv.conf"
  chmod 0644 "$TMP/config/resolv.conf"
  chmod 0644 "$TMP/config/config.yaml"
  chmod 0755 "$TMP/config"
}

# run_container NAME: the image as an operator would run it: read-only root fs, no capabilities, the data
# directory a named volume, the config file mounted read-only and named by OCIREGISTRY_CONFIG.
run_container() {
  local name=$1
  dk run -d --name "$name" --network host --read-only --cap-drop ALL --security-opt no-new-privileges \
    --add-host "upstream.test:127.0.0.1" \
    -v "$VOLUME:/var/lib/ociregistry" \
    -v "$TMP/config:/etc/ociregistry:ro" \
    -v "$TMP/config/resolv.conf:/etc/resolv.conf:ro" \
    -e OCIREGISTRY_CONFIG=/etc/ociregistry/config.yaml \
    "$IMAGE" serve --listen "$OCI" --data-dir /var/lib/ociregistry --metrics "$METRICSPORT"
  local i
  for i in $(seq 1 300); do
    if [[ "$(dk inspect -f '{{.State.Running}}' "$name")" != "true" ]]; then
      dk logs "$name" 2>&1 | tail -n 20 >&2
      echo "container $name exited: $(dk inspect -f '{{.State.ExitCode}}' "$name")" >&2
      return 1
    fi
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$OCI/readyz" || true)" == "200" ]]; then
      echo "container $name ready after $((i / 10)).$((i % 10)) s"
      return 0
    fi
    sleep 0.1
  done
  dk logs "$name" 2>&1 | tail -n 20 >&2
  echo "container $name not ready within 30 s" >&2
  return 1
}

step_run() {
  write_config
  dk volume create "$VOLUME" >/dev/null
  run_container "$CNAME"
  local pid uid
  pid="$(dk inspect -f '{{.State.Pid}}' "$CNAME")"
  uid="$(awk '/^Uid:/ { print $2 "," $3 }' "/proc/$pid/status")"
  expect_eq "$uid" "65532,65532" "real,effective uid of the process in the container"
  expect_eq "$(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")" "0000000000000000" "effective capabilities"
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "http://$OCI/healthz")" 200 "GET /healthz"
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "http://$OCI/v2/")" 200 "GET /v2/"
  echo "uid $uid, no capabilities, /healthz /readyz /v2/ 200"
  dk logs "$CNAME" 2>&1 | sed -n '1,5p'
}

# skopeo pulls through the container by the alias (upstream.test:PORT, resolved by the static binary from
# /etc/hosts in the container) and by the default-registry route; every digest checked.
step_pull_by_name() {
  sk copy --all --preserve-digests --src-tls-verify=false "docker://$OCI/upstream/e2e/app:$TAG" "oci:$TMP/pulled-alias:$TAG"
  compare_layout "$TMP/layout-app" "$TMP/pulled-alias" app
  sk copy --all --preserve-digests --src-tls-verify=false "docker://$OCI/e2e/app:$TAG" "oci:$TMP/pulled-default:$TAG"
  compare_layout "$TMP/layout-app" "$TMP/pulled-default" app
  # the same upstream under a name only the DNS stub knows (the `dns` NSS module inside static glibc);
  # by tag, a first lookup for this registry name, so ociregistry must reach the upstream
  sk inspect --raw --tls-verify=false "docker://$OCI/viadns/e2e/app:$TAG" >"$TMP/viadns.raw"
  expect_eq "sha256:$(sha256_of "$TMP/viadns.raw")" "$(cat "$TMP/expect/app/index.digest")" "index via the DNS-resolved name"
  grep -q '^upstream.dns.test 1$' "$TMP/dns-queries.log" ||
    { echo "the DNS stub saw no A query for upstream.dns.test" >&2; return 1; }
  echo "DNS stub saw (count, name, qtype): $(sort "$TMP/dns-queries.log" | uniq -c | tr -s ' ' | tr '\n' ';')"
  # the upstream saw the requests (they were not answered from anywhere else)
  grep -aq 'GET /v2/e2e/app/manifests/' "$TMP/logs/docker-registry.log" ||
    grep -aq '"GET /v2/e2e/app/manifests/' "$TMP/logs/docker-registry.log" ||
    { echo "docker-registry saw no manifest request" >&2; return 1; }
  dk logs "$CNAME" 2>&1 | grep -a 'e2e/app' | sed -n '1,4p'
}

# The operations CLI through `docker exec` (no shell needed: the binary is exec'd directly) reaches the
# running server over the admin socket in the data directory. Without --data-dir it must fail loudly (the
# relative default ./ociregistry-data is not writable: / is read-only and root's) instead of opening an
# empty index somewhere.
step_exec_cli() {
  dk exec "$CNAME" /ociregistry list --data-dir /var/lib/ociregistry >"$TMP/exec-list.out" 2>&1
  cat "$TMP/exec-list.out"
  grep -q 'using the server at /var/lib/ociregistry/admin.sock' "$TMP/exec-list.out" ||
    { echo "the CLI did not use the server's admin socket" >&2; return 1; }
  grep -q "$UPNAME/e2e/app:$TAG" "$TMP/exec-list.out" || { echo "$UPNAME/e2e/app:$TAG not listed" >&2; return 1; }
  if dk exec "$CNAME" /ociregistry list >"$TMP/exec-list-nodir.out" 2>&1; then
    cat "$TMP/exec-list-nodir.out"
    echo "list without --data-dir succeeded (it should not find a writable ./ociregistry-data)" >&2
    return 1
  fi
  echo "without --data-dir: $(cat "$TMP/exec-list-nodir.out")"
}

step_stop() {
  local start rc
  start=$(date +%s%N)
  dk stop -t 20 "$CNAME"
  rc="$(dk inspect -f '{{.State.ExitCode}}' "$CNAME")"
  echo "docker stop: exit code $rc after $((($(date +%s%N) - start) / 1000000)) ms"
  dk logs "$CNAME" 2>&1 | tail -n 3
  expect_eq "$rc" 0 "exit code after docker stop (SIGTERM)"
}

# The cache outlived the container: the CLI in the image reads the volume.
step_cache_in_volume() {
  dk run --rm --network host --read-only -v "$VOLUME:/var/lib/ociregistry" "$IMAGE" \
    list --data-dir /var/lib/ociregistry | tee "$TMP/list.out"
  grep -q 'e2e/app' "$TMP/list.out" || { echo "e2e/app not in the cached list" >&2; return 1; }
  dk rm "$CNAME" >/dev/null
}

# Dogfood: docker pushes the ociregistry image to the docker-registry; containerd pulls it back through an
# ociregistry container (hosts.toml mirror; containerd's fallback server is a dead port, so only the mirror
# can serve it), then again from a fresh containerd with the docker-registry stopped.
DOGFOOD_REF="$UP/ociregistry/ociregistry:$VERSION"
step_push_self() {
  dk tag "$IMAGE" "$DOGFOOD_REF"
  dk push "$DOGFOOD_REF" | tee "$TMP/push.out"
  local digest
  digest="$(grep -oE 'digest: sha256:[0-9a-f]{64}' "$TMP/push.out" | awk '{ print $2 }')"
  [[ -n "$digest" ]] || { echo "no digest in docker push output" >&2; return 1; }
  echo "$digest" >"$TMP/pushed.digest"
  # what the registry holds under the tag is what docker pushed
  sk inspect --raw --tls-verify=false "docker://$DOGFOOD_REF" >"$TMP/pushed.manifest"
  expect_eq "sha256:$(sha256_of "$TMP/pushed.manifest")" "$digest" "manifest digest in the registry"
  echo "docker pushed $DOGFOOD_REF: $digest"
}

step_mirror_up() {
  run_container "$CNAME-2"
  start_containerd ctd1
  mirror_hosts "$UP" "$OCI" "http://127.0.0.1:$DEADPORT"
  cat "$TMP/hosts/$UP/hosts.toml"
}

ctd_pull_self() { # CTD
  local ctd=$1 target
  ctr_ "$ctd" images pull --hosts-dir "$TMP/hosts" --plain-http --platform linux/amd64 --snapshotter native \
    "$DOGFOOD_REF"
  target="$(ctr_ "$ctd" images ls | awk -v r="$DOGFOOD_REF" '$1 == r { print $3 }')"
  expect_eq "$target" "$(cat "$TMP/pushed.digest")" "digest containerd ($ctd) got for $DOGFOOD_REF"
  local check
  check="$(ctr_ "$ctd" images check --snapshotter native "name==$DOGFOOD_REF")"
  echo "$check"
  [[ "$(awk -v r="$DOGFOOD_REF" '$1 == r' <<<"$check")" == *complete* ]] ||
    { echo "image not complete in containerd $ctd" >&2; return 1; }
  echo "containerd $ctd pulled $DOGFOOD_REF through ociregistry: $target"
}

metric_sum() { # NAME SOURCE -> sum of NAME{namespace="$UP",source=SOURCE}
  curl -s "http://127.0.0.1:$METRICSPORT/metrics" |
    awk -v n="$1" -v s="source=\"$2\"" -v ns="namespace=\"$UP\"" \
      'index($0, n "{") == 1 && index($0, s) && index($0, ns) { t += $NF } END { print t + 0 }'
}

step_dogfood_pull() {
  ctd_pull_self ctd1
  echo "blob pulls from upstream: $(metric_sum ociregistry_blob_pulls_total upstream)"
  [[ "$(metric_sum ociregistry_blob_pulls_total upstream)" -ge 1 ]] ||
    { echo "ociregistry's metrics show no blob fetched from $UP" >&2; return 1; }
  dk logs "$CNAME-2" 2>&1 | grep -a "ociregistry/ociregistry" | sed -n '1,5p'
}

# containerd runs the pulled image: ociregistry, pulled through ociregistry, prints its version.
step_dogfood_run() {
  local out
  out="$(ctr_ ctd1 run --rm --snapshotter native "$DOGFOOD_REF" "dogfood-$$" /ociregistry version)"
  echo "$out"
  expect_eq "$out" "ociregistry $VERSION" "version printed by the image containerd pulled"
}

step_dogfood_cached() {
  local before after
  stop_bg upstream 10 >/dev/null
  if is_running upstream; then echo "docker-registry still running" >&2; return 1; fi
  if curl -s -o /dev/null --max-time 2 "http://$UP/v2/"; then echo "something still answers on $UP" >&2; return 1; fi
  echo "docker-registry at $UP stopped"
  before="$(metric_sum ociregistry_blob_pulls_total cache)"
  start_containerd ctd2
  ctd_pull_self ctd2
  after="$(metric_sum ociregistry_blob_pulls_total cache)"
  echo "blob pulls served from cache: before $before, after $after"
  [[ "$after" -gt "$before" ]] || { echo "ociregistry's metrics show no blob served from its cache" >&2; return 1; }
}

critical_step "image build (scripts/build-image)" step_build
run_step "image size under $MAX_BYTES bytes" step_size
run_step "image config: user 65532:65532, entrypoint, cmd, port, volume, labels" step_config
run_step "image contents: binary (static), /etc/{nsswitch.conf,passwd,group}, data dir owned by 65532" step_contents
run_step "no shell in the image" step_no_shell
run_step "ociregistry version runs in the image" step_version
critical_step "upstream docker-registry with a test image" step_upstream
critical_step "container runs (read-only root fs, no capabilities, named volume, uid 65532)" step_run
run_step "skopeo pulls through the container, upstream by host name: /etc/hosts and DNS (static glibc)" step_pull_by_name
run_step "operations CLI via docker exec uses the server's admin socket" step_exec_cli
run_step "docker stop: graceful exit 0 on SIGTERM" step_stop
run_step "cache kept in the volume (ociregistry list in the image)" step_cache_in_volume
critical_step "dogfood: docker push of the ociregistry image to docker-registry" step_push_self
critical_step "dogfood: ociregistry container as containerd's mirror" step_mirror_up
run_step "dogfood: containerd pulls the ociregistry image through ociregistry" step_dogfood_pull
run_step "dogfood: containerd runs the pulled image" step_dogfood_run
run_step "dogfood: second pull (fresh containerd) with the upstream stopped, from ociregistry's cache" step_dogfood_cached

finish
