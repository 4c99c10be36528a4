#!/usr/bin/env python3
"""Startup-time probe for the load benchmark (scenario f).

Runs CMD RUNS times; each time measures the wall time from exec (just before Popen) until `GET URL` answers 200,
then sends SIGTERM and waits for the exit (SIGKILL after 30 s). Polls every 2 ms with a fresh TCP connection.
Prints one JSON object: {"runs_ms": [...], "median_ms": M}. Exits non-zero if a run did not come up within
TIMEOUT seconds or the process died.

    startup.py --url http://127.0.0.1:PORT/v2/ --runs 5 --timeout 120 --log FILE -- CMD ARGS...
"""
import argparse
import http.client
import json
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse


def probe(host, port, path):
    try:
        c = http.client.HTTPConnection(host, port, timeout=1)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status == 200
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--log", default="/dev/null")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    u = urllib.parse.urlsplit(a.url)
    times = []
    with open(a.log, "ab") as log:
        for i in range(a.runs):
            if probe(u.hostname, u.port, u.path):
                print("startup.py: something already answers on %s" % a.url, file=sys.stderr)
                sys.exit(2)
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            try:
                while True:
                    if probe(u.hostname, u.port, u.path):
                        times.append((time.perf_counter() - t0) * 1000.0)
                        break
                    if p.poll() is not None:
                        print("startup.py: process exited with %s before answering" % p.returncode, file=sys.stderr)
                        sys.exit(1)
                    if time.perf_counter() - t0 > a.timeout:
                        print("startup.py: no answer within %ss" % a.timeout, file=sys.stderr)
                        sys.exit(1)
                    time.sleep(0.002)
            finally:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
    print(json.dumps({"runs_ms": [round(t, 1) for t in times], "median_ms": round(statistics.median(times), 1)}))


if __name__ == "__main__":
    main()
