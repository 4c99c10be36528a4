#!/usr/bin/env python3
"""An upstream registry for the answers fuzzing cannot reach (tests/contract/run.sh): cold fills, and errors.

Usage: fake_upstream.py PORT   (listens on 127.0.0.1:PORT; prints READY once listening)

The first component of the repository name picks the behaviour, for manifests and blobs alike:
  good/...      a well-behaved registry holding one small image (manifest `v1` -> GOOD_MANIFEST, whose
                config is GOOD_BLOB): never pulled before, so the server answers from a cold fill
  chunked/...   one blob (CHUNKED_BLOB), sent chunked, without Content-Length
  denied/...    403 (the upstream refuses access)       -> the server answers 403 DENIED
  limited/...   429 (rate limited)                       -> 429 TOOMANYREQUESTS
  broken/...    500                                      -> 502 UNAVAILABLE
  liar/...      a well-formed manifest whose bytes do not match the requested digest (and, by tag, a
                Docker-Content-Digest that does not match the bytes)       -> 502 DIGEST_INVALID
  garbage/...   200 with a body that is not a manifest   -> 502 MANIFEST_INVALID
  nosize/...    blob HEAD without Content-Length         -> 502 (the size cannot be told)
  private/...   like good/, but only with `Authorization: Basic` PRIVATE_USER:PRIVATE_PASSWORD; else 401 with a
                Basic challenge (run.sh lists this upstream once more as `auth: passthrough`) -> 401 UNAUTHORIZED
Referrers (`/v2/<name>/referrers/<digest>`) of good/ and private/: GOOD_MANIFEST_DIGEST has REFERRERS (two
referrers of different artifact types), any other subject is 404 (as from a registry without referrers API).
anything else: 404. GET /v2/ is 200.
"""

import base64
import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + "1" * 64,
            "size": 2,
        },
        "layers": [],
    }
).encode()


GOOD_BLOB = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
GOOD_BLOB_DIGEST = "sha256:" + hashlib.sha256(GOOD_BLOB).hexdigest()
GOOD_MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": GOOD_BLOB_DIGEST,
            "size": len(GOOD_BLOB),
        },
        "layers": [],
    },
    sort_keys=True,
).encode()
GOOD_MANIFEST_DIGEST = "sha256:" + hashlib.sha256(GOOD_MANIFEST).hexdigest()
PRIVATE_USER, PRIVATE_PASSWORD = "reader", "s3cret"
PRIVATE_AUTHORIZATION = "Basic " + base64.b64encode(f"{PRIVATE_USER}:{PRIVATE_PASSWORD}".encode()).decode()
SBOM_TYPE = "application/spdx+json"
SIGNATURE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
REFERRERS = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + "4" * 64,
                "size": 512,
                "artifactType": SIGNATURE_TYPE,
            },
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + "5" * 64,
                "size": 640,
                "artifactType": SBOM_TYPE,
                "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
            },
        ],
    },
    sort_keys=True,
).encode()
CHUNKED_BLOB = b"a blob the upstream sends chunked, so its size is not known before its end\n" * 4
CHUNKED_BLOB_DIGEST = "sha256:" + hashlib.sha256(CHUNKED_BLOB).hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def chunked(self, body, content_type):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command != "HEAD":
            for i in range(0, len(body), 16):
                piece = body[i : i + 16]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")

    def well_behaved(self, path, is_blob, chunked):
        last = path.rsplit("/", 1)[-1]
        if chunked and is_blob and last == CHUNKED_BLOB_DIGEST:
            body, content_type, digest = CHUNKED_BLOB, "application/octet-stream", CHUNKED_BLOB_DIGEST
        elif not chunked and is_blob and last == GOOD_BLOB_DIGEST:
            body, content_type, digest = GOOD_BLOB, "application/octet-stream", GOOD_BLOB_DIGEST
        elif not chunked and not is_blob and last in ("v1", GOOD_MANIFEST_DIGEST):
            body, content_type, digest = GOOD_MANIFEST, "application/vnd.oci.image.manifest.v1+json", GOOD_MANIFEST_DIGEST
        else:
            return self.answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}',
                               [("Content-Type", "application/json")])
        if chunked and self.command == "GET":
            return self.chunked(body, content_type)
        return self.answer(200, body, [("Content-Type", content_type), ("Docker-Content-Digest", digest)])

    def handle_any(self):
        path = self.path.split("?", 1)[0]
        if path in ("/v2/", "/v2"):
            return self.answer(200, b"{}", [("Content-Type", "application/json")])
        parts = path.split("/")
        kind = parts[2] if len(parts) > 2 else ""
        is_blob = "/blobs/" in path
        error = [("Content-Type", "application/json")]
        if kind == "private":
            if self.headers.get("Authorization") != PRIVATE_AUTHORIZATION:
                return self.answer(
                    401,
                    b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                    error + [("WWW-Authenticate", 'Basic realm="fake"')],
                )
            kind = "good"
        if kind == "good" and "/referrers/" in path:
            if path.rsplit("/", 1)[-1] == GOOD_MANIFEST_DIGEST:
                return self.answer(200, REFERRERS, [("Content-Type", "application/vnd.oci.image.index.v1+json")])
            return self.answer(404, b"404 page not found\n", [("Content-Type", "text/plain")])
        if kind in ("good", "chunked"):
            return self.well_behaved(path, is_blob, chunked=kind == "chunked")
        if kind == "denied":
            return self.answer(403, b'{"errors":[{"code":"DENIED","message":"no"}]}', error)
        if kind == "limited":
            return self.answer(429, b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}', error)
        if kind == "broken":
            return self.answer(500, b"internal trouble", [("Content-Type", "text/plain")])
        if kind == "liar":
            claimed = "sha256:" + "2" * 64
            return self.answer(
                200,
                MANIFEST,
                [
                    ("Content-Type", "application/octet-stream" if is_blob else "application/vnd.oci.image.manifest.v1+json"),
                    ("Docker-Content-Digest", claimed),
                ],
            )
        if kind == "garbage":
            return self.answer(200, b"this is not a manifest", [("Content-Type", "text/plain")])
        if kind == "nosize" and is_blob and self.command == "HEAD":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return None
        return self.answer(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}', error)

    do_GET = do_HEAD = handle_any


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("READY", flush=True)
    server.serve_forever()
