#!/usr/bin/env python3
"""Checks of tests/observability/check.sh (Python standard library only).

  metrics_check.py names SCRAPE FILE...
      Every metric name that FILE... use (Grafana dashboards: the panels' and variables' expressions; anything
      else, e.g. alert rules: the whole text) is exported in SCRAPE (Prometheus text format). A histogram's
      _bucket/_sum/_count names count as its base name. Prints the names checked; exits 1 naming the missing.
  metrics_check.py sample SCRAPE NAME [LABEL=VALUE...]
      Prints the sum of NAME's samples in SCRAPE whose labels include LABEL=VALUE... (nothing if none).
  metrics_check.py same-series SCRAPE PROMETHEUS_URL NAME
      Prometheus (its HTTP API) holds the same series of NAME as SCRAPE, with the same values (no traffic since).
  metrics_check.py dashboard-queries PROMETHEUS_URL DASHBOARD...
      Every expression of the dashboards, with the Grafana variables substituted, is valid PromQL for that
      Prometheus and returns data.
  metrics_check.py rules PROMETHEUS_URL GROUP ALERT...
      The rule group GROUP is loaded with every rule healthy, and the alerts ALERT... are firing.
"""

import json
import re
import sys
import urllib.parse
import urllib.request

# Names of the server's metrics: its own, and the process / runtime gauges.
NAME = re.compile(r"\b((?:ociregistry|process|tokio|repository)_[a-zA-Z0-9_]*[a-zA-Z0-9])\b")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Grafana's variables, as check.sh's Prometheus sees them (job "ociregistry", every instance and namespace).
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${datasource}": "prometheus",
    "$job": "ociregistry",
    "$instance": ".*",
    "$namespace": ".*",
}


def parse_scrape(path):
    types, samples = {}, []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(None, 3)
                types[name] = kind
            elif line and not line.startswith("#"):
                m = SAMPLE.match(line)
                if not m:
                    raise SystemExit(f"{path}: cannot parse sample line {line!r}")
                labels = dict(LABEL.findall(m.group(2) or ""))
                samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def dashboard_exprs(path):
    with open(path) as f:
        d = json.load(f)
    out = []

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(d.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((p.get("title", "?"), t["expr"]))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if q:
                out.append((f"variable {v['name']}", q))
    return out


def used_names(path):
    if path.endswith(".json"):
        text = "\n".join(e for _, e in dashboard_exprs(path))
    else:
        with open(path) as f:
            text = f.read()
    return set(NAME.findall(text))


def cmd_names(scrape, files):
    types, samples = parse_scrape(scrape)
    exported = {s[0] for s in samples}
    missing = {}
    checked = set()
    for path in files:
        for name in sorted(used_names(path)):
            checked.add(name)
            base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
            if base and types.get(base) == "histogram":
                ok = base + "_bucket" in exported
            else:
                ok = name in exported
            if not ok:
                missing.setdefault(name, []).append(path)
    print(f"{len(checked)} metric names used: {' '.join(sorted(checked))}")
    if missing:
        for name, paths in sorted(missing.items()):
            print(f"MISSING from the scrape: {name} (used in {', '.join(paths)})")
        return 1
    print("all of them are in the scrape")
    return 0


def cmd_sample(scrape, name, selectors):
    want = dict(s.split("=", 1) for s in selectors)
    _, samples = parse_scrape(scrape)
    hits = [v for n, labels, v in samples if n == name and all(labels.get(k) == v for k, v in want.items())]
    if hits:
        total = sum(hits)
        print(int(total) if total == int(total) else total)
    return 0


def query(url, expr):
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=10) as r:
        return json.load(r)


def cmd_same_series(scrape, url, name):
    _, samples = parse_scrape(scrape)
    want = {tuple(sorted(labels.items())): v for n, labels, v in samples if n == name}
    answer = query(url, name)
    got = {}
    for s in answer["data"]["result"]:
        labels = {k: v for k, v in s["metric"].items() if k not in ("__name__", "job", "instance")}
        got[tuple(sorted(labels.items()))] = float(s["value"][1])
    print(f"{name}: {len(want)} series in the scrape, {len(got)} in Prometheus")
    for k in sorted(set(want) | set(got)):
        print(f"  {dict(k)}: scrape {want.get(k)}, prometheus {got.get(k)}")
    if want != got:
        print("the series or values differ", file=sys.stderr)
        return 1
    return 0


def cmd_dashboard_queries(url, files):
    bad = 0
    for path in files:
        for title, expr in dashboard_exprs(path):
            if title.startswith("variable "):
                continue  # label_values(...) is Grafana's, not PromQL; its metric is in a panel too
            e = expr
            for k, v in VARIABLES.items():
                e = e.replace(k, v)
            if "$" in e:
                print(f"FAIL {path}: {title}: unknown variable in {expr}")
                bad += 1
                continue
            try:
                answer = query(url, e)
            except urllib.error.HTTPError as err:
                print(f"FAIL {path}: {title}: {err.code} {err.read().decode(errors='replace')} for {e}")
                bad += 1
                continue
            n = len(answer["data"]["result"])
            if answer.get("status") != "success" or n == 0:
                print(f"FAIL {path}: {title}: no data ({answer.get('status')}) for {e}")
                bad += 1
            else:
                print(f"ok   {path}: {title}: {n} series")
    return 1 if bad else 0


def cmd_rules(url, group, alerts):
    with urllib.request.urlopen(f"{url}/api/v1/rules", timeout=10) as r:
        answer = json.load(r)
    groups = [g for g in answer["data"]["groups"] if g["name"] == group]
    if not groups:
        print(f"rule group {group} is not loaded", file=sys.stderr)
        return 1
    bad = 0
    firing = set()
    for rule in groups[0]["rules"]:
        health = rule.get("health")
        print(f"{rule['name']}: health {health}, state {rule.get('state')}, last error {rule.get('lastError') or '-'}")
        if health != "ok":
            bad += 1
        if rule.get("state") == "firing":
            firing.add(rule["name"])
    for a in alerts:
        if a not in firing:
            print(f"alert {a} is not firing", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "names" and len(args) >= 2:
        return cmd_names(args[0], args[1:])
    if cmd == "sample" and len(args) >= 2:
        return cmd_sample(args[0], args[1], args[2:])
    if cmd == "same-series" and len(args) == 3:
        return cmd_same_series(*args)
    if cmd == "dashboard-queries" and len(args) >= 2:
        return cmd_dashboard_queries(args[0], args[1:])
    if cmd == "rules" and len(args) >= 2:
        return cmd_rules(args[0], args[1], args[2:])
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
