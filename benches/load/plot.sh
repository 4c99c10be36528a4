#!/usr/bin/env bash
# plot.sh OUT_DIR: results.csv -> results.png. matplotlib from PyPI in a venv under OUT_DIR/venv; if that cannot be
# set up, gnuplot (Debian) draws the throughput rows.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$1"
VENV="$OUT/venv"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  rm -rf "$VENV"
  if python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check matplotlib; then
    :
  else
    rm -rf "$VENV"
  fi
fi
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" "$HERE/plot.py" "$OUT"; then
  exit 0
fi
echo "matplotlib unavailable; falling back to gnuplot" >&2
if ! command -v gnuplot >/dev/null 2>&1; then
  [[ $(id -u) -eq 0 ]] || { echo "gnuplot missing and not root" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >&2
fi
python3 - "$OUT" <<'PY'
import csv, os, sys
out = sys.argv[1]
with open(os.path.join(out, "plot.dat"), "w") as f:
    for r in csv.DictReader(open(os.path.join(out, "results.csv"))):
        if r["unit"] in ("req/s", "MiB/s") and r["group"] in ("a", "b"):
            f.write('"%s" %s %s %s\n' % (r["key"], r["ociregistry"] or 0, r["distribution_proxy"] or 0, r["nginx"] or 0))
PY
gnuplot <<GP
set terminal pngcairo size 1400,700
set output "$OUT/results.png"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8
set logscale y
set xtics rotate by -45 font ",8"
set title "ociregistry load benchmark: req/s (a) and MiB/s (b), medians"
plot "$OUT/plot.dat" using 2:xtic(1) title "ociregistry", "" using 3 title "distribution proxy", "" using 4 title "nginx"
GP
rm -f "$OUT/plot.dat"
