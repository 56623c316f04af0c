#!/usr/bin/env python3
"""The eBPF recorder's cost per recorded call (root): plain vs recorded by the eBPF recorder alone
(crates/ebpf/examples/record.rs: no capture, no interposer) vs under the interposer, on two
loopback workloads:

- pair (send+recv, C): 64 bytes sent on one end of a TCP connection and received on the other
  (bench/poll_pingpong.c, `blocking`): 2 recorded calls per iteration;
- Go pair: the same through Go's net package (bench/go_pingpong.go, CGO_ENABLED=0), which the
  interposer cannot see: a write and a read per iteration, plus the reads that find nothing
  (EAGAIN) and the netpoller's waits that report the socket, all recorded.

The modes alternate for --rounds rounds in one run, each recorded run after a plain one; we
report the fastest and the median time per iteration (noise only ever adds time), the ratio to
plain, the cost per recorded call, and check that the recorder lost nothing.
"""

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
# Seconds before each recorded run: memory freed within about a second is cheap to take again
# on this VM (docs/benchmarks.md, "The interposer's cost per call").
SETTLE_S = 2


def run(cmd, env=None):
    p = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return float(p.stdout.strip().splitlines()[-1]), p.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=500_000)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--events-base", default=None,
                    help="folder the logs are written under (default: the temporary folder)")
    ap.add_argument("--only", default=None, help="run only the workloads whose name contains this")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_ebpf: loading the eBPF recorder needs root")
    record = os.path.join(RELEASE, "examples", "record")
    preload = os.path.join(RELEASE, "libnetblame_preload.so")
    work = tempfile.mkdtemp()
    c_bin = os.path.join(work, "poll_pingpong")
    subprocess.run(["gcc", "-O2", "-o", c_bin, os.path.join(ROOT, "bench", "poll_pingpong.c")], check=True)
    go_bin = os.path.join(work, "go_pingpong")
    env = dict(os.environ, CGO_ENABLED="0", GOCACHE=os.path.join(work, "gocache"), HOME=work, GO111MODULE="off")
    subprocess.run(["go", "build", "-o", go_bin, os.path.join(ROOT, "bench", "go_pingpong.go")], check=True, env=env)
    n = args.iterations
    workloads = [
        ("pair (send+recv, C)", [c_bin, "blocking", str(n)], True),
        ("Go pair (write+read, net package)", [go_bin, str(n)], False),
    ]
    for name, argv, interposable in workloads:
        if args.only and args.only not in name:
            continue
        modes = ["plain", "ebpf"] + (["interposer"] if interposable else [])
        res = {m: [] for m in modes}
        calls = []
        # Every recorded run follows a plain one and a pause, the recorders taking turns at going
        # first (on this VM's ext4 a run within a second of another that wrote and deleted a
        # log is much faster: bench_preload.py).
        recorded = modes[1:]
        for r in range(args.rounds):
            for mode in recorded[r % len(recorded):] + recorded[:r % len(recorded)]:
                res["plain"].append(run(argv)[0])
                time.sleep(SETTLE_S)
                with tempfile.TemporaryDirectory(dir=args.events_base) as d:
                    if mode == "interposer":
                        env = dict(os.environ, LD_PRELOAD=preload, NETBLAME_EVENTS_DIR=d)
                        res["interposer"].append(run(argv, env)[0])
                        continue
                    t, err = run([record, d, "--", *argv])
                    res["ebpf"].append(t)
                    m = re.search(r"calls: (\d+), processes: \[[^\]]*\], lost: (\d+)", err)
                    if not m:
                        raise SystemExit(f"{name}: the recorder said: {err}")
                    if int(m.group(2)):
                        raise SystemExit(f"{name}: the recorder lost {m.group(2)} calls")
                    calls.append(int(m.group(1)))
        per_iteration = min(calls) / n
        med = {k: statistics.median(v) for k, v in res.items()}
        low = {k: min(v) for k, v in res.items()}
        print(f"\n{name}: {n} iterations, {args.rounds} alternating rounds, "
              f"{per_iteration:.2f} calls recorded per iteration by the eBPF recorder")
        print("| mode | fastest ns per iteration | vs plain | median ns per iteration | vs plain |")
        print("|---|---:|---:|---:|---:|")
        for k in res:
            print(f"| {k} | {low[k]:.0f} | {low[k] / low['plain']:.3f}x | {med[k]:.0f} | {med[k] / med['plain']:.3f}x |")
        for label, m in (("fastest", low), ("median", med)):
            extra = m["ebpf"] - m["plain"]
            print(f"ebpf ({label}): +{extra:.0f} ns per iteration, {extra / per_iteration:.0f} ns per recorded call")
        if interposable and min(calls) < 2 * n:
            raise SystemExit(f"{name}: the recorder missed calls ({min(calls)} < {2 * n})")


if __name__ == "__main__":
    main()
