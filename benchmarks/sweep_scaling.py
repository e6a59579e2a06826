"""How sweeps scale with worker processes: replications per second with 1 and 2 local
workers, measured side by side (alternating rounds on the same tasks, so a busy machine
slows both alike), and their ratio.  Target: 2 workers >= 1.8x one worker on 2 free cores.

    python benchmarks/sweep_scaling.py [--replications 16] [--rounds 3] [--duration 800]

Each task is one replication of an M/M/10-like scenario reduced to its metrics row, as a
sweep runs it; pools are started (and warmed) before timing, as a sweep keeps its pool.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from gwsim.whatif.runner import LocalExecutor, ScenarioSource

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replications", type=int, default=16, help="tasks per timed batch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    parser.add_argument("--duration", type=float, default=800.0, help="simulated seconds per replication")
    args = parser.parse_args()

    source = ScenarioSource(str(ROOT / "scenarios" / "validation" / "mm10.toml"),
                            (f'run.duration="{args.duration:g}s"', 'run.warmup="50s"', 'run.drain="50s"'))
    scenario = source.build()
    tasks = [(scenario, r, 1) for r in range(args.replications)]
    load_before = os.getloadavg()[0]
    rates: dict[int, list[float]] = {1: [], 2: []}
    executors = {1: LocalExecutor(1), 2: LocalExecutor(2)}
    try:
        executors[2].run(tasks[:2])  # start and warm the pool (imports, first pickle)
        executors[1].run(tasks[:1])
        for _ in range(args.rounds):
            for workers in (1, 2):
                began = time.perf_counter()
                executors[workers].run(tasks)
                rates[workers].append(len(tasks) / (time.perf_counter() - began))
    finally:
        for ex in executors.values():
            ex.close()
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"cores: {os.cpu_count()}  1-min load average before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          "(other processes on the machine take cores from the 2-worker run)")
    print(f"task: one replication of {args.duration:g} s at 9 req/s (~{9 * args.duration:,.0f} requests), {args.replications} per batch, "
          f"{args.rounds} alternating rounds")
    print(f"1 worker : {one:6.2f} replications/s  (rounds: {', '.join(f'{r:.2f}' for r in rates[1])})")
    print(f"2 workers: {two:6.2f} replications/s  (rounds: {', '.join(f'{r:.2f}' for r in rates[2])})")
    print(f"speed-up : {two / one:.2f}x  (target >= 1.8x on 2 free cores)")


if __name__ == "__main__":
    main()
