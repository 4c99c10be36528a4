#!/usr/bin/env python3
"""Pull storm load client (scenario p of run.sh): N concurrent clients speak the pull protocol.

Each client pulls every image of --repos in turn (client i starts at image i mod len(repos), so every image is
contended from the start): GET the manifest by tag, then GET the config and every layer it lists, one after
the other over one keep-alive connection (http.client), as a single-threaded puller does. Client i talks to
--bases[i mod len(bases)] (clients split between replicas or node caches).

Checks: every answer is 200, every blob body has the size the manifest gives; client 0 also checks the sha256
of every blob against its digest (one client, so that hashing does not dominate the CPU the servers share).

Prints one JSON object: pull_times_s (one per client and image: manifest + config + layers), p50_s, p99_s,
wall_s, errors (list of strings, at most 20), bytes (body bytes received).
"""
import argparse
import hashlib
import http.client
import json
import math
import threading
import time
import urllib.parse

ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


def pct(xs, q):
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))  # nearest rank
    return s[k]


class Client:
    def __init__(self, base, timeout, verify):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port or 80
        self.timeout = timeout
        self.verify = verify
        self.conn = None
        self.bytes = 0

    def _conn(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def get(self, path, headers=None, digest=None, size=None):
        for attempt in (1, 2):  # one retry on a dropped keep-alive connection
            c = self._conn()
            try:
                c.request("GET", path, headers=headers or {})
                r = c.getresponse()
                h = hashlib.sha256() if (digest and self.verify) else None
                n = 0
                body = bytearray() if size is None else None
                while True:
                    chunk = r.read(1 << 20)
                    if not chunk:
                        break
                    n += len(chunk)
                    if h:
                        h.update(chunk)
                    if body is not None:
                        body += chunk
                self.bytes += n
                if r.status != 200:
                    raise RuntimeError(f"GET {path}: HTTP {r.status}")
                if size is not None and n != size:
                    raise RuntimeError(f"GET {path}: {n} bytes, expected {size}")
                if h and "sha256:" + h.hexdigest() != digest:
                    raise RuntimeError(f"GET {path}: sha256 mismatch")
                return bytes(body) if body is not None else None
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as e:
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise RuntimeError(f"GET {path}: {e!r}")


def pull(cl, repo, tag):
    m = json.loads(cl.get(f"/v2/{repo}/manifests/{tag}", {"Accept": ACCEPT}))
    blobs = [m["config"]] + m["layers"]
    for b in blobs:
        cl.get(f"/v2/{repo}/blobs/{b['digest']}", digest=b["digest"], size=b["size"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bases", required=True, help="comma-separated base URLs; client i uses bases[i % n]")
    ap.add_argument("--repos", required=True, help="comma-separated repositories")
    ap.add_argument("--tag", default="v1")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=120.0, help="socket timeout per request (s)")
    a = ap.parse_args()
    bases = a.bases.split(",")
    repos = a.repos.split(",")
    times, errors, lock = [], [], threading.Lock()
    total = [0]
    start = threading.Barrier(a.clients + 1)

    def run(i):
        cl = Client(bases[i % len(bases)], a.timeout, verify=(i == 0))
        start.wait()
        for k in range(len(repos)):
            repo = repos[(i + k) % len(repos)]
            t0 = time.monotonic()
            try:
                pull(cl, repo, a.tag)
                dt = time.monotonic() - t0
                with lock:
                    times.append(dt)
            except Exception as e:  # noqa: BLE001 (reported, counted)
                with lock:
                    errors.append(f"client {i} {repo}: {e}")
                if cl.conn:
                    cl.conn.close()
                    cl.conn = None
        with lock:
            total[0] += cl.bytes

    ths = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(a.clients)]
    for t in ths:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for t in ths:
        t.join()
    wall = time.monotonic() - t0
    print(json.dumps({"pull_times_s": times, "p50_s": pct(times, 50), "p99_s": pct(times, 99), "wall_s": wall,
                      "pulls": len(times), "errors_total": len(errors), "errors": errors[:20], "bytes": total[0]}))


if __name__ == "__main__":
    main()
