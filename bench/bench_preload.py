#!/usr/bin/env python3
"""Interposer overhead: one thread sends 64 bytes on one end of a loopback TCP connection and
receives them on the other, N times, plain, under libnetblame_preload.so (every call recorded),
and under `strace -f -e trace=network` for scale. The three alternate for --rounds rounds in
one run; we report the median time per send+recv pair and the ratios, and check that the
interposer recorded every call.
"""

import argparse
import os
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return float(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=1_000_000)
    ap.add_argument("--strace-iterations", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    pingpong = os.path.join(RELEASE, "examples", "pingpong")
    preload = os.path.join(RELEASE, "libnetblame_preload.so")
    n = str(args.iterations)
    results = {"plain": [], "netblame": [], "netblame-tmpfs": [], "strace": []}
    recorded = []
    for _ in range(args.rounds):
        results["plain"].append(run([pingpong, n]))
        # The events directory on the disk (ext4 here), and on tmpfs (/dev/shm).
        for mode, parent in (("netblame", None), ("netblame-tmpfs", "/dev/shm")):
            with tempfile.TemporaryDirectory(dir=parent) as d:
                env = dict(os.environ, LD_PRELOAD=preload, NETBLAME_EVENTS_DIR=d)
                results[mode].append(run([pingpong, n], env))
                logs = [os.path.join(d, f) for f in os.listdir(d)]
                recorded.append(sum((os.path.getsize(p) - 64) // 64 for p in logs))
        results["strace"].append(run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=network",
                                      pingpong, str(args.strace_iterations)]))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{args.iterations} send+recv pairs of 64 bytes on loopback TCP, {args.rounds} alternating rounds, median:")
    print("| mode | ns per send+recv | vs plain |")
    print("|---|---:|---:|")
    for k in ("plain", "netblame", "netblame-tmpfs", "strace"):
        print(f"| {k} | {med[k]:.0f} | {med[k] / med['plain']:.3f}x |")
    print(f"events recorded per netblame run: {sorted(set(recorded))} "
          f"(expected >= {2 * args.iterations}: a send and a recv per pair)")
    if min(recorded) < 2 * args.iterations:
        raise SystemExit("the interposer missed calls")


if __name__ == "__main__":
    main()
