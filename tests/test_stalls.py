"""Nagle + delayed ACK (docs/timing-model.md, stalls): a client that writes each request in two
small writes without TCP_NODELAY, against a server that answers once the whole request is there.
Linux's delayed ACK (~40 ms) holds the second write; then the answer comes at once. Both sides'
reads are `stall`, not the peer's: the server's read of the held half too. With TCP_NODELAY on
the client, nothing stalls."""

import csv
import subprocess
import sys

import pytest
from conftest import netblame_path

MS = 1_000_000
EXCHANGES = 8

PROGRAM = r"""
import socket, sys, threading
nodelay = sys.argv[1] == "nodelay"
srv = socket.create_server(("127.0.0.1", 0))
def serve():
    c, _ = srv.accept()
    with c:
        while True:
            req = b""
            while len(req) < 20:
                chunk = c.recv(20 - len(req))
                if not chunk:
                    return
                req += chunk
            c.sendall(b"r" * 100)
t = threading.Thread(target=serve); t.start()
cl = socket.create_connection(srv.getsockname())
if nodelay:
    cl.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print(cl.getsockname()[1], flush=True)
for _ in range(%d):
    cl.send(b"a" * 10); cl.send(b"b" * 10)
    got = b""
    while len(got) < 100:
        got += cl.recv(100 - len(got))
cl.close(); t.join()
""" % EXCHANGES


def run(netns, tmp_path, mode):
    prog = tmp_path / "write_write_read.py"
    prog.write_text(PROGRAM)
    out = tmp_path / mode
    r = subprocess.run(["ip", "netns", "exec", netns, str(netblame_path()), "run", "--out", str(out), "--",
                        sys.executable, str(prog), mode], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    client_port = r.stdout.split()[0]
    with open(out / "tables" / "reads.csv") as f:
        reads = [row for row in csv.DictReader(f) if int(row["bytes"]) > 0]
    with open(out / "tables" / "flows.csv") as f:
        (flow,) = {row["flow_id"] for row in csv.DictReader(f)}
    # fd of the client's socket: the one whose reads are the 100-byte answers.
    client = [row for row in reads if row["bytes"] == "100"]
    server = [row for row in reads if row["bytes"] != "100"]
    assert len(client) == EXCHANGES and all(row["flow_id"] == flow for row in reads), (client_port, reads)
    return client, server, (out / "report.txt").read_text()


def test_the_write_write_read_stall_is_a_stall_on_both_sides(netns, tmp_path):
    client, server, report = run(netns, tmp_path, "nagle")
    stalled = [row for row in client if row["verdict"] == "stall"]
    # Linux ACKs the first segments of a connection at once (quick ACKs): the first exchange or
    # two do not stall.
    assert len(stalled) >= EXCHANGES - 2, [(r["verdict"], r["stall_ns"]) for r in client]
    for row in stalled:
        assert 35 * MS <= int(row["stall_ns"]) <= 60 * MS, row
        assert int(row["peer_wait_ns"]) < 5 * MS, row
        assert row["stall_held"] == "ours", row
    held_halves = [row for row in server if row["verdict"] == "stall"]
    assert len(held_halves) >= EXCHANGES - 2, [(r["verdict"], r["bytes"], r["stall_ns"]) for r in server]
    for row in held_halves:
        assert 35 * MS <= int(row["stall_ns"]) <= 60 * MS and row["stall_held"] == "peer", row
        assert int(row["peer_wait_ns"]) < 5 * MS, row
    assert "stall (Nagle + delayed ACK)" in report
    assert "TCP_NODELAY on this program's socket cures it" in report
    assert "TCP_NODELAY on the peer's socket cures it" in report
    assert "peer-slow" not in report, report


def test_with_tcp_nodelay_nothing_stalls(netns, tmp_path):
    client, server, _ = run(netns, tmp_path, "nodelay")
    assert not [row for row in client + server if row["verdict"] == "stall" or int(row["stall_ns"]) > 0], \
        client + server
    assert all(int(row["peer_wait_ns"]) < 5 * MS for row in client), client
