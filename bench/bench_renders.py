#!/usr/bin/env python3
"""The pictures of a run: their sizes, what they cost `netblame analyze`, and how long the
field's tools take to open them. For the demo's shipped run and for a generated run of
--exchanges request/response pairs (crates/cli/examples/gen_run.rs: one read and one send per
exchange on each side of 100 connections, about 4 packets each).

  analyze:   `netblame analyze RUN` vs `netblame analyze RUN --html --perfetto --annotate`
             (median wall time, peak RSS from wait4)
  report.html: Chromium (headless, DevTools over a pipe) from navigation to the load event
  trace.pftrace: decoded whole with Perfetto's own schema (the `perfetto` package)
  capture-annotated.pcapng: `tshark -r F -Y pkt_comment` beside `tshark -r capture.pcap`
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "testbed"))

from timing import timed  # noqa: E402
RELEASE = ROOT / "target" / "release"
NETBLAME = RELEASE / "netblame"
PICTURES = ("report.html", "trace.pftrace", "capture-annotated.pcapng")


def seconds(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def size(path: Path):
    n = path.stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def measure(label, run: Path, runs):
    print(f"\n== {label}: {run}")
    capture = run / "capture.pcap"
    print(f"capture: {size(capture)}")
    plain, plain_rss = timed([NETBLAME, "analyze", run], runs)
    args = [NETBLAME, "analyze", run, "--html", run / "report.html", "--perfetto", run / "trace.pftrace",
            "--annotate", run / "capture-annotated.pcapng"]
    pictures, pictures_rss = timed(args, runs)
    print(f"analyze: {plain:.2f} s, {plain_rss:.0f} MiB; with the three pictures {pictures:.2f} s "
          f"({pictures / plain:.2f}x), {pictures_rss:.0f} MiB")
    for name in PICTURES:
        print(f"  {name}: {size(run / name)}")

    from browser import Browser
    loads = []
    with Browser() as b:
        for _ in range(runs):
            page = b.load(run / "report.html")
            if page.errors or page.requests != [page.url]:
                raise SystemExit(f"report.html: errors {page.errors}, requests {page.requests}")
            loads.append(page.load_ms)
        graphs = b.evaluate("document.querySelectorAll('figure.tsg').length")
    print(f"report.html in Chromium: {statistics.median(loads):.0f} ms to the load event ({graphs} graphs)")

    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
    data = (run / "trace.pftrace").read_bytes()
    start = time.perf_counter()
    trace = pb.Trace()
    trace.ParseFromString(data)
    n = len(trace.packet)
    decode = time.perf_counter() - start
    print(f"trace.pftrace: {n} trace packets, decoded by Perfetto's schema in {decode:.2f} s")

    if shutil.which("tshark"):
        base = seconds(["tshark", "-r", capture, "-T", "fields", "-e", "frame.number"])
        ann = seconds(["tshark", "-r", run / "capture-annotated.pcapng", "-Y", "pkt_comment", "-T", "fields",
                       "-e", "frame.comment"])
        print(f"capture-annotated.pcapng in tshark -Y pkt_comment: {ann:.2f} s "
              f"(tshark reading capture.pcap: {base:.2f} s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exchanges", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        demo = Path(d) / "demo"
        demo.mkdir()
        shutil.copy(ROOT / "fixtures" / "demo-run" / "capture.pcap", demo)
        shutil.copytree(ROOT / "fixtures" / "demo-run" / "events", demo / "events")
        measure("the demo (fixtures/demo-run)", demo, args.runs)
        big = Path(d) / "big"
        subprocess.run([RELEASE / "examples" / "gen_run", big, str(args.exchanges), "100"], check=True)
        measure(f"{args.exchanges} exchanges on 100 connections (gen_run)", big, args.runs)


if __name__ == "__main__":
    main()
