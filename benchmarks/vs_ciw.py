"""gwsim against Ciw on identical work, simulated for the same simulated time by both,
interleaved round by round; simulated customers per CPU-second each, and the ratio.
Target: gwsim >= 2x Ciw on the tandem.

Two models, both at 90 % utilisation (Poisson arrivals at 9/s, exponential services with
mean 1 s, ten servers a station):

- *tandem* (the figure): two M/M/10 stations in series.  In gwsim the first station is the
  gateway's ten cores (``gateway.cpu_per_request``), the second a provider's concurrency
  limit of ten (``scenarios/validation/mm10.toml`` with those two overrides); in Ciw a
  two-node network.  gwsim runs it on its request flow: admission, the parse's CPU slice
  booked on a core, middleware, the connection pool, the provider call, the reply.  Two
  lines: the flow gwsim picks for this scenario (the direct flow: callbacks on timeouts),
  and the generator flow every scenario with model selection, a fallback, a deadline or a
  breaker runs (the seed scenario's), forced here by allowing a second attempt that never
  happens (``fallback.max_attempts = 2``; the records are the same).
- *M/M/10*: ``scenarios/validation/mm10.toml`` as it is, which takes gwsim's M/M/c shortcut
  (``SimGateway._plain``: the call placed on arrival, the reply one timeout away).

Equal terms: both sides end with a pandas DataFrame of records (Ciw's documented export
``pd.DataFrame(Q.get_all_records())``, one row per customer and node; gwsim's records, one
row of 32 columns per request), and both simulate under the same garbage-collector settings
(``simulator.engine.run_gc``, which gwsim's replications use; Ciw's run is wrapped in it).
Every run starts on a collected heap.  Each figure is the median of the rounds' ratios
(a round's runs are adjacent in time, so they share the machine's state); the range follows.

    python benchmarks/vs_ciw.py [--sim-seconds 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path

import ciw
import numpy as np
import pandas as pd

from simulator.engine import Replication, run_gc
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
MM10 = ROOT / "scenarios/validation/mm10.toml"
TANDEM = ['gateway.cpu_workers=10', 'gateway.cpu_per_request={dist="exponential", mean="1s"}']
GENERATOR_FLOW = ['fallback.mode="sequential"', "fallback.max_attempts=2"]


def ciw_rate(sim_seconds: float, seed: int, nodes: int) -> tuple[float, int]:
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(rate=9.0)] + [None] * (nodes - 1),
        service_distributions=[ciw.dists.Exponential(rate=1.0) for _ in range(nodes)],
        number_of_servers=[10] * nodes,
        routing=[[1.0 if j == i + 1 else 0.0 for j in range(nodes)] for i in range(nodes)],
    )
    gc.collect()
    begun = time.process_time()
    ciw.seed(seed)
    q = ciw.Simulation(network)
    with run_gc():
        q.simulate_until_max_time(sim_seconds)
    table = pd.DataFrame(q.get_all_records())
    served = int((table["node"] == nodes).sum())  # customers through the last node
    return served / (time.process_time() - begun), served


def gwsim_rate(sim_seconds: float, seed: int, overrides: list[str]) -> tuple[float, int]:
    scenario = load_scenario(MM10, [f'run.duration="{sim_seconds}s"', 'run.warmup="0s"', 'run.drain="0s"', *overrides])
    gc.collect()
    begun = time.process_time()
    result = Replication(scenario, 0, seed).run()
    served = int((result.records["outcome"] == "ok").sum())
    return served / (time.process_time() - begun), served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim-seconds", type=float, default=5000.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs = {
        "ciw_tandem": lambda r: ciw_rate(args.sim_seconds, r, 2),
        "gwsim_tandem": lambda r: gwsim_rate(args.sim_seconds, r, TANDEM),
        "gwsim_tandem_gen": lambda r: gwsim_rate(args.sim_seconds, r, TANDEM + GENERATOR_FLOW),
        "ciw_mm10": lambda r: ciw_rate(args.sim_seconds, r, 1),
        "gwsim_mm10": lambda r: gwsim_rate(args.sim_seconds, r, []),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    served: dict[str, int] = {}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for name, run in runs.items():
            rate, n = run(r)
            rates[name].append(rate)
            served[name] = n
        if served["gwsim_tandem"] != served["gwsim_tandem_gen"]:
            raise SystemExit("the two gwsim tandem runs served different numbers: not the same model")
    load_after = os.getloadavg()
    med = {k: float(np.median(v)) for k, v in rates.items()}

    def ratio(ours: str, theirs: str) -> str:
        each = [g / c for g, c in zip(rates[ours], rates[theirs])]
        return f"{float(np.median(each)):.2f}x ({min(each):.2f}-{max(each):.2f})"

    print(f"{args.sim_seconds:g} simulated seconds a run, median of {args.rounds} rounds (Ciw {ciw.__version__}); "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} cores")
    print("simulated customers per CPU-second, a DataFrame of records each, the same GC settings:")
    print(f"  tandem, Ciw (2 nodes):                  {med['ciw_tandem']:9,.0f}  ({served['ciw_tandem']:,} customers a run)")
    print(f"  tandem, gwsim (its flow: direct):       {med['gwsim_tandem']:9,.0f}  ({served['gwsim_tandem']:,} requests a run)")
    print(f"  tandem, gwsim (generator flow):         {med['gwsim_tandem_gen']:9,.0f}")
    print(f"  M/M/10, Ciw:                            {med['ciw_mm10']:9,.0f}  ({served['ciw_mm10']:,} customers a run)")
    print(f"  M/M/10, gwsim (M/M/c shortcut):         {med['gwsim_mm10']:9,.0f}  ({served['gwsim_mm10']:,} requests a run)")
    print(f"ratio gwsim/Ciw, tandem (direct flow):    {ratio('gwsim_tandem', 'ciw_tandem')}  (target >= 2)")
    print(f"ratio gwsim/Ciw, tandem (generator flow): {ratio('gwsim_tandem_gen', 'ciw_tandem')}  (target >= 2)")
    print(f"ratio gwsim/Ciw, M/M/10:                  {ratio('gwsim_mm10', 'ciw_mm10')}")


if __name__ == "__main__":
    main()
