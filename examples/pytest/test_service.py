"""A small pytest suite for the README's walkthrough of `netblame run -- pytest`.

A key-value service runs in its own process (started by a fixture, not recorded); each test talks
to it over TCP on loopback. One endpoint is slow on the server side, one test reads its answer
late, the others are quick.
"""

import os
import socket
import subprocess
import sys
import time

import pytest

SERVER = r"""
import socket, sys, threading, time
report_s = float(sys.argv[1]) / 1000
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
def handle(c):
    with c:
        for line in c.makefile("rb"):
            if line.startswith(b"REPORT"):
                time.sleep(report_s)        # the server computes a report
            c.sendall(b"v" * 4000 + b"\n")
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"""


@pytest.fixture(scope="module")
def service():
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    # REPORT_MS: how long the server computes a report (the README's `netblame diff`).
    report_ms = os.environ.get("REPORT_MS", "250")
    p = subprocess.Popen([sys.executable, "-c", SERVER, report_ms], stdout=subprocess.PIPE, env=env)
    port = int(p.stdout.readline())
    yield port
    p.kill()


def ask(port, request, think_before_reading=0.0):
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(request + b"\n")
        time.sleep(think_before_reading)
        data = b""
        while not data.endswith(b"\n"):
            data += c.recv(65536)
        return data


def test_get(service):
    for _ in range(20):
        assert len(ask(service, b"GET key")) == 4001


def test_report(service):
    assert len(ask(service, b"REPORT daily")) == 4001


def test_batch(service):
    # The test does other work before it reads the answer, which arrived long before.
    assert len(ask(service, b"GET batch", think_before_reading=0.1)) == 4001
