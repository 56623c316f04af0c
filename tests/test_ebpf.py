"""The eBPF recorder (crates/ebpf): programs the LD_PRELOAD interposer cannot reach, a Go
net/http client and server (CGO_ENABLED=0: Go makes its system calls without libc) and a
`gcc -static` C client, recorded from kernel tracepoints under `netblame run` in a private
network namespace, against servers that think 200 ms; `--pid` on a process already running; a
process both recorders see, counted once; and a program the kernel's verifier refuses."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, drop_first_segment, need_root, need_tool, netblame_path
from test_event_loops import MS, PORT, PY_TIMEOUT, SERVER, THINK_MS, assert_peer_slow, first_answer, run_with_server

PROGRAMS = ROOT / "tests" / "programs"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The Go client and server and the static C client, built once."""
    need_root("the eBPF recorder")
    need_tool("go")
    need_tool("gcc")
    out = tmp_path_factory.mktemp("ebpf-programs")
    env = dict(os.environ, CGO_ENABLED="0", GOCACHE=str(out / "gocache"), GOPATH=str(out / "gopath"),
               HOME=str(out), GOFLAGS="-mod=mod", GO111MODULE="off")
    progs = {}
    for name in ("get", "serve"):
        progs[f"go-{name}"] = out / f"go-{name}"
        subprocess.run(["go", "build", "-o", str(progs[f"go-{name}"]), str(PROGRAMS / "go" / f"{name}.go")],
                       env=env, check=True, timeout=300, capture_output=True)
    progs["static-get"] = out / "static-get"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(progs["static-get"]), str(PROGRAMS / "static_get.c")],
                   check=True, timeout=120)
    for p in progs.values():
        kind = subprocess.run(["file", "-b", str(p)], capture_output=True, text=True).stdout
        assert "statically linked" in kind, (p, kind)
    return progs


def report_of(tmp_path):
    return (tmp_path / "run" / "report.txt").read_text()


def test_a_go_client_is_peer_slow(netns, tmp_path, built):
    client_reads, _, report = run_with_server(netns, tmp_path, [built["go-get"], f"http://127.0.0.1:{PORT}/slow"])
    # Go parks the goroutine on EAGAIN; its netpoller's epoll_pwait, on whichever thread, reports
    # the socket ready.
    assert_peer_slow(client_reads, "epoll_pwait")
    assert "recorded by:" in report and "the eBPF recorder: pid" in report, report
    assert "have no recorded socket calls" not in report, report


def test_go_test_with_an_httptest_server(netns, tmp_path, built):
    """`netblame run -- go test ./...`: the toolchain builds the test binary and runs it; its
    httptest server and client share one process and one netpoller, whose waits the server's
    120 ms sleep cuts short. The slow answer's read is timed from the request (its goroutine
    found nothing, EAGAIN, and parked), not from the netpoller's last wait: peer-slow."""
    suite = tmp_path / "svc"
    shutil.copytree(PROGRAMS / "go" / "svc", suite)
    out = tmp_path / "run"
    env = dict(os.environ, CGO_ENABLED="0", GOCACHE=str(tmp_path / "gocache"), HOME=str(tmp_path),
               GOFLAGS="-count=1")
    r = subprocess.run(["ip", "netns", "exec", netns, str(netblame_path()), "run", "--out", str(out), "--",
                        "go", "test", "./..."], cwd=suite, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out / "tables" / "reads.csv") as f:
        reads = [row for row in csv.DictReader(f) if int(row["bytes"]) > 0]
    with open(out / "tables" / "exchanges.csv") as f:
        exchanges = list(csv.DictReader(f))
    slow = max(exchanges, key=lambda e: int(e["total_ns"]))
    assert (slow["request"], slow["verdict"]) == ("GET /slow", "peer-slow"), slow
    answer = max(reads, key=lambda row: int(row["peer_wait_ns"]))
    assert answer["verdict"] == "peer-slow", answer
    assert 118 * MS <= int(answer["peer_wait_ns"]) <= 220 * MS, answer
    assert answer["wait_api"] == "epoll_pwait", answer
    report = (out / "report.txt").read_text()
    assert "the eBPF recorder: pid" in report, report


def test_a_static_c_client_is_peer_slow(netns, tmp_path, built):
    client_reads, _, report = run_with_server(netns, tmp_path, [built["static-get"], str(PORT)])
    # A blocking recv: no readiness wait.
    assert_peer_slow(client_reads, "")
    assert "the eBPF recorder: pid" in report, report


