#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that counts every byte each way: what a client puts on the wire
(requests, headers, bodies) to reach a server, not what its objects hold.

    python3 scripts/count_bytes.py UPSTREAM_HOST:PORT COUNTS_FILE

Prints the port it listens on, then serves until killed; COUNTS_FILE holds
`up down connections` (bytes client to server, server to client), rewritten as they change.
"""
import asyncio
import sys

counts = {"up": 0, "down": 0, "connections": 0}


def save(path):
    with open(path, "w") as f:
        f.write(f"{counts['up']} {counts['down']} {counts['connections']}\n")


async def pipe(reader, writer, key, path):
    try:
        while data := await reader.read(1 << 16):
            counts[key] += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        save(path)
        writer.close()


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    path = sys.argv[2]

    async def serve(client_reader, client_writer):
        counts["connections"] += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(
            pipe(client_reader, upstream_writer, "up", path),
            pipe(upstream_reader, client_writer, "down", path),
        )

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    save(path)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
