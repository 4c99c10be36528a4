#!/usr/bin/env python3
"""Slow clients for tests/e2e/resilience.sh (slowloris).

Opens --conns TCP connections to --host:--port (non-blocking, one selector, no threads; --connect-per-sec of
them a second), and sends each a request head that never ends, one byte per --interval seconds, starting as
soon as it is connected. A connection counts as closed once the server closes it (EOF, reset, or a failed
send). Every --tick seconds it appends a JSON line to --timeline: seconds since start, connections attempted /
connected / open / closed, bytes sent, and the server's open file descriptors (len(/proc/--pid/fd)). It stops
when every connection was connected and has been closed again, or after --max-seconds (then it closes what is
still open itself), and prints a summary.

It sends nothing but the request head: no request ever completes, so every connection is one the server must
cut with its header timeout.
"""
import argparse
import errno
import json
import os
import selectors
import socket
import sys
import time


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--pid", type=int, required=True, help="server pid whose fds are counted")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between two bytes")
    ap.add_argument("--tick", type=float, default=0.25, help="seconds between two timeline lines")
    ap.add_argument("--connect-per-sec", type=float, default=2000.0,
                    help="pace of the connects: a burst faster than the server accepts overflows its listen "
                         "backlog, and the kernel's SYN retries then spread the connects over many seconds")
    ap.add_argument("--max-seconds", type=float, default=40.0)
    ap.add_argument("--timeline", required=True, help="JSON lines, one per tick")
    args = ap.parse_args()

    # A head far longer than the server's header timeout lets it send at one byte a second.
    head = b"GET /v2/ HTTP/1.1\r\nHost: slowloris\r\nUser-Agent: slowloris\r\nX-Slow: " + b"a" * 8000

    sel = selectors.DefaultSelector()
    # per connection: [socket, state, bytes sent]; state: connecting | open | closed
    conns = []
    start = time.monotonic()
    refused = 0
    started = 0

    def connect_more(now):
        nonlocal started, refused
        due = min(args.conns, int((now - start) * args.connect_per_sec) + 1)
        while started < due:
            started += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((args.host, args.port))
            if rc not in (0, errno.EINPROGRESS):
                refused += 1
                s.close()
                continue
            c = [s, "connecting", 0]
            conns.append(c)
            sel.register(s, selectors.EVENT_WRITE, c)

    def close(c):
        if c[1] == "closed":
            return
        try:
            sel.unregister(c[0])
        except (KeyError, ValueError):
            pass
        c[0].close()
        c[1] = "closed"

    def send_byte(c):
        try:
            n = c[0].send(head[c[2]:c[2] + 1])
            c[2] += n
        except BlockingIOError:
            pass
        except OSError:
            close(c)

    answered = 0  # connections on which the server sent something (e.g. 408) before closing
    ever_connected = 0
    with open(args.timeline, "w") as tl:
        next_tick = start
        next_send = start + args.interval
        while True:
            now = time.monotonic()
            connect_more(now)
            timeout = max(0.0, min(next_tick, next_send) - now)
            if started < args.conns:
                timeout = min(timeout, 0.005)
            for key, events in sel.select(timeout):
                c = key.data
                if c[1] == "connecting":
                    err = c[0].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err != 0:
                        refused += 1
                        close(c)
                        continue
                    c[1] = "open"
                    ever_connected += 1
                    sel.modify(c[0], selectors.EVENT_READ, c)
                    send_byte(c)
                elif c[1] == "open":
                    try:
                        data = c[0].recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        close(c)
                        continue
                    if not data:
                        close(c)
                    else:
                        answered += 1
            now = time.monotonic()
            if now >= next_send:
                for c in conns:
                    if c[1] == "open" and c[2] < len(head):
                        send_byte(c)
                next_send += args.interval
            if now >= next_tick:
                counts = {"connecting": 0, "open": 0, "closed": 0}
                for c in conns:
                    counts[c[1]] += 1
                line = {
                    "t": round(now - start, 2),
                    "attempted": started,
                    "connected": ever_connected,
                    "connecting": counts["connecting"],
                    "open": counts["open"],
                    "closed": counts["closed"],
                    "refused": refused,
                    "answered": answered,
                    "bytes_sent": sum(c[2] for c in conns),
                    "server_fds": fd_count(args.pid),
                }
                tl.write(json.dumps(line) + "\n")
                tl.flush()
                next_tick += args.tick
                if started == args.conns and counts["connecting"] == 0 and counts["open"] == 0:
                    break
                if now - start >= args.max_seconds:
                    break
    still_open = sum(1 for c in conns if c[1] == "open")
    for c in conns:
        close(c)
    print(json.dumps({"attempted": started, "connected": ever_connected, "refused": refused,
                      "still_open_at_exit": still_open, "answered": answered,
                      "seconds": round(time.monotonic() - start, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
