"""The simulator as a library call: a scenario in, records, gauges and the JSON summary out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from simulator import stats
from simulator.engine import simulate
from simulator.scenario import Scenario


@dataclass(frozen=True)
class SimRun:
    scenario: Scenario
    records: pd.DataFrame
    gauges: pd.DataFrame
    summary: dict
    replications: int
    seed: int

    def per_replication(self) -> pd.DataFrame:
        run = self.scenario.run
        window = stats.measurement_window(self.records, run.warmup, run.duration)
        return stats.per_replication(
            window, run.duration - run.warmup, replications=range(self.replications), endpoints=list(self.scenario.endpoints)
        )


def run_scenario(
    scenario: Scenario,
    *,
    replications: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimRun:
    n = replications if replications is not None else scenario.run.replications
    s = seed if seed is not None else scenario.run.seed
    records, gauges = simulate(scenario, replications=n, seed=s, workers=workers, progress=progress)
    summary = stats.summarize(
        records,
        scenario=scenario.run.name,
        engine="sim",
        replications=n,
        seed=s,
        warmup_s=scenario.run.warmup,
        end_s=scenario.run.duration,
        endpoints=list(scenario.endpoints),
    )
    return SimRun(scenario, records, gauges, summary, n, s)
