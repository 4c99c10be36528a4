#!/usr/bin/env python3
"""The answers random inputs cannot provoke, checked against schema/openapi.yaml: cold fills (nothing cached
yet), referrers indexes, the 401 of an `auth: passthrough` registry, upstream-policy refusals, and the errors
of a misbehaving or dead upstream.

Requests name fake_upstream.py (or a closed port, or a refused host) with `ns`, or the passthrough registry's
alias in the path; each answer must have the expected status (and error code), carry `X-Request-Id`, and pass
the spec's checks for its operation (status code documented, content type, headers, body schema) through
schemathesis' own check functions.

Usage: upstream_answers.py SPEC BASE_URL FAKE_UPSTREAM DEAD_UPSTREAM   (exit status 0 iff all pass)
run.sh lists FAKE_UPSTREAM and DEAD_UPSTREAM as registries, and FAKE_UPSTREAM once more as PASSTHROUGH
(`auth: passthrough`, alias PASSTHROUGH_ALIAS).
"""

import base64
import json
import sys

import schemathesis
from schemathesis.checks import CHECKS

from fake_upstream import (
    CHUNKED_BLOB_DIGEST,
    GOOD_BLOB_DIGEST,
    GOOD_MANIFEST_DIGEST,
    PRIVATE_AUTHORIZATION,
    PRIVATE_USER,
    SBOM_TYPE,
)

SPEC, BASE_URL, FAKE, DEAD = sys.argv[1:5]
DIGEST = "sha256:" + "3" * 64
MANIFEST = "/v2/{name}/manifests/{reference}"
MANIFEST2 = "/v2/{namespace}/{name}/manifests/{reference}"
BLOB = "/v2/{name}/blobs/{digest}"
REFERRERS = "/v2/{name}/referrers/{digest}"
PASSTHROUGH = "passthrough.test"
PASSTHROUGH_ALIAS = "locked"
CREDENTIALS = {"Authorization": PRIVATE_AUTHORIZATION}
WRONG_CREDENTIALS = {"Authorization": "Basic " + base64.b64encode(f"{PRIVATE_USER}:wrong".encode()).decode()}
REFUSED = "10.255.255.1"  # unlisted, not public: refused by the upstream policy before any packet is sent

