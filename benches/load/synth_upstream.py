#!/usr/bin/env python3
"""Synthetic pull-only OCI upstream for the load benchmark (scenarios e and f).

Serves COUNT distinct, small OCI image manifests for the repository `synth/img`, by tag `t<N>` (N = 0..COUNT-1)
and by digest, with the headers a registry sends (Content-Type, Content-Length, Docker-Content-Digest). Nothing
else: it exists only so that ociregistry can be made to cache many manifests quickly without pushing them into a
real registry one by one. Binds 127.0.0.1 only. Threaded, HTTP/1.1 keep-alive.

    synth_upstream.py --port PORT --count COUNT
"""
import argparse
import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = "synth/img"
MT = "application/vnd.oci.image.manifest.v1+json"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()


def manifest(n: int) -> bytes:
    layer = "sha256:" + hashlib.sha256(b"synthetic-layer-%d" % n).hexdigest()
    doc = {
        "schemaVersion": 2,
        "mediaType": MT,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": CONFIG_DIGEST,
                   "size": len(CONFIG)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 1024}],
        "annotations": {"org.example.bench.n": str(n)},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    args = ap.parse_args()

    by_tag = {}
    by_digest = {}
    for n in range(args.count):
        body = manifest(n)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        by_tag["t%d" % n] = (body, digest)
        by_digest[digest] = (body, digest)
    prefix = "/v2/%s/manifests/" % REPO

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # no access log
            pass

        def _send(self, code, body, headers, head):
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _handle(self, head):
            path = self.path.split("?", 1)[0]
            if path in ("/v2/", "/v2"):
                return self._send(200, b"{}", {"Content-Type": "application/json"}, head)
            if path.startswith(prefix):
                ref = path[len(prefix):]
                hit = by_digest.get(ref) if ref.startswith("sha256:") else by_tag.get(ref)
                if hit is not None:
                    body, digest = hit
                    return self._send(200, body, {"Content-Type": MT, "Docker-Content-Digest": digest,
                                                  "ETag": '"%s"' % digest}, head)
                err = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": ref}]}
                return self._send(404, json.dumps(err).encode(), {"Content-Type": "application/json"}, head)
            err = {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known", "detail": path}]}
            return self._send(404, json.dumps(err).encode(), {"Content-Type": "application/json"}, head)

        def do_GET(self):
            self._handle(False)

        def do_HEAD(self):
            self._handle(True)

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("synth upstream: %d manifests on http://127.0.0.1:%d/v2/%s" % (args.count, args.port, REPO),
          file=sys.stderr, flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
