#!/usr/bin/env python3
"""results.csv -> results.png (matplotlib): scenario a req/s and p99, scenario b throughput, scenarios c/d times."""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
SERVERS = [("ociregistry", "ociregistry", "#1f77b4"), ("distribution_proxy", "distribution proxy", "#ff7f0e"),
           ("nginx", "nginx (c: upstream direct)", "#2ca02c")]


def val(r, s):
    try:
        return float(r[s])
    except (ValueError, KeyError):
        return 0.0


def bars(ax, sel, title, ylabel, short, log=True):
    if not sel:
        ax.set_visible(False)
        return
    n = len(sel)
    w = 0.27
    for i, (s, name, color) in enumerate(SERVERS):
        xs = [j + (i - 1) * w for j in range(n)]
        ax.bar(xs, [val(r, s) for r in sel], w, label=name, color=color)
    ax.set_xticks(range(n))
    ax.set_xticklabels([short(r) for r in sel], rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)


def short_a(r):
    k = r["key"].split("_")  # a_get_c16_rps
    return f"{k[1].upper()} c={k[2][1:]}"


def short_b(r):
    k = r["key"].split("_")  # b_64MiB_c16
    return f"{k[1]} c={k[2][1:]}"


fig, axs = plt.subplots(2, 2, figsize=(13, 9))
bars(axs[0][0], [r for r in rows if r["group"] == "a" and r["key"].endswith("_rps")],
     "a. warm manifest (GET by digest / HEAD by tag): req/s", "req/s (log)", short_a)
bars(axs[0][1], [r for r in rows if r["group"] == "a" and r["key"].endswith("_p99")],
     "a. warm manifest: p99 latency", "ms (log)", short_a)
bars(axs[1][0], [r for r in rows if r["group"] == "b" and not r["key"].endswith("_rps")],
     "b. warm blob GET throughput", "MiB/s (log)", short_b)
cd = [r for r in rows if r["key"] in ("c_wall", "d_wall")]
bars(axs[1][1], cd, "c. cold pull / d. concurrent cold readers: wall time", "s",
     lambda r: {"c_wall": "c. cold pull", "d_wall": "d. concurrent cold readers, 64 MiB"}[r["key"]], log=False)
handles, labels = axs[0][0].get_legend_handles_labels()
fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=9, bbox_to_anchor=(0.5, 0.955))
fig.suptitle("ociregistry load benchmark (medians; loopback; see results.md)")
fig.tight_layout(rect=(0, 0, 1, 0.93))
fig.savefig(os.path.join(out, "results.png"), dpi=100)
print("wrote", os.path.join(out, "results.png"))
