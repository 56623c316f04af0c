#!/usr/bin/env python3
"""Small socket programs run under the interposer by tests/test_preload.py.

Each case talks over loopback only and prints one JSON line with what it really sent and received
(bytes per process), so the test can check the recorded events against the truth.

Usage: socket_programs.py CASE
"""

import asyncio
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

MESSAGES = [b"x" * n for n in (1, 100, 1000, 5000, 20000, 64)]


def listener(family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0) if family == socket.AF_INET else ("::1", 0))
    s.listen(16)
    return s


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed early")
        buf += chunk
    return buf


def echo_serve(conn, totals, key):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
            totals[key + "_received"] = totals.get(key + "_received", 0) + len(data)
            totals[key + "_sent"] = totals.get(key + "_sent", 0) + len(data)


def echo_client(port, totals, family=socket.AF_INET):
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.create_connection((host, port)) as c:
        for m in MESSAGES:
            c.sendall(m)
            recv_exact(c, len(m))
            totals["client_sent"] = totals.get("client_sent", 0) + len(m)
            totals["client_received"] = totals.get("client_received", 0) + len(m)
        c.shutdown(socket.SHUT_WR)
        assert c.recv(1) == b""


def case_blocking():
    totals = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        srv = listener(family)
        t = threading.Thread(target=lambda: echo_serve(srv.accept()[0], totals, "server"))
        t.start()
        echo_client(srv.getsockname()[1], totals, family)
        t.join()
        srv.close()
    return totals


def case_selectors():
    """Non-blocking sockets and a selector loop (what event loops do)."""
    totals = {"client_sent": 0, "client_received": 0, "server_sent": 0, "server_received": 0}
    srv = listener()
    srv.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ, "accept")
    client = socket.socket()
    client.setblocking(False)
    client.connect_ex(srv.getsockname())
    payload = b"s" * 100_000
    sent = 0
    received = 0
    conn = None
    sel.register(client, selectors.EVENT_WRITE | selectors.EVENT_READ, "client")
    deadline = time.time() + 10
    while received < len(payload) and time.time() < deadline:
        for key, mask in sel.select(timeout=1):
            if key.data == "accept":
                conn, _ = srv.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, "server")
            elif key.data == "server":
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    continue
                totals["server_received"] += len(data)
                conn.sendall(data)  # small enough not to block on loopback
                totals["server_sent"] += len(data)
            elif key.data == "client":
                if mask & selectors.EVENT_WRITE and sent < len(payload):
                    try:
                        n = client.send(payload[sent:sent + 16384])
                        sent += n
                        totals["client_sent"] += n
                    except BlockingIOError:
                        pass
                    if sent == len(payload):
                        sel.modify(client, selectors.EVENT_READ, "client")
                if mask & selectors.EVENT_READ:
                    try:
                        data = client.recv(65536)
                        received += len(data)
                        totals["client_received"] += len(data)
                    except BlockingIOError:
                        pass
    assert received == len(payload), received
    for s in (client, conn, srv):
        sel.unregister(s)
        s.close()
    return totals


def case_asyncio():
    totals = {"client_sent": 0, "client_received": 0, "server_sent": 0, "server_received": 0}

    async def handle(reader, writer):
        while data := await reader.read(65536):
            totals["server_received"] += len(data)
            writer.write(data)
            await writer.drain()
            totals["server_sent"] += len(data)
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for m in MESSAGES:
            writer.write(m)
            await writer.drain()
            totals["client_sent"] += len(m)
            got = await reader.readexactly(len(m))
            totals["client_received"] += len(got)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    return totals


