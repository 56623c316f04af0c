#!/usr/bin/env python3
"""Interposer overhead, plain vs under libnetblame_preload.so (every call recorded) vs under
`strace -f` for scale, on three loopback workloads:

- pair: 64 bytes sent on one end of a TCP connection and received on the other (send + recv),
  in C (bench/poll_pingpong.c, `blocking`), and the same loop in Rust (std::net);
- poll pair: the same, received after poll() with a non-blocking recv (send + poll + recv: what
  CPython does for a socket with a timeout);
- asyncio: an asyncio echo round trip of 64 bytes (per round trip: two epoll_wait waits that
  report a socket, two reads, two writes, on client and server).

The modes alternate for --rounds rounds in one run, each recorded run after a plain one; we
report the fastest and the median time per iteration (the VM's noise only ever adds time, so the
fastest runs compare best), the ratio to plain, and the cost per recorded call, and check that
every call was recorded. Event logs go to a fresh folder under --events-base (default: the
system's temporary folder, a disk here; give /dev/shm to see tmpfs).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
# Seconds before each recorded run: memory freed within about a second is cheap to take again
# on this VM (docs/benchmarks.md, "The interposer's cost per call").
SETTLE_S = 2


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return float(out.strip().splitlines()[-1])


def recorded(d):
    return sum((os.path.getsize(os.path.join(d, f)) - 64) // 64 for f in os.listdir(d))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=1_000_000)
    ap.add_argument("--asyncio-iterations", type=int, default=50_000)
    ap.add_argument("--strace-fraction", type=int, default=10, help="strace runs 1/N of the iterations")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--events-base", default=None, help="folder the event logs are written under")
    ap.add_argument("--only", default=None, help="run only the workloads whose name contains this")
    ap.add_argument("--baseline", default=None, metavar="SO",
                    help="another build of the interposer (e.g. the landed one) run in the same rounds")
    args = ap.parse_args()
    pingpong = os.path.join(RELEASE, "examples", "pingpong")
    preload = os.path.join(RELEASE, "libnetblame_preload.so")
    poll_bin = os.path.join(tempfile.mkdtemp(), "poll_pingpong")
    subprocess.run(["gcc", "-O2", "-o", poll_bin, os.path.join(ROOT, "bench", "poll_pingpong.c")], check=True)
    echo = os.path.join(ROOT, "bench", "asyncio_echo.py")
    n, na = args.iterations, args.asyncio_iterations
    # (name, argv for a count, iterations, calls recorded per iteration)
    workloads = [
        ("pair (send+recv, C)", lambda k: [poll_bin, "blocking", str(k)], n, 2),
        ("pair (send+recv, Rust std::net)", lambda k: [pingpong, str(k)], n, 2),
        ("poll pair (send+poll+recv)", lambda k: [poll_bin, "poll", str(k)], n, 3),
        ("asyncio echo round trip", lambda k: [sys.executable, echo, str(k)], na, 6),
    ]
    for name, argv, iters, calls in workloads:
        if args.only and args.only not in name:
            continue
        libs = {"netblame": preload, **({"baseline": args.baseline} if args.baseline else {})}
        res = {"plain": [], **{k: [] for k in libs}, "strace": []}
        counts = []
        # Every recorded run follows a plain one and a pause, the builds taking turns at going
        # first: on this VM's ext4 a run within a second of another that wrote and deleted a log
        # is much faster (the same build measured 1.07x there and 1.20x after a pause), and a
        # real run does not follow one.
        order = list(libs)
        for r in range(args.rounds):
            for mode in order[r % len(order):] + order[:r % len(order)]:
                res["plain"].append(run(argv(iters)))
                time.sleep(SETTLE_S)
                with tempfile.TemporaryDirectory(dir=args.events_base) as d:
                    env = dict(os.environ, LD_PRELOAD=libs[mode], NETBLAME_EVENTS_DIR=d)
                    res[mode].append(run(argv(iters), env))
                    counts.append(recorded(d))
            res["strace"].append(run(["strace", "-f", "-qq", "-o", "/dev/null", *argv(iters // args.strace_fraction)]))
        med = {k: statistics.median(v) for k, v in res.items()}
        low = {k: min(v) for k, v in res.items()}
        print(f"\n{name}: {iters} iterations, {args.rounds} alternating rounds")
        print("| mode | fastest ns per iteration | vs plain | median ns per iteration | vs plain |")
        print("|---|---:|---:|---:|---:|")
        for k in res:
            print(f"| {k} | {low[k]:.0f} | {low[k] / low['plain']:.3f}x | {med[k]:.0f} | {med[k] / med['plain']:.3f}x |")
        for label, m in (("fastest", low), ("median", med)):
            extra = m["netblame"] - m["plain"]
            print(f"netblame ({label}): +{extra:.0f} ns per iteration, {extra / calls:.0f} ns per recorded call "
                  f"({calls} per iteration)")
        if "baseline" in res:
            print(f"netblame vs baseline: fastest {low['netblame'] / low['baseline']:.3f}x, "
                  f"median {med['netblame'] / med['baseline']:.3f}x")
        print(f"events recorded per run: min {min(counts)}, expected >= {calls * iters}")
        if min(counts) < calls * iters:
            raise SystemExit(f"{name}: the interposer missed calls")


if __name__ == "__main__":
    main()
