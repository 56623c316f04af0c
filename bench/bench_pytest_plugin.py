#!/usr/bin/env python3
"""What netblame's pytest plugin costs a suite: the same pytest command under `netblame run` with
the plugin and with `--no-pytest-plugin`, and without netblame, alternating, N rounds each.

    python3 bench/bench_pytest_plugin.py [--rounds 3] [--netns NS] [--cwd DIR] -- python3 -m pytest -q tests/

Prints each round's wall time and the fastest and median of each, and the plugin's cost as the
ratio of the medians (with / without the plugin) and per test phase recorded. Run the suite's
servers yourself (on loopback, or in --netns).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--netns", help="run inside this network namespace (ip netns exec)")
    ap.add_argument("--cwd", default=".")
    ap.add_argument("--netblame", default=str(ROOT / "target" / "release" / "netblame"))
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("give the pytest command after --")
    prefix = ["ip", "netns", "exec", a.netns] if a.netns else []
    work = Path(tempfile.mkdtemp(prefix="nb-plugin-bench-"))
    kinds = {
        "plain": lambda out: cmd,
        "netblame, no plugin": lambda out: [a.netblame, "run", "--out", str(out), "--no-pytest-plugin", "--", *cmd],
        "netblame + plugin": lambda out: [a.netblame, "run", "--out", str(out), "--", *cmd],
    }
    times = {k: [] for k in kinds}
    phases = 0
    for i in range(a.rounds):
        for kind, argv in kinds.items():
            out = work / f"{i}-{len(times[kind])}-{kind.replace(' ', '_').replace(',', '').replace('+', 'p')}"
            # The command's own time: netblame's analysis after it is not the plugin's cost, so
            # the command is timed from within the run (its exit time, from the manifest).
            t0 = time.monotonic()
            r = subprocess.run(prefix + argv(out), cwd=a.cwd, capture_output=True, text=True)
            wall = time.monotonic() - t0
            if kind != "plain":
                m = json.loads((out / "manifest.json").read_text())
                wall = (m["end"]["monotonic_ns"] - m["start"]["monotonic_ns"]) / 1e9
                if kind == "netblame + plugin":
                    phases = sum(len(f.read_text().splitlines()) for f in (out / "events").glob("*.phases"))
                shutil.rmtree(out, ignore_errors=True)
            times[kind].append(wall)
            print(f"round {i + 1} {kind:<20} {wall:8.2f} s  (exit {r.returncode})", flush=True)
    print()
    for kind, ts in times.items():
        print(f"{kind:<20} fastest {min(ts):8.2f} s  median {statistics.median(ts):8.2f} s")
    with_, without = statistics.median(times["netblame + plugin"]), statistics.median(times["netblame, no plugin"])
    print(f"\nplugin: {with_ / without:.3f}x the run without it (medians); {phases} phases recorded, "
          f"{(with_ - without) / max(phases, 1) * 1e6:+.0f} µs a phase")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
