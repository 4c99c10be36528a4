#!/usr/bin/env python3
"""Mixed cached-content traffic for tests/e2e/resilience.sh (soak), with the server's RSS sampled.

--targets is a JSON array of {"kind": "manifest"|"blob", "repo", "ref" (tag or digest), "digest", "file"} where
"file" holds the expected bytes. --conns threads each keep one HTTP/1.1 keep-alive connection and loop for
--seconds over a weighted mix:
  manifest GET by tag / by digest    200, body hashes to the digest, Docker-Content-Digest, Content-Length
  manifest HEAD by tag / by digest   200, Docker-Content-Digest, Content-Length, no body
  blob GET                           200, the whole body equal to the file
  blob GET with Range                206, Content-Range, the bytes of that range
  blob HEAD                          200, Content-Length
through the three routes (in-path /v2/UPSTREAM/repo/..., ?ns=UPSTREAM, and the default registry). Every
response is checked (status, headers, length); bodies are compared with the expected bytes for one request in
--check-every (manifests, ranges: every one). Any other answer, a wrong byte or a connection error is an error.
A sampler reads VmRSS of --pid every second. Prints a JSON summary (also to --out).
"""
import argparse
import hashlib
import http.client
import json
import random
import statistics
import sys
import threading
import time

ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return -1
    return -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="host:port of the registry the content came from")
    ap.add_argument("--targets", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--check-every", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    targets = json.load(open(args.targets))
    manifests = [t for t in targets if t["kind"] == "manifest"]
    blobs = [t for t in targets if t["kind"] == "blob"]
    for t in targets:
        with open(t["file"], "rb") as f:
            t["bytes"] = f.read()
        t["size"] = len(t["bytes"])
        assert "sha256:" + hashlib.sha256(t["bytes"]).hexdigest() == t["digest"], t
    big = [b for b in blobs if b["size"] > 256 * 1024]

    def path_of(t, what):
        route = random.randrange(3)
        if route == 0:
            return f"/v2/{args.upstream}/{t['repo']}/{what}/{t['ref'] if what == 'manifests' else t['digest']}"
        tail = f"/v2/{t['repo']}/{what}/{t['ref'] if what == 'manifests' else t['digest']}"
        if route == 1:
            return tail + "?ns=" + args.upstream
        return tail  # default_registry is the upstream

    lock = threading.Lock()
    stats = {"requests": 0, "bytes": 0, "checked_bodies": 0, "errors": 0, "reconnects": 0}
    by_op = {}
    errors = []
    stop = threading.Event()
    start = time.monotonic()
    deadline = start + args.seconds

    def error(msg):
        with lock:
            stats["errors"] += 1
            if len(errors) < 20:
                errors.append(f"t={time.monotonic() - start:.1f}s {msg}")

    def worker(seed):
        rnd = random.Random(seed)
        conn = http.client.HTTPConnection(args.host, args.port, timeout=30)
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            n += 1
            r = rnd.random()
            check_body = (n % args.check_every) == 0
            try:
                if r < 0.30:
                    op = "manifest GET"
                    t = rnd.choice(manifests)
                    p = path_of(t, "manifests")
                    conn.request("GET", p, headers={"Accept": ACCEPT})
                    resp = conn.getresponse()
                    body = resp.read()
                    ok = (resp.status == 200 and len(body) == t["size"]
                          and resp.getheader("Docker-Content-Digest") == t["digest"]
                          and "sha256:" + hashlib.sha256(body).hexdigest() == t["digest"])
                    checked = True
                elif r < 0.50:
                    op = "manifest HEAD"
                    t = rnd.choice(manifests)
                    p = path_of(t, "manifests")
                    conn.request("HEAD", p, headers={"Accept": ACCEPT})
                    resp = conn.getresponse()
                    body = resp.read()
                    ok = (resp.status == 200 and body == b""
                          and resp.getheader("Content-Length") == str(t["size"])
                          and resp.getheader("Docker-Content-Digest") == t["digest"])
                    checked = False
                elif r < 0.70:
                    op = "blob GET"
                    t = rnd.choice(blobs)
                    p = path_of(t, "blobs")
                    conn.request("GET", p)
                    resp = conn.getresponse()
                    body = resp.read()
                    ok = resp.status == 200 and len(body) == t["size"]
                    if ok and check_body:
                        ok = body == t["bytes"]
                    checked = check_body
                elif r < 0.92:
                    op = "blob GET Range"
                    t = rnd.choice(big)
                    a = rnd.randrange(t["size"])
                    b = min(t["size"] - 1, a + rnd.randrange(1, 128 * 1024))
                    p = path_of(t, "blobs")
                    conn.request("GET", p, headers={"Range": f"bytes={a}-{b}"})
                    resp = conn.getresponse()
                    body = resp.read()
                    ok = (resp.status == 206 and resp.getheader("Content-Range") == f"bytes {a}-{b}/{t['size']}"
                          and body == t["bytes"][a:b + 1])
                    checked = True
                else:
                    op = "blob HEAD"
                    t = rnd.choice(blobs)
                    p = path_of(t, "blobs")
                    conn.request("HEAD", p)
                    resp = conn.getresponse()
                    body = resp.read()
                    ok = resp.status == 200 and resp.getheader("Content-Length") == str(t["size"])
                    checked = False
                with lock:
                    stats["requests"] += 1
                    stats["bytes"] += len(body)
                    stats["checked_bodies"] += 1 if checked else 0
                    by_op[op] = by_op.get(op, 0) + 1
                if not ok:
                    error(f"{op} {p}: status {resp.status}, {len(body)} bytes, "
                          f"Content-Range {resp.getheader('Content-Range')}, "
                          f"Docker-Content-Digest {resp.getheader('Docker-Content-Digest')}")
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection(args.host, args.port, timeout=30)
            except Exception as e:  # connection reset, timeout, bad status line...
                error(f"{type(e).__name__}: {e}")
                with lock:
                    stats["reconnects"] += 1
                conn.close()
                conn = http.client.HTTPConnection(args.host, args.port, timeout=30)
        conn.close()

    samples = []  # (t, rss KiB, requests so far)

    def sampler():
        while not stop.is_set():
            with lock:
                reqs = stats["requests"]
            samples.append((round(time.monotonic() - start, 2), rss_kib(args.pid), reqs))
            if time.monotonic() >= deadline:
                return
            stop.wait(1.0)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.conns)]
    st = threading.Thread(target=sampler, daemon=True)
    st.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join(args.seconds + 60)
    stop.set()
    st.join(5)
    elapsed = time.monotonic() - start
    samples.append((round(elapsed, 2), rss_kib(args.pid), stats["requests"]))

    rss = [s[1] for s in samples if s[1] > 0]
    warm = [s for s in samples if s[0] >= args.warmup and s[1] > 0]
    baseline = warm[0][1] if warm else -1
    warm_reqs = warm[0][2] if warm else 0
    warm_t = warm[0][0] if warm else 0
    summary = {
        "seconds": round(elapsed, 1),
        "connections": args.conns,
        "requests": stats["requests"],
        "requests_per_s": round(stats["requests"] / elapsed, 1),
        "requests_per_s_after_warmup": round((stats["requests"] - warm_reqs) / max(0.001, elapsed - warm_t), 1),
        "mib_per_s": round(stats["bytes"] / elapsed / 1048576, 1),
        "by_op": by_op,
        "checked_bodies": stats["checked_bodies"],
        "errors": stats["errors"],
        "first_errors": errors,
        "rss_kib_min": min(rss) if rss else -1,
        "rss_kib_median": int(statistics.median(rss)) if rss else -1,
        "rss_kib_max": max(rss) if rss else -1,
        "rss_kib_after_warmup": baseline,
        "rss_kib_end": rss[-1] if rss else -1,
        "rss_samples": [[s[0], s[1]] for s in samples],
    }
    with open(args.out, "w") as f:
        json.dump(summary, f)
    print(json.dumps({k: v for k, v in summary.items() if k != "rss_samples"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
