#!/usr/bin/env bash
# Contract test: a running ociregistry against its API contracts, schema/openapi.yaml (the registry API) and
# schema/admin-openapi.yaml (the admin API).
#
#   1. tools: a Python venv with the pinned tools of tests/contract/requirements.txt (schemathesis,
#      openapi-spec-validator, jsonschema, PyYAML), kept in target/contract-venv between runs;
#   2. static checks: the spec is valid OpenAPI; docs/api.md is what schema/render-api-md.py renders from it;
#      schema/config.schema.json gives the verdicts of tests/contract/config-cases/ (the loader's side of
#      that agreement is `cargo test --test config_schema`);
#   3. a live server: Debian's docker-registry as the upstream, holding the byte-for-byte reproducible images
#      of tests/contract/make_images.py (whose digests are the spec's examples), pushed with skopeo;
#      `ociregistry serve` with default_registry = that upstream; both images pulled through it (cached);
#   4. schemathesis runs every operation of the spec against it (examples, coverage and fuzzing phases) and
#      checks status codes, content types, response headers and bodies against the spec, no 5xx, 4xx for
#      invalid input, 405 + Allow for undocumented methods (checks and exceptions: schemathesis.toml);
#   5. the answers random input cannot reach (cold fills; referrers indexes; 401 of an `auth: passthrough`
#      registry; 403 of the upstream policy; 403, 429, 502 from a misbehaving or dead upstream:
#      tests/contract/fake_upstream.py) are checked against the spec with the same schemathesis checks;
#   6. known server bugs are probed separately and reported as XFAIL (CONTRACT_STRICT=1 makes them failures);
#   7. the admin API: a second `ociregistry serve` (default_registry = the test upstream, `unlisted_upstreams:
#      deny`, so a load either reads the test upstream or is refused at once) with `admin_listen` and
#      `admin_token_file`: tests/contract/admin_answers.py checks the bearer token (401 with the error object
#      for every endpoint without it, nothing changed), a scripted load/list/pin/prune/unpin/invalidate session
#      and the Unix socket (mode 0600, no token); then schemathesis runs every operation of
#      schema/admin-openapi.yaml against the TCP listener with the token (schemathesis-admin.toml).
#
# Every process listens on 127.0.0.1 only. The server's HTTP(S)_PROXY points at a loopback trap, so no request
# can leave the machine (tests/contract/hooks.py routes every generated registry host to the test upstream;
# a request that reached the trap would fail the run). All state lives in one `mktemp -d` directory, removed
# on exit, and every process started here is stopped by the EXIT trap.
#
# Env:
#   OCIREGISTRY_BIN         binary under test (default: <repo>/target/debug/ociregistry)
#   CONTRACT_VENV           venv directory (default: <repo>/target/contract-venv)
#   CONTRACT_PYTHON         interpreter that creates the venv (default: python3, >= 3.9)
#   CONTRACT_MAX_EXAMPLES   schemathesis --max-examples per operation (default 50)
#   CONTRACT_ADMIN_MAX_EXAMPLES  the same for the admin API (default 25)
#   CONTRACT_SEED           schemathesis --seed (default 1: the same test cases every run)
#   CONTRACT_STRICT=1       known server bugs fail the run instead of being reported as XFAIL
#   CONTRACT_KEEP=1         keep the temp dir (logs, schemathesis reports)
#   CONTRACT_VERBOSE=1      print every step's output, not only the output of failed steps
#
# Output: `PASS name` / `FAIL name` / `XFAIL name` lines, then exactly one line `contract: N passed, M failed`
# (steps plus schemathesis operations). Exit status: 0 iff nothing failed.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in the source tree

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO_ROOT/tests/lib/harness.sh"
HARNESS_NAME=contract
HARNESS_KEEP="${CONTRACT_KEEP:-0}"
HARNESS_VERBOSE="${CONTRACT_VERBOSE:-0}"
HARNESS_FAIL_TAIL=80
OCIREGISTRY_BIN="${OCIREGISTRY_BIN:-$REPO_ROOT/target/debug/ociregistry}"
VENV="${CONTRACT_VENV:-$REPO_ROOT/target/contract-venv}"
PYTHON="${CONTRACT_PYTHON:-python3}"
HARNESS_PYTHON="$PYTHON"   # pick_port
MAX_EXAMPLES="${CONTRACT_MAX_EXAMPLES:-50}"
ADMIN_MAX_EXAMPLES="${CONTRACT_ADMIN_MAX_EXAMPLES:-25}"
SEED="${CONTRACT_SEED:-1}"
SPEC="$REPO_ROOT/schema/openapi.yaml"
ADMIN_SPEC="$REPO_ROOT/schema/admin-openapi.yaml"
REQUIREMENTS="$REPO_ROOT/tests/contract/requirements.txt"
# The upstream as the spec's examples name it; hooks.py maps it to the real one.
SPEC_UPSTREAM="127.0.0.1:5000"

