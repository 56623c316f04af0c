"""pytest under `netblame run`: the plugin's test phases (time and outcome), the tests table and
the report's per-test lines, `netblame diff` between two runs (text, markdown, json, exit codes),
runs made without the plugin, pytest-xdist workers, and the runs as one dataset read by DuckDB
with the README's query. The suite runs twice against a server that thinks 50 then 250 ms."""

import csv
import json
import os
import re
import subprocess
import sys
import uuid

import pytest

from conftest import ROOT, need_root, netblame_path

PORT = 7311
MS = 1_000_000

SERVER = """
import os, socket, sys, threading, time
port, think_ms, pidfile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
srv = socket.create_server(("127.0.0.1", port))
def serve(c):
    with c:
        for line in c.makefile("rb"):
            time.sleep(think_ms / 1000)
            c.sendall(b"ok\\n" if line.startswith(b"GET x") else b"no\\n")
open(pidfile + ".tmp", "w").write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

SUITE = """
import os, socket, sys, time
import pytest

PORT = int(os.environ["SUITE_PORT"])

def ask(s, q):
    s.sendall(q + b"\\n")
    return s.recv(100)

@pytest.fixture
def conn():
    s = socket.create_connection(("127.0.0.1", PORT))
    yield s
    s.close()

@pytest.fixture
def broken():
    raise RuntimeError("fixture fails")

def test_query(conn):
    for _ in range(3):
        assert ask(conn, b"GET x") == b"ok\\n"

@pytest.mark.asyncio
async def test_async_query():
    import asyncio
    r, w = await asyncio.open_connection("127.0.0.1", PORT)
    w.write(b"GET x\\n")
    assert await r.readline() == b"ok\\n"
    w.close()
    await w.wait_closed()

def test_compute():
    t = time.perf_counter()
    while time.perf_counter() - t < 0.3:
        pass

def test_fails(conn):
    assert ask(conn, b"GET y") == b"ok\\n"

def test_setup_error(broken):
    pass

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known")
def test_known_bug():
    assert False

def test_paths_given_stay_first():
    # netblame appends its plugin's folder: the command's own PYTHONPATH comes first.
    assert os.environ["PYTHONPATH"].split(":")[0] == "/netblame-test-given-path"
