"""Simulator speed: simulated requests per CPU-second of gwsim on a scenario (the seed's by
default), against a bare SimPy M/M/c model measured in the same round.  The ratio is the
figure; both rates depend on the machine, the ratio much less.

The baseline is SimPy as its documentation writes it: a process per customer, a
``simpy.Resource`` of c servers, variates from Python's ``random`` (``expovariate``), the
garbage collector at Python's defaults; M/M/10 at rho 0.9, 100,000 customers, in this process.

gwsim is measured three ways, each over the scenario's own replications and seed:

- *end to end*: ``gwsim run SCENARIO --json`` as a child process, as a user runs it (default
  worker processes): the interpreter's start, imports, reading the scenario, the
  replications, the records, the statistics and the JSON.  CPU time is the child's and its
  workers' (``RUSAGE_CHILDREN``).  This is the figure the target applies to;
- *in process*: ``simulator.api.run_scenario(scenario, workers=1)`` in this process (what a
  notebook or a sweep pays per run): the replications, records and summary, no start-up;
- *one replication*: ``Replication(...).run()``, the simulation and its records table only.

Also printed: the start-up alone (a child that imports what ``gwsim run`` imports and
exits), which a run pays whatever its length.  Each round measures, back to back: bare,
end to end, start-up, in process, one replication, bare again; a round's ratios use the
mean of its two bare rates.  Figures are medians over the rounds, ranges in brackets.

    python benchmarks/sim_speed.py [--scenario scenarios/seed/heavy_load.toml] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import simpy

from simulator.api import run_scenario
from simulator.engine import Replication
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.35  # issue 17: the seed scenario end to end against the bare model


def bare_mmc(customers: int, lam: float = 9.0, mu: float = 1.0, c: int = 10, seed: int = 1) -> int:
    """SimPy's idiom for an M/M/c queue."""
    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=c)
    rng = random.Random(seed)
    served = 0

    def customer():
        nonlocal served
        with servers.request() as slot:
            yield slot
            yield env.timeout(rng.expovariate(mu))
        served += 1

    def source():
        for _ in range(customers):
            yield env.timeout(rng.expovariate(lam))
            env.process(customer())

    env.process(source())
    env.run()
    return served


def bare_rate(customers: int, seed: int) -> float:
    gc.collect()  # start on a heap without the previous run's garbage
    begun = time.process_time()
    bare_mmc(customers, seed=seed)
    return customers / (time.process_time() - begun)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def child_cpu(argv: list[str]) -> tuple[float, str]:
    """CPU seconds of a child process (and of its own children) and its stdout."""
    before = _children_cpu()
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True)
    return _children_cpu() - before, done.stdout


def gwsim_command() -> list[str]:
    script = Path(sys.executable).with_name("gwsim")  # the console script, as a user types it
    return [str(script)] if script.exists() else [sys.executable, "-m", "gwsim.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios/seed/heavy_load.toml")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bare-customers", type=int, default=100_000)
    args = parser.parse_args()
    scenario_path = args.scenario.resolve()
    scenario = load_scenario(scenario_path)
    reps = scenario.run.replications
    end_to_end = gwsim_command() + ["run", str(scenario_path), "--json"]
    start_up = [sys.executable, "-c", "import gwsim.cli, simulator.api"]

    rates: dict[str, list[float]] = {k: [] for k in ("bare", "e2e", "startup_s", "inproc", "one")}
    requests = one_requests = 0
    load_before = os.getloadavg()
    for r in range(args.rounds):
        bare_a = bare_rate(args.bare_customers, 2 * r)
        cpu, stdout = child_cpu(end_to_end)
        summary = json.loads(stdout)
        rates["startup_s"].append(child_cpu(start_up)[0])
        gc.collect()
        begun = time.process_time()
        run = run_scenario(scenario, workers=1)
        inproc_cpu = time.process_time() - begun
        requests = len(run.records)
        # the CLI stamps its output with the tree's version and the scenario's hash; the rest is the run's
        stamped = {k: v for k, v in summary.items() if k not in ("gwsim_version", "scenario_sha256")}
        if stamped != run.summary:
            raise SystemExit("gwsim run's summary differs from run_scenario's: not the same work")
        del run
        gc.collect()
        begun = time.process_time()
        one = Replication(scenario, r % reps, scenario.run.seed).run()
        one_cpu = time.process_time() - begun
        one_requests = len(one.records)
        del one
        bare_b = bare_rate(args.bare_customers, 2 * r + 1)
        rates["bare"].append((bare_a + bare_b) / 2)
        rates["e2e"].append(requests / cpu)
        rates["inproc"].append(requests / inproc_cpu)
        rates["one"].append(one_requests / one_cpu)
    load_after = os.getloadavg()

    def med(values: list[float]) -> float:
        return float(np.median(values))

    def ratio(key: str) -> tuple[float, str]:
        each = [g / b for g, b in zip(rates[key], rates["bare"])]
        return med(each), f"({min(each):.3f}-{max(each):.3f})"

    def spread(key: str) -> str:
        return f"({min(rates[key]):,.0f}-{max(rates[key]):,.0f})"

    shown = scenario_path.relative_to(ROOT) if scenario_path.is_relative_to(ROOT) else scenario_path
    print(f"scenario: {shown} ({reps} replications, {requests:,} requests a run); {args.rounds} rounds; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} cores")
    print(f"bare SimPy M/M/10 (random.expovariate, default GC): {med(rates['bare']):9,.0f} customers per CPU-second {spread('bare')}")
    e2e, e2e_range = ratio("e2e")
    inproc, inproc_range = ratio("inproc")
    one, one_range = ratio("one")
    print(f"gwsim run --json, end to end (child CPU):          {med(rates['e2e']):9,.0f} requests per CPU-second {spread('e2e')}")
    print(f"  of which start-up (imports), per run:           {med(rates['startup_s']):9.3f} CPU-seconds")
    print(f"run_scenario in process (no start-up):            {med(rates['inproc']):9,.0f} requests per CPU-second {spread('inproc')}")
    print(f"one replication (simulation + records table):     {med(rates['one']):9,.0f} requests per CPU-second {spread('one')}")
    print(f"ratio end to end / bare:      {e2e:.3f} {e2e_range}  target >= {TARGET}")
    print(f"ratio in process / bare:      {inproc:.3f} {inproc_range}")
    print(f"ratio one replication / bare: {one:.3f} {one_range}")


if __name__ == "__main__":
    main()
