"""netblame as an attacker and a careless user would try it: a library planted by another user,
bad inputs that must say what is wrong, a full disk, netblame killed with SIGKILL mid-run, two runs
at once, and a soak of a million socket calls."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, need_root, need_tool, netblame_path

NOBODY = 65534
PRELOAD = ROOT / "target" / "debug" / "libnetblame_preload.so"

PLANTED_C = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void) {
    int fd = open(MARKER, O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd >= 0) { write(fd, "loaded\n", 7); close(fd); }
}
"""


def nb(*args, ns=None, env=None, timeout=180, **kw):
    cmd = [str(netblame_path()), *map(str, args)]
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    return subprocess.run(cmd, text=True, capture_output=True, timeout=timeout, env=env, **kw)


@pytest.fixture
def shared_dir():
    """Makes folders outside pytest's private tmp, so that other uids can reach them; removes
    them afterwards."""
    made = []

    def make(prefix, mode=0o1777):
        d = Path(tempfile.mkdtemp(prefix=prefix))
        os.chmod(d, mode)
        made.append(d)
        return d

    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


# Starts the command from a small process: a child's peak RSS counts what it had before exec,
# and a child forked from pytest starts with pytest's (pandas and polars loaded) memory.
MEASURE = r"""
import json, os, resource, subprocess, sys, time
start = time.monotonic()
p = subprocess.Popen(sys.argv[2:])
print(p.pid, flush=True)
_, status, usage = os.wait4(p.pid, 0)
json.dump({"code": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss,
           "seconds": time.monotonic() - start}, open(sys.argv[1], "w"))
"""