def case_threaded():
    totals = {}
    lock = threading.Lock()
    srv = listener()
    port = srv.getsockname()[1]
    n = 4

    def serve():
        threads = []
        for _ in range(n):
            conn, _ = srv.accept()
            local = {}
            t = threading.Thread(target=lambda c=conn, d=local: (echo_serve(c, d, "server"), merge(d)))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()

    def merge(d):
        with lock:
            for k, v in d.items():
                totals[k] = totals.get(k, 0) + v

    def client():
        d = {}
        echo_client(port, d)
        merge(d)

    server = threading.Thread(target=serve)
    server.start()
    clients = [threading.Thread(target=client) for _ in range(n)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    server.join()
    return totals


def case_forking():
    """A forking server: each connection is served by a child process with its own log."""
    srv = listener()
    port = srv.getsockname()[1]
    n = 3
    pid = os.fork()
    if pid == 0:
        children = []
        for _ in range(n):
            conn, _ = srv.accept()
            child = os.fork()
            if child == 0:
                srv.close()
                d = {}
                echo_serve(conn, d, "server")
                os._exit(0)
            conn.close()
            children.append(child)
        for c in children:
            os.waitpid(c, 0)
        os._exit(0)
    srv.close()
    totals = {}
    for _ in range(n):
        echo_client(port, totals)
    os.waitpid(pid, 0)
    totals["server_received"] = totals["server_sent"] = totals["client_sent"]
    return totals


def case_subprocess():
    """subprocess (vfork/posix_spawn) starting a child that uses sockets."""
    srv = listener()
    port = srv.getsockname()[1]
    totals = {}
    t = threading.Thread(target=lambda: echo_serve(srv.accept()[0], totals, "server"))
    t.start()
    out = subprocess.run([sys.executable, __file__, "child-client", str(port)], check=True,
                         capture_output=True, text=True, close_fds=True).stdout
    child = json.loads(out)
    t.join()
    totals.update(child)
    return totals


def case_child_client(port):
    totals = {}
    echo_client(int(port), totals)
    totals["child_pid"] = os.getpid()
    print(json.dumps(totals))


def case_killed():
    """Round trips until told to stop, printing a line after each; the test SIGKILLs it."""
    srv = listener()
    totals = {}
    t = threading.Thread(target=lambda: echo_serve(srv.accept()[0], totals, "server"), daemon=True)
    t.start()
    c = socket.create_connection(srv.getsockname())
    for i in range(50):
        c.sendall(b"k" * 100)
        recv_exact(c, 100)
        print(json.dumps({"round": i + 1, "client_sent": 100 * (i + 1)}), flush=True)
    time.sleep(60)


def case_reset():
    """The peer resets the connection: recv fails with ECONNRESET, which must pass through."""
    srv = listener()
    c = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    c.sendall(b"unread")  # unread data in conn's buffer makes close() send RST
    time.sleep(0.05)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    time.sleep(0.05)
    try:
        c.recv(10)
        err = 0
    except ConnectionResetError as e:
        err = e.errno
    c.close()
    srv.close()
    return {"errno": err, "client_sent": 6, "client_received": 0}


def case_eintr():
    """A blocking recv interrupted by a signal: EINTR, then Python retries (PEP 475)."""
    srv = listener()
    c = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    signal.signal(signal.SIGALRM, lambda *a: None)
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    threading.Timer(0.3, lambda: conn.sendall(b"late")).start()
    data = c.recv(10)
    for s in (c, conn, srv):
        s.close()
    return {"client_received": len(data)}


def case_reuse():
    """fds closed behind the library's back (os.close) and reused by a file and a new socket."""
    srv = listener()
    port = srv.getsockname()[1]
    totals = {}
    t = threading.Thread(target=lambda: [echo_serve(srv.accept()[0], totals, "server") for _ in range(2)])
    t.start()
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"first")
    recv_exact(c, 5)
    fd = c.detach()
    os.close(fd)  # the interposer sees close(); raw syscalls are covered by the probe
    f = os.open(__file__, os.O_RDONLY)  # likely the same fd number
    file_bytes = len(os.read(f, 4096))
    os.close(f)
    c2 = socket.create_connection(("127.0.0.1", port))
    c2.sendall(b"second!")
    recv_exact(c2, 7)
    c2.close()
    t.join()
    return dict(totals, client_sent=12, client_received=12, file_fd=f, file_bytes=file_bytes)


def case_unix():
    """Unix sockets are not on the wire: nothing is recorded."""
    a, b = socket.socketpair()
    a.sendall(b"local")
    b.recv(5)
    a.close()
    b.close()
    return {}


def case_udp():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    a.connect(b.getsockname())
    for n in (10, 200, 1400):
        a.send(b"u" * n)
        b.recvfrom(2000)
    a.close()
    b.close()
    return {"client_sent": 1610, "server_received": 1610}


def case_bracketed():
    """Sends and receives with the wall clock read just before and after each call, some calls
    far apart (up to 0.3 s), so the recorded times can be checked against the program's own."""
    srv = listener()
    a = socket.create_connection(srv.getsockname())
    b, _ = srv.accept()
    brackets = []
    for i, pause in enumerate([0, 0, 0.001, 0.002, 0.01, 0.05, 0.3, 0, 0.02, 0]):
        time.sleep(pause)
        before = time.time_ns()
        a.send(b"b" * (i + 1))
        middle = time.time_ns()
        b.recv(100)
        brackets.append([before, middle, time.time_ns()])
    a.close()
    b.close()
    return {"brackets": brackets}


if __name__ == "__main__":
    case = sys.argv[1].replace("-", "_")
    result = globals()["case_" + case](*sys.argv[2:])
    if result is not None:
        result["pid"] = os.getpid()
        print(json.dumps(result))
