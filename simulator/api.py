"""The simulator as a library call: a scenario in, records, gauges and the JSON summary out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from simulator import histograms, stats
from simulator.engine import simulate, simulate_sketches
from simulator.errors import PartialResults, UsageError
from simulator.records import RECORD_FIELDS
from simulator.scenario import Scenario


@dataclass(frozen=True)
class SimRun:
    scenario: Scenario
    records: pd.DataFrame
    gauges: pd.DataFrame
    summary: dict
    replications: int
    seed: int
    #: records="none": endpoint -> one simulator.histograms.LatencySketch per replication (records empty)
    sketches: dict | None = None

    def time_series(self) -> pd.DataFrame:
        """Per window of ``run.window`` seconds and endpoint: completed req/s, success rate and
        P95 from the records, joined with the model's gauges averaged over the window (requests
        in flight, AI-service queue, AI pool in use, CPU queue, providers in flight) and the
        breaker state seen most in the window."""
        window = self.scenario.run.window
        series = stats.time_series(self.records, window, replications=self.replications)
        if self.gauges.empty:
            return series
        g = self.gauges.copy()
        g["window_at"] = (g["at"] // window) * window
        numeric = ["in_flight", "in_gateway", "ai_pool_in_use", "ai_queue", "cpu_queue", "provider_in_flight", "semantic_entries"]
        agg = g.groupby("window_at")[numeric].mean().reset_index()
        states = g.groupby("window_at")["breaker_state"].agg(lambda s: s.mode().iat[0] if len(s) else "").reset_index()
        agg = agg.merge(states, on="window_at", how="left")
        return series.merge(agg.rename(columns={"in_flight": "gauge_in_flight"}), on="window_at", how="left")

    def per_replication(self) -> pd.DataFrame:
        run = self.scenario.run
        if self.sketches is not None:
            return histograms.per_replication(self.sketches, run.duration - run.warmup, self.replications)
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
    records: str = "all",
) -> SimRun:
    """``records="none"`` keeps only mergeable histograms (bounded memory; percentiles within
    ``simulator.histograms.RELATIVE_ERROR``); ``records`` and ``gauges`` of the result are then empty.

    Ctrl-C raises ``PartialResults`` whose ``finished`` is the SimRun of the replications that
    had completed (None when none had), and ``total`` the number asked for.
    """
    n = replications if replications is not None else scenario.run.replications
    s = seed if seed is not None else scenario.run.seed
    if records not in ("all", "none"):
        raise UsageError(f"records must be 'all' or 'none', got {records!r}")
    try:
        if records == "none":
            sketches, _ = simulate_sketches(scenario, replications=n, seed=s, workers=workers, progress=progress)
            return _sketch_run(scenario, sketches, n, s)
        frames = simulate(scenario, replications=n, seed=s, workers=workers, progress=progress)
        return _record_run(scenario, frames[0], frames[1], n, s)
    except PartialResults as stop:
        if records == "none":
            sketches, _, done = stop.finished  # type: ignore[misc]
            partial = _sketch_run(scenario, sketches, len(done), s) if done else None
        else:
            recs, gauges, done = stop.finished  # type: ignore[misc]
            partial = _record_run(scenario, recs, gauges, len(done), s) if done else None
        raise PartialResults(partial, n) from None


def _sketch_run(scenario: Scenario, sketches: dict, n: int, seed: int) -> SimRun:
    summary = histograms.summarize(
        sketches, scenario=scenario.run.name, engine="sim", replications=n, seed=seed,
        warmup_s=scenario.run.warmup, end_s=scenario.run.duration, endpoints=list(scenario.endpoints),
    )
    return SimRun(scenario, pd.DataFrame(columns=list(RECORD_FIELDS)), pd.DataFrame(), summary, n, seed, sketches)


def _record_run(scenario: Scenario, records: pd.DataFrame, gauges: pd.DataFrame, n: int, seed: int) -> SimRun:
    summary = stats.summarize(
        records,
        scenario=scenario.run.name,
        engine="sim",
        replications=n,
        seed=seed,
        warmup_s=scenario.run.warmup,
        end_s=scenario.run.duration,
        endpoints=list(scenario.endpoints),
    )
    return SimRun(scenario, records, gauges, summary, n, seed)
