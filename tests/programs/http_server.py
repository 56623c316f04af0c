#!/usr/bin/env python3
"""A small HTTP/1.1 server with known delays, for the event-loop tests.

GET /slow answers after THINK_MS; GET /fast at once (2000-byte bodies); GET /small at once with
a 500-byte body in one segment, and keeps the connection open 500 ms more (so that nothing
follows a lost answer: the sender's retransmission timer, not a fast retransmit, recovers it).
Every answer then closes its connection.
nftables can drop an answer once (see tests/test_event_loops.py). Writes its pid to PIDFILE
and serves until killed.

Usage: http_server.py PORT THINK_MS PIDFILE
"""

import os
import socket
import sys
import threading
import time

port, think, pidfile = int(sys.argv[1]), float(sys.argv[2]) / 1000, sys.argv[3]
BODY = b"x" * 2000


def serve(conn):
    with conn:
        req = b""
        while b"\r\n\r\n" not in req:
            chunk = conn.recv(4096)
            if not chunk:
                return
            req += chunk
        if req.startswith(b"GET /slow"):
            time.sleep(think)
        body = BODY[:500] if req.startswith(b"GET /small") else BODY
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % len(body) + body)
        if req.startswith(b"GET /small"):
            time.sleep(0.5)


srv = socket.create_server(("127.0.0.1", port), backlog=64)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