def run_measured(cmd, watch=None, **kw):
    """Runs `cmd` to the end, with `watch(pid)` in a thread meanwhile; returns (exit code,
    stdout, stderr, peak RSS in kB of it and the children it waited for, seconds)."""
    with tempfile.TemporaryDirectory() as d:
        result = Path(d) / "result.json"
        p = subprocess.Popen([sys.executable, "-S", "-c", MEASURE, str(result), *cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, **kw)
        pid = int(p.stdout.readline())
        if watch:
            threading.Thread(target=watch, args=(pid,), daemon=True).start()
        out, err = p.communicate()
        m = json.loads(result.read_text())
        return m["code"], out, err, m["maxrss_kb"], m["seconds"]


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def as_nobody(path):
    os.chown(path, NOBODY, NOBODY)
    return path


@pytest.fixture
def planted(shared_dir):
    """A library whose constructor appends to a marker file, and the marker's path."""
    need_tool("gcc")
    work = shared_dir("nb-planted-")
    marker = work / "marker"
    src = work / "planted.c"
    src.write_text(PLANTED_C)
    so = work / "planted.so"
    subprocess.run(["gcc", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(so), str(src)], check=True)
    # The control: the planted library does run when it is loaded.
    subprocess.run(["true"], env=dict(os.environ, LD_PRELOAD=str(so)), check=True)
    assert marker.read_text() == "loaded\n"
    marker.unlink()
    return so, marker, work


def embedded_interposer(netns, tmp_path):
    """The library netblame carries, as the command sees it in its run directory."""
    out = tmp_path / "probe"
    copy = tmp_path / "embedded.so"
    r = nb("run", "--out", out, "--", "sh", "-c", f'cp "$(dirname "$LD_PRELOAD")/libnetblame_preload.so" {copy}',
           ns=netns)
    assert r.returncode == 0, r.stderr
    assert not (out / "libnetblame_preload.so").exists(), "the library leaves with the command"
    return copy.read_bytes()


def test_a_library_planted_by_another_user_is_never_loaded(netns, tmp_path, planted, shared_dir):
    need_root("planting files as another uid")
    so, marker, work = planted
    embedded = embedded_interposer(netns, tmp_path)
    # Where netblame used to look (and would still look, were it careless): the temporary folder,
    # with the name and exact length of the library it carries.
    crafted = so.read_bytes().ljust(len(embedded), b"\0")
    name = f"netblame-preload-0.1.0-{fnv1a(embedded):016x}.so"
    attacker_tmp = as_nobody(shared_dir("nb-attacker-tmp-", 0o755))
    for folder in (Path(tempfile.gettempdir()), attacker_tmp):
        p = folder / name
        p.write_bytes(crafted)
        as_nobody(p)
    try:
        env = dict(os.environ, TMPDIR=str(attacker_tmp))
        program = [sys.executable, "-c", "import socket; s = socket.create_server(('127.0.0.1', 0)); "
                   "c = socket.create_connection(s.getsockname()); c.sendall(b'x')"]
        r = nb("run", "--out", tmp_path / "ok", "--", *program, ns=netns, env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads((tmp_path / "ok" / "manifest.json").read_text())["events"] > 0, \
            "netblame's own interposer recorded the program"

        # A run directory the attacker made beforehand (empty, theirs).
        theirs = as_nobody(shared_dir("nb-theirs-", 0o777))
        r = nb("run", "--out", theirs, "--", "true", ns=netns)
        assert r.returncode == 2 and f"belongs to uid {NOBODY}" in r.stderr, r.stderr
        assert theirs.exists() and list(theirs.iterdir()) == []

        # A run directory under a folder the attacker owns (they could swap it mid-run).
        parent = as_nobody(shared_dir("nb-parent-", 0o755))
        r = nb("run", "--out", parent / "run", "--", "true", ns=netns)
        assert r.returncode == 2 and f"belongs to uid {NOBODY}" in r.stderr, r.stderr
        assert not (parent / "run").exists(), "nothing half-written"

        # Under a folder anyone may write without the sticky bit.
        open_dir = shared_dir("nb-open-", 0o777)
        r = nb("run", "--out", open_dir / "run", "--", "true", ns=netns)
        assert r.returncode == 2 and "writable by other users" in r.stderr, r.stderr

        # NETBLAME_PRELOAD naming the attacker's file, or a file in a folder they can write.
        theirs_so = attacker_tmp / "theirs.so"
        shutil.copy(so, theirs_so)
        as_nobody(theirs_so)
        mine_in_open = open_dir / "mine.so"
        shutil.copy(so, mine_in_open)
        for lib, why in ((theirs_so, f"belongs to uid {NOBODY}"), (mine_in_open, "writable by other users")):
            out = tmp_path / f"override-{lib.name}"
            r = nb("run", "--out", out, "--", "true", ns=netns, env=dict(os.environ, NETBLAME_PRELOAD=str(lib)))
            assert r.returncode == 1 and "NETBLAME_PRELOAD" in r.stderr and why in r.stderr, r.stderr
            assert not out.exists()

        # A sticky shared folder such as /tmp is fine: others cannot move what netblame makes there.
        sticky = shared_dir("nb-sticky-", 0o1777)
        r = nb("run", "--out", sticky / "run", "--", "true", ns=netns)
        assert r.returncode == 0, r.stderr
        assert not marker.exists(), "a planted library was loaded"
    finally:
        (Path(tempfile.gettempdir()) / name).unlink(missing_ok=True)


def test_events_dump_and_analyze_read_a_run_directory(tmp_path):
    demo = ROOT / "fixtures" / "demo-run"
    whole = nb("events", "dump", demo)
    part = nb("events", "dump", demo / "events")
    assert whole.returncode == 0 and whole.stdout == part.stdout and whole.stdout.count("\n") > 10
    r = nb("analyze", "--pcap", demo / "capture.pcap", "--events", demo)
    assert r.returncode == 0 and "reads with data" in r.stdout, r.stderr


@pytest.mark.parametrize("command", [["events", "dump"], ["analyze", "--pcap", ROOT / "fixtures" / "veth.pcap",
                                                          "--events"]])
def test_a_folder_without_event_logs_is_an_error_that_says_where_it_looked(tmp_path, command):
    (tmp_path / "events").mkdir()
    (tmp_path / "notes.txt").write_text("not an event log")
    r = nb(*command, tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    assert f"{tmp_path}: no event logs (*.nbev or *.jsonl) in it or in its events/ folder" in r.stderr


def test_a_corrupt_event_log_costs_what_it_holds(tmp_path):
    """The 3.7 KB log of the issue, with one string record claiming 4 GiB: bounded, and said."""
    for name in ("str-claims-4gib", "every-record-a-4gib-string"):
        bomb = ROOT / "fuzz" / "regressions" / "event_log" / name
        code, out, err, peak_kb, took = run_measured([str(netblame_path()), "events", "dump", str(bomb)])
        assert code == 0, err
        assert took < 5 and peak_kb < 64 * 1024, f"{name}: {took:.1f} s, {peak_kb} kB"


def test_a_full_disk_drops_later_events_and_the_report_says_from_when(netns, tmp_path):
    need_root("mounting a small tmpfs")
    full = tmp_path / "small"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(full)], check=True)
    try:
        cap = tmp_path / "cap.pcap"
        capture = subprocess.Popen(["ip", "netns", "exec", netns, str(netblame_path()), "capture", "-w", str(cap),
                                    "--port", "5077"], stderr=subprocess.PIPE, text=True)
        assert "capturing on lo" in capture.stderr.readline()
        program = ("import socket\n"
                   "srv = socket.create_server(('127.0.0.1', 5077)); c = socket.create_connection(('127.0.0.1', 5077))\n"
                   "a, _ = srv.accept()\n"
                   "for i in range(20000):\n"
                   "    c.send(b'x'); a.recv(1); a.send(b'y'); c.recv(1)\n"
                   "print('done', 4 * 20000)\n")
        env = dict(os.environ, LD_PRELOAD=str(PRELOAD), NETBLAME_EVENTS_DIR=str(full / "events"))
        r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", program], env=env,
                           capture_output=True, text=True, timeout=120)
        capture.send_signal(signal.SIGINT)
        capture.communicate(timeout=30)
        assert r.returncode == 0 and r.stdout == "done 80000\n", "the program runs on unchanged"
        assert "the event log was full" in r.stderr
        dump = nb("events", "dump", full / "events")
        assert dump.returncode == 0
        recorded = dump.stdout.count('"kind":"send"') + dump.stdout.count('"kind":"recv"')
        assert 1000 < recorded < 80000
        assert "calls not recorded from " in dump.stderr and " ns on (the events folder" in dump.stderr
        missing = int(dump.stderr.split(" calls not recorded from")[0].rsplit(" ", 1)[1])
        assert recorded + missing >= 80000, (recorded, missing)
        a = nb("analyze", "--pcap", cap, "--events", full / "events")
        assert a.returncode == 0, a.stderr
        assert "events are incomplete;" in a.stdout
        assert "on (the events folder's disk was full" in a.stdout
        assert f"calls not recorded from {time.strftime('%Y-%m-%d', time.gmtime())}" in a.stdout
    finally:
        subprocess.run(["umount", str(full)], check=False)


