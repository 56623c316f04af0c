"""Wall time and peak RSS of a command, for the benchmark scripts."""

import os
import statistics
import subprocess
import time


def timed(cmd, runs=1, before=None, quiet=False):
    """Runs `cmd` `runs` times (calling `before` ahead of each); returns the median wall seconds
    and the peak RSS in MiB (wait4's rusage). Output goes to /dev/null (stderr too if `quiet`);
    a failing run stops the benchmark."""
    times, rss = [], []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if quiet else None)
        _, status, usage = os.wait4(p.pid, 0)
        if status != 0:
            raise SystemExit(f"{cmd} failed ({status})")
        times.append(time.perf_counter() - start)
        rss.append(usage.ru_maxrss / 1024)
    return statistics.median(times), max(rss)
