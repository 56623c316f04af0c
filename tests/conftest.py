"""Shared helpers for netblame's end-to-end tests (run with `just test`)."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
sys.path.insert(0, str(ROOT / "tests" / "testbed"))


def netblame_path():
    path = Path(os.environ.get("NETBLAME_BIN", ROOT / "target" / "debug" / "netblame"))
    if not path.exists():
        pytest.fail(f"{path} is missing: build it first (cargo build, or just test)")
    return path


@pytest.fixture(scope="session")
def netblame():
    """Runs the netblame binary; returns the CompletedProcess."""
    path = netblame_path()

    def run(*args, check=False, **kw):
        return subprocess.run([str(path), *map(str, args)], text=True, capture_output=True, check=check, **kw)

    return run


def need_root(what):
    """Root-only tests fail loudly where root is required (CI), and skip elsewhere."""
    if os.geteuid() != 0:
        if os.environ.get("NETBLAME_REQUIRE_ROOT_TESTS") == "1":
            pytest.fail(f"{what} needs root, and NETBLAME_REQUIRE_ROOT_TESTS=1")
        pytest.skip(f"{what} needs root")


def need_tool(name):
    from shutil import which

    if which(name) is None:
        if os.environ.get("NETBLAME_REQUIRE_ROOT_TESTS") == "1":
            pytest.fail(f"{name} is not installed, and NETBLAME_REQUIRE_ROOT_TESTS=1")
        pytest.skip(f"{name} is not installed")


def truth_of(capture: Path):
    stem = capture.name.rsplit(".", 1)[0]
    return json.loads((capture.parent / f"{stem}.truth.json").read_text())


def flows_json(netblame, capture):
    r = netblame("flows", "--json", capture)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def by_direction(doc):
    """Flow rows keyed like tcptrace_ref: 'src:port>dst:port'."""
    return {f"{r['src_addr']}:{r['src_port']}>{r['dst_addr']}:{r['dst_port']}": r for r in doc["flows"]}


@pytest.fixture
def netns():
    """A private network namespace with lo up (MTU 1500), deleted afterwards."""
    need_root("live capture in a network namespace")
    name = f"nbt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up", "mtu", "1500"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def drop_first_segment(ns, sport, min_len):
    """nftables in `ns` drops, after capture (input hook), the first segment from `sport`
    longer than `min_len`: it is retransmitted."""
    need_tool("nft")
    rules = ("add table inet nbdrop\n"
             "add chain inet nbdrop in { type filter hook input priority 0; }\n"
             f"add rule inet nbdrop in tcp sport {sport} meta length > {min_len} numgen inc mod 1000 == 0 counter drop\n")
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True)
