#!/usr/bin/env python3
"""A loopback TCP proxy that slows down what the upstream sends, for tests/e2e/resilience.sh.

Listens on --listen HOST:PORT and forwards every connection to --upstream HOST:PORT. Bytes from the client go
through as they come; bytes from the upstream are paced at --rate bytes per second per connection. The crash
loop puts it in front of docker-registry so that a multi-MiB blob takes long enough to download for the kill
to land in the middle of fills, not only after them.
"""
import argparse
import asyncio
import sys


async def pipe(reader, writer, rate):
    chunk = 65536 if rate <= 0 else max(4096, min(65536, rate // 50))
    try:
        while True:
            data = await reader.read(chunk)
            if not data:
                break
            writer.write(data)
            await writer.drain()
            if rate > 0:
                await asyncio.sleep(len(data) / rate)
    except (ConnectionError, OSError):
        pass


async def handle(creader, cwriter, upstream, rate):
    host, port = upstream
    try:
        ureader, uwriter = await asyncio.open_connection(host, port)
    except OSError:
        cwriter.close()
        return
    tasks = [asyncio.create_task(pipe(creader, uwriter, 0)), asyncio.create_task(pipe(ureader, cwriter, rate))]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:
        t.cancel()
    for w in (cwriter, uwriter):
        try:
            w.close()
        except Exception:
            pass


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, type=hostport)
    ap.add_argument("--upstream", required=True, type=hostport)
    ap.add_argument("--rate", type=int, default=4 * 1024 * 1024, help="bytes per second per connection, upstream to client")
    args = ap.parse_args()
    server = await asyncio.start_server(lambda r, w: handle(r, w, args.upstream, args.rate), *args.listen)
    print(f"throttle_proxy: {args.listen[0]}:{args.listen[1]} -> {args.upstream[0]}:{args.upstream[1]}, "
          f"{args.rate} B/s per connection", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
