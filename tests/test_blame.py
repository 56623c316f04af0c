"""Accuracy of the blame model on real traffic with known delays (root: capture in a netns)."""

import csv
import subprocess
import sys
import uuid

import pytest
from conftest import ROOT, need_root, need_tool, netblame_path

PROGRAM = ROOT / "tests" / "programs" / "blame_program.py"
MS = 1_000_000


@pytest.fixture
def netns():
    need_root("live capture in a network namespace")
    name = f"nbb-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up", "mtu", "1500"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def run_program(netns, tmp_path, think_ms, pause_ms):
    out = tmp_path / "run"
    r = subprocess.run(["ip", "netns", "exec", netns, str(netblame_path()), "run", "--port", "5055", "--out", str(out),
                        "--", sys.executable, str(PROGRAM), "5055", str(think_ms), str(pause_ms)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with open(out / "tables" / "reads.csv") as f:
        reads = list(csv.DictReader(f))
    client = [x for x in reads if x["bytes"] == "500"]
    client.sort(key=lambda x: int(x["stream_offset"]))
    return out, r.stderr, client


def test_peer_slow_app_late_and_ok(netns, tmp_path):
    out, report, client = run_program(netns, tmp_path, 200, 150)
    first, second, *rest = client
    assert first["verdict"] == "peer-slow"
    assert abs(int(first["peer_wait_ns"]) - 200 * MS) <= 2 * MS, first
    assert second["verdict"] == "app-late"
    assert abs(int(second["buffer_wait_ns"]) - 150 * MS) <= 2 * MS, second
    assert [x["verdict"] for x in rest] == ["ok"] * 5
    assert "peer-slow" in report and "app-late" in report
    assert (out / "report.txt").read_text().startswith("netblame: ")


def test_loss_delay_equals_the_retransmission_time_in_the_capture(netns, tmp_path):
    need_tool("nft")
    # Drop the first 500-byte response after capture (input hook): it is retransmitted.
    rules = ("add table inet nbdrop\n"
             "add chain inet nbdrop in { type filter hook input priority 0; }\n"
             "add rule inet nbdrop in tcp sport 5055 meta length > 500 numgen inc mod 1000 == 0 counter drop\n")
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=rules, text=True, check=True)
    out, report, client = run_program(netns, tmp_path, 0, 0)
    first = client[0]
    assert first["verdict"] == "loss", first
    with open(out / "tables" / "packets.csv") as f:
        sent = [p for p in csv.DictReader(f) if p["src_port"] == "5055" and p["payload_len"] == "500"
                and p["rel_seq"] == "1"]
    assert [p["class"] for p in sent][:2] == ["new", "retransmission"], sent
    retransmission_time = int(sent[1]["ts_ns"]) - int(sent[0]["ts_ns"])
    assert int(first["retransmitted_bytes"]) == 500
    assert abs(int(first["loss_delay_ns"]) - retransmission_time) <= 2 * MS, (first, retransmission_time)
