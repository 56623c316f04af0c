#!/usr/bin/env python3
"""Benchmark `netblame flows` against libpcap's read floor, tcptrace and tshark, in one run.

Makes (or reuses) a testbed capture of at least --min-packets packets: 8 connections of small
request/response exchanges with TCP_NODELAY on loopback, 0.5% of data segments dropped after
capture. Each tool reads the same file --runs times; we report the median wall time, the
packets per second, and the peak RSS of each tool (from wait4's rusage), and the ratios against
netblame. The tools alternate round by round (tshark runs once), and the median of each round's
ratio to netblame is reported too. Needs root for the testbed, and tcpdump, tcptrace and tshark
installed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "testbed"))

from timing import timed  # noqa: E402


def count_packets(netblame, capture):
    out = subprocess.run([netblame, "flows", "--json", capture], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["capture"]["frames"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--capture", default=os.path.join(ROOT, "bench-data", "flows-1m.pcap"))
    ap.add_argument("--min-packets", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--netblame", default=os.path.join(ROOT, "target", "release", "netblame"))
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    if not os.path.exists(args.capture):
        import testbed

        os.makedirs(os.path.dirname(args.capture), exist_ok=True)
        rounds = max(1, args.min_packets * 11 // 10 // (8 * 2))
        print(f"making {args.capture}: 8 connections x {rounds} rounds, 0.5% loss ...", flush=True)
        truth = testbed.run(testbed.parser().parse_args([
            "--out", args.capture, "--truth", args.capture + ".truth.json", "--conns", "8",
            "--rounds", str(rounds), "--min-size", "200", "--max-size", "2000", "--loss", "0.005",
            "--nodelay", "--timeout", "1800"]))
        print(f"  {truth['captured_packets']} packets, {truth['dropped_packets']} dropped by nftables", flush=True)
    packets = count_packets(args.netblame, args.capture)
    size = os.path.getsize(args.capture)
    if packets < args.min_packets:
        sys.exit(f"{args.capture} has {packets} packets, fewer than {args.min_packets}: delete it and rerun")

    tools = {
        "netblame flows": [args.netblame, "flows", args.capture],
        "tcpdump -r (libpcap floor)": ["tcpdump", "-r", args.capture, "-w", "/dev/null"],
        "tcptrace -l": ["tcptrace", "-l", "-n", args.capture],
        "tshark conv,tcp": ["tshark", "-q", "-z", "conv,tcp", "-r", args.capture],
    }
    # The fast tools alternate, a round at a time, so that the VM's noise falls on all of them
    # alike; each round's ratio to netblame is kept, and the median of those is reported beside
    # the ratio of the medians. tshark (a minute a run) runs once.
    results = {}
    times = {name: [] for name in tools}
    rss = {name: 0 for name in tools}
    for round_no in range(args.runs):
        for name, cmd in tools.items():
            if name.startswith("tshark") and round_no > 0:
                continue
            secs, rss_mib = timed(cmd, quiet=True)
            times[name].append(secs)
            rss[name] = max(rss[name], rss_mib)
    for name in tools:
        secs = statistics.median(times[name])
        ratios = [t / n for t, n in zip(times[name], times["netblame flows"])]
        results[name] = {"seconds": secs, "peak_rss_mib": rss[name], "runs": len(times[name]),
                         "median_round_ratio": statistics.median(ratios)}
        print(f"  {name:<28} {secs:8.3f} s  {packets / secs / 1e6:6.2f} M pkt/s  {rss[name]:8.1f} MiB"
              f"  runs: {' '.join(f'{t:.3f}' for t in times[name])}", flush=True)

    nb = results["netblame flows"]
    print()
    print(f"capture: {packets} packets, {size / 1e6:.0f} MB, {os.cpu_count()} cores")
    print("| tool | median time | packets/s | peak RSS | time vs netblame | median of round ratios | RSS vs netblame |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['seconds']:.3f} s | {packets / r['seconds'] / 1e6:.2f} M | "
              f"{r['peak_rss_mib']:.1f} MiB | {r['seconds'] / nb['seconds']:.2f}x | "
              f"{r['median_round_ratio']:.2f}x | {r['peak_rss_mib'] / nb['peak_rss_mib']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"packets": packets, "bytes": size, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