KILLED_PROGRAM = r"""
import os, socket, sys, time
done = sys.argv[1]
srv = socket.create_server(('127.0.0.1', 0)); c = socket.create_connection(srv.getsockname())
a, _ = srv.accept()
print(os.getpid(), flush=True)
end = time.monotonic() + 3
n = 0
while time.monotonic() < end:
    c.sendall(b'q' * 100); a.recv(100); a.sendall(b'r' * 100); c.recv(100); n += 1
    time.sleep(0.001)
open(done, 'w').write(str(n))
"""


def test_netblame_killed_with_sigkill_leaves_the_command_running_and_readable_results(netns, tmp_path):
    out = tmp_path / "run"
    done = tmp_path / "done"
    p = subprocess.Popen(["ip", "netns", "exec", netns, str(netblame_path()), "run", "--out", str(out), "--",
                          sys.executable, "-c", KILLED_PROGRAM, str(done)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = int(p.stdout.readline())
    time.sleep(1.0)
    os.kill(p.pid, signal.SIGKILL)  # `ip netns exec` execs netblame: p.pid is netblame's
    p.communicate(timeout=30)
    states = set()
    deadline = time.monotonic() + 20
    while not done.exists() and time.monotonic() < deadline:
        try:
            states.add(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0])
        except FileNotFoundError:
            break
        time.sleep(0.05)
    assert done.exists(), "the command finished its work on its own"
    assert "T" not in states and "t" not in states, f"the command was stopped: {states}"
    rounds = int(done.read_text())
    assert rounds > 100
    f = nb("flows", "--json", out / "capture.pcap")
    assert f.returncode == 0, f.stderr
    assert json.loads(f.stdout)["capture"]["frames"] > 100, "what was captured before the kill is there"
    d = nb("events", "dump", out)
    assert d.returncode == 0, d.stderr
    sends = d.stdout.count('"kind":"send"')
    assert sends >= 2 * rounds, "the command kept recording after netblame died, to the end"
    a = nb("analyze", out)
    assert a.returncode == 0 and "reads with data" in a.stdout, a.stderr
    # No capture of netblame's is left running.
    assert str(out) not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


TWO_RUNS_PROGRAM = r"""
import socket, sys, time
srv = socket.create_server(('127.0.0.1', 0)); c = socket.create_connection(srv.getsockname())
a, _ = srv.accept()
for i in range(50):
    c.sendall(b'q' * 200); a.recv(200)
    time.sleep(0.01)
    a.sendall(b'r' * 300); c.recv(300)
print('ok')
"""


def test_two_runs_at_once_do_not_interfere(netns, tmp_path):
    results = {}

    def one(name):
        results[name] = nb("run", "--out", tmp_path / name, "--", sys.executable, "-c", TWO_RUNS_PROGRAM, ns=netns)

    threads = [threading.Thread(target=one, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pids = {}
    for name, r in results.items():
        assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
        events = [json.loads(line) for line in nb("events", "dump", tmp_path / name).stdout.splitlines()]
        pids[name] = {e["pid"] for e in events}
        assert sum(e["kind"] == "recv" and e["bytes"] > 0 for e in events) == 100
        report = (tmp_path / name / "report.txt").read_text()
        # The client's 50 reads, and the server's 50 reads of the next request: idle, but for
        # any whose wakeup reached the threshold on a loaded machine.
        with_data, idle = reads_and_idle(report)
        assert with_data + idle == 100 and with_data >= 50, (with_data, idle)
        assert "not in the capture" not in report, "every connection of the run was captured"
    assert pids["a"].isdisjoint(pids["b"]), "each run recorded only its own command"


SOAK_PROGRAM = r"""
import socket, sys
rounds = int(sys.argv[1])
srv = socket.create_server(('127.0.0.1', 0)); c = socket.create_connection(srv.getsockname())
a, _ = srv.accept()
calls = 0
for i in range(rounds):
    c.send(b'q'); a.recv(1); a.send(b'r'); c.recv(1)
    calls += 4
print(calls, flush=True)
open(sys.argv[2], 'w').write('done')
"""


def reads_and_idle(report):
    """The report's count of reads with data (blamed) and of idle reads."""
    with_data = int(re.search(r"(\d+) reads with data", report).group(1))
    idle = re.search(r"idle: (\d+) reads", report)
    return with_data, int(idle.group(1)) if idle else 0


def rss_kb(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise KeyError(field)


def test_soak_a_million_socket_calls(netns, tmp_path):
    """Every call is recorded; netblame's memory while the command runs stays flat, and the
    analysis's peak is stated (and bounded)."""
    out = tmp_path / "run"
    done = tmp_path / "done"
    rounds = 250_000
    samples = []
    during_run = []

    def sample(pid):
        # `ip netns exec` execs netblame: the pid is netblame's.
        while not done.exists():
            try:
                samples.append(rss_kb(pid, "VmRSS:"))
                during_run[:] = [rss_kb(pid, "VmHWM:")]
            except (FileNotFoundError, KeyError, ProcessLookupError):
                return
            time.sleep(0.2)

    code, stdout, stderr, peak_kb, took = run_measured(
        ["ip", "netns", "exec", netns, str(netblame_path()), "run", "--out", str(out), "--",
         sys.executable, "-c", SOAK_PROGRAM, str(rounds), str(done)], watch=sample)
    assert code == 0, stderr
    during_run_kb = during_run[0]
    assert int(stdout) == 4 * rounds
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["events"] >= 4 * rounds, "every call recorded"
    report = (out / "report.txt").read_text()
    # The client's reads, and the accepted side's reads of each next request: idle, but for a
    # few whose wakeup reached the threshold on a loaded machine.
    with_data, idle = reads_and_idle(report)
    assert with_data + idle == 2 * rounds and idle >= rounds * 9 // 10, (with_data, idle)
    assert "incomplete" not in report
    # Flat while the command runs: what the capture and the event logs hold is on disk, not in
    # netblame (libpcap's ring and the write buffer are fixed).
    steady = samples[len(samples) // 4:]
    assert len(steady) > 5, "the run lasted long enough to sample"
    growth_kb = max(steady) - min(steady)
    print(f"\nsoak: {4 * rounds} calls, {manifest['packets_captured']} packets; netblame RSS while the command "
          f"ran {min(steady) // 1024}-{max(steady) // 1024} MiB (peak {during_run_kb // 1024} MiB); "
          f"peak with the analysis {peak_kb // 1024} MiB; {took:.0f} s in all")
    assert growth_kb < 16 * 1024, f"netblame grew {growth_kb} kB while the command ran"
    assert during_run_kb < 200 * 1024
    assert peak_kb < 1024 * 1024, "the analysis of 1 M calls stays under 1 GiB"
