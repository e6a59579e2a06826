"""gwsim against Ciw on identical work: the M/M/10 validation model (Poisson arrivals at 9/s,
ten servers, exponential service with mean 1 s) simulated for the same simulated time by
both, interleaved round by round; simulated customers per CPU-second each, and the ratio.
Target: gwsim >= 2x Ciw.

Three comparisons, each a median of the rounds' ratios (a round's runs are adjacent in
time, so they share the machine's state):

- *a table of records each*: both end with a pandas DataFrame of one row per customer, the
  way either is used for analysis (Ciw's documented export is
  ``pd.DataFrame(Q.get_all_records())``; gwsim returns its records as a DataFrame of 32
  columns against Ciw's 13).  This is the like-for-like figure.
- *records as each keeps them*: Ciw's list of namedtuples against gwsim's DataFrame (gwsim
  pays for the table, Ciw does not).
- *gwsim without records* (``records="none"``: outcome counts and latency histograms)
  against Ciw with its namedtuples.

    python benchmarks/vs_ciw.py [--sim-seconds 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import ciw
import numpy as np
import pandas as pd

from simulator.engine import Replication
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
MM10 = ROOT / "scenarios/validation/mm10.toml"


def ciw_rate(sim_seconds: float, seed: int, table: bool) -> tuple[float, int]:
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(rate=9.0)],
        service_distributions=[ciw.dists.Exponential(rate=1.0)],
        number_of_servers=[10],
    )
    begun = time.process_time()
    ciw.seed(seed)
    q = ciw.Simulation(network)
    q.simulate_until_max_time(sim_seconds)
    records = q.get_all_records()
    if table:
        served = len(pd.DataFrame(records))
    else:
        served = len(records)
    return served / (time.process_time() - begun), served


def gwsim_rate(sim_seconds: float, seed: int, keep_records: bool) -> tuple[float, int]:
    scenario = load_scenario(MM10, [f'run.duration="{sim_seconds}s"', 'run.warmup="0s"', 'run.drain="0s"'])
    begun = time.process_time()
    result = Replication(scenario, 0, seed, keep_records).run()
    if keep_records:
        served = int((result.records["outcome"] == "ok").sum())
    else:
        served = sum(s.ok for s in result.sketches.values())
    return served / (time.process_time() - begun), served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim-seconds", type=float, default=5000.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"ciw": [], "ciw_table": [], "gwsim": [], "gwsim_none": []}
    served: dict[str, int] = {}
    for r in range(args.rounds):
        for name, fn in (("ciw", lambda: ciw_rate(args.sim_seconds, r, False)),
                         ("ciw_table", lambda: ciw_rate(args.sim_seconds, r, True)),
                         ("gwsim", lambda: gwsim_rate(args.sim_seconds, r, True)),
                         ("gwsim_none", lambda: gwsim_rate(args.sim_seconds, r, False))):
            gc.collect()  # each run starts on a heap without the previous run's garbage
            rate, n = fn()
            rates[name].append(rate)
            served[name] = n
    med = {k: float(np.median(v)) for k, v in rates.items()}

    def ratio(ours: str, theirs: str) -> float:
        return float(np.median([g / c for g, c in zip(rates[ours], rates[theirs])]))

    print(f"M/M/10 at rho 0.9, {args.sim_seconds:g} simulated seconds a round, median of {args.rounds} rounds (Ciw {ciw.__version__})")
    print(f"Ciw, records as namedtuples:   {med['ciw']:10,.0f} simulated customers per CPU-second ({served['ciw']:,} a round)")
    print(f"Ciw, records as a DataFrame:   {med['ciw_table']:10,.0f} simulated customers per CPU-second")
    print(f"gwsim, records as a DataFrame: {med['gwsim']:10,.0f} simulated customers per CPU-second ({served['gwsim']:,} a round)")
    print(f"gwsim, records='none':         {med['gwsim_none']:10,.0f} simulated customers per CPU-second")
    print(f"ratio gwsim/Ciw, a table of records each:     {ratio('gwsim', 'ciw_table'):.2f}  (target >= 2)")
    print(f"ratio gwsim/Ciw, records as each keeps them:  {ratio('gwsim', 'ciw'):.2f}")
    print(f"ratio gwsim/Ciw, gwsim without records:       {ratio('gwsim_none', 'ciw'):.2f}")


if __name__ == "__main__":
    main()
