#!/usr/bin/env python3
"""A scripted upstream registry for tests/observability/check.sh: what a pull sequence needs so that every metric
the dashboards and alert rules use shows up in the scrape.

Usage: upstream.py PORT   (listens on 127.0.0.1:PORT; prints READY once listening; Python standard library only)

Repositories (the first path component picks the behaviour):
  good/<any>   one image, tag `v1` -> manifest(repository) (config CONFIG, one layer LAYER; an annotation names
               the repository, so every repository's image has a digest of its own and shares the blobs).
               Every manifest answer carries Docker Hub's rate-limit headers, nearly spent
               (ratelimit-limit: 100;w=21600, ratelimit-remaining: 7;w=21600).
               LAYER (256 KiB) is sent in 16 chunks 0.1 s apart, so concurrent pulls of it join one fill.
               BIG (1.5 MiB) is a blob of no manifest, sent in 24 chunks 0.1 s apart (0.6 MiB/s: a slow upstream,
               so the server's download of it is a slow download, cache miss).
               HUGE_DIGEST is a blob that announces 2^60 bytes (more than any disk has free): the server streams
               it uncached (a full disk); its body is zeros until the client goes away (at most 20 s).
  broken/<any> 500 for everything (upstream errors, reason 5xx)
  anything else: 404. GET /v2/ is 200.
Referrers of any subject are 404 (a registry without the referrers API).
"""

import hashlib
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = bytes(range(256)) * 1024  # 256 KiB
LAYER_CHUNKS = 16
LAYER_CHUNK_DELAY = 0.1
HUGE_SIZE = 1 << 60
HUGE_DIGEST = "sha256:" + hashlib.sha256(b"a blob no disk can hold").hexdigest()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


BIG = bytes(range(255, -1, -1)) * 6 * 1024  # 1.5 MiB, in no manifest: fetched by digest
BIG_CHUNKS = 24
BLOBS = {digest(CONFIG): CONFIG, digest(LAYER): LAYER, digest(BIG): BIG}
# blobs sent slowly: (chunks, seconds between them)
SLOW = {digest(LAYER): (LAYER_CHUNKS, LAYER_CHUNK_DELAY), digest(BIG): (BIG_CHUNKS, 0.1)}


def manifest(repository: str) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(CONFIG),
                "size": len(CONFIG),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(LAYER),
                    "size": len(LAYER),
                }
            ],
            "annotations": {"org.opencontainers.image.ref.name": repository},
        },
        sort_keys=True,
    ).encode()


MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one line per request on stderr, like the other scripted upstreams
        sys.stderr.write("%s %s\n" % (self.command, self.path))

    def answer(self, status, body=b"", headers=None, send_body=True):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def not_found(self, send_body):
        body = json.dumps({"errors": [{"code": "NAME_UNKNOWN", "message": "not here"}]}).encode()
        self.answer(404, body, {"Content-Type": "application/json"}, send_body)

    def route(self, send_body):
        path = self.path.split("?", 1)[0]
        if path in ("/v2", "/v2/"):
            return self.answer(200, b"{}", {"Content-Type": "application/json"}, send_body)
        if not path.startswith("/v2/"):
            return self.not_found(send_body)
        rest = path[len("/v2/"):]
        kind = rest.split("/", 1)[0]
        if kind == "broken":
            return self.answer(500, b"upstream on fire", {"Content-Type": "text/plain"}, send_body)
        if kind != "good":
            return self.not_found(send_body)
        if "/manifests/" in rest:
            repository, ref = rest.rsplit("/manifests/", 1)
            body = manifest(repository)
            if ref not in ("v1", digest(body)):
                return self.not_found(send_body)
            return self.answer(
                200,
                body,
                {
                    "Content-Type": MANIFEST_TYPE,
                    "Docker-Content-Digest": digest(body),
                    "ratelimit-limit": "100;w=21600",
                    "ratelimit-remaining": "7;w=21600",
                },
                send_body,
            )
        if "/blobs/" in rest:
            ref = rest.rsplit("/blobs/", 1)[1]
            if ref == HUGE_DIGEST:
                return self.huge(send_body)
            blob = BLOBS.get(ref)
            if blob is None:
                return self.not_found(send_body)
            headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": ref}
            if ref not in SLOW or not send_body:
                return self.answer(200, blob, headers, send_body)
            self.answer(200, b"", dict(headers, **{"Content-Length": str(len(blob))}), False)
            chunks, delay = SLOW[ref]
            step = len(blob) // chunks
            for i in range(chunks):
                time.sleep(delay)
                self.wfile.write(blob[i * step:(i + 1) * step])
                self.wfile.flush()
            return None
        return self.not_found(send_body)

    def huge(self, send_body):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Docker-Content-Digest", HUGE_DIGEST)
        self.send_header("Content-Length", str(HUGE_SIZE))
        self.end_headers()
        if not send_body:
            return
        chunk = bytes(64 * 1024)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.wfile.write(chunk)
            self.wfile.flush()
            time.sleep(0.01)
        self.close_connection = True

    def do_GET(self):
        try:
            self.route(True)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_HEAD(self):
        try:
            self.route(False)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def main():
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
