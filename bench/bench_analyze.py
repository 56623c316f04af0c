#!/usr/bin/env python3
"""`netblame analyze` on a generated run: --exchanges request/response pairs over 100
connections (one read and one send event each, about 4 packets each), made by
crates/cli/examples/gen_run.rs. Reports median time and peak RSS (wait4) of --runs runs."""

import argparse
import os
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--exchanges", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    release = os.path.join(ROOT, "target", "release")
    with tempfile.TemporaryDirectory() as d:
        run = os.path.join(d, "run")
        subprocess.run([os.path.join(release, "examples", "gen_run"), run, str(args.exchanges), "100"], check=True)
        size = os.path.getsize(os.path.join(run, "capture.pcap"))
        times, rss = [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            p = subprocess.Popen([os.path.join(release, "netblame"), "analyze", run], stdout=subprocess.DEVNULL)
            _, status, usage = os.wait4(p.pid, 0)
            if status != 0:
                raise SystemExit(f"netblame analyze failed ({status})")
            times.append(time.perf_counter() - start)
            rss.append(usage.ru_maxrss / 1024)
    print(f"{args.exchanges} reads + {args.exchanges} sends, ~{4 * args.exchanges} packets ({size / 1e6:.0f} MB capture)")
    print(f"netblame analyze: median {statistics.median(times):.2f} s over {args.runs} runs, peak RSS {max(rss):.0f} MiB")


if __name__ == "__main__":
    main()
