#!/usr/bin/env python3
"""The admin API (schema/admin-openapi.yaml) of a running server, request by request, where random input cannot
tell right from wrong: the bearer token of the TCP listener, and a scripted session of load, list, pin, prune,
unpin and invalidate whose answers depend on one another.

  1. Without the token (no header, another token, another scheme, an empty one) every operation, an undeclared
     method and an unknown path are 401 UNAUTHORIZED with the error object, and change nothing.
  2. With the token: load (by default registry, one platform, again with nothing left to fetch, refused
     (400) and unknown (404) images, malformed references and platforms), images with and without a pattern,
     pin (twice), pins, invalidate of a pinned image (409) and of an index's platform manifest (400), prune
     (a dry run: pinned images stay), unpin (twice), invalidate by tag (the mapping only) and by digest (the
     image; then 404), stats; 404 NOT_FOUND for an unknown path, 405 METHOD_NOT_ALLOWED with Allow for an
     undeclared method, 400 for a body that is not JSON or not sent as JSON.
  3. The Unix socket answers the same API without a token, and has mode 0600.

Every answer of a documented operation must also pass the spec's checks for it (status documented, content
type, headers, body schema) through schemathesis' own check functions; other answers must be the error object.

Usage: admin_answers.py SPEC BASE_URL TOKEN SOCKET UPSTREAM IMAGES_JSON   (exit status 0 iff all pass)
UPSTREAM is the server's default_registry (holding the images of IMAGES_JSON, from make_images.py); the server
runs with `unlisted_upstreams: deny`, so any other host is refused without a request.
"""

import http.client
import json
import os
import socket
import stat
import sys
import time

import requests
import schemathesis
from schemathesis.checks import CHECKS

SPEC, BASE_URL, TOKEN, SOCKET, UPSTREAM, IMAGES_JSON = sys.argv[1:7]
IMAGES = json.load(open(IMAGES_JSON))
HELLO = f"{UPSTREAM}/hello:latest"
APP = f"{UPSTREAM}/contract/app:v1"
# contract/app's linux/amd64 manifest (a platform of its index; schema/openapi.yaml's examples name it too)
APP_AMD64 = "sha256:a34269c2ae4d2362e8b0171f299373d30b49dfdb3a6b283f0a92601861b55e28"
assert APP_AMD64 in IMAGES["app"]["manifests"]
SPEC_CHECKS = {"status_code_conformance", "content_type_conformance", "response_headers_conformance",
               "response_schema_conformance"}
ERROR_CODES = {"BAD_REQUEST", "UNAUTHORIZED", "NOT_CACHED", "NOT_FOUND", "PINNED", "METHOD_NOT_ALLOWED",
               "UPSTREAM", "INTERNAL"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Requests the server must refuse on the TCP listener.
NOT_AUTHORIZED = [
    ("no Authorization", {}),
    ("another token", {"Authorization": "Bearer not-the-token"}),
    ("the token with a suffix", {"Authorization": f"Bearer {TOKEN}x"}),
    ("a prefix of the token", {"Authorization": f"Bearer {TOKEN[:-1]}"}),
    ("an empty bearer token", {"Authorization": "Bearer "}),
    ("the token as Basic", {"Authorization": f"Basic {TOKEN}"}),
    ("the token without a scheme", {"Authorization": TOKEN}),
]
# Every operation, with a body that would change something if it were served.
OPERATIONS = [
    ("GET", "/admin/v1/stats", None, None),
    ("GET", "/admin/v1/images", {"pattern": "**"}, None),
    ("POST", "/admin/v1/prune", None, {"all": True, "dry_run": False}),
    ("POST", "/admin/v1/load", None, {"image": "hello"}),
    ("GET", "/admin/v1/pins", None, None),
    ("POST", "/admin/v1/pin", None, {"reference": "hello"}),
    ("POST", "/admin/v1/unpin", None, {"reference": "hello"}),
    ("POST", "/admin/v1/invalidate", None, {"reference": "hello"}),
]

schema = schemathesis.openapi.from_path(SPEC)
checks = [check for check in CHECKS.get_all() if check.__name__ in SPEC_CHECKS]
assert len(checks) == len(SPEC_CHECKS), [c.__name__ for c in checks]
results = {"passed": 0, "failed": 0}


def report(label, problems, detail):
    if problems:
        results["failed"] += 1
        print(f"FAIL {label} -> {detail}\n    " + "\n    ".join(problems))
    else:
        results["passed"] += 1
        print(f"PASS {label} -> {detail}")


def error_problems(body, status, code):
    """The error object, exactly: {"error":{"code":C,"message":M}}."""
    problems = []
    if not (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], dict)
            and set(body["error"]) == {"code", "message"} and isinstance(body["error"]["message"], str)
            and body["error"]["code"] in ERROR_CODES):
        problems.append(f"not the error object: {json.dumps(body)[:200]}")
    elif code is not None and body["error"]["code"] != code:
        problems.append(f"code {body['error']['code']}, expected {code}")
    return problems


