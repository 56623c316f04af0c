"""The pictures of a run, checked by the field's own tools: report.html in a real browser
(headless Chromium over the DevTools protocol), trace.pftrace with the schema Perfetto ships in
its Python package, capture-annotated.pcapng with tshark.

Each check runs on the shipped demo run (fixtures/demo-run, no privileges needed) and, as
root, on a live `netblame demo` run."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, need_root, need_tool, netblame_path

SHIPPED = ROOT / "fixtures" / "demo-run"
SERVER = ROOT / "tests" / "programs" / "http_server.py"
ARTIFACTS = ("report.html", "trace.pftrace", "capture-annotated.pcapng")
RETRANSMITTED = {"retransmission", "spurious-retransmission"}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Run:
    """A run directory with its tables (CSV) and the three pictures."""

    def __init__(self, dir: Path):
        self.dir = dir
        self.tables = dir / "tables"
        self.reads = rows(self.tables / "reads.csv")
        self.sends = rows(self.tables / "sends.csv")
        self.connects = rows(self.tables / "connects.csv")
        self.exchanges = rows(self.tables / "exchanges.csv")
        self.packets = rows(self.tables / "packets.csv")
        self.flows = rows(self.tables / "flows.csv")
        dump = subprocess.run([str(netblame_path()), "events", "dump", str(dir / "events")], capture_output=True,
                              text=True, check=True)
        self.events = [json.loads(line) for line in dump.stdout.splitlines() if line.strip()]

    def path(self, name):
        return self.dir / name


def analyze_into(src: Path, out: Path, *extra):
    """`netblame analyze` of a run's capture and events, everything written into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if out != src:
        shutil.copy(src / "capture.pcap", out / "capture.pcap")
        shutil.copytree(src / "events", out / "events", dirs_exist_ok=True)
    r = subprocess.run([str(netblame_path()), "analyze", str(out), "--csv", str(out / "tables"),
                        "--html", str(out / "report.html"), "--perfetto", str(out / "trace.pftrace"),
                        "--annotate", str(out / "capture-annotated.pcapng"), *extra],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def curl_run(out: Path):
    """`netblame run` of curl (it waits in poll) against the tests' HTTP server that thinks
    200 ms, in a private network namespace."""
    need_root("netblame run in a network namespace")
    need_tool("curl")
    ns = f"nbr-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        pidfile = out.parent / "server.pid"
        script = (f"{sys.executable} {SERVER} 8322 200 {pidfile} & "
                  f"while [ ! -e {pidfile} ]; do sleep 0.05; done; "
                  f"curl -s -o /dev/null http://127.0.0.1:8322/slow; status=$?; kill $(cat {pidfile}); exit $status")
        r = subprocess.run(["ip", "netns", "exec", ns, str(netblame_path()), "run", "--out", str(out), "--",
                            "sh", "-c", script], capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.fixture(scope="module", params=["shipped", "live", "curl"])
def run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "run"
    if request.param == "shipped":
        analyze_into(SHIPPED, out)
    elif request.param == "curl":
        # `run` leaves the pictures in the run directory beside the tables.
        curl_run(out)
        for name in ARTIFACTS:
            assert out.joinpath(name).stat().st_size > 0, name
        # A run with readiness waits: their slices must be in the trace.
        assert any(e["kind"] == "wait" for e in Run(out).events)
    else:
        need_root("the live demo")
        need_tool("nft")
        r = subprocess.run([str(netblame_path()), "demo", "--out", str(out)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        # `demo` leaves the pictures in the run directory beside the tables.
        for name in ARTIFACTS:
            assert out.joinpath(name).stat().st_size > 0, name
    run = Run(out)
    run.kind = request.param
    return run


# ---------------------------------------------------------------------------------------------
# report.html in Chromium


def need_chromium():
    from browser import chromium_path

    if chromium_path() is None:
        if os.environ.get("NETBLAME_REQUIRE_ROOT_TESTS") == "1":
            pytest.fail("chromium is not installed (apt-get install chromium), and NETBLAME_REQUIRE_ROOT_TESTS=1")
        pytest.skip("chromium is not installed")


DOM_FACTS = """
(() => {
  const overlaps = (a, n, s, e) => a < e && a + n > s;
  return {
    figures: [...document.querySelectorAll("figure.tsg")].map(f => {
      const s = +f.dataset.seqStart, e = +f.dataset.seqEnd;
      const marks = [...f.querySelectorAll(".rexmit")].filter(m => overlaps(+m.dataset.seq, +m.dataset.len, s, e));
      return {id: f.id, verdict: f.dataset.verdict, flow: f.dataset.flow, direction: f.dataset.direction,
              pid: f.dataset.pid, fd: f.dataset.fd, t_call: f.dataset.tCall, seq_start: s, seq_end: e,
              svgs: f.querySelectorAll("svg").length, read_boxes: f.querySelectorAll(".read-box").length,
              segments: f.querySelectorAll(".seg, .rexmit, .ooo, .probe").length,
              rexmit_in_range: marks.length,
              width: f.querySelector("svg").getBoundingClientRect().width};
    }),
    graph_links: [...document.querySelectorAll("#slowest a[href^='#read-']")].map(a => a.getAttribute("href").slice(1)),
    bars: document.querySelectorAll("#overview svg.bar rect").length,
    test_rows: document.querySelectorAll("#tests tbody tr").length,
    connection_rows: document.querySelectorAll("#connections tbody tr").length,
    timelines: document.querySelectorAll("figure.timeline").length,
    requests: [...document.querySelectorAll("#requests tbody tr")].map(tr => tr.querySelector("td.request").textContent),
  };
})()
"""


def test_html_report_loads_offline_and_draws_a_graph_per_listed_read(run):
    need_chromium()
    from browser import Browser

    with Browser() as b:
        page = b.load(run.path("report.html"))
        assert page.errors == [], page.errors
        # The page itself and nothing else: no network, no other file.
        assert page.requests == [page.url], page.requests
        facts = b.evaluate(DOM_FACTS)
        # Kept for people to look at: target/test-artifacts/ (a CI artefact).
        shots = ROOT / "target" / "test-artifacts"
        shots.mkdir(parents=True, exist_ok=True)
        b.screenshot(shots / f"report-{run.kind}.png", full_page=True)
        # Sorting: a click on the "window" header orders the slowest reads by it.
        order = b.evaluate("""(() => {
            const th = [...document.querySelectorAll('#slowest th')].find(h => h.textContent === 'window');
            th.click();
            return [...document.querySelectorAll('#slowest tbody tr')].map(r => +r.cells[1].dataset.v);
        })()""")
    assert (shots / f"report-{run.kind}.png").stat().st_size > 10_000
    assert order == sorted(order)

    figures = facts["figures"]
    assert figures, "no time-sequence graph"
    # One graph per listed read: each link of the slowest-reads table leads to its own graph.
    ids = [f["id"] for f in figures]
    assert len(set(ids)) == len(ids)
    assert set(facts["graph_links"]) <= set(ids)
    for f in figures:
        assert f["svgs"] == 1 and f["read_boxes"] == 1 and f["width"] > 500, f
    # Every read that is not ok is listed, with its verdict (the fixture has far fewer than the
    # listing's limit).
    by_call = {(f["pid"], f["fd"], f["t_call"]): f for f in figures}
    not_ok = [r for r in run.reads if r["verdict"] not in ("ok", "idle", "no-data")]
    expected = {"loss", "peer-slow", "app-late"} if run.kind != "curl" else {"peer-slow"}
    assert {r["verdict"] for r in not_ok} >= expected
    for r in not_ok:
        f = by_call.get((r["pid"], r["fd"], r["t_call_ns"]))
        assert f is not None, f"read {r} has no graph"
        assert f["verdict"] == r["verdict"]

    # In a loss read's graph, a retransmission mark per retransmitted segment of the packets
    # table over the read's bytes.
    loss = [f for f in figures if f["verdict"] == "loss"]
    assert loss or run.kind == "curl"
    for f in loss:
        expected = [p for p in run.packets
                    if p["flow_id"] == f["flow"] and p["direction"] == f["direction"] and p["class"] in RETRANSMITTED
                    and int(p["rel_seq"]) < f["seq_end"] and int(p["rel_seq"]) + int(p["payload_len"]) > f["seq_start"]]
        assert expected, f
        assert f["rexmit_in_range"] == len(expected), (f, expected)
        assert f["segments"] >= len(expected) + 1  # the lost original too (dropped after capture)

    assert facts["bars"] >= 3
    assert facts["test_rows"] == len({(r["test"], r["phase"]) for r in run.reads + run.sends if r["test"]})
    assert facts["timelines"] >= 1
    # The slowest requests, as the exchanges table has them (the runs have fewer than 200).
    assert run.exchanges, "no exchanges"
    assert sorted(facts["requests"]) == sorted(x["request"] for x in run.exchanges)


# ---------------------------------------------------------------------------------------------
# trace.pftrace with Perfetto's own schema


def perfetto_schema():
    try:
        from perfetto.protos.perfetto.trace import perfetto_trace_pb2
    except ImportError:
        if os.environ.get("NETBLAME_REQUIRE_ROOT_TESTS") == "1":
            pytest.fail("the perfetto package is not installed (pip install perfetto), and NETBLAME_REQUIRE_ROOT_TESTS=1")
        pytest.skip("the perfetto package is not installed")
    return perfetto_trace_pb2


class Interned:
    """The strings a trace sends once (event names, categories, argument names) and refers to
    by iid after, as Perfetto's trace processor resolves them: per packet sequence, each of
    which interns its own (netblame writes the calls on one and the packets on another)."""

    def __init__(self, trace):
        self.seqs = {}
        for p in trace.packet:
            names, cats, args = self.seqs.setdefault(p.trusted_packet_sequence_id, ({}, {}, {}))
            if p.HasField("interned_data"):
                d = p.interned_data
                names.update((x.iid, x.name) for x in d.event_names)
                cats.update((x.iid, x.name) for x in d.event_categories)
                args.update((x.iid, x.name) for x in d.debug_annotation_names)

    def name(self, p):
        e = p.track_event
        return e.name if e.HasField("name") else self.seqs[p.trusted_packet_sequence_id][0][e.name_iid]

    def category(self, p):
        e = p.track_event
        cats = self.seqs[p.trusted_packet_sequence_id][1]
        return cats[e.category_iids[0]] if e.category_iids else (e.categories[0] if e.categories else "")

    def arg_names(self, p):
        args = self.seqs[p.trusted_packet_sequence_id][2]
        return {a.name if a.HasField("name") else args[a.name_iid] for a in p.track_event.debug_annotations}


def test_perfetto_trace_matches_the_tables(run):
    pb = perfetto_schema()
    trace = pb.Trace()
    trace.ParseFromString(run.path("trace.pftrace").read_bytes())
    assert len(trace.packet) > 0
    # Two sequences, the calls' and the packets' (written by threads of their own, the packets
    # after the calls); each one's first packet clears the incremental state its interned
    # strings use.
    assert [p.trusted_packet_sequence_id for p in trace.packet] == sorted(p.trusted_packet_sequence_id for p in trace.packet)
    assert {p.trusted_packet_sequence_id for p in trace.packet} == {1, 2}
    for seq in (1, 2):
        first = next(p for p in trace.packet if p.trusted_packet_sequence_id == seq)
        assert first.sequence_flags & pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
    strings = Interned(trace)

    tracks = {}
    begins, instants = [], []
    for p in trace.packet:
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            assert d.uuid not in tracks, "two tracks with one uuid"
            tracks[d.uuid] = d
        elif p.HasField("track_event"):
            e = p.track_event
            assert e.track_uuid in tracks, "an event on an undeclared track"
            if e.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
                begins.append((p.timestamp, strings.category(p), p))
            elif e.type == pb.TrackEvent.TYPE_INSTANT:
                instants.append((p.timestamp, strings.category(p), p))
    ends = sum(1 for p in trace.packet if p.HasField("track_event") and p.track_event.type == pb.TrackEvent.TYPE_SLICE_END)
    assert ends == len(begins)

    # A track per recorded thread, and per connection direction.
    threads = {(t.thread.pid, t.thread.tid) for t in tracks.values() if t.HasField("thread")}
    recorded = {(e["pid"], e["tid"]) for e in run.events if e["kind"] in ("open", "recv", "send", "wait")}
    assert threads == recorded
    directions = [t for t in tracks.values() if " -> " in t.name]
    assert len(directions) == 2 * len({f["flow_id"] for f in run.flows})

    # A slice per read, send, connect and wait, at the exact nanosecond the call was recorded.
    cats = Counter(c for _, c, _ in begins)
    assert cats["read"] == len(run.reads)
    assert cats["send"] == len(run.sends)
    assert cats["connect"] == len(run.connects)
    assert cats["wait"] == len({(e["pid"], e["tid"], e["t_call_ns"], e["t_return_ns"])
                                for e in run.events if e["kind"] == "wait"})
    read_starts = sorted(ts for ts, c, _ in begins if c == "read")
    assert read_starts == sorted(int(r["t_call_ns"]) for r in run.reads)

    # A read's slice carries its verdict and the parts of its time as arguments.
    names = set().union(*(strings.arg_names(p) for _, c, p in begins if c == "read"))
    assert {"bytes", "offset", "verdict", "peer_ns", "wakeup_ns"} <= names

    # An instant per captured packet (capture duplicates left out), retransmissions named.
    packets = [p for _, c, p in instants if c == "packet"]
    assert len(packets) == sum(1 for p in run.packets if p["class"] != "capture-duplicate")
    assert sum(1 for p in packets if strings.name(p) in RETRANSMITTED) == \
        sum(1 for p in run.packets if p["class"] in RETRANSMITTED)

    # Flow arrows: from the packets that carried a read's bytes to that read, one arrow chain per
    # read that has packets.
    started = {i for p in packets for i in p.track_event.flow_ids}
    ended = {i for _, _, p in instants for i in p.track_event.terminating_flow_ids}
    assert started == ended
    assert len(ended) == sum(1 for r in run.reads if int(r["segments"] or 0) > 0)

    # A slice per exchange on its connection's track, named by its request.
    exchanges = [p for _, c, p in begins if c == "exchange"]
    assert len(exchanges) == len(run.exchanges)
    assert sorted(strings.name(p) for p in exchanges) == sorted(x["request"] or "request" for x in run.exchanges)
    flow_tracks = {t.uuid for t in tracks.values() if t.name.startswith("flow ")}
    assert all(p.track_event.track_uuid in flow_tracks for p in exchanges)

    # Tests and their phases.
    tests = [p for _, c, p in begins if c == "test"]
    assert {strings.name(p) for p in tests} == {r["test"] for r in run.reads + run.sends if r["test"]}


# ---------------------------------------------------------------------------------------------
# capture-annotated.pcapng in tshark


def tshark(*args):
    need_tool("tshark")
    r = subprocess.run(["tshark", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_annotated_capture_in_tshark(run, tmp_path):
    annotated = run.path("capture-annotated.pcapng")
    commented = [line.split("\t", 1) for line in
                 tshark("-r", annotated, "-Y", "pkt_comment", "-T", "fields", "-e", "frame.number",
                        "-e", "frame.comment").splitlines()]
    assert commented
    # Timestamps untouched, every frame kept.
    assert tshark("-r", annotated, "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len") == \
        tshark("-r", run.path("capture.pcap"), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len")
    # A comment on the first packet of each listed read: its pid, fd, test and verdict.
    not_ok = [r for r in run.reads if r["verdict"] not in ("ok", "idle", "no-data")]
    comments = [c for _, c in commented]
    for r in not_ok:
        assert any(f"pid {r['pid']} " in c and f"fd {r['fd']}:" in c and f"verdict {r['verdict']}:" in c
                   and f"at offset {r['stream_offset']}" in c for c in comments), (r, comments)
    # The comment sits on the packet that carried the read's first byte.
    fields = tshark("-r", annotated, "-Y", "pkt_comment", "-T", "fields", "-E", "aggregator=|", "-e", "tcp.seq",
                    "-e", "tcp.len", "-e", "frame.comment").splitlines()
    for line in fields:
        seq, length, joined = line.split("\t", 2)
        for comment in joined.split("|"):
            offset = int(re.search(r"at offset (\d+)", comment).group(1))
            assert int(seq) <= offset + 1 < int(seq) + int(length), line

    # --all: a comment per read that has packets.
    out = tmp_path / "all"
    analyze_into(run.dir, out, "--all")
    every = tshark("-r", out / "capture-annotated.pcapng", "-Y", "pkt_comment", "-T", "fields",
                   "-E", "aggregator=|", "-e", "frame.comment").splitlines()
    n = sum(len(line.split("|")) for line in every)
    assert n == sum(1 for r in run.reads if int(r["segments"] or 0) > 0)


def test_a_picture_never_overwrites_the_capture(tmp_path):
    out = tmp_path / "run"
    shutil.copytree(SHIPPED, out)
    before = (out / "capture.pcap").read_bytes()
    for args in (["--annotate", out / "capture.pcap"], ["--html", out / "x", "--perfetto", out / "x"]):
        r = subprocess.run([str(netblame_path()), "analyze", str(out), *map(str, args)], capture_output=True,
                           text=True)
        assert r.returncode == 2, r
        assert "would overwrite" in r.stderr and r.stdout == ""
    assert (out / "capture.pcap").read_bytes() == before


def test_a_picture_that_cannot_be_written_is_named_and_the_report_is_kept(tmp_path):
    # /dev/full takes no byte: as a full disk. The trace is written on a thread of its own and
    # the annotated copy by the pass: each failure names its own file.
    for flag, what in (("--perfetto", "writing the trace"), ("--annotate", "writing the annotated capture")):
        r = subprocess.run([str(netblame_path()), "analyze", str(SHIPPED), flag, "/dev/full",
                            "--html", str(tmp_path / "report.html")], capture_output=True, text=True)
        assert r.returncode == 1, r
        assert f"/dev/full: {what}: No space left on device" in r.stderr, r.stderr
        assert "where the read time went" in r.stdout, r.stdout
