#!/usr/bin/env python3
"""Known delays for the accuracy tests: a request the server thinks THINK ms about (peer-slow),
a response the client reads PAUSE ms late (app-late), then fast round trips (ok).

Usage: blame_program.py PORT THINK_MS PAUSE_MS
"""

import socket
import sys
import threading
import time

port, think, pause = int(sys.argv[1]), float(sys.argv[2]) / 1000, float(sys.argv[3]) / 1000
srv = socket.create_server(("127.0.0.1", port))


def serve():
    c, _ = srv.accept()
    while True:
        req = c.recv(100)
        if not req:
            break
        if req.startswith(b"slow"):
            time.sleep(think)
        c.sendall(b"r" * 500)
    c.close()


t = threading.Thread(target=serve)
t.start()
c = socket.create_connection(("127.0.0.1", port))
c.sendall(b"slow")
assert len(c.recv(1000)) == 500          # offset 0: peer-slow, about THINK
c.sendall(b"fast")
time.sleep(pause)
assert len(c.recv(1000)) == 500          # offset 500: app-late, about PAUSE
for _ in range(5):
    c.sendall(b"fast")
    assert len(c.recv(1000)) == 500      # ok
c.close()
t.join()
