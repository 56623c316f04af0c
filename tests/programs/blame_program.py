#!/usr/bin/env python3
"""Known delays for the accuracy tests.

Usage: blame_program.py PORT THINK_MS PAUSE_MS [tcp|tcp6|v4-mapped|udp|zero-window|nagle]

tcp (tcp6: over IPv6; v4-mapped: a dual-stack server, an IPv4 client), udp: a request the server thinks THINK ms about (peer-slow), a response the client reads
PAUSE ms late (app-late), then fast round trips (ok). Responses are 500 bytes (tcp) or 300-byte
datagrams (udp, on a connected client socket and an unconnected server socket).
zero-window: the server sleeps THINK ms before reading at all while the client sends 4 MB; the
client's bytes wait on the server's zero window.
nagle: request/response with the request in two small writes (write-write-read): once the
connection is interactive the server delays its ACKs, and Nagle's algorithm holds the second
write until the delayed ACK of the first comes (the classic 40 ms stall).
"""

import socket
import sys
import threading
import time

port, think, pause = int(sys.argv[1]), float(sys.argv[2]) / 1000, float(sys.argv[3]) / 1000
mode = sys.argv[4] if len(sys.argv) > 4 else "tcp"


def tcp(server=("127.0.0.1", socket.AF_INET), client="127.0.0.1"):
    host, family = server
    srv = socket.create_server((host, port), family=family, dualstack_ipv6=(host == "::"))

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
    c = socket.create_connection((client, port))
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


def udp():
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", port))

    def serve():
        for _ in range(7):
            req, addr = srv.recvfrom(100)
            if req.startswith(b"slow"):
                time.sleep(think)
            srv.sendto(b"r" * 300, addr)

    t = threading.Thread(target=serve)
    t.start()
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.connect(("127.0.0.1", port))
    c.send(b"slow")
    assert len(c.recv(1000)) == 300          # peer-slow, about THINK
    c.send(b"fast")
    time.sleep(pause)
    assert len(c.recv(1000)) == 300          # app-late, about PAUSE
    for _ in range(5):
        c.send(b"fast")
        assert len(c.recv(1000)) == 300      # ok
    t.join()


def zero_window():
    srv = socket.create_server(("127.0.0.1", port))
    total = 4 << 20

    def serve():
        c, _ = srv.accept()
        time.sleep(think)
        got = 0
        while got < total:
            got += len(c.recv(1 << 16))
        c.close()

    t = threading.Thread(target=serve)
    t.start()
    c = socket.create_connection(("127.0.0.1", port))
    chunk = b"z" * (1 << 14)
    for _ in range(total // len(chunk)):
        c.sendall(chunk)
    t.join()
    c.close()


def nagle():
    srv = socket.create_server(("127.0.0.1", port))

    def serve():
        c, _ = srv.accept()
        while True:
            req = b""
            while len(req) < 20:
                chunk = c.recv(100)
                if not chunk:
                    return
                req += chunk
            c.sendall(b"r" * 100)

    t = threading.Thread(target=serve)
    t.start()
    c = socket.create_connection(("127.0.0.1", port))
    for i in range(20):
        if i < 10:
            c.sendall(b"q" * 20)                 # one write: no stall
        else:
            c.sendall(b"h" * 10)                 # header...
            c.sendall(b"b" * 10)                 # ...and body: held behind the header
        got = 0
        while got < 100:
            got += len(c.recv(1000))
    c.close()
    t.join()


MODES = {
    "tcp": tcp,
    # IPv6 on both sides.
    "tcp6": lambda: tcp(("::1", socket.AF_INET6), "::1"),
    # A dual-stack server: its accepted socket names the IPv4 client as ::ffff:127.0.0.1.
    "v4-mapped": lambda: tcp(("::", socket.AF_INET6), "127.0.0.1"),
    "udp": udp,
    "zero-window": zero_window,
    "nagle": nagle,
}
MODES[mode]()