log() { printf '%s\n' "$*"; }
die() { printf 'contract: error: %s\n' "$*" >&2; exit 2; }

missing=()
for tool in docker-registry skopeo curl "$PYTHON" timeout; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  die "missing tools: ${missing[*]} (Debian: apt-get install -y docker-registry skopeo curl python3 python3-venv)"
fi
[[ -x "$OCIREGISTRY_BIN" ]] || die "ociregistry binary not found: $OCIREGISTRY_BIN (cargo build first, or set OCIREGISTRY_BIN)"

TMP="$(mktemp -d /tmp/ociregistry-contract.XXXXXX)"
PIDDIR="$TMP/pids"
mkdir -p "$PIDDIR" "$TMP/steps" "$TMP/logs"

# ---------------------------------------------------------------------------------------------------------
# Processes, cleanup and steps: tests/lib/harness.sh. start_bg NAME LOGFILE CMD... records the real pid in
# $PIDDIR/NAME.pid and, once it exits, its exit status in $PIDDIR/NAME.rc; the EXIT trap stops whatever is
# still running (SIGTERM, then SIGKILL) and removes $TMP. run_step NAME FUNC ARGS... runs FUNC in a subshell
# with errexit, captures its output, prints PASS/FAIL (the output of a failed step is shown). Never call it in
# a conditional context. critical_step aborts the suite when a prerequisite fails. xfail_step: a probe of a
# known server bug; it "passes" as XFAIL while the bug is there, and fails (XPASS: remove the probe from the
# list of known bugs) once it is fixed.
# ---------------------------------------------------------------------------------------------------------
harness_traps harness_cleanup

XFAILS=()

# xfail_step BUG NAME FUNC ARGS...: FUNC checks the correct behaviour.
xfail_step() {
  local bug=$1 name=$2
  shift 2
  run_captured "$@"
  if [[ $STEP_RC -eq 0 ]]; then
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    log "FAIL (XPASS) $name: the known bug is fixed; move this probe out of the known bugs in tests/contract/run.sh"
  elif [[ "${CONTRACT_STRICT:-0}" == "1" ]]; then
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    log "FAIL $name (known bug: $bug)"
    sed 's/^/    /' "$STEP_OUT" | tail -n 20
  else
    PASSED=$((PASSED + 1))
    XFAILS+=("$name")
    log "XFAIL $name (known bug: $bug)"
    sed 's/^/    /' "$STEP_OUT" | tail -n 20
  fi
}

