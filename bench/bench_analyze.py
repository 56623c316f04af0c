#!/usr/bin/env python3
"""`netblame analyze` on generated runs: N request/response exchanges over 100 connections (one
read and one send event each, 4 packets each), made by crates/cli/examples/gen_run.rs, for each
N of --exchanges. Each run is analysed for the report alone and with both table formats
(`--csv --parquet`), and `netblame flows` reads the same capture as the reference in the same
run (the first pass alone: what the join and the report add to it). Reports median wall time
and peak RSS (wait4) of --runs runs, and how peak RSS grows with the run's length (issue 12:
4 M exchanges at most 1.5x the peak of 1 M)."""

import argparse
import os
import statistics
import shutil
import subprocess
import tempfile

from timing import timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--exchanges", default="1000000,4000000", help="comma-separated run sizes")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-tables", action="store_true", help="skip the runs with tables")
    ap.add_argument("--baseline", default=None, metavar="BIN",
                    help="another netblame binary (e.g. the landed one), run alternately in the same rounds")
    args = ap.parse_args()
    netblame = os.path.join(RELEASE, "netblame")
    binaries = {"": netblame, **({" [baseline]": args.baseline} if args.baseline else {})}

    def alternating(argv, before=None):
        """Each binary once per round, for `args.runs` rounds: {label: (median s, peak MiB)}."""
        got = {label: ([], 0.0) for label in binaries}
        for _ in range(args.runs):
            for label, exe in binaries.items():
                t, rss = timed([exe, *argv], 1, before=before)
                got[label][0].append(t)
                got[label] = (got[label][0], max(got[label][1], rss))
        return {label: (statistics.median(ts), rss) for label, (ts, rss) in got.items()}

    rows, peaks = [], {}
    for n in [int(x) for x in args.exchanges.split(",")]:
        with tempfile.TemporaryDirectory() as d:
            run = os.path.join(d, "run")
            subprocess.run([os.path.join(RELEASE, "examples", "gen_run"), run, str(n), "100"], check=True)
            size = os.path.getsize(os.path.join(run, "capture.pcap"))
            cap = os.path.join(run, "capture.pcap")
            flows = alternating(["flows", cap])
            report = alternating(["analyze", run])
            peaks[n] = report[""][1]
            for label in binaries:
                rows.append((n, size, "flows (first pass alone)" + label, flows[label]))
                rows.append((n, size, "analyze (report)" + label, report[label]))
            if not args.no_tables:
                out = os.path.join(d, "tables")
                clear = lambda: shutil.rmtree(out, ignore_errors=True)
                tables = alternating(["analyze", run, "--csv", out + "/csv", "--parquet", out + "/pq"], before=clear)
                for label in binaries:
                    rows.append((n, size, "analyze --csv --parquet" + label, tables[label]))
    print("| exchanges | capture | command | median time | peak RSS | bytes per exchange |")
    print("|---:|---:|---|---:|---:|---:|")
    for n, size, what, (t, rss) in rows:
        print(f"| {n:,} | {size / 1e6:.0f} MB | {what} | {t:.2f} s | {rss:.0f} MiB | {rss * 1048576 / n:.0f} |")
    sizes = sorted(peaks)
    if len(sizes) > 1:
        a, b = sizes[0], sizes[-1]
        print(f"analyze peak RSS: {b:,} exchanges / {a:,} = {peaks[b] / peaks[a]:.2f}x "
              f"for {b / a:.0f}x the run (goal: at most 1.5x for 4x)")


if __name__ == "__main__":
    main()