def json_of(response):
    try:
        return response.json()
    except ValueError:
        return f"(not JSON: {response.text[:100]!r})"


def call(method, path, query=None, body=None, headers=None, status=200, code=None, expect=None, label=None):
    """A documented operation: sent, its status (and error code) checked, validated against the spec; `expect`
    gets the JSON body and returns a list of problems. Returns the JSON body."""
    headers = dict(AUTH if headers is None else headers)
    kwargs = {"query": query or {}, "headers": headers}
    if body is not None:
        kwargs.update(body=body, media_type="application/json")
    case = schema[path][method].Case(**kwargs)
    started = time.monotonic()
    response = case.call(base_url=BASE_URL, timeout=30)
    took = time.monotonic() - started
    problems = []
    if response.status_code != status:
        problems.append(f"status {response.status_code}, expected {status}")
    data = json_of(response)
    if response.status_code >= 400:
        problems += error_problems(data, response.status_code, code)
    try:
        case.validate_response(response, checks=checks)
    except Exception as exc:  # schemathesis raises one exception (group) listing every failed check
        for failure in getattr(exc, "exceptions", None) or [exc]:
            lines = [line.strip() for line in str(failure).splitlines() if line.strip()]
            problems.append(" / ".join(lines[:3])[:300])
    if not problems and expect is not None:
        problems += expect(data)
    auth = headers.get("Authorization", "")
    shown = "" if auth == AUTH["Authorization"] else f" [{label or (auth.split()[0] if auth else 'no token')}]"
    shown_query = "?" + "&".join(f"{k}={v}" for k, v in (query or {}).items()) if query else ""
    shown_body = f" {json.dumps(body)}" if body is not None else ""
    report(f"{method} {path}{shown_query}{shown_body}{shown}", problems,
           f"{response.status_code} in {took:.2f}s {json.dumps(data)[:160]}")
    return data


def raw(method, path, status, code, headers=None, data=None, allow=None, label=None):
    """A request outside the documented operations: only the status and the error object are checked."""
    headers = dict(AUTH if headers is None else headers)
    response = requests.request(method, BASE_URL + path, headers=headers, data=data, timeout=30)
    problems = []
    if response.status_code != status:
        problems.append(f"status {response.status_code}, expected {status}")
    if not response.headers.get("content-type", "").startswith("application/json"):
        problems.append(f"Content-Type {response.headers.get('content-type')!r}, expected application/json")
    problems += error_problems(json_of(response), response.status_code, code)
    if allow is not None and response.headers.get("allow", "").replace(" ", "") != allow:
        problems.append(f"Allow {response.headers.get('allow')!r}, expected {allow!r}")
    shown = f" [{label}]" if label else ""
    report(f"{method} {path}{shown}", problems, f"{response.status_code} {response.text[:160]}")


def names(data):
    return sorted(image["reference"] for image in data["images"])


def expect_equal(what, got, wanted):
    return [] if got == wanted else [f"{what}: {got!r}, expected {wanted!r}"]


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.unix_path)