"""


@pytest.fixture(scope="module")
def ns():
    need_root("pytest runs in a network namespace")
    name = f"nbt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("pytest-runs")
    (d / "server.py").write_text(SERVER)
    (d / "suite").mkdir()
    (d / "suite" / "test_app.py").write_text(SUITE)
    return d


def run_suite(ns, work, name, think_ms, *netblame_args, pytest_args=()):
    """`netblame run` of the suite against the server thinking `think_ms`; returns the run dir."""
    out = work / "runs" / name
    pidfile = work / f"{name}.pid"
    script = (f'{sys.executable} {work / "server.py"} {PORT} {think_ms} {pidfile} & '
              f'while [ ! -e {pidfile} ]; do sleep 0.05; done; '
              f'{sys.executable} -m pytest -q -p no:cacheprovider {" ".join(pytest_args)} suite; '
              f'status=$?; kill $(cat {pidfile}); exit $status')
    env = dict(os.environ, SUITE_PORT=str(PORT), PYTHONPATH="/netblame-test-given-path")
    # This test's own PYTEST_CURRENT_TEST would tag the server's calls (a process started from a
    # test inherits it): the run is a user's, started from a shell.
    env.pop("PYTEST_CURRENT_TEST", None)
    r = subprocess.run(["ip", "netns", "exec", ns, str(netblame_path()), "run", "--out", str(out),
                        *netblame_args, "--", "sh", "-c", script],
                       cwd=work, env=env, capture_output=True, text=True, timeout=300)
    # pytest's exit status 1 (tests failed) is the command's, passed on by netblame.
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed, 4 passed, 1 skipped, 1 xfailed, 1 error" in r.stdout, r.stdout
    assert not (out / "python").exists(), "the plugin is removed with the interposer"
    return out


@pytest.fixture(scope="module")
def runs(ns, work):
    dataset = work / "dataset"
    return {
        "a": run_suite(ns, work, "run-1", 50, "--dataset", dataset),
        "b": run_suite(ns, work, "run-2", 250, "--dataset", dataset),
        "dataset": dataset,
    }


def phase_rows(run):
    with open(run / "tables" / "tests.csv") as f:
        return {(r["test"].split("::")[-1], r["phase"]): r for r in csv.DictReader(f)}


def diff(*args):
    return subprocess.run([str(netblame_path()), "diff", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("run, think", [("a", 50), ("b", 250)])
def test_each_phase_has_its_time_outcome_and_time_outside_sockets(runs, run, think):
    t = phase_rows(runs[run])
    outcomes = {k: r["outcome"] for k, r in t.items()}
    assert outcomes[("test_query", "call")] == "passed"
    assert outcomes[("test_fails", "call")] == "failed"
    assert outcomes[("test_setup_error", "setup")] == "error"
    assert outcomes[("test_skipped", "setup")] == "skipped"
    assert outcomes[("test_known_bug", "call")] == "xfailed"
    assert outcomes[("test_paths_given_stay_first", "call")] == "passed"
    # pytest-asyncio's test: its one request, waited for in epoll, is the server's thinking.
    aq = t[("test_async_query", "call")]
    assert aq["outcome"] == "passed" and aq["requests"] == "1", aq
    assert think * MS - 2 * MS <= int(aq["peer_wait_ns"]) <= int(aq["wall_ns"]), aq
    assert ("test_setup_error", "call") not in t, "pytest runs no call after a setup error"
    for r in t.values():
        wall, socket_ns, outside = int(r["wall_ns"]), int(r["socket_ns"]), int(r["outside_ns"])
        assert 0 <= socket_ns <= wall and outside == wall - socket_ns, r
    # A test with no socket call is a row: its 300 ms of computing are all outside sockets.
    compute = t[("test_compute", "call")]
    assert compute["reads"] == "0" and compute["socket_ns"] == "0", compute
    assert 300 * MS <= int(compute["wall_ns"]) <= 500 * MS, compute
    # Three requests to the server: its thinking is the peer's, the rest is small.
    query = t[("test_query", "call")]
    wall, peer = int(query["wall_ns"]), int(query["peer_wait_ns"])
    assert query["requests"] == "3" and query["reads"] == "3", query
    assert 3 * think * MS - 3 * MS <= peer <= wall, query
    assert int(query["outside_ns"]) < 50 * MS, query
    # The fixture's connect is the setup's.
    assert t[("test_query", "setup")]["connects"] == "1"


def test_report_says_per_test_where_the_wall_time_went(runs):
    report = (runs["b"] / "report.txt").read_text()
    section = report.split("\nper test (slowest first):\n")[1].split("\nper connection")[0]
    line = re.search(r"^  suite/test_app.py::test_query \(call\) ([\d.]+) ms, passed: ([\d.]+) ms waiting on "
                     rf"the peer \(3 requests to 127.0.0.1:{PORT}\), [\d.]+ (?:ns|µs|ms) network, .*"
                     r"[\d.]+ (?:ns|µs|ms) outside sockets$", section, re.M)
    assert line, section
    assert float(line[1]) >= 750 and float(line[2]) >= 747, line[0]
    assert re.search(r"^  suite/test_app.py::test_compute \(call\) 3\d\d\.\d ms, passed: 3\d\d\.\d ms outside "
                     r"sockets$", section, re.M), section
    assert re.search(r"test_fails \(call\) [\d.]+ ms, failed: ", section), section
    # The slowest first: the 750 ms test before the 300 ms one.
    assert section.index("test_query (call)") < section.index("test_compute (call)")


def test_diff_names_what_got_slower_and_why(runs):
    r = diff(runs["a"], runs["b"], "--min-change", 50)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "compared on each test phase's own time" in out, out
    slower = out.split("\nslower (")[1].split("\n\n")[0]
    lines = slower.splitlines()[1:]
    # Biggest first: three requests 200 ms slower each, then the two tests of one request each
    # (in either order); the computing test is not there.
    calls = [re.search(r"::(\w+) \(call\)", line)[1] for line in lines if "(call)" in line]
    assert calls[0] == "test_query" and set(calls[1:]) == {"test_fails", "test_async_query"}, slower
    assert "test_compute" not in slower, slower
    change = re.search(r"\+([\d.]+) ms\s+suite/test_app.py::test_query \(call\)\s+[\d.]+ ms -> [\d.]+ ms: "
                       r"peer \+([\d.]+) ms", lines[0])
    assert change and float(change[1]) >= 590 and float(change[2]) >= 590, lines[0]
    assert re.search(r"\d+ test phases in both runs: \d+ slower", out), out
    # The reverse direction: faster.
    back = diff(runs["b"], runs["a"], "--min-change", 50)
    assert back.returncode == 0 and "test_query (call)" in back.stdout.split("\nfaster (")[1], back.stdout


def test_diff_fail_slower_gates_a_ci_step(runs):
    assert diff(runs["a"], runs["b"], "--fail-slower", 100).returncode == 1
    # The slow-down is ~600 ms: a higher limit passes, and so does a run that got faster.
    assert diff(runs["a"], runs["b"], "--fail-slower", 5000).returncode == 0
    assert diff(runs["b"], runs["a"], "--fail-slower", 100).returncode == 0
    missing = diff(runs["a"], runs["a"].parent / "no-such-run", "--fail-slower", 100)
    assert missing.returncode == 2 and "not a run directory" in missing.stderr, missing.stderr
    assert diff(runs["a"], runs["b"], "--fail-slower", -1).returncode == 2


def test_diff_as_markdown_and_json(runs):
    md = diff(runs["a"], runs["b"], "--format", "markdown", "--min-change", 50)
    assert md.returncode == 0, md.stderr
    assert "| test | phase | before | after | change | where |" in md.stdout, md.stdout
    row = next(line for line in md.stdout.splitlines() if "test_query`" in line)
    assert re.match(r"\| `suite/test_app.py::test_query` \| call \| [\d.]+ ms \| [\d.]+ ms \| \*\*\+[\d.]+ ms\*\* \| "
                    r"peer \+", row), row
    doc = json.loads(diff(runs["a"], runs["b"], "--format", "json", "--min-change", 50).stdout)
    assert doc["measure"] == "wall" and doc["removed"] == [] and doc["added"] == []
    first = doc["slower"][0]
    assert first["test"].endswith("::test_query") and first["phase"] == "call"
    assert first["delta_ns"] == first["b"]["ns"] - first["a"]["ns"]
    assert first["causes"]["peer_ns"] >= 590 * MS, first
    assert first["a"]["outcome"] == first["b"]["outcome"] == "passed"


def test_a_run_without_the_plugin_diffs_on_socket_time_and_says_so(ns, work, runs):
    old = run_suite(ns, work, "run-noplugin", 250, "--no-pytest-plugin")
    assert not list((old / "events").glob("*.phases"))
    t = phase_rows(old)
    assert t[("test_query", "call")]["wall_ns"] == "" and t[("test_query", "call")]["outcome"] == ""
    assert ("test_compute", "call") not in t, "without records a test with no socket call is not seen"
    r = diff(runs["a"], old, "--min-change", 50)
    assert r.returncode == 0, r.stderr
    assert "compared on time in socket calls only: run B has no test phase records" in r.stdout, r.stdout
    assert "test_query (call)" in r.stdout.split("\nslower (")[1], r.stdout
    assert "test_compute" in r.stdout.split("\nremoved (")[1], r.stdout
    assert "outcome changed" not in r.stdout, "an outcome not recorded did not change"


def test_xdist_workers_record_their_tests(ns, work):
    try:
        import xdist  # noqa: F401
    except ImportError:
        if os.environ.get("NETBLAME_REQUIRE_ROOT_TESTS") == "1":
            pytest.fail("pytest-xdist is not installed, and NETBLAME_REQUIRE_ROOT_TESTS=1")
        pytest.skip("pytest-xdist is not installed")
    run = run_suite(ns, work, "run-xdist", 50, pytest_args=("-n", "2"))
    logs = list((run / "events").glob("pytest-*.phases"))
    records = [json.loads(line) for f in logs for line in f.read_text().splitlines()]
    # The workers record the tests they ran; the controller, which runs none, records nothing.
    assert {r["worker"] for r in records} == {"gw0", "gw1"}, records
    assert len({r["pid"] for r in records}) == 2 == len(logs)
    t = phase_rows(run)
    assert t[("test_query", "call")]["outcome"] == "passed" and t[("test_query", "call")]["requests"] == "3"
    assert t[("test_fails", "call")]["outcome"] == "failed"
    assert 300 * MS <= int(t[("test_compute", "call")]["outside_ns"])


def readme_query():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- dataset-query -->")[1]
    return block.split("```sql\n")[1].split("```")[0]


def test_runs_are_one_dataset_that_duckdb_reads_with_the_readme_query(runs):
    duckdb = pytest.importorskip("duckdb") if os.environ.get("NETBLAME_REQUIRE_ROOT_TESTS") != "1" \
        else __import__("duckdb")
    dataset = runs["dataset"]
    assert sorted(p.name for p in dataset.iterdir()) == ["run=run-1", "run=run-2"]
    assert (dataset / "run=run-2" / "reads.parquet").exists()
    con = duckdb.connect()
    hosts = con.sql(f"SELECT DISTINCT run, host FROM read_parquet('{dataset}/*/tests.parquet', "
                    "hive_partitioning = true) ORDER BY run").fetchall()
    host = open("/proc/sys/kernel/hostname").read().strip()
    assert hosts == [("run-1", host), ("run-2", host)], hosts
    rows = con.sql(readme_query().replace("netblame-dataset", str(dataset))).fetchall()
    grew = {r[0].split("::")[-1]: r for r in rows}
    # Biggest growth first: three requests, then the two tests of one request (either order).
    assert list(grew)[0] == "test_query" and set(list(grew)[1:]) == {"test_fails", "test_async_query"}, rows
    _, phase, before_ms, after_ms, outcome = grew["test_query"]
    assert phase == "call" and after_ms - before_ms >= 590 and outcome == "passed", rows


def test_the_pictures_use_pytests_phase_boundaries(runs):
    from test_renders import Interned, perfetto_schema
    run = runs["b"]
    records = [json.loads(line) for f in (run / "events").glob("pytest-*.phases")
               for line in f.read_text().splitlines()]
    pb = perfetto_schema()
    trace = pb.Trace()
    trace.ParseFromString((run / "trace.pftrace").read_bytes())
    strings = Interned(trace)
    tracks = {p.track_descriptor.uuid: p.track_descriptor for p in trace.packet if p.HasField("track_descriptor")}
    phases = [p for p in trace.packet if p.HasField("track_event")
              and p.track_event.type == pb.TrackEvent.TYPE_SLICE_BEGIN
              and strings.category(p) == "test phase"]
    # A slice per recorded phase, at pytest's start, with its outcome; the computing test too.
    assert sorted((p.timestamp, strings.name(p)) for p in phases) == sorted((r["start_ns"], r["phase"]) for r in records)
    assert all("outcome" in strings.arg_names(p) for p in phases)
    assert {tracks[p.track_event.track_uuid].name for p in phases} == {"tests (pytest's phases)"}
    page = (run / "report.html").read_text()
    section = page.split('<section id="tests">')[1].split("</section>")[0]
    row = next(r for r in section.split("<tr>") if "test_fails</td><td>call" in r)
    assert "<td>failed</td>" in row, row
    assert "test_compute</td><td>call</td><td>passed</td>" in section


NESTED = """
pytest_plugins = ["pytester"]

