"""`netblame capture` and `netblame run` end to end (root: live capture, network namespaces)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, need_root, need_tool, netblame_path

PROGRAMS = ROOT / "tests" / "programs" / "socket_programs.py"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def nb(*args, ns=None, **kw):
    cmd = [str(netblame_path()), *map(str, args)]
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    return subprocess.run(cmd, text=True, capture_output=True, timeout=120, **kw)


def test_capture_is_complete_to_the_last_fin(netns, tmp_path):
    """Every packet the workload's kernel sent is in the capture, FINs included, although the
    capture is stopped right after the workload ends."""
    need_tool("nft")
    rules = ("add table inet count\n"
             "add chain inet count out { type filter hook output priority 0; }\n"
             "add rule inet count out tcp dport 5001 counter\n"
             "add rule inet count out tcp sport 5001 counter\n")
    sh("ip", "netns", "exec", netns, "nft", "-f", "-", input=rules)
    cap = tmp_path / "cap.pcap"
    p = subprocess.Popen(["ip", "netns", "exec", netns, str(netblame_path()), "capture", "-w", str(cap),
                          "--port", "5001"], stderr=subprocess.PIPE, text=True)
    assert "capturing on lo" in p.stderr.readline()
    sh("ip", "netns", "exec", netns, sys.executable, str(ROOT / "tests/testbed/workload.py"),
       "--conns", "3", "--rounds", "30", "--port", "5001")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    counters = json.loads(sh("ip", "netns", "exec", netns, "nft", "-j", "list", "table", "inet", "count").stdout)
    sent = sum(e["counter"]["packets"] for item in counters["nftables"] if "rule" in item
               for e in item["rule"]["expr"] if "counter" in e)
    doc = flows(cap)
    assert doc["capture"]["frames"] == sent, f"captured {doc['capture']['frames']}, the kernel sent {sent}"
    assert f"{sent} packets captured" in err and "0 dropped by the kernel" in err
    assert all(r["fin_packets"] >= 1 for r in doc["flows"]), "each direction's FIN was captured"
    assert oct(cap.stat().st_mode & 0o777) == "0o600"


def test_capture_pcapng_and_tcpdump_backend(netns, tmp_path):
    need_tool("tcpdump")
    for backend, fmt in (("libpcap", "pcapng"), ("tcpdump", "pcap"), ("tcpdump", "pcapng")):
        cap = tmp_path / f"{backend}.{fmt}"
        p = subprocess.Popen(["ip", "netns", "exec", netns, str(netblame_path()), "capture", "-w", str(cap),
                              "--port", "5001", "--backend", backend, "--format", fmt, "--duration", "30"],
                             stderr=subprocess.PIPE, text=True)
        assert "capturing on lo" in p.stderr.readline()
        sh("ip", "netns", "exec", netns, sys.executable, str(ROOT / "tests/testbed/workload.py"),
           "--conns", "1", "--rounds", "5", "--port", "5001")
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        r = subprocess.run([str(netblame_path()), "flows", "--json", str(cap)], text=True, capture_output=True)
        doc = json.loads(r.stdout)
        assert len(doc["flows"]) == 2 and doc["capture"]["frames"] > 20, (backend, fmt)
        if fmt == "pcapng":
            assert doc["capture"]["kernel_drops"] == 0, "pcapng carries the drop counter"


def flows(capture):
    r = subprocess.run([str(netblame_path()), "flows", "--json", str(capture)], text=True, capture_output=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def run_in(ns, tmp_path, *cmd, extra=()):
    out = tmp_path / "run"
    return nb("run", "--out", out, *extra, "--", *cmd, ns=ns), out


@pytest.mark.parametrize("cmd, code", [
    (["true"], 0),
    (["sh", "-c", "exit 7"], 7),
    (["sh", "-c", "kill -9 $$"], 128 + 9),
])
def test_run_passes_exit_status_through(netns, tmp_path, cmd, code):
    r, out = run_in(netns, tmp_path, *cmd)
    assert r.returncode == code, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == cmd
    assert (out / "capture.pcap").exists()


def test_run_python_leaves_capture_and_events_of_the_same_connections(netns, tmp_path):
    r, out = run_in(netns, tmp_path, sys.executable, str(PROGRAMS), "blocking")
    assert r.returncode == 0, r.stderr
    assert "only loopback traffic was captured" in r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kernel_drops"] == 0 and manifest["packets_captured"] > 0 and manifest["events"] > 0
    for key in ("start", "end"):
        assert manifest[key]["realtime_ns"] > 1_700_000_000 * 10**9 and manifest[key]["monotonic_ns"] > 0
    events = [json.loads(line) for line in
              subprocess.run([str(netblame_path()), "events", "dump", str(out / "events")],
                             capture_output=True, text=True, check=True).stdout.splitlines()]
    opened = {(e["local"], e["peer"]) for e in events if e["kind"] == "open"}
    doc = flows(out / "capture.pcap")

    def ep(addr, port):
        return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"

    captured = {(ep(f["src_addr"], f["src_port"]), ep(f["dst_addr"], f["dst_port"])) for f in doc["flows"]}
    assert opened and opened <= captured, "every recorded connection is in the capture"
    for p in (out, out / "events", out / "capture.pcap", out / "manifest.json"):
        assert p.stat().st_mode & 0o077 == 0, f"{p} is private"


def test_sigint_reaches_the_command_and_leaves_valid_results(netns, tmp_path):
    out = tmp_path / "run"
    script = ("import signal, socket, sys, time\n"
              "signal.signal(signal.SIGINT, lambda *a: sys.exit(5))\n"
              "srv = socket.create_server(('127.0.0.1', 0)); c = socket.create_connection(srv.getsockname())\n"
              "a, _ = srv.accept()\n"
              "print('ready', flush=True)\n"
              "while True:\n"
              "    c.sendall(b'x' * 100); a.recv(100); time.sleep(0.01)\n")
    p = subprocess.Popen(["ip", "netns", "exec", netns, str(netblame_path()), "run", "--out", str(out), "--",
                          sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    # `ip netns exec` execs netblame: p.pid is netblame's pid.
    os.kill(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 5, err
    r = subprocess.run([str(netblame_path()), "events", "dump", str(out / "events")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    sends = [json.loads(line) for line in r.stdout.splitlines() if '"kind":"send"' in line]
    assert len(sends) >= 10
    f = subprocess.run([str(netblame_path()), "flows", "--json", str(out / "capture.pcap")], capture_output=True,
                       text=True)
    assert f.returncode == 0 and json.loads(f.stdout)["capture"]["frames"] > 0


def test_command_that_leaves_a_server_running_does_not_hold_the_run(netns, tmp_path):
    start = time.monotonic()
    r, out = run_in(netns, tmp_path, "sh", "-c",
                    f"{sys.executable} -c 'import socket,time; s=socket.create_server((\"127.0.0.1\", 0)); "
                    f"time.sleep(30)' >/dev/null 2>&1 & echo started")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - start < 10, "netblame returned while the server still runs"
    subprocess.run(["pkill", "-f", "time.sleep\\(30\\)"], check=False)


def test_bad_invocations(netns, tmp_path):
    r = nb("run", ns=netns)
    assert r.returncode == 2
    r = nb("run", "--out", tmp_path / "a", "--iface", "nosuchif0", "--", "true", ns=netns)
    assert r.returncode == 2 and "nosuchif0" in r.stderr
    assert not (tmp_path / "a").exists(), "nothing half-written"
    r = nb("run", "--out", tmp_path / "b", "--filter", "tcp and and", "--", "true", ns=netns)
    assert r.returncode == 2 and "invalid capture filter" in r.stderr
    assert not (tmp_path / "b").exists()
    r = nb("run", "--out", "/proc/netblame-cannot-write", "--", "true", ns=netns)
    assert r.returncode == 1 and "cannot create the run directory" in r.stderr
    r = nb("run", "--out", tmp_path / "c", "--", "/nonexistent/program", ns=netns)
    assert r.returncode == 2 and "cannot run" in r.stderr and not (tmp_path / "c").exists()


def test_without_capture_privileges_exit_3_and_nothing_created(tmp_path):
    need_root("dropping privileges with setpriv")
    need_tool("setpriv")
    import tempfile
    base = tempfile.mkdtemp(prefix="netblame-priv-")
    os.chmod(base, 0o777)
    out = os.path.join(base, "x")
    r = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--inh-caps=-all",
                        str(netblame_path()), "run", "--out", str(out), "--", "true"],
                       capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert "CAP_NET_RAW" in r.stderr and "sudo" in r.stderr and "setcap" in r.stderr
    assert not os.path.exists(out)
    shutil.rmtree(base)


def test_under_sudo_the_command_runs_as_the_invoking_user(netns, tmp_path):
    import tempfile
    base = tempfile.mkdtemp(prefix="netblame-sudo-")
    os.chmod(base, 0o755)
    out = __import__("pathlib").Path(base) / "run"
    env = dict(os.environ, SUDO_UID="65534", SUDO_GID="65534")
    program = ("import os, socket, subprocess, sys\n"
               "print(os.getuid(), flush=True)\n"
               "s = socket.create_server(('127.0.0.1', 0)); c = socket.create_connection(s.getsockname())\n"
               "c.sendall(b'x'); s.accept()[0].recv(1)\n"
               "subprocess.run([sys.executable, '-c', 'import socket; socket.create_connection(%r).sendall(b\"y\")'"
               " % (s.getsockname(),)], check=True)\n")
    # A Python the other uid may run (pytest's own may live under /root).
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable
    r = subprocess.run(["ip", "netns", "exec", netns, str(netblame_path()), "run", "--out", str(out), "--",
                        python, "-c", program], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "65534"
    assert "cannot be preloaded" not in r.stderr, "the library is readable by the sudo user"
    for p in (out, out / "events", out / "capture.pcap", out / "manifest.json"):
        assert p.stat().st_uid == 65534, p
    events = subprocess.run([str(netblame_path()), "events", "dump", str(out)], capture_output=True, text=True)
    pids = {json.loads(line)["pid"] for line in events.stdout.splitlines() if '"kind":"send"' in line}
    assert len(pids) == 2, "the command and the process it started were both recorded"
    shutil.rmtree(base)


def test_installed_binary_outside_the_build_tree_finds_its_interposer(netns, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    installed = bindir / "netblame"
    shutil.copy(netblame_path(), installed)
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("NETBLAME_PRELOAD", "LD_PRELOAD")}
    r = subprocess.run(["ip", "netns", "exec", netns, str(installed), "run", "--out", str(out), "--",
                        sys.executable, str(PROGRAMS), "udp"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["events"] > 0, "the embedded interposer recorded the program"
