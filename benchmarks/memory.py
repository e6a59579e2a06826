"""Memory: peak RSS of a ``gwsim run --records none`` of about 10 million simulated requests
(the M/M/10 validation model stretched in time), run as a child process; target < 1 GiB.

With records="none" a replication keeps outcome counts and log-binned latency histograms
(simulator.histograms), so memory does not grow with the number of requests.  The peak is
read with getrusage(RUSAGE_CHILDREN) (largest single process) and, with --workers > 1, by
sampling the whole process tree with psutil (sum over the parent and its workers).

    python benchmarks/memory.py [--requests 10000000] [--workers 2] [--records none]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RATE = 9.0  # mm10 arrivals per second


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000_000)
    parser.add_argument("--replications", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--records", choices=["all", "none"], default="none")
    args = parser.parse_args()
    duration = args.requests / RATE / args.replications
    cmd = [
        sys.executable, "-m", "gwsim.cli", "run", str(ROOT / "scenarios/validation/mm10.toml"), "--json",
        "--records", args.records, "-n", str(args.replications), "--workers", str(args.workers),
        "--set", f'run.duration="{duration:.0f}s"',
    ]
    begun = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_tree = 0
    watched = psutil.Process(child.pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not stop.is_set():
            try:
                peak_tree = max(peak_tree, tree_rss(watched))
            except psutil.Error:
                pass
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = child.communicate(timeout=3600)
    stop.set()
    sampler.join()
    wall = time.perf_counter() - begun
    if child.returncode != 0:
        sys.exit(f"gwsim run failed ({child.returncode}): {err.strip()[-2000:]}")
    import json

    summary = json.loads(out)
    # ru_maxrss is in KiB on Linux: the largest RSS of any one waited-for descendant
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    simulated = int(round(RATE * duration * args.replications))
    print(f"command: {' '.join(cmd[1:])}")
    print(f"records={args.records}: about {simulated:,} simulated requests "
          f"({summary['overall']['count']:,} in the measurement window) in {wall:.0f} s wall, {args.workers} workers")
    print(f"peak RSS, largest process (RUSAGE_CHILDREN): {largest / 2**20:8.1f} MiB")
    print(f"peak RSS, whole process tree (psutil):      {peak_tree / 2**20:8.1f} MiB  (target < 1024 MiB)")


if __name__ == "__main__":
    main()
