#!/usr/bin/env python3
"""The interposer's event-loop benchmark workload: an asyncio echo server and client on
loopback, N round trips of 64 bytes through asyncio streams (epoll_wait, then recv, on each
side). Prints ns per round trip.

Usage: asyncio_echo.py N
"""

import asyncio
import sys
import time


async def main(n):
    async def echo(reader, writer):
        while data := await reader.read(64):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    msg = b"x" * 64
    start = time.perf_counter_ns()
    for _ in range(n):
        writer.write(msg)
        await reader.readexactly(64)
    took = time.perf_counter_ns() - start
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    print(f"{took / n:.1f}")


asyncio.run(main(int(sys.argv[1])))