def test_connections_one_after_another_on_the_same_fd_are_told_apart(netns, tmp_path, built):
    """Three connections in turn, each on the fd the last one closed (and often in the memory of
    its socket): the recorder names sockets by inode number, so each is its own connection with
    its own addresses, and each answer joins the capture as peer-slow."""
    client_reads, _, _ = run_with_server(netns, tmp_path, [built["static-get"], str(PORT), "3"])
    flows = sorted({r["flow_id"] for r in client_reads})
    assert len(flows) == 3, client_reads
    assert len({r["fd"] for r in client_reads}) == 1, "the test wants the fd reused"
    for flow in flows:
        assert_peer_slow([r for r in client_reads if r["flow_id"] == flow], "")


def test_mmsg_calls_are_one_event_per_datagram_from_either_recorder(netns, tmp_path):
    """One sendmmsg and one recvmmsg of three datagrams: the eBPF recorder (static build) writes
    what the interposer (dynamic build) writes, an event per datagram with its bytes and its
    buffer's size, and one open per socket."""
    need_tool("gcc")
    seen = {}
    for build, flags in (("dynamic", []), ("static", ["-static"])):
        binary = tmp_path / f"mmsg-{build}"
        subprocess.run(["gcc", *flags, "-O2", "-o", str(binary), str(PROGRAMS / "mmsg_pair.c")], check=True,
                       timeout=120)
        out = tmp_path / f"run-{build}"
        r = subprocess.run(["ip", "netns", "exec", netns, str(netblame_path()), "run", "--out", str(out), "--",
                            str(binary)], capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
        dump = subprocess.run([str(netblame_path()), "events", "dump", str(out / "events")], capture_output=True,
                              text=True, check=True).stdout
        events = [json.loads(line) for line in dump.splitlines()]
        assert {e.get("recorder", "interposer") for e in events} == {"interposer" if build == "dynamic" else "ebpf"}, events
        seen[build] = sorted((e["kind"], e["call"], e["fd"], e["requested"], e["bytes"]) for e in events
                             if e["kind"] in ("open", "send", "recv"))
    assert seen["static"] == seen["dynamic"], seen
    sends = [e for e in seen["static"] if e[0] == "send"]
    recvs = [e for e in seen["static"] if e[0] == "recv"]
    assert [(e[1], e[4]) for e in sends] == [("sendmmsg", 3), ("sendmmsg", 6), ("sendmmsg", 8)], seen
    assert sorted((e[1], e[3], e[4]) for e in recvs) == [("recvmmsg", 64, 3), ("recvmmsg", 64, 6),
                                                          ("recvmmsg", 64, 8)], seen
    assert sum(e[0] == "open" for e in seen["static"]) == 2, seen


def test_a_full_ring_buffer_is_counted_and_reported(netns, tmp_path):
    """netblame stopped (SIGSTOP: a starved supervisor) while a static program makes 200,000
    socket calls into a 1 MiB ring (16,384 records): the calls the ring could not hold are not
    waited for but counted, every call is either recorded or counted, and the run and the report
    say so. (Before, the signal's interrupted wait stopped the recorder, and its logs were lost.)"""
    need_tool("gcc")
    binary = tmp_path / "pingpong"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(binary), str(ROOT / "bench" / "poll_pingpong.c")],
                   check=True, timeout=120)
    iterations = 100_000
    out = tmp_path / "run"
    ready = tmp_path / "ready"
    go = tmp_path / "go"
    script = f'touch {ready}; while [ ! -e {go} ]; do sleep 0.05; done; exec {binary} blocking {iterations}'
    p = subprocess.Popen(["ip", "netns", "exec", netns, str(netblame_path()), "run", "--ebpf", "on",
                          "--ebpf-ring-mib", "1", "--out", str(out), "--", "sh", "-c", script],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGSTOP)
        go.touch()
        time.sleep(3)  # the 200,000 calls take well under a second
        os.kill(p.pid, signal.SIGCONT)
        _, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
    assert p.returncode == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    lost = manifest["ebpf"]["lost_calls"]
    assert lost > 0, (manifest, err)
    assert f"{lost} not recorded (its ring buffer was full: raise --ebpf-ring-mib)" in err, err
    dump = subprocess.run([str(netblame_path()), "events", "dump", str(out / "events")], capture_output=True,
                          text=True, check=True).stdout
    io = [e for e in (json.loads(line) for line in dump.splitlines()) if e["kind"] in ("send", "recv")]
    # Every send and receive is recorded or counted (the connect, accept and closes may be among
    # the counted ones).
    assert 2 * iterations <= len(io) + lost <= 2 * iterations + 4, (len(io), lost)
    report = (out / "report.txt").read_text()
    assert f"{lost} calls not recorded, the first at " in report and "ring buffer was full" in report, report
    # Stopped and continued, the recorder's wait was interrupted: it went on recording.
    assert "cannot write the eBPF recorder's logs" not in err, err


