#!/usr/bin/env python3
"""Turns the raw measurements of run.sh into results.md, results.csv and runs.csv (medians over the runs)."""
import argparse
import csv
import math
import os
import statistics

SERVERS = ["ociregistry", "proxy", "nginx"]
# Scenarios whose columns are setups of ociregistry, not the three servers: their own table each (results.md) and
# their own CSV (results-scaleout.csv). (columns, ratio header or None)
GROUP_SETUPS = {
    "s": (["filesystem", "s3+local", "s3-only", "direct"], "vs filesystem", ["s3+local", "s3-only"]),
    "p": (["one", "replicas", "tiers"], None, []),
}
GROUP_TITLES = {
    "s": "Scenario s: S3 store against the filesystem store (ociregistry three ways; Garage, 3 nodes on loopback; "
         "direct: no cache, (a)/(c) straight from Garage, (b) straight from the upstream)",
    "p": "Scenario p: pull storm (one cache, two replicas sharing the Garage bucket, two nodes in front of one site)",
}


def fmt(v, unit=""):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    a = abs(v)
    if unit == "count" and v == int(v):
        return f"{int(v):,}"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def ratio(a, b):
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--rows", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--notes", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    rows = []
    with open(a.rows) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 5:
                rows.append(dict(key=parts[0], group=parts[1], label=parts[2], unit=parts[3], better=parts[4]))
    rows.sort(key=lambda r: r["group"])  # stable: a, b, c, d, e, f in declaration order
    setup_rows = [r for r in rows if r["group"] in GROUP_SETUPS]
    rows = [r for r in rows if r["group"] not in GROUP_SETUPS]
    raw = {}
    runs = []
    with open(a.raw) as f:
        for line in f:
            key, srv, run, val = line.rstrip("\n").split("\t")
            runs.append((key, srv, run, val))
            try:
                x = float(val)
            except ValueError:
                continue
            if not math.isnan(x):
                raw.setdefault((key, srv), []).append(x)
    machine = {}
    with open(a.machine) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                machine[k] = v
    notes = [l.rstrip("\n") for l in open(a.notes) if l.strip()]

    med = {}
    for (key, srv), xs in raw.items():
        med[(key, srv)] = statistics.median(xs)

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "group", "scenario", "unit", "better", "ociregistry", "distribution_proxy", "nginx",
                    "ratio_vs_nginx", "ratio_vs_proxy", "runs"])
        for r in rows:
            o, p, n = (med.get((r["key"], s)) for s in SERVERS)
            nruns = max((len(raw.get((r["key"], s), [])) for s in SERVERS), default=0)
            w.writerow([r["key"], r["group"], r["label"], r["unit"], r["better"],
                        "" if o is None else round(o, 4), "" if p is None else round(p, 4),
                        "" if n is None else round(n, 4),
                        "" if ratio(o, n) is None else round(ratio(o, n), 4),
                        "" if ratio(o, p) is None else round(ratio(o, p), 4), nruns])
    if setup_rows:
        with open(os.path.join(a.out, "results-scaleout.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["key", "group", "scenario", "unit", "better", "setup", "median", "runs"])
            for r in setup_rows:
                for srv in GROUP_SETUPS[r["group"]][0]:
                    xs = raw.get((r["key"], srv), [])
                    m = med.get((r["key"], srv))
                    w.writerow([r["key"], r["group"], r["label"], r["unit"], r["better"], srv,
                                "" if m is None else round(m, 4), len(xs)])
    with open(os.path.join(a.out, "runs.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "server", "run", "value"])
        w.writerows(runs)

    arrow = {"higher": "↑", "lower": "↓"}
    L = []
    L.append("# ociregistry load benchmark")
    L.append("")
    L.append(f"Run {machine.get('date', '?')}, {machine.get('elapsed', '?')}. All servers on 127.0.0.1; the load "
             "generators run on the same machine and share its CPUs with the server under test.")
    L.append("")
    L.append("| machine | |")
    L.append("| --- | --- |")
    for k, label in [("nproc", "nproc"), ("cpu", "CPU"), ("mem", "memory"), ("kernel", "kernel"),
                     ("load_start", "load average at start"), ("cpu_busy_before", "CPU use before start"), ("load_end", "load average at end"),
                     ("ociregistry", "ociregistry"), ("docker-registry", "docker-registry"), ("nginx", "nginx"),
                     ("wrk", "wrk"), ("ab", "ab"), ("skopeo", "skopeo"), ("curl", "curl"), ("openssl", "openssl"), ("garage", "garage"),
                     ("python", "python"),
                     ("params", "parameters")]:
        if k in machine:
            L.append(f"| {label} | {machine[k].replace('|', '/')} |")
    L.append("")
    L.append("How to read: each cell is the median over the runs (scenarios a, b, c: RUNS/COLD_RUNS runs; d, e: one "
             "run; f: STARTUP_RUNS restarts). ↑ = higher is better, ↓ = lower is better. The ratio columns are "
             "ociregistry ÷ nginx and ociregistry ÷ distribution proxy. ociregistry runs with `RUST_LOG=warn` "
             "(no per-request access log); the distribution proxy runs with its access log disabled and level "
             "warn; nginx has `access_log off`, `sendfile on`, 2 workers. GET load: wrk; HEAD load: ab -k -i "
             "(wrk 4.1 stalls on HEAD responses that carry a Content-Length). Throughput MiB/s = wrk's "
             "Transfer/sec (response bytes incl. headers, 2^20 B). Rows t: over TLS, ociregistry (rustls) against "
             "nginx with `ssl` (OpenSSL), wrk over https (no certificate check, HTTP/1.1); no proxy column.")
    L.append("")
    if rows:
        L.append("| scenario | ociregistry | distribution proxy | nginx | ratio vs nginx | ratio vs proxy |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        o, p, n = (med.get((r["key"], s)) for s in SERVERS)
        rn, rp = ratio(o, n), ratio(o, p)
        label = f"{r['label']} ({r['unit']}{' ' + arrow[r['better']] if r['better'] in arrow else ''})"
        u = r["unit"]
        L.append(f"| {label} | {fmt(o, u)} | {fmt(p, u)} | {fmt(n, u)} | "
                 f"{'–' if rn is None else fmt(rn) + '×'} | {'–' if rp is None else fmt(rp) + '×'} |")
    for g, (cols, rhead, rcols) in GROUP_SETUPS.items():
        grows = [r for r in setup_rows if r["group"] == g]
        if not grows:
            continue
        L.append("")
        L.append(f"### {GROUP_TITLES[g]}")
        L.append("")
        hdr = "| scenario | " + " | ".join(cols) + " |"
        sep = "| --- |" + " ---: |" * len(cols)
        if rhead:
            hdr += "".join(f" {c} {rhead} |" for c in rcols)
            sep += " ---: |" * len(rcols)
        L.append(hdr)
        L.append(sep)
        for r in grows:
            ms = [med.get((r["key"], c)) for c in cols]
            label = f"{r['label']} ({r['unit']}{' ' + arrow[r['better']] if r['better'] in arrow else ''})"
            cells = [fmt(m, r["unit"]) for m in ms]
            if rhead:
                for c in rcols:
                    q = ratio(med.get((r["key"], c)), ms[0])
                    cells.append("–" if q is None else fmt(q) + "×")
            L.append(f"| {label} | " + " | ".join(cells) + " |")
    if notes:
        L.append("")
        L.append("Notes:")
        L.append("")
        for n in notes:
            L.append(f"- {n}")
    L.append("")
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
