#!/usr/bin/env python3
"""The dashboards of observability/grafana/dashboards rendered from real data (run by observability/render/render.sh).

Grafana is not in Debian, so: the real Prometheus scrapes a real ociregistry under a scripted load, and this
script asks Prometheus's HTTP API (/api/v1/query_range) for every query of every panel and draws each dashboard
as a grid of small time-series plots with matplotlib.

Subcommands:
  upstream PORT SEED
      A scripted upstream on 127.0.0.1:PORT: tests/observability/upstream.py (good/<any>: one image, a slow
      256 KiB layer, a 2^60-byte blob; broken/<any>: 500) plus sized/app-N:vM (N 0..7, M 1..3), images with
      a layer of their own (0.5-2.5 MiB, sent in 0.6 s; the SEED makes two upstreams' blobs differ) and
      sized/big:v1 (one 8 MiB layer). Every
      manifest answer (good/ ones too) spends one request of a rate-limit window of 500 (ratelimit-remaining).
      GET /_outage?seconds=S makes every /v2/ request answer 503 for S seconds (an upstream outage);
      GET /_slow?seconds=S sends the sized/ layers in 3 s each for S seconds (a slow upstream: slow misses).
      Standard library only.
  traffic OCI NS_A NS_B DATA_DIR BIN SECONDS
      Drives SECONDS of traffic against the ociregistry at OCI (http://host:port) whose default registry is
      NS_A and which lists NS_B: cold and warm pulls in both namespaces, concurrent readers of cold blobs,
      errors (unknown tags and blobs, a failing upstream, a refused upstream, an upstream outage), an
      uncached blob, stale tags, a manual prune (BIN prune --data-dir DATA_DIR), slow downloads (a slow
      upstream, slow clients), a burst of concurrent blob reads; clients of two sites: 127.0.0.1 (site-a) and
      127.0.1.x (site-b, source addresses bound on loopback); timeline on stdout.
  plot PROM START END OUTDIR DASHBOARD.json...
      Queries every panel of each dashboard over [START, END] (Unix seconds) and writes
      OUTDIR/dashboard-<file stem>.png; prints the panels (and queries) that returned no data.
"""

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))

# What the Grafana variables stand for in the rendered queries.
RATE_INTERVAL = "30s"
VARIABLES = {
    "$__rate_interval": RATE_INTERVAL,
    "${__rate_interval}": RATE_INTERVAL,
    "$__interval": "2s",
    "${__interval}": "2s",
    "${job}": "ociregistry",
    "$job": "ociregistry",
    "${instance}": ".*",
    "$instance": ".*",
    "${namespace}": ".*",
    "$namespace": ".*",
}
STEP = 2  # seconds between the points of query_range


