"""The README's asyncio walkthrough: a pytest-asyncio suite against the same key-value service as
examples/pytest, through asyncio streams. asyncio waits in epoll_wait, not in recv: netblame times
each read over the wait before it.

One request makes the server think 250 ms; one test blocks its own event loop 100 ms (a
synchronous call in a coroutine) while the answer arrives; the others are quick.
"""

import asyncio
import os
import subprocess
import sys
import time

import pytest

SERVER = r"""
import socket, sys, threading, time
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
def handle(c):
    with c:
        for line in c.makefile("rb"):
            if line.startswith(b"REPORT"):
                time.sleep(0.25)            # the server computes a report
            c.sendall(b"v" * 4000 + b"\n")
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"""


@pytest.fixture(scope="module")
def service():
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    p = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, env=env)
    port = int(p.stdout.readline())
    yield port
    p.kill()


async def ask(port, request, block_loop=0.0):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request + b"\n")
    await writer.drain()
    time.sleep(block_loop)  # a synchronous call: the whole event loop stops
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return line


@pytest.mark.asyncio
async def test_get(service):
    for _ in range(20):
        assert len(await ask(service, b"GET key")) == 4001


@pytest.mark.asyncio
async def test_report(service):
    assert len(await ask(service, b"REPORT daily")) == 4001


@pytest.mark.asyncio
async def test_blocked_loop(service):
    assert len(await ask(service, b"GET key", block_loop=0.1)) == 4001