def over_socket(method, path, body=None):
    connection = UnixConnection(SOCKET)
    payload = json.dumps(body) if body is not None else None
    connection.request(method, path, body=payload, headers={"Content-Type": "application/json"} if payload else {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def main():
    # ---- 1. the TCP listener without the token ------------------------------------------------------------
    # loaded first (with the token) so that the refused requests below would have something to change
    call("POST", "/admin/v1/load", body={"image": "hello"},
         expect=lambda d: expect_equal("image", d["image"], HELLO) + expect_equal("digest", d["digest"], IMAGES["hello"]["top"]))
    for label, headers in NOT_AUTHORIZED:
        for method, path, query, body in OPERATIONS:
            call(method, path, query=query, body=body, headers=headers, status=401, code="UNAUTHORIZED", label=label)
    raw("GET", "/admin/v1/no-such-endpoint", 401, "UNAUTHORIZED", headers={}, label="no token, unknown path")
    raw("GET", "/", 401, "UNAUTHORIZED", headers={}, label="no token, unknown path")
    raw("DELETE", "/admin/v1/stats", 401, "UNAUTHORIZED", headers={}, label="no token, undeclared method")
    raw("POST", "/admin/v1/prune", 401, "UNAUTHORIZED", headers={"Authorization": "Bearer wrong"}, data="not json",
        label="another token, not JSON")
    call("GET", "/admin/v1/images", expect=lambda d: expect_equal("images after the refused requests", names(d), [HELLO]))
    call("GET", "/admin/v1/pins", expect=lambda d: expect_equal("pins after the refused requests", d["pins"], []))

    # ---- 2. with the token --------------------------------------------------------------------------------
    hello_digest = IMAGES["hello"]["top"]
    hello_by_digest = f"{UPSTREAM}/hello@{hello_digest}"
    app_amd64 = APP_AMD64
    call("POST", "/admin/v1/load", body={"image": "hello"},
         expect=lambda d: expect_equal("blobs_fetched of a cached image", d["blobs_fetched"], 0)
         + expect_equal("bytes_fetched of a cached image", d["bytes_fetched"], 0))
    call("POST", "/admin/v1/load", body={"image": "contract/app:v1", "platforms": ["linux/amd64"]},
         expect=lambda d: expect_equal("image", d["image"], APP) + expect_equal("platforms", d["platforms"], ["linux/amd64"])
         + expect_equal("digest", d["digest"], IMAGES["app"]["top"]) + expect_equal("manifests", d["manifests"], 2))
    # refused by the upstream rules (unlisted_upstreams: deny) before any request: 400
    for image in ["docker.io/library/alpine:3.20", "registry.example.com/team/app:v1", "127.0.0.1:1/x:y"]:
        call("POST", "/admin/v1/load", body={"image": image}, status=400, code="BAD_REQUEST")
    call("POST", "/admin/v1/load", body={"image": "no/such-image:v1"}, status=404, code="NOT_CACHED")
    for image in ["Not A Reference", "hello:bad tag", "hello@sha256:xyz", ""]:
        call("POST", "/admin/v1/load", body={"image": image}, status=400, code="BAD_REQUEST")
    call("POST", "/admin/v1/load", body={"image": "hello", "platforms": ["linux/x86"]}, status=400, code="BAD_REQUEST")
    call("GET", "/admin/v1/images", expect=lambda d: expect_equal("images", names(d), sorted([HELLO, APP])))
    call("GET", "/admin/v1/images", query={"pattern": "*/hello:*"},
         expect=lambda d: expect_equal("images", names(d), [HELLO]) + expect_equal("total.images", d["total"]["images"], 1))
    call("GET", "/admin/v1/images", query={"pattern": "**/app"},
         expect=lambda d: expect_equal("images", names(d), [APP]) + expect_equal("platforms", d["images"][0]["platforms"], ["linux/amd64"]))
    call("GET", "/admin/v1/images", query={"pattern": "*/app"}, expect=lambda d: expect_equal("images ('*' does not cross '/')", names(d), []))
    call("GET", "/admin/v1/images", query={"pattern": "[z-a]"}, status=400, code="BAD_REQUEST")

    call("POST", "/admin/v1/pin", body={"reference": "hello"},
         expect=lambda d: expect_equal("reference", d["reference"], HELLO) + expect_equal("digest", d["digest"], hello_digest))
    call("POST", "/admin/v1/pin", body={"reference": "hello"}, expect=lambda d: expect_equal("reference", d["reference"], HELLO))
    call("POST", "/admin/v1/pin", body={"reference": "never/pulled:v1"}, status=404, code="NOT_CACHED")
    call("GET", "/admin/v1/pins", expect=lambda d: expect_equal("pins", [p["reference"] for p in d["pins"]], [HELLO]))
    call("GET", "/admin/v1/images", query={"pattern": "*/hello:*"},
         expect=lambda d: expect_equal("pinned", [i["pinned"] for i in d["images"]], [True]))
    call("POST", "/admin/v1/invalidate", body={"reference": hello_by_digest}, status=409, code="PINNED")
    call("POST", "/admin/v1/invalidate", body={"reference": f"contract/app@{app_amd64}"}, status=400, code="BAD_REQUEST")
    call("POST", "/admin/v1/prune", body={"all": True, "dry_run": True},
         expect=lambda d: expect_equal("dry-run prune of everything unpinned", names(d), [APP]) + expect_equal("dry_run", d["dry_run"], True))
    call("GET", "/admin/v1/images", expect=lambda d: expect_equal("images after a dry run", names(d), sorted([HELLO, APP])))
    call("POST", "/admin/v1/prune", body={"older_than": "1h", "dry_run": False},
         expect=lambda d: expect_equal("prune of what was not pulled for an hour", names(d), []))
    call("POST", "/admin/v1/unpin", body={"reference": "hello"},
         expect=lambda d: expect_equal("removed", d["removed"], True) + expect_equal("reference", d["reference"], HELLO))
    call("POST", "/admin/v1/unpin", body={"reference": "hello"}, expect=lambda d: expect_equal("removed", d["removed"], False))
    call("POST", "/admin/v1/invalidate", body={"reference": "hello"},
         expect=lambda d: expect_equal("tags", d["tags"], [HELLO]) + expect_equal("reference", d["reference"], HELLO)
         + expect_equal("manifests removed by a tag invalidation", d["manifests"], 0))
    call("GET", "/admin/v1/images", query={"pattern": "*/hello:*"}, expect=lambda d: expect_equal("tagged hello", names(d), []))
    call("POST", "/admin/v1/invalidate", body={"reference": "hello"}, status=404, code="NOT_CACHED")
    call("POST", "/admin/v1/invalidate", body={"reference": hello_by_digest},
         expect=lambda d: expect_equal("reference", d["reference"], hello_by_digest) + expect_equal("manifests", d["manifests"], 1)
         + expect_equal("blobs", d["blobs"], len(IMAGES["hello"]["blobs"])))
    call("POST", "/admin/v1/invalidate", body={"reference": hello_by_digest}, status=404, code="NOT_CACHED")
    # Chosen by name (no older_than): removed although it was loaded a moment ago.
    call("POST", "/admin/v1/prune", body={"pattern": "**/contract/*", "by": "created", "keep_latest": 0, "dry_run": False},
         expect=lambda d: expect_equal("pruned", names(d), [APP]) + expect_equal("manifests", d["manifests"], 2))
    call("GET", "/admin/v1/stats",
         expect=lambda d: expect_equal("images of an empty cache", d["images"], 0) + expect_equal("blobs", d["blobs"], 0)
         + expect_equal("max_cache_bytes", d["max_cache_bytes"], 1073741824))
    raw("GET", "/admin/v1/no-such-endpoint", 404, "NOT_FOUND")
    raw("GET", "/admin/v2/stats", 404, "NOT_FOUND")
    raw("DELETE", "/admin/v1/stats", 405, "METHOD_NOT_ALLOWED", allow="GET,HEAD")
    raw("GET", "/admin/v1/prune", 405, "METHOD_NOT_ALLOWED", allow="POST")
    raw("POST", "/admin/v1/prune", 400, "BAD_REQUEST", data="not json", headers={**AUTH, "Content-Type": "application/json"},
        label="not JSON")
    raw("POST", "/admin/v1/prune", 400, "BAD_REQUEST", data="{}", headers={**AUTH, "Content-Type": "text/plain"},
        label="not Content-Type: application/json")
    raw("POST", "/admin/v1/pin", 400, "BAD_REQUEST", data="{}", headers={**AUTH, "Content-Type": "application/json"},
        label="no reference")

    # ---- 3. the Unix socket -------------------------------------------------------------------------------
    problems = []
    mode = stat.S_IMODE(os.stat(SOCKET).st_mode)
    if mode != 0o600:
        problems.append(f"mode {mode:o}, expected 600")
    status, body = over_socket("GET", "/admin/v1/stats")
    if status != 200:
        problems.append(f"GET /admin/v1/stats without a token: {status} {body[:200]!r}")
    status, body = over_socket("POST", "/admin/v1/load", {"image": "hello"})
    if status != 200:
        problems.append(f"POST /admin/v1/load without a token: {status} {body[:200]!r}")
    status, body = over_socket("POST", "/admin/v1/invalidate", {"reference": "hello"})
    if status != 200:
        problems.append(f"POST /admin/v1/invalidate without a token: {status} {body[:200]!r}")
    report(f"the Unix socket {SOCKET}: mode 0600, answers without a token", problems, "ok" if not problems else "")

    print(f"admin answers: {results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
