#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time each way, so a server on
loopback answers as one across a network would: a request waits twice the delay (the round
trip) before its first byte comes back. Bandwidth is not limited; order is kept.

    python3 scripts/latency_proxy.py UPSTREAM_HOST:PORT DELAY_MS

Prints the port it listens on, then serves until killed.
"""
import asyncio
import sys


async def pipe(reader, writer, delay):
    """Copies `reader` to `writer`, each piece written `delay` seconds after it was read."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def read():
        try:
            while data := await reader.read(1 << 16):
                await queue.put((loop.time() + delay, data))
        except ConnectionError:
            pass
        await queue.put((loop.time() + delay, None))

    async def write():
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    break
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    await asyncio.gather(read(), write())


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    delay = float(sys.argv[2]) / 1000

    async def serve(client_reader, client_writer):
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(
            pipe(client_reader, upstream_writer, delay),
            pipe(upstream_reader, client_writer, delay),
        )

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
