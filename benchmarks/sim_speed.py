"""Simulator speed: simulated requests per CPU-second of the gateway model on the seed
scenario, and, in the same run, of a bare SimPy M/M/c model (Poisson arrivals, c servers,
exponential service, nothing else).  The ratio is the figure; both rates depend on the
machine, the ratio much less.  Each round measures one replication and then the bare model
right after it, so the two share the machine's state (other jobs, clock); the figure is the
median of the rounds' ratios.

    python benchmarks/sim_speed.py [--scenario scenarios/seed/heavy_load.toml] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import numpy as np
import simpy

from simulator.engine import Replication
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def bare_mmc(customers: int, lam: float = 9.0, mu: float = 1.0, c: int = 10, seed: int = 1) -> int:
    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=c)
    rng = np.random.default_rng(seed)
    served = 0

    def customer():
        nonlocal served
        with servers.request() as slot:
            yield slot
            yield env.timeout(rng.exponential(1 / mu))
        served += 1

    def source():
        for _ in range(customers):
            yield env.timeout(rng.exponential(1 / lam))
            env.process(customer())

    env.process(source())
    env.run()
    return served


def gateway_rate(scenario_path: Path, rounds: int) -> tuple[float, int]:
    scenario = load_scenario(scenario_path)
    total = 0
    cpu = 0.0
    for r in range(rounds):
        gc.collect()  # each run starts on a heap without the previous run's garbage
        begun = time.process_time()
        result = Replication(scenario, r, scenario.run.seed).run()
        cpu += time.process_time() - begun
        total += len(result.records)
    return total / cpu, total


def bare_rate(customers: int, rounds: int) -> float:
    cpu = 0.0
    for r in range(rounds):
        gc.collect()
        begun = time.process_time()
        bare_mmc(customers, seed=r)
        cpu += time.process_time() - begun
    return customers * rounds / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios/seed/heavy_load.toml")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bare-customers", type=int, default=100_000)
    args = parser.parse_args()
    # interleave so that both see the same machine state
    gw_rates, bare_rates, ratios = [], [], []
    for _ in range(args.rounds):
        rate, n = gateway_rate(args.scenario, 1)
        gw_rates.append(rate)
        bare_rates.append(bare_rate(args.bare_customers, 1))
        ratios.append(gw_rates[-1] / bare_rates[-1])
    gw = float(np.median(gw_rates))
    bare = float(np.median(bare_rates))
    print(f"scenario: {args.scenario.relative_to(ROOT) if args.scenario.is_relative_to(ROOT) else args.scenario}")
    print(f"gateway model:      {gw:10,.0f} simulated requests per CPU-second ({n:,} requests a replication)")
    print(f"bare SimPy M/M/10:  {bare:10,.0f} simulated customers per CPU-second")
    print(f"ratio gateway/bare: {float(np.median(ratios)):.3f}  (median of {args.rounds} rounds' ratios, "
          f"{min(ratios):.3f}-{max(ratios):.3f}; issue G target >= 0.35)")


if __name__ == "__main__":
    main()
