"""``gwsim calibrate check``: every scenario of a suite measured on the real engine and predicted
by the simulator, compared per endpoint (see ``metrics``).

The real engine runs the scenario without its machine profile (``profile=none``): it pays
those overheads for real.  The simulator runs it with the profile, over the same length of
time as the measurement, with replications.

The machine is shared: other work on it takes its share of the cores, and that changes
from minute to minute.  So the check samples the machine during the measurement and, when
the scenario has a machine model, gives the simulator the other work seen then
(``machine.background``, reported as ``background``) instead of the profile's figure from
whenever the profile was measured (``background="profile"`` keeps that one).

The traffic is the measurement's: for an open-loop scenario the simulator replays the
requests the load generator sent (arrival time, endpoint, class; ``workload.replay``), so
the comparison is not blurred by two different draws of a Poisson stream or of the endpoint
mix (with 300 requests the mix alone moves an endpoint's throughput by 5 %).  Service
times, errors and everything downstream are still the simulator's own draws, different in
each replication.  ``traffic="own"`` lets the simulator draw its own traffic.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from gwsim.calibration.metrics import THRESHOLDS, EndpointComparison, compare_frames
from simulator.errors import UsageError
from simulator.scenario import load_scenario

log = logging.getLogger(__name__)


@dataclass
class ScenarioCheck:
    scenario: str
    path: str
    duration_s: float
    window: tuple[float, float]
    replications: int
    endpoints: list[EndpointComparison]
    accounting: dict = field(default_factory=dict)
    measure_s: float = 0.0
    simulate_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    measured: pd.DataFrame | None = None
    predicted: pd.DataFrame | None = None
    background: float | None = None  # other runnable threads on the machine during the measurement

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.endpoints) and not self.problems

    def to_dict(self) -> dict:
        return {
            "scenario": self.scenario,
            "path": self.path,
            "duration_s": self.duration_s,
            "window_s": list(self.window),
            "replications": self.replications,
            "passed": self.passed,
            "endpoints": [e.to_dict() for e in self.endpoints],
            "accounting": self.accounting,
            "measure_s": round(self.measure_s, 2),
            "simulate_s": round(self.simulate_s, 2),
            "problems": self.problems,
            "background": None if self.background is None else round(self.background, 3),
        }


def suite_files(suite_dir: str | Path) -> list[Path]:
    d = Path(suite_dir)
    if d.is_file() and d.suffix == ".toml":
        return [d]
    if not d.is_dir():
        raise UsageError(f"{d}: expected a directory of scenario TOML files, found nothing there")
    files = sorted(p for p in d.glob("*.toml"))
    if not files:
        raise UsageError(f"{d}: expected scenario TOML files, found none")
    return files


def check_scenario(
    path: str | Path,
    *,
    duration_s: float | None = None,
    replications: int | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    seed: int | None = None,
    workers: int | None = None,
    keep_frames: bool = False,
    thresholds: dict | None = None,
    background: str = "measured",
    traffic: str = "measured",
    startup_s: float = 12.0,
) -> ScenarioCheck:
    from gwsim.calibration.profile import CpuSampler
    from real_engine.measure import measure
    from simulator.api import run_scenario

    if background not in ("measured", "profile"):
        raise UsageError(f"background: expected 'measured' or 'profile', got {background!r}")
    if traffic not in ("measured", "own"):
        raise UsageError(f"traffic: expected 'measured' or 'own', got {traffic!r}")

    path = Path(path)
    base = load_scenario(path, list(overrides))
    duration = float(duration_s if duration_s is not None else base.run.duration)
    warmup = min(base.run.warmup, duration / 2)
    # The same arrival window on both sides: the simulator runs for the measured length.
    common = [*overrides, f"run.duration=\"{duration!r}s\"", f"run.warmup=\"{warmup!r}s\""]
    sim_sc = load_scenario(path, common)
    sampler = CpuSampler(every=0.5).start()
    t = time.perf_counter()
    try:
        # A generous start-up: on a busy machine the load generator can take longer than
        # measure's default to start, and then sends its first arrivals late, all at once; the
        # backlog that makes drains for seconds at a high utilisation, past the warm-up.
        result = measure(str(path), [*common, 'profile="none"'], duration_s=duration, seed=seed, startup_s=startup_s)
    finally:
        sampler.stop()
    measure_s = time.perf_counter() - t
    measured = result.frame()
    seen = None
    try:
        seen = sampler.background(result.t0 + warmup, result.t0 + duration)
    except RuntimeError:
        pass  # too short a run to sample: the profile's figure stays
    if seen is not None and background == "measured" and sim_sc.machine.cores > 0:
        # the mean over the window, and the steps as sampled: a minute on a shared machine
        # has quiet and busy spells, and a queue near saturation follows them
        trace = tuple((round(at - result.t0, 3), float(n)) for at, n in sampler.sessions() if at >= result.t0 - 1.0)
        sim_sc = load_scenario(path, [*common, f"machine.background={seen:.4f}"])
        sim_sc = sim_sc.model_copy(update={"machine": sim_sc.machine.model_copy(update={"background_trace": trace})})
    if traffic == "measured" and sim_sc.workload.mode == "open" and not measured.empty:
        sim_sc = replayed(sim_sc, measured)
    t = time.perf_counter()
    sim = run_scenario(sim_sc, replications=replications, seed=seed, workers=workers)
    simulate_s = time.perf_counter() - t
    window = (warmup, duration)
    comps = compare_frames(
        sim.records, measured, window=window, predicted_replications=sim.replications, measured_replications=1,
        endpoints=list(base.endpoints), thresholds=thresholds,
    )
    problems = list(getattr(result, "problems", []) or [])
    if result.interrupted:
        problems.append("measurement interrupted")
    return ScenarioCheck(
        scenario=base.run.name, path=str(path), duration_s=duration, window=window, replications=sim.replications,
        endpoints=comps, accounting=result.accounting, measure_s=measure_s, simulate_s=simulate_s, problems=problems,
        measured=measured if keep_frames else None, predicted=sim.records if keep_frames else None, background=seen,
    )


def replayed(scenario, measured: pd.DataFrame):
    """``scenario`` with the measured requests as its open-loop traffic (``workload.replay``)."""
    sent = measured.sort_values(["arrived_at", "id"] if "id" in measured.columns else ["arrived_at"], kind="stable")
    requests = tuple(
        (float(at), str(ep), str(cls))
        for at, ep, cls in zip(sent["arrived_at"], sent["endpoint"], sent["request_class"])
    )
    return scenario.model_copy(update={"workload": scenario.workload.model_copy(update={"replay": requests})})


def check_suite(
    suite_dir: str | Path, *, progress: Callable[[str], None] | None = None, **kwargs
) -> list[ScenarioCheck]:
    out = []
    for path in suite_files(suite_dir):
        if progress:
            progress(path.stem)
        out.append(check_scenario(path, **kwargs))
    return out


def _f(x, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def format_checks(checks: list[ScenarioCheck]) -> str:
    head = ["scenario", "endpoint", "n meas", "P50 meas/pred ms", "err%", "P95 meas/pred ms", "err%", "P99 meas/pred ms", "err%",
            "thr err%", "succ pp", "KS", "TOST50", "TOST95", "verdict", "bg"]
    rows = []
    for c in checks:
        for e in c.endpoints:
            m, p, er = e.measured, e.predicted, e.errors
            rows.append([
                c.scenario, e.endpoint, str(e.n_measured),
                f"{_f(m['p50'], '.0f')}/{_f(p['p50'], '.0f')}", _f(er["p50"], "+.1f"),
                f"{_f(m['p95'], '.0f')}/{_f(p['p95'], '.0f')}", _f(er["p95"], "+.1f"),
                f"{_f(m['p99'], '.0f')}/{_f(p['p99'], '.0f')}", _f(er["p99"], "+.1f"),
                _f(er["throughput"], "+.1f"), _f(er["success_pp"], "+.2f"), _f(e.ks, ".3f"),
                "eq" if e.tost.get("p50", {}).get("equivalent") else "ne",
                "eq" if e.tost.get("p95", {}).get("equivalent") else "ne",
                "ok" if e.passed else "MISS " + ",".join(e.misses),
                _f(c.background, ".2f"),
            ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    passed = sum(c.passed for c in checks)
    lines.append(
        f"{passed}/{len(checks)} scenarios within thresholds (|err| P50 <= {THRESHOLDS['p50']:g} %, P95/P99 <= "
        f"{THRESHOLDS['p95']:g} %, throughput <= {THRESHOLDS['throughput']:g} %, success <= {THRESHOLDS['success_pp']:g} pp)"
    )
    for c in checks:
        for p in c.problems:
            lines.append(f"{c.scenario}: {p}")
    return "\n".join(lines)
