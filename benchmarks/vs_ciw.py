"""gwsim against Ciw on identical work: the M/M/10 validation model (Poisson arrivals at 9/s,
ten servers, exponential service with mean 1 s) simulated for the same simulated time by
both, interleaved round by round; simulated customers per CPU-second each, and the ratio.
Target: gwsim >= 2x Ciw.  Both keep a record per customer (gwsim's DataFrame of records,
Ciw's data records); gwsim with ``records="none"`` is printed as well.  The ratio is the
median of the rounds' ratios (each round's runs are adjacent in time, so they share the
machine's state).

    python benchmarks/vs_ciw.py [--sim-seconds 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import ciw
import numpy as np

from simulator.engine import Replication
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
MM10 = ROOT / "scenarios/validation/mm10.toml"


def ciw_rate(sim_seconds: float, seed: int) -> tuple[float, int]:
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(rate=9.0)],
        service_distributions=[ciw.dists.Exponential(rate=1.0)],
        number_of_servers=[10],
    )
    begun = time.process_time()
    ciw.seed(seed)
    q = ciw.Simulation(network)
    q.simulate_until_max_time(sim_seconds)
    served = len(q.get_all_records())
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
    rates: dict[str, list[float]] = {"ciw": [], "gwsim": [], "gwsim_none": []}
    served: dict[str, int] = {}
    for r in range(args.rounds):
        for name, fn in (("ciw", lambda: ciw_rate(args.sim_seconds, r)),
                         ("gwsim", lambda: gwsim_rate(args.sim_seconds, r, True)),
                         ("gwsim_none", lambda: gwsim_rate(args.sim_seconds, r, False))):
            rate, n = fn()
            rates[name].append(rate)
            served[name] = n
    med = {k: float(np.median(v)) for k, v in rates.items()}
    ratio = float(np.median([g / c for g, c in zip(rates["gwsim"], rates["ciw"])]))
    ratio_none = float(np.median([g / c for g, c in zip(rates["gwsim_none"], rates["ciw"])]))
    print(f"M/M/10 at rho 0.9, {args.sim_seconds:g} simulated seconds a round, median of {args.rounds} rounds (Ciw {ciw.__version__})")
    print(f"Ciw:                    {med['ciw']:10,.0f} simulated customers per CPU-second ({served['ciw']:,} a round)")
    print(f"gwsim (records):        {med['gwsim']:10,.0f} simulated customers per CPU-second ({served['gwsim']:,} a round)")
    print(f"gwsim (records=none):   {med['gwsim_none']:10,.0f} simulated customers per CPU-second")
    print(f"ratio gwsim/Ciw:        {ratio:.2f}  (records=none: {ratio_none:.2f}; medians of the rounds' ratios; target >= 2)")


if __name__ == "__main__":
    main()