# (method, path template, path parameters, upstream, request headers, expected status, expected error code)
# upstream: a host (sent as `ns`), a dict (the whole query), or None (no query). The error code may be a pair
# (code, text the message must contain).
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
    ("GET", MANIFEST, {"name": "hello", "reference": "latest"}, REFUSED, {}, 403, ("DENIED", REFUSED)),
    ("HEAD", BLOB, {"name": "hello", "digest": DIGEST}, REFUSED, {}, 403, None),
    ("GET", MANIFEST, {"name": "hello", "reference": "latest"}, "127.1", {}, 400, "NAME_INVALID"),
    ("GET", MANIFEST, {"name": "hello", "reference": "latest"}, "127.0.0.1:05000", {}, 400, "NAME_INVALID"),
    # referrers: the index as the upstream lists it, filtered by artifactType; 404 for an unknown subject
    ("GET", REFERRERS, {"name": "good", "digest": GOOD_MANIFEST_DIGEST}, FAKE, {}, 200, None),
    ("HEAD", REFERRERS, {"name": "good", "digest": GOOD_MANIFEST_DIGEST}, FAKE, {}, 200, None),
    ("GET", REFERRERS, {"name": "good", "digest": GOOD_MANIFEST_DIGEST}, {"ns": FAKE, "artifactType": SBOM_TYPE}, {}, 200, None),
    ("GET", REFERRERS, {"name": "good", "digest": DIGEST}, FAKE, {}, 404, "MANIFEST_UNKNOWN"),
    ("GET", REFERRERS, {"name": "good", "digest": "latest"}, FAKE, {}, 400, "DIGEST_INVALID"),
    ("GET", REFERRERS, {"name": "denied", "digest": DIGEST}, FAKE, {}, 403, "DENIED"),
    ("GET", REFERRERS, {"name": "broken", "digest": DIGEST}, FAKE, {}, 502, ("UNAVAILABLE", "upstream unavailable (request id ")),
    # auth: passthrough: 401 without or with refused credentials, the content with accepted ones
    ("GET", MANIFEST, {"name": "private", "reference": "v1"}, PASSTHROUGH, {}, 401, "UNAUTHORIZED"),
    ("HEAD", BLOB, {"name": "private", "digest": GOOD_BLOB_DIGEST}, PASSTHROUGH, {}, 401, None),
    ("GET", REFERRERS, {"name": "private", "digest": GOOD_MANIFEST_DIGEST}, PASSTHROUGH, {}, 401, "UNAUTHORIZED"),
    ("GET", MANIFEST2, {"namespace": PASSTHROUGH_ALIAS, "name": "private", "reference": "v1"}, None, {}, 401, "UNAUTHORIZED"),
    ("GET", MANIFEST, {"name": "private", "reference": "v1"}, PASSTHROUGH, WRONG_CREDENTIALS, 401, "UNAUTHORIZED"),
    ("GET", MANIFEST, {"name": "private", "reference": "v1"}, PASSTHROUGH, CREDENTIALS, 200, None),
    ("GET", MANIFEST2, {"namespace": PASSTHROUGH_ALIAS, "name": "private", "reference": GOOD_MANIFEST_DIGEST}, None, CREDENTIALS, 200, None),
    ("GET", BLOB, {"name": "private", "digest": GOOD_BLOB_DIGEST}, PASSTHROUGH, CREDENTIALS, 200, None),
    ("GET", REFERRERS, {"name": "private", "digest": GOOD_MANIFEST_DIGEST}, PASSTHROUGH, CREDENTIALS, 200, None),
    ("GET", MANIFEST, {"name": "private", "reference": GOOD_MANIFEST_DIGEST}, PASSTHROUGH, {}, 401, "UNAUTHORIZED"),
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
    rate_limited = False
    for method, path, params, upstream, headers, status, code in CASES:
        query = {"ns": upstream} if isinstance(upstream, str) else (upstream or {})
        shown = "&".join(f"{k}={v}" for k, v in query.items())
        shown_headers = {k: (v.split()[0] + " ..." if k == "Authorization" else v) for k, v in headers.items()}
        label = f"{method} {path.format(**params)}{'?' if shown else ''}{shown} {shown_headers or ''}".rstrip()
        case = schema[path][method].Case(path_parameters=params, query=query, headers=headers)
        response = case.call(base_url=BASE_URL)
        problems = []
        if response.status_code != status:
            problems.append(f"status {response.status_code}, expected {status}")
        code, text = code if isinstance(code, tuple) else (code, None)
        if code is not None:
            try:
                error = response.json()["errors"][0]
                got, message = error["code"], error["message"]
            except Exception as exc:  # the schema checks below say more
                got, message = f"unreadable body ({exc})", ""
            if got != code:
                problems.append(f"code {got}, expected {code}")
            if text is not None and text not in message:
                problems.append(f"message {message!r} does not contain {text!r}")
        if not response.headers.get("x-request-id"):
            problems.append("no X-Request-Id")
        if response.status_code == 429:
            # the first 429 came from the upstream (without Retry-After); since then the server backs off and knows
            # how long
            if rate_limited and not response.headers.get("retry-after"):
                problems.append("no Retry-After while backing off")
            rate_limited = True
        if method == "GET" and response.status_code == 200 and "artifactType" in query:
            wanted = query["artifactType"]
            kinds = [d.get("artifactType") for d in response.json()["manifests"]]
            if (response.headers.get("oci-filters-applied") or [None])[0] != "artifactType":
                problems.append("no OCI-Filters-Applied: artifactType")
            if not kinds or any(k != wanted for k in kinds):
                problems.append(f"filtered by artifactType {wanted}: got {kinds}")
        try:
            case.validate_response(response, checks=checks)
        except Exception as exc:  # schemathesis raises one exception (group) listing every failed check
            for failure in getattr(exc, "exceptions", None) or [exc]:
                lines = [line.strip() for line in str(failure).splitlines() if line.strip()]
                problems.append(" / ".join(lines[:3])[:300])
        body = " " + response.text[:120] if method != "HEAD" and response.status_code >= 400 else ""
        length = (response.headers.get("content-length") or ["none"])[0]  # schemathesis: lower-case keys, lists
        if response.status_code == 429:
            length += f", Retry-After {(response.headers.get('retry-after') or ['none'])[0]}"
        if problems:
            failed += 1
            print(f"FAIL {label} -> {response.status_code} (Content-Length {length}){body}\n    " + "\n    ".join(problems))
        else:
            print(f"PASS {label} -> {response.status_code} (Content-Length {length}){body}")
    print(f"upstream answers: {len(CASES) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