def test_a_go_client_behind_a_lossy_rule_sees_loss(netns, tmp_path, built):
    """nftables drops the server's one-segment answer after capture (input hook): the Go
    client's read waits for the retransmission timer."""
    drop_first_segment(netns, PORT, 400)
    client_reads, _, _ = run_with_server(netns, tmp_path, [built["go-get"], f"http://127.0.0.1:{PORT}/small"])
    r = first_answer(client_reads)
    assert r["verdict"] == "loss", r
    assert int(r["loss_delay_ns"]) >= 150 * MS and int(r["retransmitted_bytes"]) > 0, r
    counter = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "nbdrop"],
                             capture_output=True, text=True, check=True).stdout
    assert "packets 1 " in counter, counter


def test_a_go_servers_request_reads_are_idle(netns, tmp_path, built):
    """A Go HTTP server (eBPF) and a Python client (the interposer) in one run: the server's read
    of the request is `idle` (it waited for its client), the client's read of the answer
    peer-slow."""
    out = tmp_path / "run"
    pidfile = tmp_path / "server.pid"
    script = (f'{built["go-serve"]} {PORT} {THINK_MS} {pidfile} & '
              f'while [ ! -e {pidfile} ]; do sleep 0.05; done; sleep 0.3; '
              f'{sys.executable} -c "$1"; status=$?; kill $(cat {pidfile}); exit $status')
    r = subprocess.run(["ip", "netns", "exec", netns, str(netblame_path()), "run", "--out", str(out), "--",
                        "sh", "-c", script, "sh", PY_TIMEOUT], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    server_pid = pidfile.read_text()
    with open(out / "tables" / "reads.csv") as f:
        reads = [row for row in csv.DictReader(f) if int(row["bytes"]) > 0]
    server = [row for row in reads if row["pid"] == server_pid]
    client = [row for row in reads if row["pid"] != server_pid]
    assert server and client, r.stderr
    request = min(server, key=lambda row: int(row["t_call_ns"]))
    assert request["verdict"] == "idle", request
    assert int(request["peer_wait_ns"]) == 0, request
    answer = first_answer(client)
    assert answer["verdict"] == "peer-slow" and answer["wait_api"] == "poll", answer
    # The server wrote its answer 200 ms after epoll reported the socket readable and writable
    # (edge-triggered, Go's netpoller): it was thinking, not blocked in the write.
    with open(out / "tables" / "sends.csv") as f:
        answers = [row for row in csv.DictReader(f) if row["pid"] == server_pid and int(row["bytes"]) > 0]
    assert answers and all(int(row["send_blocked_ns"]) < 20 * MS for row in answers), answers
    report = (out / "report.txt").read_text()
    assert f"the eBPF recorder: pid {server_pid}" in report, report


def test_pid_records_a_running_python_client(netns, tmp_path):
    """`netblame run --pid` on a Python client started without netblame (so without the
    interposer), connected before netblame started (so the capture lacks the handshake): its slow
    answer is peer-slow, joined by the kernel's sequence numbers, from the eBPF recorder alone."""
    need_root("the eBPF recorder")
    pidfile = tmp_path / "server.pid"
    ns = ["ip", "netns", "exec", netns]
    server = subprocess.Popen([*ns, sys.executable, str(SERVER), str(PORT), str(THINK_MS), str(pidfile)])
    client = None
    try:
        while not pidfile.exists():
            time.sleep(0.05)
        # The client connects now, waits until netblame has started, then asks once.
        connected_then_asks = PY_TIMEOUT.replace("s.sendall(", "import time; time.sleep(1.5); s.sendall(")
        assert connected_then_asks != PY_TIMEOUT
        client = subprocess.Popen([*ns, sys.executable, "-c", connected_then_asks])
        time.sleep(0.3)
        out = tmp_path / "run"
        r = subprocess.run([*ns, str(netblame_path()), "run", "--out", str(out), "--pid", str(client.pid),
                            "--duration", "10"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert client.wait(timeout=10) == 0
        assert f"recording pid {client.pid}" in r.stderr, r.stderr
        with open(out / "tables" / "reads.csv") as f:
            reads = [row for row in csv.DictReader(f) if int(row["bytes"]) > 0 and row["pid"] == str(client.pid)]
        assert reads, r.stderr
        answer = first_answer(reads)
        assert_peer_slow_blocking(answer)
        assert int(answer["segments"]) >= 1, answer
        with open(out / "tables" / "flows.csv") as f:
            flows = list(csv.DictReader(f))
        directions = [f for f in flows if f["flow_id"] == answer["flow_id"]]
        assert len(directions) == 2 and all(d["aligned"] == "false" for d in directions), directions
        report = (out / "report.txt").read_text()
        assert "unaligned" not in report, report
        assert f"the eBPF recorder: pid {client.pid}" in report, report
    finally:
        if client and client.poll() is None:
            client.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def assert_peer_slow_blocking(r):
    """A blocking read of an answer that came THINK_MS after the request."""
    assert r["verdict"] == "peer-slow", r
    assert THINK_MS * MS - 2 * MS <= int(r["peer_wait_ns"]) <= THINK_MS * MS + 100 * MS, r


def test_a_process_both_recorders_see_is_counted_once(netns, tmp_path):
    """A Python client is seen by the interposer and by the eBPF recorder: its reads are counted
    once, as the interposer recorded them (timed over its poll, which the eBPF recorder does not
    see)."""
    need_root("the eBPF recorder")
    client_reads, _, report = run_with_server(netns, tmp_path, [sys.executable, "-c", PY_TIMEOUT])
    assert_peer_slow(client_reads, "poll")
    keys = [(r["pid"], r["t_call_ns"]) for r in client_reads]
    assert len(keys) == len(set(keys)), "a read counted twice"
    events = tmp_path / "run" / "events"
    ebpf_logs = sorted(events.glob("*-bpf.nbev"))
    assert ebpf_logs, "the eBPF recorder wrote no log"
    pid = client_reads[0]["pid"]
    client_logs = [p for p in ebpf_logs if p.name.startswith(f"events-{pid}-")]
    assert client_logs, (pid, ebpf_logs)
    dumped = "".join(subprocess.run([str(netblame_path()), "events", "dump", str(p)], capture_output=True,
                                    text=True, check=True).stdout for p in client_logs)
    assert '"kind":"recv"' in dumped, "the eBPF recorder saw the client's reads too"
    # Every process here was the interposer's (the server too): the report names no recorder.
    assert "recorded by:" not in report, report


def test_a_program_the_verifier_refuses_is_a_clear_error(tmp_path):
    need_root("the eBPF recorder")
    need_tool("clang")
    src = tmp_path / "broken.bpf.c"
    src.write_text('#include "kernel.h"\n#include <bpf/bpf_helpers.h>\n#include <bpf/bpf_tracing.h>\n'
                   'char LICENSE[] SEC("license") = "GPL";\n'
                   'SEC("tp_btf/sys_enter")\nint BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)\n'
                   '{\n    return *(volatile int *)(long)id; /* a number used as a pointer */\n}\n')
    obj = tmp_path / "broken.bpf.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-I",
                    str(ROOT / "crates" / "ebpf" / "bpf"), "-c", str(src), "-o", str(obj)], check=True)
    out = tmp_path / "run"
    env = dict(os.environ, NETBLAME_EBPF_OBJECT=str(obj))
    r = subprocess.run([str(netblame_path()), "run", "--ebpf", "on", "--out", str(out), "--", "true"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "the kernel's verifier refused the eBPF program on_sys_enter: R1 invalid mem access" in lines[0], lines
    log = Path(lines[0].split("libbpf's log: ")[1].rstrip(")"))
    assert "BEGIN PROG LOAD LOG" in log.read_text()
    log.unlink()
    assert not out.exists(), "a run that did not start leaves no directory"
    # In the default mode the run goes on without it, and says so.
    r = subprocess.run([str(netblame_path()), "run", "--out", str(out), "--", "true"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "the eBPF recorder is off (the kernel's verifier refused" in r.stderr, r.stderr
    assert (out / "ebpf-load.log").exists()
