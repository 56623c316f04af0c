#!/usr/bin/env python3
"""A small TCP request/response workload, run inside a testbed network namespace.

The client opens CONNS connections to the server and on each runs ROUNDS exchanges: it sends a
request of a random size, the server reads it whole and answers with a response of a random size.
Sizes are drawn from a seeded generator, so a run is reproducible in what it sends. Both ends check
every byte count; the process exits non-zero on any mismatch. Prints a JSON summary.
"""

import argparse
import json
import random
import socket
import struct
import sys
import threading


def recv_exact(sock, n):
    parts = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed early")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def serve_one(conn, totals, lock):
    got = sent = 0
    with conn:
        while True:
            head = conn.recv(8, socket.MSG_WAITALL)
            if not head:
                break
            req_len, resp_len = struct.unpack("!II", head)
            recv_exact(conn, req_len)
            conn.sendall(b"r" * resp_len)
            got += 8 + req_len
            sent += resp_len
    with lock:
        totals["server_received"] += got
        totals["server_sent"] += sent


def client_one(addr, port, rounds, lo, hi, seed, nodelay, totals, lock):
    rng = random.Random(seed)
    sent = got = 0
    with socket.create_connection((addr, port)) as s:
        if nodelay:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(rounds):
            req, resp = rng.randint(lo, hi), rng.randint(lo, hi)
            s.sendall(struct.pack("!II", req, resp) + b"q" * req)
            recv_exact(s, resp)
            sent += 8 + req
            got += resp
        s.shutdown(socket.SHUT_WR)
        if s.recv(1):
            raise ConnectionError("unexpected data after the last response")
    with lock:
        totals["client_sent"] += sent
        totals["client_received"] += got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5001)
    ap.add_argument("--conns", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--min-size", type=int, default=200)
    ap.add_argument("--max-size", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nodelay", action="store_true")
    ap.add_argument("--server-addr", default=None, help="address to bind (default: --addr)")

    ap.add_argument("--role", choices=["both", "server", "client"], default="both",
                    help="server prints 'ready' once listening; client connects to it")
    args = ap.parse_args()
    totals = dict(client_sent=0, client_received=0, server_sent=0, server_received=0)
    lock = threading.Lock()
    errors = []

    def guarded(fn, *a):
        try:
            fn(*a)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = []
    srv = None
    if args.role in ("both", "server"):
        family = socket.AF_INET6 if ":" in (args.server_addr or args.addr) else socket.AF_INET
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((args.server_addr or args.addr, args.port))
        srv.listen(args.conns)
        if args.role == "server":
            print("ready", flush=True)

        def accept_all():
            servers = []
            for _ in range(args.conns):
                conn, _ = srv.accept()
                t = threading.Thread(target=guarded, args=(serve_one, conn, totals, lock))
                t.start()
                servers.append(t)
            for t in servers:
                t.join()

        threads.append(threading.Thread(target=accept_all))
    if args.role in ("both", "client"):
        threads += [
            threading.Thread(
                target=guarded,
                args=(client_one, args.addr, args.port, args.rounds, args.min_size, args.max_size,
                      args.seed * 1000 + i, args.nodelay, totals, lock),
            )
            for i in range(args.conns)
        ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if srv is not None:
        srv.close()
    json.dump(dict(totals, errors=errors), sys.stdout)
    print()
    if args.role == "both":
        ok = not errors and totals["client_sent"] == totals["server_received"] \
            and totals["server_sent"] == totals["client_received"]
    else:
        ok = not errors
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