finish() {
  if [[ ${#XFAILS[@]} -gt 0 ]]; then
    log "known server bugs (XFAIL, counted as passed; CONTRACT_STRICT=1 fails on them): ${#XFAILS[@]}"
  fi
  if [[ $FAILED -gt 0 ]]; then
    log "failed: ${FAILED_NAMES[*]}"
    dump_log_tails 15 300
  fi
  log "contract: $PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}

# ---------------------------------------------------------------------------------------------------------
# Helpers (pick_port, wait_http: tests/lib/harness.sh)
# ---------------------------------------------------------------------------------------------------------
py() { "$VENV/bin/python" "$@"; }

pick_port UPPORT
pick_port OCIPORT
pick_port TRAPPORT
pick_port FAKEPORT
pick_port DEADPORT   # nothing ever listens here
pick_port OCI2PORT   # the second server's registry API (admin API run)
pick_port ADMINPORT  # its admin API (admin_listen)
UP="127.0.0.1:$UPPORT"
FAKE="127.0.0.1:$FAKEPORT"
OCI="127.0.0.1:$OCIPORT"
OCI2="127.0.0.1:$OCI2PORT"
ADMIN="127.0.0.1:$ADMINPORT"
ADMIN_TOKEN="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"   # the admin run's bearer token
echo "contract: temp dir $TMP; upstream $UP; scripted upstream $FAKE; ociregistry $OCI (admin run: $OCI2, admin API $ADMIN); proxy trap 127.0.0.1:$TRAPPORT; binary $OCIREGISTRY_BIN"

# ---------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------
step_venv() {
  if [[ -x "$VENV/bin/python" ]] && cmp -s "$REQUIREMENTS" "$VENV/contract-requirements.txt"; then
    echo "reusing $VENV"
  else
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || {
      echo "could not create a venv with $PYTHON (Debian: apt-get install -y python3-venv)" >&2
      return 1
    }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    cp "$REQUIREMENTS" "$VENV/contract-requirements.txt"
  fi
  "$VENV/bin/schemathesis" --version
}

step_spec_valid() {
  "$VENV/bin/openapi-spec-validator" "$SPEC"
}

step_docs_current() {
  py "$REPO_ROOT/schema/render-api-md.py" --check
}

step_admin_spec_valid() {
  "$VENV/bin/openapi-spec-validator" "$ADMIN_SPEC"
}

step_admin_docs_current() {
  py "$REPO_ROOT/schema/render-api-md.py" --check --spec schema/admin-openapi.yaml --doc docs/admin-api.md
}

step_config_schema() {
  py "$REPO_ROOT/tests/contract/check_config_schema.py" "$REPO_ROOT"
}

# The images, and the spec's example digests are all among them (else the examples would only hit 404s).
step_images() {
  py "$REPO_ROOT/tests/contract/make_images.py" "$TMP/images" >/dev/null
  py - "$SPEC" "$TMP/images/images.json" <<'EOF'
import json, re, sys, yaml
spec = yaml.safe_load(open(sys.argv[1]))
images = json.load(open(sys.argv[2]))
built = {d for image in images.values() for d in [*image["manifests"], *image["blobs"]]}
found = set()
def walk(node, in_examples=False):
    if isinstance(node, dict):
        for key, value in node.items():
            walk(value, in_examples or key == "examples")
    elif isinstance(node, list):
        for value in node:
            walk(value, in_examples)
    elif in_examples and isinstance(node, str):
        found.update(re.findall(r"sha256:[0-9a-f]{64}", node))
walk(spec)
placeholder = "sha256:" + "0" * 64  # the "stale ETag" example: deliberately matches nothing
unknown = sorted(found - built - {placeholder})
if unknown:
    sys.exit("spec examples name digests that tests/contract/make_images.py does not build "
             f"(did the image builder change?): {unknown}")
print(f"{len(built)} objects built; all {len(found)} digests in the spec's examples are among them")
EOF
}

step_start_upstream() {
  mkdir -p "$TMP/upstream"
  cat >"$TMP/upstream/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $TMP/upstream/data
  delete:
    enabled: true
http:
  addr: $UP
EOF
  start_bg upstream "$TMP/logs/docker-registry.log" docker-registry serve "$TMP/upstream/config.yml"
  wait_http "http://$UP/v2/" 30 upstream
}

step_push() {
  local key layout repo tag
  for key in hello app; do
    read -r layout repo tag < <(py -c 'import json,sys; i=json.load(open(sys.argv[1]))[sys.argv[2]]; print(i["layout"], i["repository"], i["tag"])' "$TMP/images/images.json" "$key")
    timeout 120 skopeo copy --all --preserve-digests --dest-tls-verify=false \
      "oci:$TMP/images/$layout:$tag" "docker://$UP/$repo:$tag"
  done
}

# Anything that connects here is a request the server sent towards a non-loopback upstream.
step_start_trap() {
  start_bg trap "$TMP/logs/proxy-trap.log" "$VENV/bin/python" -u -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
print("READY", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        line = c.recv(512).split(b"\r\n", 1)[0]
    except OSError:
        line = b"?"
    print("TRAPPED", line.decode("latin-1"), flush=True)
    c.close()
' "$TRAPPORT"
  for _ in $(seq 1 50); do
    grep -q READY "$TMP/logs/proxy-trap.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "proxy trap did not start" >&2
  return 1
}

step_start_fake_upstream() {
  start_bg fake-upstream "$TMP/logs/fake-upstream.log" "$VENV/bin/python" -u "$REPO_ROOT/tests/contract/fake_upstream.py" "$FAKEPORT"
  wait_http "http://$FAKE/v2/" 30 fake-upstream
}

step_start_ociregistry() {
  cat >"$TMP/config.yaml" <<EOF
log_level: info
default_registry: "$UP"
tag_ttl: 10m
registries:
  - name: "$UP"
    scheme: http
  - name: "$FAKE"
    scheme: http
  # listed, so that it is an unreachable upstream rather than one the upstream policy refuses (loopback)
  - name: "127.0.0.1:$DEADPORT"
    scheme: http
  # the scripted upstream once more, passing the clients' credentials through (its private/ repositories)
  - name: passthrough.test
    scheme: http
    endpoints: ["http://$FAKE"]
    auth: passthrough
    aliases: [locked]
EOF
  start_bg ociregistry "$TMP/logs/ociregistry.log" env \
    HTTP_PROXY="http://127.0.0.1:$TRAPPORT" HTTPS_PROXY="http://127.0.0.1:$TRAPPORT" ALL_PROXY="http://127.0.0.1:$TRAPPORT" \
    http_proxy="http://127.0.0.1:$TRAPPORT" https_proxy="http://127.0.0.1:$TRAPPORT" all_proxy="http://127.0.0.1:$TRAPPORT" \
    NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 \
    "$OCIREGISTRY_BIN" serve --listen "$OCI" --data-dir "$TMP/data" --config-file "$TMP/config.yaml"
  wait_http "http://$OCI/v2/" 30 ociregistry
}

# Everything the examples name is cached before schemathesis runs: skopeo pulls each image (all platforms).
step_prepull() {
  local key repo tag top got
  mkdir -p "$TMP/pulled"
  for key in hello app; do
    read -r repo tag top < <(py -c 'import json,sys; i=json.load(open(sys.argv[1]))[sys.argv[2]]; print(i["repository"], i["tag"], i["top"])' "$TMP/images/images.json" "$key")
    timeout 120 skopeo copy --all --preserve-digests --src-tls-verify=false \
      "docker://$OCI/$repo:$tag" "oci:$TMP/pulled/$key:$tag"
    got="$(timeout 60 skopeo inspect --raw --tls-verify=false "docker://$OCI/$repo:$tag" | sha256sum | cut -d' ' -f1)"
    [[ "sha256:$got" == "$top" ]] || { echo "$repo:$tag through ociregistry is sha256:$got, expected $top" >&2; return 1; }
    echo "$repo:$tag cached ($top)"
  done
}

# run_schemathesis NAME SPEC URL CONFIG MAX_EXAMPLES [VAR=VALUE...]: schemathesis over every operation of SPEC
# at URL (with the environment VAR=VALUE...); its output in $TMP/NAME.out, one PASS/FAIL/SKIP line per
# operation in $TMP/NAME.results (count_operations NAME counts them). With HAR=1, every request and answer is
# also recorded in $TMP/NAME.har.
run_schemathesis() {
  local name=$1 spec=$2 url=$3 config=$4 max=$5 rc=0
  local reports=(--report junit --report-junit-path "$TMP/$name-junit.xml")
  [[ "${HAR:-0}" == 1 ]] && reports=(--report junit,har --report-junit-path "$TMP/$name-junit.xml" --report-har-path "$TMP/$name.har")
  shift 5
  (
    cd "$TMP"
    env "$@" timeout 1800 "$VENV/bin/schemathesis" --config-file "$config" run "$spec" \
      --url "$url" \
      --phases examples,coverage,fuzzing \
      --max-examples "$max" \
      --seed "$SEED" \
      --generation-database none \
      --request-timeout 30 \
      --no-color \
      "${reports[@]}"
  ) >"$TMP/$name.out" 2>&1 || rc=$?
  # One result per operation (from the JUnit report), in this suite's PASS/FAIL format.
  py - "$TMP/$name-junit.xml" "$TMP/$name.results" "$name" <<'EOF' || true
import sys, xml.etree.ElementTree as ET
out = open(sys.argv[2], "w")
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    bad = case.find("failure") is not None or case.find("error") is not None
    skipped = case.find("skipped") is not None
    out.write(f"{'FAIL' if bad else 'SKIP' if skipped else 'PASS'} {sys.argv[3]} {case.get('name')}\n")
EOF
  sed -n '/^=* SUMMARY =*$/,$p' "$TMP/$name.out" | grep -v '^ *$' | head -n 60 || true
  if [[ $rc -ne 0 ]]; then
    echo "--- $name failures (full output: keep the temp dir with CONTRACT_KEEP=1) ---"
    sed -n '/^=* FAILURES =*$/,/^=* SUMMARY =*$/p' "$TMP/$name.out" | head -n 200
    return 1
  fi
}

step_schemathesis() {
  run_schemathesis schemathesis "$SPEC" "http://$OCI" "$REPO_ROOT/tests/contract/schemathesis.toml" "$MAX_EXAMPLES" \
    CONTRACT_UPSTREAM="$UP" SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$REPO_ROOT/tests/contract"
}

# Counts the operations of a JUnit report as results of their own (after the step that ran them).
count_operations() { # NAME (of run_schemathesis)
  local name=$1 results="$TMP/$1.results" line
  [[ -s "$results" ]] || return 0
  while read -r line; do
    case "$line" in
      PASS*) PASSED=$((PASSED + 1)); [[ "${CONTRACT_VERBOSE:-0}" == "1" ]] && log "$line" ;;
      FAIL*) FAILED=$((FAILED + 1)); FAILED_NAMES+=("${line#FAIL }"); log "$line" ;;
      SKIP*) log "$line" ;;
    esac
  done <"$results"
  log "$name operations: $(grep -c '^PASS' "$results" || true) passed, $(grep -c '^FAIL' "$results" || true) failed, $(grep -c '^SKIP' "$results" || true) skipped"
}

step_upstream_answers() {
  py "$REPO_ROOT/tests/contract/upstream_answers.py" "$SPEC" "http://$OCI" "$FAKE" "127.0.0.1:$DEADPORT"
}

# The admin API run: a server of its own (its own data dir), whose default registry is the test upstream and
# which refuses every other upstream at once (`unlisted_upstreams: deny`): loads read the test upstream or fail
# fast, and never leave loopback. The token file has whitespace around the token (the server trims it).
step_start_admin_server() {
  printf '  %s\n\n' "$ADMIN_TOKEN" >"$TMP/admin-token"
  chmod 600 "$TMP/admin-token"
  cat >"$TMP/admin-config.yaml" <<EOF
log_level: info
default_registry: "$UP"
unlisted_upstreams: deny
registries:
  - name: "$UP"
    scheme: http
admin_listen: "$ADMIN"
admin_token_file: "$TMP/admin-token"
prune_older_than: 30d
prune_interval: 1h
max_cache_bytes: 1GiB
EOF
  start_bg ociregistry-admin "$TMP/logs/ociregistry-admin.log" env \
    HTTP_PROXY="http://127.0.0.1:$TRAPPORT" HTTPS_PROXY="http://127.0.0.1:$TRAPPORT" ALL_PROXY="http://127.0.0.1:$TRAPPORT" \
    http_proxy="http://127.0.0.1:$TRAPPORT" https_proxy="http://127.0.0.1:$TRAPPORT" all_proxy="http://127.0.0.1:$TRAPPORT" \
    NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 \
    "$OCIREGISTRY_BIN" serve --listen "$OCI2" --data-dir "$TMP/admin-data" --config-file "$TMP/admin-config.yaml"
  wait_http "http://$OCI2/v2/" 30 ociregistry-admin
  local code=""
  for _ in $(seq 1 100); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "Authorization: Bearer $ADMIN_TOKEN" "http://$ADMIN/admin/v1/stats" || true)"
    [[ "$code" == 200 ]] && break
    sleep 0.1
  done
  [[ "$code" == 200 ]] || { echo "GET http://$ADMIN/admin/v1/stats with the token: ${code:-no answer}, expected 200" >&2; return 1; }
  [[ -S "$TMP/admin-data/admin.sock" ]] || { echo "no Unix socket at $TMP/admin-data/admin.sock" >&2; return 1; }
  echo "admin API on $ADMIN and $TMP/admin-data/admin.sock"
}

# The admin steps after the start fail at once when the server is not running.
admin_server_running() {
  is_running ociregistry-admin || { echo "the admin run's server is not running (see its start step)" >&2; return 1; }
}

step_admin_answers() {
  admin_server_running
  PYTHONPATH="$REPO_ROOT/tests/contract" py "$REPO_ROOT/tests/contract/admin_answers.py" "$ADMIN_SPEC" "http://$ADMIN" \
    "$ADMIN_TOKEN" "$TMP/admin-data/admin.sock" "$UP" "$TMP/images/images.json"
}

# Every operation must also have been answered 2xx at least once: a run whose token was never sent would see
# only 401s, which the spec documents for every operation.
step_admin_schemathesis() {
  admin_server_running
  local rc=0
  HAR=1 run_schemathesis schemathesis-admin "$ADMIN_SPEC" "http://$ADMIN" "$REPO_ROOT/tests/contract/schemathesis-admin.toml" \
    "$ADMIN_MAX_EXAMPLES" CONTRACT_ADMIN_TOKEN="$ADMIN_TOKEN" || rc=$?
  py - "$TMP/schemathesis-admin.har" "$ADMIN_SPEC" <<'EOF' || rc=1
import collections, json, sys, urllib.parse, yaml
entries = json.load(open(sys.argv[1]))["log"]["entries"]
operations = [(m.upper(), p) for p, item in yaml.safe_load(open(sys.argv[2]))["paths"].items() for m in item]
seen = collections.defaultdict(collections.Counter)
for entry in entries:
    key = (entry["request"]["method"], urllib.parse.urlsplit(entry["request"]["url"]).path)
    seen[key][entry["response"]["status"]] += 1
bad = []
for op in operations:
    statuses = seen.get(op, {})
    print(f"{op[0]} {op[1]}: " + ", ".join(f"{n}x {s}" for s, n in sorted(statuses.items())))
    if not any(200 <= s < 300 for s in statuses):
        bad.append(f"{op[0]} {op[1]}")
if bad:
    sys.exit(f"never answered 2xx (was the token sent?): {', '.join(bad)}")
EOF
  return $rc
}

step_admin_server_healthy() {
  is_running ociregistry-admin || { echo "ociregistry (admin run) is not running (status $(cat "$PIDDIR/ociregistry-admin.rc" 2>/dev/null || echo "none: never started"))" >&2; return 1; }
  if grep -aE "panicked|RUST_BACKTRACE" "$TMP/logs/ociregistry-admin.log"; then
    echo "ociregistry (admin run) panicked" >&2
    return 1
  fi
  if grep -aqF "$ADMIN_TOKEN" "$TMP/logs/ociregistry-admin.log"; then
    echo "the admin token appears in the server's log" >&2
    return 1
  fi
  curl -sf -o /dev/null -H "Authorization: Bearer $ADMIN_TOKEN" "http://$ADMIN/admin/v1/stats"
  echo "ociregistry (admin run) still serving, no panics, the token not in its log"
}

step_nothing_trapped() {
  if grep -q TRAPPED "$TMP/logs/proxy-trap.log"; then
    echo "the server sent requests towards non-loopback upstreams:" >&2
    grep TRAPPED "$TMP/logs/proxy-trap.log" | sort | uniq -c | head -n 20 >&2
    return 1
  fi
  echo "no request left loopback"
}

step_server_healthy() {
  is_running ociregistry || { echo "ociregistry exited (status $(cat "$PIDDIR/ociregistry.rc"))" >&2; return 1; }
  if grep -aE "panicked|RUST_BACKTRACE" "$TMP/logs/ociregistry.log"; then
    echo "ociregistry panicked during the run" >&2
    return 1
  fi
  curl -sf -o /dev/null "http://$OCI/v2/"
  echo "ociregistry still serving, no panics in its log"
}

# A percent-encoded ':' (what OpenAPI/RFC 6570 clients send for a path parameter) must mean ':', as in
# Distribution (the reference registry).
probe_encoded_colon() {
  local digest code
  digest="$(py -c 'import json,sys; print(json.load(open(sys.argv[1]))["hello"]["top"])' "$TMP/images/images.json")"
  code="$(curl -s -o "$TMP/probe.body" -w '%{http_code}' "http://$OCI/v2/hello/manifests/${digest/:/%3A}")"
  echo "GET /v2/hello/manifests/${digest/:/%3A} -> $code $(head -c 200 "$TMP/probe.body")"
  code_up="$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$UP/v2/hello/manifests/${digest/:/%3A}")"
  echo "(the upstream, Distribution, answers the same request with $code_up)"
  [[ "$code" == 200 ]]
}

