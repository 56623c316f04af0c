"""Shared helpers for netblame's end-to-end tests (run with `just test`)."""

import json
import os
import subprocess
import sys
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
