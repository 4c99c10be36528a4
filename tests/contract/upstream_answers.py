#!/usr/bin/env python3
"""The answers random inputs cannot provoke, checked against schema/openapi.yaml: cold fills (nothing cached
yet) and the errors of a misbehaving or dead upstream.

Requests name fake_upstream.py (or a closed port) with `ns`; each answer must have the expected status (and
error code), and pass the spec's checks for its operation (status code documented, content type, headers,
body schema) through schemathesis' own check functions.

Usage: upstream_answers.py SPEC BASE_URL FAKE_UPSTREAM DEAD_UPSTREAM   (exit status 0 iff all pass)
"""

import sys

import schemathesis
from schemathesis.checks import CHECKS

from fake_upstream import CHUNKED_BLOB_DIGEST, GOOD_BLOB_DIGEST, GOOD_MANIFEST_DIGEST

SPEC, BASE_URL, FAKE, DEAD = sys.argv[1:5]
DIGEST = "sha256:" + "3" * 64
MANIFEST = "/v2/{name}/manifests/{reference}"
BLOB = "/v2/{name}/blobs/{digest}"

# (method, path template, path parameters, upstream, request headers, expected status, expected error code)
CASES = [
    # cold: the first request for each object is answered from the upstream (read-along for blobs)
    ("HEAD", BLOB, {"name": "good", "digest": GOOD_BLOB_DIGEST}, FAKE, {}, 200, None),
    ("GET", BLOB, {"name": "good", "digest": GOOD_BLOB_DIGEST}, FAKE, {"Range": "bytes=0-9"}, 206, None),
    ("GET", MANIFEST, {"name": "good", "reference": "v1"}, FAKE, {}, 200, None),
    ("HEAD", MANIFEST, {"name": "good", "reference": GOOD_MANIFEST_DIGEST}, FAKE, {}, 200, None),
    ("GET", BLOB, {"name": "chunked", "digest": CHUNKED_BLOB_DIGEST}, FAKE, {"Range": "bytes=0-9"}, 200, None),
    # errors
    ("GET", MANIFEST, {"name": "denied", "reference": "v1"}, FAKE, {}, 403, "DENIED"),
    ("HEAD", MANIFEST, {"name": "denied", "reference": "v1"}, FAKE, {}, 403, None),
    ("GET", BLOB, {"name": "denied", "digest": DIGEST}, FAKE, {}, 403, "DENIED"),
    ("GET", MANIFEST, {"name": "broken", "reference": "v1"}, FAKE, {}, 502, "UNAVAILABLE"),
    ("GET", BLOB, {"name": "broken", "digest": DIGEST}, FAKE, {}, 502, "UNAVAILABLE"),
    ("GET", MANIFEST, {"name": "hello", "reference": "latest"}, DEAD, {}, 502, "UNAVAILABLE"),
    ("HEAD", BLOB, {"name": "hello", "digest": DIGEST}, DEAD, {}, 502, None),
    ("GET", MANIFEST, {"name": "liar", "reference": DIGEST}, FAKE, {}, 502, "DIGEST_INVALID"),
    ("GET", MANIFEST, {"name": "liar", "reference": "v1"}, FAKE, {}, 502, "DIGEST_INVALID"),
    ("GET", MANIFEST, {"name": "garbage", "reference": "v1"}, FAKE, {}, 502, "MANIFEST_INVALID"),
    ("HEAD", BLOB, {"name": "nosize", "digest": DIGEST}, FAKE, {}, 502, None),
    # last: after a 429 the server backs off that upstream for Retry-After, answering 429 without asking it
    ("GET", MANIFEST, {"name": "limited", "reference": "v1"}, FAKE, {}, 429, "TOOMANYREQUESTS"),
    ("GET", BLOB, {"name": "limited", "digest": DIGEST}, FAKE, {}, 429, "TOOMANYREQUESTS"),
    ("HEAD", BLOB, {"name": "limited", "digest": DIGEST}, FAKE, {}, 429, None),
    ("GET", MANIFEST, {"name": "good", "reference": "v2"}, FAKE, {}, 429, "TOOMANYREQUESTS"),
]

SPEC_CHECKS = {"status_code_conformance", "content_type_conformance", "response_headers_conformance",
               "response_schema_conformance"}


def main():
    schema = schemathesis.openapi.from_path(SPEC)
    checks = [check for check in CHECKS.get_all() if check.__name__ in SPEC_CHECKS]
    assert len(checks) == len(SPEC_CHECKS), [c.__name__ for c in checks]
    failed = 0
    for method, path, params, upstream, headers, status, code in CASES:
        label = f"{method} {path.format(**params)}?ns={upstream} {headers or ''}".rstrip()
        case = schema[path][method].Case(path_parameters=params, query={"ns": upstream}, headers=headers)
        response = case.call(base_url=BASE_URL)
        problems = []
        if response.status_code != status:
            problems.append(f"status {response.status_code}, expected {status}")
        if code is not None:
            try:
                got = response.json()["errors"][0]["code"]
            except Exception as exc:  # the schema checks below say more
                got = f"unreadable body ({exc})"
            if got != code:
                problems.append(f"code {got}, expected {code}")
        try:
            case.validate_response(response, checks=checks)
        except Exception as exc:  # schemathesis raises one exception (group) listing every failed check
            for failure in getattr(exc, "exceptions", None) or [exc]:
                lines = [line.strip() for line in str(failure).splitlines() if line.strip()]
                problems.append(" / ".join(lines[:3])[:300])
        body = " " + response.text[:120] if method != "HEAD" and response.status_code >= 400 else ""
        length = (response.headers.get("content-length") or ["none"])[0]  # schemathesis: lower-case keys, lists
        if problems:
            failed += 1
            print(f"FAIL {label} -> {response.status_code} (Content-Length {length}){body}\n    " + "\n    ".join(problems))
        else:
            print(f"PASS {label} -> {response.status_code} (Content-Length {length}){body}")
    print(f"upstream answers: {len(CASES) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
