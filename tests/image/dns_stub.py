#!/usr/bin/env python3
"""A tiny authoritative DNS responder for tests/image/check.sh (standard library only).

    dns_stub.py ADDR NAME IPV4 LOGFILE

Listens on UDP ADDR:53 and answers A queries for NAME with IPV4 (TTL 5); every other query gets an
empty NOERROR answer (AAAA of NAME included), or NXDOMAIN for names other than NAME. Each query is appended
to LOGFILE as `QNAME QTYPE`. Lets the test prove that the static binary in the image really resolves
through /etc/resolv.conf (the `dns` NSS module inside static glibc), not only through /etc/hosts.
"""
import socket
import struct
import sys


def parse_qname(msg, off):
    labels = []
    while True:
        n = msg[off]
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n
    return ".".join(labels).lower(), off


def main():
    addr, name, ipv4, logfile = sys.argv[1], sys.argv[2].lower().rstrip("."), sys.argv[3], sys.argv[4]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    print(f"dns_stub: {name} A {ipv4} on {addr}:53", flush=True)
    while True:
        msg, peer = s.recvfrom(4096)
        if len(msg) < 12:
            continue
        qid, flags, qd = struct.unpack("!HHH", msg[:6])
        if qd != 1:
            continue
        try:
            qname, off = parse_qname(msg, 12)
            qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
        except (IndexError, struct.error):
            continue
        question = msg[12:off + 4]
        with open(logfile, "a") as f:
            f.write(f"{qname} {qtype}\n")
        rd = flags & 0x0100
        answers = b""
        ancount = 0
        rcode = 0
        if qname == name:
            if qtype == 1 and qclass == 1:
                answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(ipv4)
                ancount = 1
        else:
            rcode = 3
        header = struct.pack("!HHHHHH", qid, 0x8000 | 0x0400 | rd | 0x0080 | rcode, 1, ancount, 0, 0)
        s.sendto(header + question + answers, peer)


if __name__ == "__main__":
    main()