def test_inner_run(pytester):
    # pytester changes the working directory and runs pytest in this process, then in another.
    pytester.makepyfile("def test_a(): pass")
    pytester.runpytest_inprocess().assert_outcomes(passed=1)
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
"""


def test_a_pytest_run_inside_a_test_is_that_tests_not_the_runs(tmp_path):
    need_root("netblame run's capture")
    (tmp_path / "test_nested.py").write_text(NESTED)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    # A relative run directory: the command changes its working directory mid-run.
    r = subprocess.run([str(netblame_path()), "run", "--out", "run", "--", sys.executable, "-m", "pytest", "-q",
                        "-p", "no:cacheprovider", "test_nested.py"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    records = [json.loads(line) for f in (tmp_path / "run" / "events").glob("pytest-*.phases")
               for line in f.read_text().splitlines()]
    assert [(x["test"], x["phase"]) for x in records] == [
        ("test_nested.py::test_inner_run", p) for p in ("setup", "call", "teardown")], records


def test_a_run_directory_that_cannot_name_a_dataset_run_is_refused_before_anything_is_made(tmp_path):
    need_root("netblame run's capture")
    out = tmp_path / "run=7"
    r = subprocess.run([str(netblame_path()), "run", "--dataset", str(tmp_path / "ds"), "--out", str(out), "--",
                        "true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "dataset run id" in r.stderr, r.stderr
    assert not out.exists() and not (tmp_path / "ds").exists()


def test_an_analysis_gives_the_same_tables_every_time(runs, tmp_path):
    # Exchanges still under way at the end of a run were once listed in a hash map's order.
    outs = []
    for i in range(3):
        out = tmp_path / f"t{i}"
        r = subprocess.run([str(netblame_path()), "analyze", str(runs["b"]), "--csv", str(out)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append({p.name: p.read_bytes() for p in out.iterdir()} | {"report": r.stdout.encode()})
    assert outs[0] == outs[1] == outs[2]