# ---------------------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------------------
critical_step "python venv with the pinned contract tools ($VENV)" step_venv
run_step "schema/openapi.yaml is valid OpenAPI (openapi-spec-validator)" step_spec_valid
run_step "docs/api.md is up to date with schema/openapi.yaml" step_docs_current
run_step "schema/admin-openapi.yaml is valid OpenAPI (openapi-spec-validator)" step_admin_spec_valid
run_step "docs/admin-api.md is up to date with schema/admin-openapi.yaml" step_admin_docs_current
run_step "schema/config.schema.json agrees with tests/contract/config-cases" step_config_schema
critical_step "build the test images; the spec's example digests are theirs" step_images
critical_step "upstream docker-registry starts on $UP" step_start_upstream
critical_step "skopeo pushes hello:latest and contract/app:v1 to the upstream" step_push
critical_step "proxy trap listens (no request may leave loopback)" step_start_trap
critical_step "scripted upstream starts on $FAKE (tests/contract/fake_upstream.py)" step_start_fake_upstream
critical_step "ociregistry serve starts on $OCI" step_start_ociregistry
critical_step "both images pulled through ociregistry (cached)" step_prepull
run_step "schemathesis: every operation conforms to schema/openapi.yaml (max $MAX_EXAMPLES examples, seed $SEED)" step_schemathesis
count_operations schemathesis
run_step "cold fills, referrers, 401/403/429/502 answers (tests/contract/fake_upstream.py, a dead port) conform to the spec" step_upstream_answers
run_step "ociregistry serve with admin_listen $ADMIN and admin_token_file starts (registry API on $OCI2)" step_start_admin_server
run_step "admin API: 401 without the token, a scripted session, the Unix socket (tests/contract/admin_answers.py)" step_admin_answers
run_step "schemathesis: every admin operation conforms to schema/admin-openapi.yaml (max $ADMIN_MAX_EXAMPLES examples, seed $SEED)" step_admin_schemathesis
count_operations schemathesis-admin
run_step "ociregistry (admin run) survived, and did not log the token" step_admin_server_healthy
run_step "no request reached the proxy trap" step_nothing_trapped
run_step "ociregistry survived the run" step_server_healthy
run_step "GET /v2/hello/manifests/sha256%3A... is the manifest (as for a literal ':')" probe_encoded_colon

finish || exit 1