# ------------------------------------------------------------------------------------------------------------
# upstream
# ------------------------------------------------------------------------------------------------------------
def upstream(port, seed):
    sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "observability"))
    import upstream as base  # tests/observability/upstream.py
    from http.server import ThreadingHTTPServer

    rng = random.Random("ociregistry-render-" + seed)
    images = {}  # (repository, tag) -> manifest bytes
    for n in range(8):
        for m in range(1, 4):
            repository, tag = f"sized/app-{n}", f"v{m}"
            config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                                 "config": {"Labels": {"image": f"{seed}/{repository}:{tag}"}}}).encode()
            layer = rng.randbytes(rng.randrange(512 * 1024, 2560 * 1024))
            base.BLOBS[base.digest(config)] = config
            base.BLOBS[base.digest(layer)] = layer
            images[(repository, tag)] = json.dumps({
                "schemaVersion": 2,
                "mediaType": base.MANIFEST_TYPE,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": base.digest(config),
                           "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": base.digest(layer),
                            "size": len(layer)}],
            }, sort_keys=True).encode()
    # sized/big:v1, one 8 MiB layer: what a slow client reads (a download long enough to outlast the socket
    # buffers, so that the server sees it slow)
    big = rng.randbytes(8 * 1024 * 1024)
    big_config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                             "config": {"Labels": {"image": f"{seed}/sized/big:v1"}}}).encode()
    base.BLOBS[base.digest(big)] = big
    base.BLOBS[base.digest(big_config)] = big_config
    images[("sized/big", "v1")] = json.dumps({
        "schemaVersion": 2,
        "mediaType": base.MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": base.digest(big_config),
                   "size": len(big_config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": base.digest(big),
                    "size": len(big)}],
    }, sort_keys=True).encode()
    by_digest = {base.digest(body): body for body in images.values()}
    state = {"outage_until": 0.0, "slow_until": 0.0, "manifests": 0}
    lock = threading.Lock()
    window = 500

    class Handler(base.Handler):
        def answer(self, status, body=b"", headers=None, send_body=True):
            if headers and "ratelimit-remaining" in headers:  # every manifest answer spends one request
                with lock:
                    state["manifests"] += 1
                    remaining = window - state["manifests"] % window
                headers = dict(headers, **{"ratelimit-limit": f"{window};w=21600",
                                           "ratelimit-remaining": f"{remaining};w=21600"})
            return super().answer(status, body, headers, send_body)

        def route(self, send_body):
            path = self.path.split("?", 1)[0]
            if path == "/_outage":
                seconds = float(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["seconds"][0])
                state["outage_until"] = time.monotonic() + seconds
                return self.answer(200, b"outage\n", {"Content-Type": "text/plain"}, send_body)
            if path == "/_slow":
                seconds = float(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["seconds"][0])
                state["slow_until"] = time.monotonic() + seconds
                return self.answer(200, b"slow\n", {"Content-Type": "text/plain"}, send_body)
            if path.startswith("/v2/") and time.monotonic() < state["outage_until"]:
                return self.answer(503, b"down for maintenance", {"Content-Type": "text/plain"}, send_body)
            rest = path[len("/v2/"):] if path.startswith("/v2/") else ""
            if not rest.startswith("sized/"):
                return super().route(send_body)
            if "/manifests/" in rest:
                repository, ref = rest.rsplit("/manifests/", 1)
                body = images.get((repository, ref)) or by_digest.get(ref)
                if body is None:
                    return self.not_found(send_body)
                return self.answer(200, body, {
                    "Content-Type": base.MANIFEST_TYPE,
                    "Docker-Content-Digest": base.digest(body),
                    "ratelimit-remaining": "",
                }, send_body)
            if "/blobs/" in rest:
                ref = rest.rsplit("/blobs/", 1)[1]
                blob = base.BLOBS.get(ref)
                if blob is None:
                    return self.not_found(send_body)
                headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": ref}
                if len(blob) < 64 * 1024 or not send_body:
                    return self.answer(200, blob, headers, send_body)
                self.answer(200, b"", dict(headers, **{"Content-Length": str(len(blob))}), False)
                chunks = 12
                step = -(-len(blob) // chunks)
                delay = 0.25 if time.monotonic() < state["slow_until"] else 0.05  # 3 s or 0.6 s a layer
                for i in range(chunks):
                    time.sleep(delay)
                    self.wfile.write(blob[i * step:(i + 1) * step])
                    self.wfile.flush()
                return None
            return self.not_found(send_body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("READY", flush=True)
    server.serve_forever()


# ------------------------------------------------------------------------------------------------------------
# traffic
# ------------------------------------------------------------------------------------------------------------
class SmallWindowConnection(http.client.HTTPConnection):
    """A connection with a small receive buffer, bound to a source address: a slow client whose slowness the
    server sees (with the default loopback buffers, megabytes would sit in the socket unread)."""

    def connect(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        if self.source_address:
            sock.bind(self.source_address)
        sock.settimeout(self.timeout)
        sock.connect((self.host, self.port))
        self.sock = sock


class Client:
    """Requests to the ociregistry at OCI from the source address SOURCE (a loopback address: 127.0.0.1 is
    site-a, 127.0.1.x site-b of metrics_client_networks), counted by status."""

    def __init__(self, oci, source=None, counts=None, lock=None):
        u = urllib.parse.urlsplit(oci)
        self.host, self.port = u.hostname, u.port
        self.source = source
        self.counts = {} if counts is None else counts
        self.lock = lock or threading.Lock()

    def at(self, source):
        """The same client (and counts) from another source address."""
        return Client(f"http://{self.host}:{self.port}", source, self.counts, self.lock)

    def req(self, path, method="GET", read=True, limit=None, timeout=30, rate=None):
        """One request; RATE (bytes/s) reads the body that slowly (a slow client)."""
        status, body = 0, b""
        kind = SmallWindowConnection if rate else http.client.HTTPConnection
        conn = kind(self.host, self.port, timeout=timeout, source_address=(self.source, 0) if self.source else None)
        try:
            conn.request(method, path, headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"})
            r = conn.getresponse()
            status = r.status
            if read and method == "GET":
                if rate:
                    chunks, got, started = [], 0, time.monotonic()
                    while limit is None or got < limit:
                        chunk = r.read(16 * 1024)
                        if not chunk:
                            break
                        chunks.append(chunk)
                        got += len(chunk)
                        delay = started + got / rate - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    body = b"".join(chunks)
                else:
                    body = r.read(limit) if limit else r.read()
        except Exception:  # timeouts, resets: counted as 0
            status = 0
        finally:
            conn.close()
        with self.lock:
            self.counts[status] = self.counts.get(status, 0) + 1
        return status, body

    def pull(self, image, tag, rate=None):
        """A client's pull: GET the manifest, then its config and layers. Returns the layer digests."""
        status, body = self.req(f"/v2/{image}/manifests/{tag}")
        if status != 200:
            return []
        m = json.loads(body)
        digests = [m["config"]["digest"]] + [layer["digest"] for layer in m["layers"]]
        for d in digests:
            self.req(f"/v2/{image}/blobs/{d}", rate=rate)
        return digests


def traffic(oci, ns_a, ns_b, data_dir, binary, seconds):
    c = Client(oci)  # site-a: 127.0.0.1
    site_b = [c.at(f"127.0.1.{n}") for n in (5, 6, 7)]  # site-b: 127.0.1.0/24
    t0 = time.monotonic()
    stop = threading.Event()
    cached = []  # (image, tag) pulled once: what the warm readers pull again
    cached_lock = threading.Lock()

    def say(msg):
        print(f"traffic: t={time.monotonic() - t0:5.1f}s {msg}", flush=True)

    def at(t):
        delay = t0 + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def cold(image, tag):
        c.pull(image, tag)
        with cached_lock:
            cached.append((image, tag))

    def warm_reader(seed, period, client):
        rng = random.Random(seed)
        while not stop.is_set():
            with cached_lock:
                # a hot set: the latest 6 images of a namespace (the default one twice as often)
                in_b = [im for im in cached if im[0].startswith(ns_b)]
                in_a = [im for im in cached if not im[0].startswith(ns_b)]
                spaces = [sp for sp in (in_a, in_a, in_b) if sp]
                choice = rng.choice(rng.choice(spaces)[-6:]) if spaces else None
            if choice:
                image, tag = choice
                if rng.random() < 0.3:
                    client.req(f"/v2/{image}/manifests/{tag}", method="HEAD")
                else:
                    client.pull(image, tag)
            stop.wait(period * rng.uniform(0.5, 1.5))

    def concurrent_cold_blob(image, tag, readers, client=c):
        """One manifest, then `readers` clients at once on its layer, which nobody has pulled yet."""
        status, body = client.req(f"/v2/{image}/manifests/{tag}")
        if status != 200:
            say(f"{image}:{tag}: manifest {status}")
            return
        layer = json.loads(body)["layers"][0]["digest"]
        threads = [threading.Thread(target=client.req, args=(f"/v2/{image}/blobs/{layer}",)) for _ in range(readers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with cached_lock:
            cached.append((image, tag))

    def errors(rounds):
        for i in range(rounds):
            c.req(f"/v2/good/app/manifests/no-such-tag-{i}")  # 404 MANIFEST_UNKNOWN
            if i % 2 == 0:
                c.req("/v2/good/app/blobs/sha256:" + "0" * 64)  # 404 BLOB_UNKNOWN
            if i % 3 == 0:
                c.req("/v2/good/app/blobs/sha256:not-a-digest")  # 400 DIGEST_INVALID
            if i % 3 != 2:
                c.req("/v2/broken/app/manifests/v1")  # the upstream answers 500: 502 UNAVAILABLE
            if i % 4 == 0:
                c.req("/v2/10.1.2.3/app/manifests/v1")  # a refused upstream: 403 DENIED
            time.sleep(0.4)

    def burst(clients):
        """`clients` clients at once, each pulling one of the latest cached images (blob reads: blocking jobs)."""
        with cached_lock:
            hot = cached[-8:]
        threads = [threading.Thread(target=c.pull, args=hot[i % len(hot)]) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def slow_client(image, tag, rate, times):
        """`times` rounds of: a pull at site-a (the image is cached again if it was evicted), and 2 s later (the
        fill committed: a hit) a pull by a site-b client on a slow link, reading at `rate` bytes/s."""
        for _ in range(times):
            c.pull(image, tag)
            time.sleep(2)
            site_b[2].pull(image, tag, rate=rate)

    # warm readers: two at site-a, two at site-b
    readers = [threading.Thread(target=warm_reader, args=(i, p, cl), daemon=True)
               for i, (p, cl) in enumerate(((0.3, c), (0.5, c), (0.8, site_b[0]), (1.2, site_b[1])))]
    for t in readers:
        t.start()
    background = []

    a, b = "sized", f"{ns_b}/sized"  # NS_A is the default registry; NS_B is named in the path
    say(f"warm readers started; cold pulls in {ns_a}")
    for n in range(4):
        cold(f"{a}/app-{n}", "v1")
        time.sleep(2)
    cold("good/app", "v1")
    at(15)
    say("5 concurrent readers of a cold blob (one fill, joins)")
    concurrent_cold_blob(f"{a}/app-4", "v1", 5)
    at(22)
    say("errors: unknown tag and blob, bad digest, failing upstream (500), refused upstream")
    errors(12)
    at(35)
    say(f"cold pulls in {ns_b}, from site-b (127.0.1.7): its local misses")
    for n in range(6):
        site_b[2].pull(f"{b}/app-{n}", "v1")
        with cached_lock:
            cached.append((f"{b}/app-{n}", "v1"))
        time.sleep(1.5)
    at(45)
    say("a burst: 24 clients at once on cached images (blob reads queue for the 2 blocking threads)")
    burst(24)
    at(50)
    # A counter's series is born at its first count, and increase() cannot see that first step: each event
    # that should show on a panel built on increase() (uncached blobs, prunes) happens twice, a while apart.
    say("an uncached blob (announces 2^60 bytes; the client stops after 4 MiB)")
    huge = "/v2/good/app/blobs/sha256:" + __import__("hashlib").sha256(b"a blob no disk can hold").hexdigest()
    c.req(huge, limit=4 * 1024 * 1024, timeout=5)
    at(54)
    say("the uncached blob again")
    c.req(huge, limit=4 * 1024 * 1024, timeout=5)
    say(f"in the background, twice: {a}/big:v1 (an 8 MiB layer) pulled, then read by a slow client at site-b at "
        "256 KiB/s (slow downloads, cache hits; the first makes the series appear, which rate() does not see)")
    # not among the warm readers' images (not in `cached`): only these pulls read it
    background.append(threading.Thread(target=slow_client, args=(f"{a}/big", "v1", 256 * 1024, 2), daemon=True))
    background[-1].start()
    at(60)
    say(f"cold pulls of v2 and v3 in {ns_a} (past max_cache_bytes: eviction)")
    for n in range(8):
        cold(f"{a}/app-{n}", "v2")
        time.sleep(0.8)
    for n in range(4):
        cold(f"{a}/app-{n}", "v3")
        time.sleep(0.8)
    at(80)
    pattern = f"{ns_a}/sized/app-1:*"
    say(f"manual prune: ociregistry prune --pattern '{pattern}'")
    p = subprocess.run([binary, "prune", "--data-dir", data_dir, "--pattern", pattern],
                       capture_output=True, text=True, timeout=60)
    for line in (p.stdout + p.stderr).strip().splitlines()[-6:]:
        print("    " + line, flush=True)
    at(85)
    say("cold again after the prune: 6 concurrent readers of the pruned layer")
    concurrent_cold_blob(f"{a}/app-1", "v1", 6)
    at(92)
    say(f"upstream {ns_b} fails for 25 s (503): stale tags served on upstream errors")
    urllib.request.urlopen(f"http://{ns_b}/_outage?seconds=25", timeout=5).read()
    c.req(f"/v2/{b}/app-6/manifests/v1")  # cold, upstream down: 502
    at(100)
    errors(6)
    c.req(f"/v2/{b}/app-7/manifests/v1")  # again: 502
    at(106)
    pattern = f"{ns_a}/sized/app-3:v3"  # among the warm readers' images: not evicted by now
    say(f"manual prune: ociregistry prune --pattern '{pattern}'")
    p = subprocess.run([binary, "prune", "--data-dir", data_dir, "--pattern", pattern],
                       capture_output=True, text=True, timeout=60)
    for line in (p.stdout + p.stderr).strip().splitlines()[-3:]:
        print("    " + line, flush=True)
    at(112)
    say("another burst of 24 clients on cached images")
    burst(24)
    at(120)
    say(f"{ns_b} back but slow (3 s a layer, for 20 s): cold pulls of v2 from site-b, 4 concurrent readers of "
        "one cold blob (slow downloads, cache misses)")
    urllib.request.urlopen(f"http://{ns_b}/_slow?seconds=20", timeout=5).read()
    concurrent_cold_blob(f"{b}/app-6", "v2", 4, client=site_b[2])
    for n in range(4):
        site_b[2].pull(f"{b}/app-{n}", "v2")
        with cached_lock:
            cached.append((f"{b}/app-{n}", "v2"))
        time.sleep(1)
    at(seconds)
    stop.set()
    for t in readers + background:
        t.join()
    say("done; answers by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(c.counts.items())))


# ------------------------------------------------------------------------------------------------------------
# plot
# ------------------------------------------------------------------------------------------------------------
def substitute(expr):
    for k in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(k, VARIABLES[k])
    return expr


def legend(fmt, metric):
    if not fmt:
        return ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) or "value"
    out = fmt
    while "{{" in out:
        i = out.index("{{")
        j = out.index("}}", i)
        out = out[:i] + metric.get(out[i + 2:j].strip(), "") + out[j + 2:]
    return out.strip() or "value"


def query_range(prom, expr, start, end):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": STEP})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{q}", timeout=30) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise RuntimeError(f"{expr}: {answer}")
    return answer["data"]["result"]


def unit_formatter(unit):
    from matplotlib.ticker import FuncFormatter

    def human(v, base, units):
        for u in units:
            if abs(v) < base or u == units[-1]:
                return f"{v:.3g} {u}".strip()
            v /= base
        return f"{v:.3g}"

    if unit == "bytes":
        return FuncFormatter(lambda v, _: human(v, 1024, ["B", "KiB", "MiB", "GiB", "TiB"]))
    if unit == "Bps":
        return FuncFormatter(lambda v, _: human(v, 1024, ["B/s", "KiB/s", "MiB/s", "GiB/s"]))
    if unit == "percentunit":
        return FuncFormatter(lambda v, _: f"{v * 100:.3g}%")
    if unit == "s":
        return FuncFormatter(lambda v, _: f"{v * 1000:.3g} ms" if abs(v) < 1 and v != 0 else f"{v:.3g} s")
    if unit in ("reqps", "ops"):
        return FuncFormatter(lambda v, _: f"{v:.3g}/s")
    return FuncFormatter(lambda v, _: f"{v:.4g}")


def plot(prom, start, end, outdir, dashboards):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.dates as mdates
    from datetime import datetime, timezone

    start, end = float(start), float(end)
    empty = []
    for path in dashboards:
        d = json.load(open(path))
        panels = [p for p in d["panels"] if p["type"] != "row"]
        cols = 4
        rows = -(-len(panels) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 4.2, rows * 2.6), squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.axis("off")
        for ax, p in zip(axes.flat, panels):
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
            title = p["title"] + ("  [stat]" if p["type"] == "stat" else "")
            ax.set_title(title, fontsize=9, loc="left")
            series = 0
            last = None
            missing = []
            custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
            stacked = custom.get("stacking", {}).get("mode", "none") != "none"
            bars = custom.get("drawStyle") == "bars"
            fill = custom.get("fillOpacity", 0) / 100
            overrides = p.get("fieldConfig", {}).get("overrides", [])
            drawn = []  # (label, {ts: value})
            for t in p.get("targets", []):
                expr = substitute(t["expr"])
                result = query_range(prom, expr, start, end)
                if not result:
                    empty.append((d["title"], p["title"], expr))
                    missing.append(t.get("legendFormat") or t.get("refId", "?"))
                for s in result:
                    drawn.append((legend(t.get("legendFormat", ""), s["metric"]),
                                  {float(ts): float(v) for ts, v in s["values"]}))
            grid = sorted({ts for _, values in drawn for ts in values})
            base = [0.0] * len(grid)
            right = None  # the right axis, when an override puts a series there
            for i, (label, values) in enumerate(drawn):
                style = {"linewidth": 1.1, "color": f"C{i % 10}"}
                target_ax, series_fill = ax, fill
                for o in overrides:  # the overrides the dashboards use: a regexp on the name, dash, colour, axis
                    m = o.get("matcher", {})
                    if m.get("id") == "byRegexp" and __import__("re").fullmatch(m.get("options", ""), label):
                        for prop in o.get("properties", []):
                            if prop["id"] == "custom.lineStyle":
                                style["linestyle"] = ":" if prop["value"].get("fill") == "dot" else "--"
                            if prop["id"] == "color" and prop["value"].get("fixedColor"):
                                style["color"] = prop["value"]["fixedColor"]
                            if prop["id"] == "custom.fillOpacity":
                                series_fill = prop["value"] / 100
                            if prop["id"] == "custom.axisPlacement" and prop["value"] == "right":
                                if right is None:
                                    right = ax.twinx()
                                    right.yaxis.set_major_formatter(unit_formatter(unit))
                                    right.tick_params(labelsize=7)
                                target_ax = right
                if stacked:
                    ys = [values.get(ts, 0.0) + b for ts, b in zip(grid, base)]
                    xs = [datetime.fromtimestamp(ts, timezone.utc) for ts in grid]
                    ax.fill_between(xs, base, ys, color=style["color"], alpha=max(fill, 0.1), linewidth=0)
                    ax.plot(xs, ys, label=label, **style)
                    base = ys
                    last = (last or 0) + values.get(grid[-1], 0.0) if grid else last
                    series += 1
                    continue
                ts_sorted = sorted(values)
                xs = [datetime.fromtimestamp(ts, timezone.utc) for ts in ts_sorted]
                ys = [values[ts] for ts in ts_sorted]
                if target_ax is not ax:
                    label += " (right axis)"
                if bars:
                    target_ax.bar(xs, ys, width=STEP / 86400, color=style["color"], alpha=max(series_fill, 0.3),
                                  label=label)
                else:
                    target_ax.plot(xs, ys, label=label, **style)
                    if series_fill:
                        target_ax.fill_between(xs, 0, ys, color=style["color"], alpha=series_fill, linewidth=0)
                series += 1
                last = ys[-1] if ys else last
            if p.get("fieldConfig", {}).get("defaults", {}).get("min") == 0 and series:
                ax.set_ylim(bottom=0)
                if right is not None:
                    right.set_ylim(bottom=0)
            ax.set_xlim(datetime.fromtimestamp(start, timezone.utc), datetime.fromtimestamp(end, timezone.utc))
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone.utc))
            ax.xaxis.set_major_locator(mdates.MinuteLocator(tz=timezone.utc))
            ax.yaxis.set_major_formatter(unit_formatter(unit))
            ax.tick_params(labelsize=7)
            ax.grid(True, linewidth=0.3, alpha=0.6)
            if series == 0:
                ax.set_yticks([])
                ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", fontsize=14,
                        color="crimson", fontweight="bold")
            else:
                if p["type"] == "stat" and last is not None:
                    colour = "black"
                    for step in p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", []):
                        if step["value"] is None or last >= step["value"]:
                            colour = {"green": "green", "orange": "darkorange", "red": "crimson"}.get(step["color"],
                                                                                                 step["color"])
                    ax.text(1.0, 1.02, "now: " + unit_formatter(unit)(last, None), transform=ax.transAxes,
                            ha="right", va="bottom", fontsize=10, fontweight="bold", color=colour)
                handles, labels = ax.get_legend_handles_labels()
                if right is not None:
                    more = right.get_legend_handles_labels()
                    handles, labels = handles + more[0], labels + more[1]
                ax.legend(handles, labels, fontsize=6, loc="upper left", framealpha=0.7, ncol=2 if series > 4 else 1)
                if all(v == 0 for _, values in drawn for v in values.values()):
                    ax.text(0.5, 0.5, "0 throughout", transform=ax.transAxes, ha="center", va="center",
                            fontsize=11, color="dimgray")
                if missing:
                    ax.text(0.98, 0.03, "no data: " + "; ".join(missing), transform=ax.transAxes, ha="right",
                            va="bottom", fontsize=7, color="crimson", fontweight="bold")
        stamp = datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m-%d %H:%M")
        fig.suptitle(f"{d['title']}  (rendered from Prometheus, {stamp}-"
                     f"{datetime.fromtimestamp(end, timezone.utc).strftime('%H:%M')} UTC, "
                     f"$__rate_interval = {RATE_INTERVAL}, step {STEP}s)", fontsize=12)
        fig.tight_layout(rect=(0, 0, 1, 0.98))
        stem = os.path.splitext(os.path.basename(path))[0]
        out = os.path.join(outdir, f"dashboard-{stem}.png")
        fig.savefig(out, dpi=72)
        plt.close(fig)
        from PIL import Image  # matplotlib depends on pillow: a palette image is a third of the size
        Image.open(out).convert("RGB").quantize(colors=128).save(out, optimize=True)
        print(f"plot: {out}: {len(panels)} panels, {os.path.getsize(out) // 1024} KiB")
    if empty:
        print(f"plot: {len(empty)} queries returned no data:")
        for dash, title, expr in empty:
            print(f"  NO DATA  {dash} / {title}: {expr}")
    else:
        print("plot: every query of every panel returned data")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "upstream":
        upstream(int(args[0]), args[1])
    elif cmd == "traffic":
        traffic(args[0], args[1], args[2], args[3], args[4], float(args[5]))
    elif cmd == "plot":
        plot(args[0], args[1], args[2], args[3], args[4:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
