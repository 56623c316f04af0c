"""The LD_PRELOAD interposer with real programs: what they record must add up to what they
really sent and received, with errno, threads, fork, subprocess, SIGKILL and pytest."""

import collections
import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, netblame_path

PROGRAMS = ROOT / "tests" / "programs" / "socket_programs.py"
PRELOAD = ROOT / "target" / "debug" / "libnetblame_preload.so"


def preload_env(events_dir, **extra):
    if not PRELOAD.exists():
        pytest.fail(f"{PRELOAD} is missing: cargo build --workspace")
    env = dict(os.environ, LD_PRELOAD=str(PRELOAD), **extra)
    env.pop("PYTEST_CURRENT_TEST", None)
    if events_dir is not None:
        env["NETBLAME_EVENTS_DIR"] = str(events_dir)
    return env


def dump(events_dir):
    r = subprocess.run([str(netblame_path()), "events", "dump", str(events_dir)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def run_case(case, tmp_path, *args):
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    r = subprocess.run([sys.executable, str(PROGRAMS), case, *args], env=preload_env(events_dir),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "netblame" not in r.stderr, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), dump(events_dir), events_dir


def moved(events, kind):
    return sum(e["bytes"] for e in events if e["kind"] == kind and e["bytes"] > 0 and not e["peek"])


def assert_offsets_contiguous(events):
    """Per stream and direction, each read or write starts where the previous one ended."""
    by_stream = collections.defaultdict(list)
    for e in events:
        if e["kind"] in ("recv", "send") and e["bytes"] > 0 and not e["peek"]:
            by_stream[(e["pid"], e["stream"], e["kind"])].append(e)
    for key, evs in by_stream.items():
        evs.sort(key=lambda e: e["offset"])
        expected = 0
        for e in evs:
            assert e["offset"] == expected, f"{key}: offset {e['offset']}, expected {expected}"
            expected += e["bytes"]


def assert_totals(summary, events):
    sent = summary.get("client_sent", 0) + summary.get("server_sent", 0)
    received = summary.get("client_received", 0) + summary.get("server_received", 0)
    assert moved(events, "send") == sent
    assert moved(events, "recv") == received


def test_blocking_ipv4_and_ipv6(tmp_path):
    summary, events, _ = run_case("blocking", tmp_path)
    assert_totals(summary, events)
    assert_offsets_contiguous(events)
    opens = [e for e in events if e["kind"] == "open"]
    assert {e["call"] for e in opens} == {"connect", "accept4"}
    assert all(e["proto"] == "tcp" for e in opens)
    # Each connection's two ends see each other.
    ends = {(e["local"], e["peer"]) for e in opens}
    assert all((peer, local) in ends for local, peer in ends)
    assert any(e["local"].startswith("[::1]:") for e in opens)
    io = [e for e in events if e["kind"] in ("recv", "send")]
    assert all(e["t_return_ns"] >= e["t_call_ns"] > 1_700_000_000 * 10**9 for e in io)
    assert all(e["pid"] == summary["pid"] and e["tid"] > 0 for e in io)
    assert {e["call"] for e in io} >= {"recv", "send"}
    assert sum(e["kind"] == "close" for e in events) >= 4


def test_nonblocking_selectors(tmp_path):
    summary, events, _ = run_case("selectors", tmp_path)
    assert_totals(summary, events)
    assert_offsets_contiguous(events)
    assert any(e["nonblocking"] for e in events if e["kind"] == "recv")
    eagain = [e for e in events if e["errno"] == 11]
    assert all(e["bytes"] == -1 and e["nonblocking"] for e in eagain)


def test_asyncio(tmp_path):
    summary, events, _ = run_case("asyncio", tmp_path)
    assert_totals(summary, events)
    assert_offsets_contiguous(events)
    assert all(e["nonblocking"] for e in events if e["kind"] == "recv" and e["bytes"] > 0)


def test_threaded_server(tmp_path):
    summary, events, _ = run_case("threaded", tmp_path)
    assert_totals(summary, events)
    assert_offsets_contiguous(events)
    assert len({e["tid"] for e in events if e["kind"] == "recv"}) >= 5


def test_forking_server_children_write_their_own_logs(tmp_path):
    summary, events, events_dir = run_case("forking", tmp_path)
    assert_totals(summary, events)
    assert_offsets_contiguous(events)
    server_pids = {e["pid"] for e in events if e["kind"] == "recv"} - {summary["pid"]}
    assert len(server_pids) == 3, "one child per connection"
    # The client, the accepting child, and one grandchild per connection.
    logs = list(events_dir.glob("*.nbev"))
    assert len(logs) == 5, [p.name for p in logs]
    assert len({e["pid"] for e in events}) == 5


def test_subprocess_child_is_recorded(tmp_path):
    summary, events, _ = run_case("subprocess", tmp_path)
    assert_totals(summary, events)
    child = summary["child_pid"]
    assert moved([e for e in events if e["pid"] == child], "send") == summary["client_sent"]
    assert_offsets_contiguous(events)


def test_sigkill_keeps_every_event_before_the_kill(tmp_path):
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    p = subprocess.Popen([sys.executable, str(PROGRAMS), "killed"], env=preload_env(events_dir),
                         stdout=subprocess.PIPE, text=True)
    rounds = 0
    for line in p.stdout:
        rounds = json.loads(line)["round"]
        if rounds == 30:
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    events = dump(events_dir)
    client_sends = [e for e in events if e["kind"] == "send" and e["call"] == "send"]
    # The program printed round 30 after its 30th send and receive returned.
    assert moved(client_sends, "send") >= 30 * 100
    assert_offsets_contiguous(events)


def tsc_keeps_time():
    """Whether the interposer stamps with the TSC here (clock.rs): x86_64 with the kernel's
    clocksource `tsc` (which the kernel picks only for an invariant TSC)."""
    source = "/sys/devices/system/clocksource/clocksource0/current_clocksource"
    return os.uname().machine == "x86_64" and os.path.exists(source) and open(source).read() == "tsc\n"


@pytest.mark.parametrize("clock", ["default", "realtime"])
def test_call_times_are_the_programs_wall_clock(tmp_path, clock):
    """Each recorded call lies between the program's own time.time_ns() before and after it,
    whether stamped by TSC ticks (turned into realtime by the log's clock points, across gaps
    of up to 0.3 s between calls) or by CLOCK_REALTIME."""
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    extra = {"NETBLAME_CLOCK": "realtime"} if clock == "realtime" else {}
    r = subprocess.run([sys.executable, str(PROGRAMS), "bracketed"], env=preload_env(events_dir, **extra),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    brackets = json.loads(r.stdout.strip().splitlines()[-1])["brackets"]
    (log,) = events_dir.glob("*.nbev")
    header = log.read_bytes()[:64]
    assert header[41] == (1 if clock == "default" and tsc_keeps_time() else 0), "the stamps the log says it has"
    events = dump(events_dir)
    sends = [e for e in events if e["kind"] == "send"]
    recvs = [e for e in events if e["kind"] == "recv"]
    assert len(sends) == len(recvs) == len(brackets)
    # Python's time.time_ns() and the stamps read the same clock; 20 us for the reads' own cost.
    slack = 20_000
    for (before, middle, after), s, rv in zip(brackets, sends, recvs):
        assert before - slack <= s["t_call_ns"] <= s["t_return_ns"] <= middle + slack, (before, middle, s)
        assert middle - slack <= rv["t_call_ns"] <= rv["t_return_ns"] <= after + slack, (middle, after, rv)


def test_errno_passes_through_on_reset(tmp_path):
    summary, events, _ = run_case("reset", tmp_path)
    assert summary["errno"] == 104
    failed = [e for e in events if e["kind"] == "recv" and e["bytes"] == -1]
    assert [e["errno"] for e in failed] == [104]


def test_eintr_is_recorded_and_retried(tmp_path):
    summary, events, _ = run_case("eintr", tmp_path)
    recvs = [e for e in events if e["kind"] == "recv"]
    assert [e["errno"] for e in recvs] == [4, 0]
    assert recvs[-1]["bytes"] == summary["client_received"] == 4


def test_fd_reuse_does_not_mix_connections(tmp_path):
    summary, events, _ = run_case("reuse", tmp_path)
    assert_totals(summary, events)
    assert_offsets_contiguous(events)
    file_reads = [e for e in events if e["fd"] == summary["file_fd"] and e["bytes"] == summary["file_bytes"]]
    assert file_reads == [], "the file read on a reused fd number is not a socket read"
    client_streams = {e["stream"] for e in events if e["kind"] == "send" and e["pid"] == summary["pid"]}
    assert len(client_streams) >= 2


def test_unix_sockets_are_not_recorded(tmp_path):
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    r = subprocess.run([sys.executable, str(PROGRAMS), "unix"], env=preload_env(events_dir),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "netblame" not in r.stderr, r.stderr
    assert list(events_dir.iterdir()) == [], "no socket event: no log at all"
    d = subprocess.run([str(netblame_path()), "events", "dump", str(events_dir)], capture_output=True, text=True)
    assert d.returncode == 1 and "no event logs" in d.stderr


def test_udp_datagrams(tmp_path):
    summary, events, _ = run_case("udp", tmp_path)
    assert_totals(summary, events)
    assert [e["bytes"] for e in events if e["kind"] == "recv"] == [10, 200, 1400]
    assert all(e["proto"] == "udp" for e in events if e["kind"] == "open")


def test_silent_without_events_dir(tmp_path):
    r = subprocess.run([sys.executable, str(PROGRAMS), "blocking"], env=preload_env(None, HOME=str(tmp_path)),
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_missing_events_dir_is_created_private(tmp_path):
    events_dir = tmp_path / "not" / "yet" / "there"
    r = subprocess.run([sys.executable, str(PROGRAMS), "blocking"], env=preload_env(events_dir),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "netblame" not in r.stderr, r.stderr
    assert oct(events_dir.stat().st_mode & 0o777) == "0o700"
    assert_totals(json.loads(r.stdout.strip().splitlines()[-1]), dump(events_dir))


def test_unwritable_events_dir_turns_off_with_one_line(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    r = subprocess.run([sys.executable, str(PROGRAMS), "blocking"],
                       env=preload_env(tmp_path / "a-file" / "events"), capture_output=True, text=True)
    assert r.returncode == 0, "the program carries on"
    lines = [line for line in r.stderr.splitlines() if line.startswith("netblame:")]
    assert len(lines) == 1 and "no longer recorded" in lines[0]


def test_pytest_session_attributes_events_to_tests(tmp_path):
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    (tmp_path / "test_two.py").write_text(
        "import socket, threading\n"
        "def roundtrip(n):\n"
        "    srv = socket.create_server(('127.0.0.1', 0))\n"
        "    t = threading.Thread(target=lambda: (lambda c: (c.sendall(c.recv(n)), c.close()))(srv.accept()[0]))\n"
        "    t.start()\n"
        "    c = socket.create_connection(srv.getsockname())\n"
        "    c.sendall(b'a' * n)\n"
        "    assert len(c.recv(n)) > 0\n"
        "    t.join(); c.close(); srv.close()\n"
        "def test_alpha():\n"
        "    roundtrip(11)\n"
        "def test_beta():\n"
        "    roundtrip(22)\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_two.py"],
                       cwd=tmp_path, env=preload_env(events_dir), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    events = dump(events_dir)
    sends = [e for e in events if e["kind"] == "send" and e["bytes"] in (11, 22)]
    by_test = {e["bytes"]: e["test"] for e in sends if e["call"] == "send"}
    assert by_test == {11: "test_two.py::test_alpha (call)", 22: "test_two.py::test_beta (call)"}


def test_rust_program_with_wrappers(tmp_path):
    binary = ROOT / "target" / "debug" / "examples" / "wrapped_echo"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: cargo build --workspace --examples")
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    r = subprocess.run([str(binary)], env=dict(os.environ, NETBLAME_EVENTS_DIR=str(events_dir)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    events = dump(events_dir)
    assert moved(events, "send") == 2 * summary["client_sent"]
    assert moved(events, "recv") == 2 * summary["client_received"]
    assert_offsets_contiguous(events)
    assert events[0]["kind"] == "mark" and events[0]["label"] == "start"


def test_reader_on_damaged_logs(tmp_path):
    _, events, events_dir = run_case("blocking", tmp_path)
    log = next(events_dir.glob("*.nbev"))
    data = log.read_bytes().rstrip(b"\0")
    complete = (len(data) - 64) // 64
    cut = tmp_path / "cut.nbev"
    cut.write_bytes(data[: 64 + (complete - 1) * 64 + 50])
    r = subprocess.run([str(netblame_path()), "events", "dump", str(cut)], capture_output=True, text=True)
    assert r.returncode == 0
    assert f"truncated at byte offset {64 + (complete - 1) * 64}" in r.stderr and "cut.nbev" in r.stderr
    assert len(r.stdout.splitlines()) >= (complete - 1) // 2  # opens take two records, strings none
    bad = tmp_path / "bad.nbev"
    bad.write_bytes(b"NOTEVENT" + data[8:])
    r = subprocess.run([str(netblame_path()), "events", "dump", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "wrong magic" in r.stderr and "bad.nbev" in r.stderr
    future = tmp_path / "future.nbev"
    future.write_bytes(data[:8] + b"\x09\x00" + data[10:])
    r = subprocess.run([str(netblame_path()), "events", "dump", str(future)], capture_output=True, text=True)
    assert r.returncode == 1 and "version 9" in r.stderr


def test_jsonl_input_round_trips(tmp_path):
    _, events, _ = run_case("blocking", tmp_path)
    jsonl = tmp_path / "hand.jsonl"
    jsonl.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert dump(jsonl) == events
