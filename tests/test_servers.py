"""Real servers and their own clients, each in a private network namespace, the server started
and stopped by the test in a temporary folder: redis-cli's `DEBUG SLEEP 0.2` against Debian's
redis-server, and psycopg 3 (sync and async) running `select pg_sleep(0.2)` against a private
`initdb` cluster of Debian's PostgreSQL. The slow request must be named from the capture and be
the peer's 200 ms, in its exchange and in its read (psycopg's async wait slices its epoll_wait
every 100 ms)."""

import contextlib
import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import need_root, need_tool, netblame_path

MS = 1_000_000
NOBODY = 65534
PARTS = ("request_held_ns", "loss_ns", "peer_ns", "transfer_ns", "stall_ns", "program_ns", "wakeup_ns")


def need_module(name):
    """A Python package the test's client needs: CI installs it, so there it fails loudly."""
    try:
        __import__(name)
    except ImportError:
        if os.environ.get("NETBLAME_REQUIRE_ROOT_TESTS") == "1":
            pytest.fail(f"the Python package {name} is missing, and NETBLAME_REQUIRE_ROOT_TESTS=1")
        pytest.skip(f"the Python package {name} is missing")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(netns, port, proc, seconds=20):
    deadline = time.monotonic() + seconds
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=0.5).close()"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited: {proc.stdout.read() if proc.stdout else ''}")
        if subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", probe],
                          capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    pytest.fail(f"nothing listens on {port} after {seconds} s")


@contextlib.contextmanager
def serving(netns, port, argv):
    """Runs a server (`argv`) in the namespace until the block ends; it must listen on `port`."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(netns, port, proc)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def run_client(netns, out, argv, env=None):
    r = subprocess.run(["ip", "netns", "exec", netns, str(netblame_path()), "run", "--out", str(out), "--", *argv],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out / "tables" / "exchanges.csv") as f:
        exchanges = list(csv.DictReader(f))
    with open(out / "tables" / "reads.csv") as f:
        reads = [row for row in csv.DictReader(f) if int(row["bytes"]) > 0]
    for e in exchanges:
        assert sum(int(e[k]) for k in PARTS) == int(e["total_ns"]), e
    return exchanges, reads, (out / "report.txt").read_text()


def assert_the_slow_request(exchanges, reads, protocol, asked):
    slowest = max(exchanges, key=lambda e: int(e["total_ns"]))
    assert slowest["protocol"] == protocol and asked in slowest["request"], slowest
    assert slowest["verdict"] == "peer-slow", slowest
    assert 198 * MS <= int(slowest["peer_ns"]) <= 230 * MS, slowest
    # The read that took the answer waited on the peer too, not only on its last slice.
    answer = max(reads, key=lambda r: int(r["peer_wait_ns"]))
    assert answer["verdict"] == "peer-slow" and int(answer["peer_wait_ns"]) >= 190 * MS, answer
    return slowest


@pytest.fixture
def redis(netns, tmp_path):
    need_root("a server in a network namespace")
    need_tool("redis-server")
    port = free_port()
    work = tmp_path / "redis"
    work.mkdir()
    with serving(netns, port, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(work), "--enable-debug-command", "yes"]):
        yield port


def test_redis_cli_debug_sleep_is_named_and_the_peers(netns, tmp_path, redis):
    exchanges, reads, report = run_client(netns, tmp_path / "run", ["redis-cli", "-p", str(redis), "DEBUG",
                                                                    "SLEEP", "0.2"])
    slowest = assert_the_slow_request(exchanges, reads, "redis", "DEBUG")
    assert slowest["request"].startswith("DEBUG SLEEP"), slowest
    assert '"DEBUG SLEEP' in report and "slowest requests" in report, report
    assert not list(Path(tmp_path).glob("**/dump.rdb")), "redis-server saved nothing"


@pytest.fixture
def postgres(netns):
    """A private cluster (initdb as an unprivileged uid: postgres refuses root) on 127.0.0.1
    inside the namespace, removed afterwards."""
    need_root("a server in a network namespace")
    bindir = Path("/usr/lib/postgresql")
    initdb = shutil.which("initdb") or next(iter(sorted(bindir.glob("*/bin/initdb"))), None)
    if not initdb:
        need_tool("initdb")
    initdb = Path(initdb).resolve()
    postgres_bin = initdb.parent / "postgres"
    work = Path(tempfile.mkdtemp(prefix="nb-pg-"))
    os.chmod(work, 0o755)
    data = work / "data"
    data.mkdir()
    os.chown(data, NOBODY, NOBODY)
    as_nobody = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
    subprocess.run([*as_nobody, str(initdb), "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True, env=dict(os.environ, HOME=str(work)))
    port = free_port()
    try:
        with serving(netns, port, [*as_nobody, str(postgres_bin), "-D", str(data), "-p", str(port), "-k",
                                   str(data), "-c", "listen_addresses=127.0.0.1"]):
            yield port
    finally:
        shutil.rmtree(work, ignore_errors=True)


PSYCOPG_SYNC = """
import sys, psycopg
with psycopg.connect(f"host=127.0.0.1 port={sys.argv[1]} user=postgres dbname=postgres") as conn:
    conn.execute("select pg_sleep(0.2)").fetchall()
"""

PSYCOPG_ASYNC = """
import asyncio, sys, psycopg
async def main():
    conn = await psycopg.AsyncConnection.connect(f"host=127.0.0.1 port={sys.argv[1]} user=postgres dbname=postgres")
    async with conn:
        await (await conn.execute("select pg_sleep(0.2)")).fetchall()
asyncio.run(main())
"""


@pytest.mark.parametrize("mode, program", [("sync", PSYCOPG_SYNC), ("async", PSYCOPG_ASYNC)])
def test_psycopg_pg_sleep_is_named_and_the_peers(netns, tmp_path, postgres, mode, program):
    need_module("psycopg")
    exchanges, reads, report = run_client(netns, tmp_path / "run", [sys.executable, "-c", program, str(postgres)])
    assert_the_slow_request(exchanges, reads, "postgresql", "pg_sleep(0.2)")
    assert "pg_sleep(0.2)" in report, report
