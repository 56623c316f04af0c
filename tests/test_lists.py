"""The report's lists hold only true entries: a listening socket is no connection, a connect
refused with a RST is `refused` and joined to its flow, and a connection the program made is never
called unseen by the interposer (issue 18, part 4)."""

import csv
import json
import subprocess
import sys

from conftest import netblame_path

# Every kind of refused connect (blocking, with a timeout: poll, asyncio: epoll), a listening
# socket nobody connects to (polled with a timeout), and a selector-driven server whose listening
# socket a wait reports readable, as urllib3's dummyserver and every threaded test server do.
PROGRAM = r"""
import asyncio, json, selectors, socket, threading

def closed_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    return port

refused = 0
port = closed_port()
for timeout in (None, 1.0):
    c = socket.socket()
    c.settimeout(timeout)
    try:
        c.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        refused += 1
    c.close()

async def refused_async():
    try:
        await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return 1
    return 0
refused += asyncio.run(refused_async())

# No route to it inside the namespace: the connect fails at once, and no packet leaves.
try:
    socket.create_connection(("240.0.0.1", 80), timeout=1)
except OSError:
    pass

idle = socket.create_server(("127.0.0.1", 0))
idle.settimeout(0.05)
try:
    idle.accept()
except socket.timeout:
    pass

server = socket.create_server(("127.0.0.1", 0))
server.setblocking(False)
def serve():
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)
    for _ in range(3):
        sel.select(timeout=2)
        conn, _ = server.accept()
        conn.setblocking(True)
        conn.sendall(conn.recv(100))
        conn.close()
t = threading.Thread(target=serve); t.start()
for _ in range(3):
    with socket.create_connection(server.getsockname()) as c:
        c.sendall(b"ping"); c.recv(100)
t.join()
print(json.dumps({"refused": refused}))
"""


def test_listening_sockets_are_not_connections_and_refused_connects_are_refused(netns, tmp_path):
    prog = tmp_path / "lists.py"
    prog.write_text(PROGRAM)
    out = tmp_path / "run"
    r = subprocess.run(["ip", "netns", "exec", netns, str(netblame_path()), "run", "--out", str(out), "--",
                        sys.executable, str(prog)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["refused"] == 3
    report = (out / "report.txt").read_text()
    assert "are not in the capture" not in report, report
    assert "have no recorded socket calls" not in report, report

    events = subprocess.run([str(netblame_path()), "events", "dump", str(out)], capture_output=True, text=True,
                            check=True).stdout
    opens = [e for e in map(json.loads, events.splitlines()) if e["kind"] == "open"]
    assert not [e for e in opens if e.get("peer", "").endswith(":0")], "a listening socket recorded as an open"
    failed = [e for e in opens if e["call"] == "connect" and e["errno"] == 111]
    assert len(failed) == 1, "the blocking connect refused at once is recorded with ECONNREFUSED"

    with open(out / "tables" / "connects.csv") as f:
        connects = list(csv.DictReader(f))
    with open(out / "tables" / "flows.csv") as f:
        flows = {row["flow_id"]: row for row in csv.DictReader(f) if row["direction"] == "a->b"}
    refused = [c for c in connects if c["verdict"] == "refused"]
    assert len(refused) == 3, connects
    for c in refused:
        assert c["flow_id"], "a refused connect is joined to its flow"
        assert 0 < int(c["peer_ns"]) < 100_000_000, c
        assert 0 < int(c["connect_ns"]) < 1_000_000_000, c
        assert c["peer"] == flows[c["flow_id"]]["dst_addr"] + ":" + flows[c["flow_id"]]["dst_port"], (c, flows)
    ok = [c for c in connects if c["verdict"] == "ok"]
    assert len(ok) == 3, connects
    assert len({c["flow_id"] for c in connects if c["flow_id"]}) == 6
    unreachable = [c for c in connects if c["peer"] == "240.0.0.1:80"]
    assert len(unreachable) == 1 and not unreachable[0]["flow_id"], connects
    assert "refused" in report and "RST: nothing listening" in report, report
