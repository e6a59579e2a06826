"""Capacity: the highest load (arrival rate, or users in a closed loop) at which the gateway
still meets its SLOs, and which resource saturates first there.

A bisection over the load, made honest about simulation noise: each probe runs a few
replications, and adds more (doubling) until the SLO metrics' 95 % intervals separate from
their thresholds, i.e. until the verdict "meets" or "misses" is beyond noise.  A probe whose
intervals still straddle a threshold at the replication budget is at the capacity within
the simulation's resolution, and the search stops there.  All probes share the seed, so
probe i and probe j see the same random streams (common random numbers) and the metric
rises smoothly with the load.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from gwsim.whatif.runner import DaskExecutor, LocalExecutor, ScenarioSource, Variant, aggregate, run_variants
from gwsim.whatif.slo import SLO, Verdict, check_goodput, judge, parse_slos, slo_values
from simulator.errors import UsageError
from simulator.scenario import Scenario
from simulator.units import format_duration

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    load: float
    feasible: bool
    decided: bool  # every verdict beyond noise (or one failing beyond noise)
    replications: int
    verdicts: tuple[Verdict, ...]
    metrics: dict[str, float]  # aggregated metrics (mean, _lo, _hi)


@dataclass(frozen=True)
class CapacityResult:
    variable: str  # "rate" (req/s) or "users"
    answer: float  # highest load found to meet the SLOs (0 when none does)
    bracket: tuple[float, float]  # (highest meeting, lowest missing); hi is inf when never missed
    stopped: str  # why the search ended
    slos: tuple[SLO, ...]
    probes: tuple[Probe, ...]
    utilisation: pd.DataFrame  # resource, utilisation at the answer, sorted descending
    waits: pd.DataFrame  # stage, mean ms per successful request at the answer

    @property
    def bottleneck(self) -> str | None:
        return None if self.utilisation.empty else str(self.utilisation.iloc[0]["resource"])

    def probes_frame(self) -> pd.DataFrame:
        rows = []
        for i, p in enumerate(self.probes):
            row: dict[str, Any] = {"probe": i, self.variable: p.load, "feasible": p.feasible, "decided": p.decided,
                                   "replications": p.replications}
            row.update(p.metrics)
            rows.append(row)
        return pd.DataFrame(rows)

    def as_dict(self) -> dict:
        def f(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else float(f"{x:.6g}")

        return {
            "variable": self.variable,
            "answer": f(self.answer),
            "bracket": [f(self.bracket[0]), f(self.bracket[1])],
            "stopped": self.stopped,
            "slos": [s.text for s in self.slos],
            "bottleneck": self.bottleneck,
            "utilisation": {r.resource: f(r.utilisation) for r in self.utilisation.itertuples()},
            "waits_ms": {r.stage: f(r.mean_ms) for r in self.waits.itertuples()},
            "probes": [
                {"load": f(p.load), "feasible": p.feasible, "decided": p.decided, "replications": p.replications,
                 "verdicts": [v.as_dict() for v in p.verdicts]}
                for p in self.probes
            ],
        }


# --------------------------------------------------------------------------- load


def load_variable(scenario: Scenario) -> str:
    return "users" if scenario.workload.mode == "closed" else "rate"


def current_load(scenario: Scenario) -> float:
    wl = scenario.workload
    if wl.mode == "closed":
        return float(wl.users or 1)
    if wl.mode == "trace":  # the trace's own rate, sped up by time_scale
        from simulator.trace import trace_rate

        return trace_rate(wl.trace) * wl.time_scale
    assert wl.arrivals is not None
    return float(wl.arrivals.mean_rate)


def set_load(data: dict[str, Any], variable: str, value: float, trace_rate: float = 1.0) -> dict[str, Any]:
    """Raw scenario data with its load set to ``value`` (req/s, or users); a trace is sped up
    (``time_scale``) from its own rate, ``trace_rate``."""
    wl = data.setdefault("workload", {})
    if variable == "users":
        wl["users"] = max(1, int(round(value)))
        return data
    if wl.get("mode") == "trace":
        wl["time_scale"] = value / trace_rate
        return data
    arrivals = wl.setdefault("arrivals", {})
    if arrivals.get("process") == "burst":
        arrivals["every"] = format_duration(int(arrivals["size"]) / value)
    else:
        arrivals["rate"] = f"{value:.9g}/s"
    return data


# --------------------------------------------------------------------------- search


class _Evaluator:
    def __init__(self, source: ScenarioSource, slos: Sequence[SLO], executor, variable: str, seed: int,
                 replications: int, max_replications: int, on_probe: Callable[[Probe], None] | None,
                 goodput: Sequence = ()) -> None:
        self.source = source
        self.goodput = goodput
        self.slos = slos
        self.executor = executor
        self.variable = variable
        self.seed = seed
        self.replications = replications
        self.max_replications = max_replications
        self.on_probe = on_probe
        self.probes: list[Probe] = []
        self._cache: dict[float, Probe] = {}
        base = source.build()
        # a trace's load is its own rate sped up (time_scale): probes set time_scale from it
        self.trace_rate = current_load(base) / base.workload.time_scale if base.workload.mode == "trace" else 1.0

    def __call__(self, load: float) -> Probe:
        key = round(load, 9)
        if key in self._cache:
            return self._cache[key]
        scenario = self.source.build(transform=lambda d: set_load(d, self.variable, load, self.trace_rate))
        variant = Variant({self.variable: load}, scenario)
        n = self.replications
        frame = run_variants([variant], self.executor, replications=n, seed=self.seed, goodput=self.goodput)
        while True:
            verdicts = tuple(judge(s, slo_values(frame, s)) for s in self.slos)
            failed_for_sure = any((not v.passed) and v.decided for v in verdicts)
            passed_for_sure = all(v.passed and v.decided for v in verdicts)
            if failed_for_sure or passed_for_sure or n >= self.max_replications:
                break
            more = min(n, self.max_replications - n)  # double the replications
            extra = run_variants([variant], self.executor, replications=more, seed=self.seed, first_replication=n,
                                 goodput=self.goodput)
            frame = pd.concat([frame, extra], ignore_index=True)
            n += more
        feasible = all(v.passed for v in verdicts)
        metrics = aggregate(frame, [self.variable]).iloc[0].to_dict()
        for k in ("variant", self.variable, "replications"):
            metrics.pop(k, None)
        probe = Probe(load, feasible, failed_for_sure or passed_for_sure, n, verdicts, metrics)
        self._cache[key] = probe
        self.probes.append(probe)
        log.info("probe %s=%g: %s%s with %d replications", self.variable, load, "meets" if feasible else "misses",
                 "" if probe.decided else " (within noise)", n)
        if self.on_probe is not None:
            self.on_probe(probe)
        return probe


def _utilisation(probe: Probe | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    util_rows, wait_rows = [], []
    if probe is not None:
        for key, value in probe.metrics.items():
            if key.startswith("util:") and not key.endswith(("_lo", "_hi")) and math.isfinite(value):
                util_rows.append({"resource": key[5:], "utilisation": float(value),
                                  "lo": probe.metrics.get(f"{key}_lo", math.nan), "hi": probe.metrics.get(f"{key}_hi", math.nan)})
            if key.startswith("stage:") and key.endswith("_ms") and math.isfinite(value):
                wait_rows.append({"stage": key[6:-3], "mean_ms": float(value)})
    util = pd.DataFrame(util_rows, columns=["resource", "utilisation", "lo", "hi"])
    util = util.sort_values("utilisation", ascending=False, kind="stable").reset_index(drop=True)
    waits = pd.DataFrame(wait_rows, columns=["stage", "mean_ms"]).sort_values("mean_ms", ascending=False, kind="stable")
    return util, waits.reset_index(drop=True)


def capacity_search(
    source: ScenarioSource,
    slo_texts: Sequence[str],
    executor: LocalExecutor | DaskExecutor,
    *,
    lo: float | None = None,
    hi: float | None = None,
    rel_tol: float = 0.02,
    replications: int = 4,
    max_replications: int = 16,
    seed: int | None = None,
    max_probes: int = 30,
    on_probe: Callable[[Probe], None] | None = None,
    goodput: str | None = None,
) -> CapacityResult:
    """Bisect the load between a meeting and a missing probe (found by doubling or halving
    from the scenario's own load, or given as ``lo``/``hi``) until the bracket is narrower than
    ``rel_tol`` of its top, or a probe cannot be told from the threshold within
    ``max_replications``, or ``max_probes`` probes have run.  ``goodput``: the per-request
    targets of a goodput SLO (``--goodput 'ttft<1s,tpot<50ms'``)."""
    if replications < 2:
        raise UsageError("capacity needs at least 2 replications per probe for confidence intervals")
    if max_replications < replications:
        raise UsageError(f"--max-replications {max_replications}: expected at least --replications ({replications})")
    if not 0 < rel_tol < 1:
        raise UsageError(f"--tolerance {rel_tol}: expected a fraction between 0 and 1")
    base = source.build()
    slos = parse_slos(slo_texts, list(base.endpoints))
    targets = check_goodput(slos, goodput)
    variable = load_variable(base)
    s = seed if seed is not None else base.run.seed
    evaluate = _Evaluator(source, slos, executor, variable, s, replications, max_replications, on_probe, targets)
    integer = variable == "users"
    x0 = current_load(base)
    stopped = ""
    best: Probe | None = None
    low_ok: float = 0.0
    high_bad: float = math.inf

    def record(p: Probe) -> None:
        nonlocal best, low_ok, high_bad
        if p.feasible:
            if p.load > low_ok or best is None:
                low_ok = max(low_ok, p.load)
                best = p if best is None or p.load >= best.load else best
        else:
            high_bad = min(high_bad, p.load)

    # -- bracket
    if lo is not None and hi is not None and lo >= hi:
        raise UsageError(f"--lo {lo} --hi {hi}: expected lo below hi")
    for given in (lo, hi):
        if given is not None:
            if given <= 0:
                raise UsageError(f"capacity bracket {given}: expected a positive load")
            record(evaluate(given))
    if best is None and high_bad == math.inf:
        record(evaluate(x0))
    for _ in range(16):
        if best is not None and high_bad < math.inf:
            break
        if len(evaluate.probes) >= max_probes:
            break
        if best is None:  # nothing meets yet: halve the lowest missing load
            x = high_bad / 2.0
            if integer:
                x = math.floor(x)
                if x < 1:
                    break
            record(evaluate(x))
        else:  # nothing misses yet: double the highest meeting load
            record(evaluate(low_ok * 2.0 if not integer else max(low_ok * 2.0, low_ok + 1)))
    if best is None:
        stopped = "no load tried meets the SLOs"
    elif high_bad == math.inf:
        stopped = "every load tried meets the SLOs (raise --hi)"
    # -- bisect
    while not stopped:
        if best is not None and high_bad < low_ok:
            # noise made a lower load miss and a higher one meet: report the lower edge
            stopped = "probes disagree within noise near the capacity"
            break
        width = high_bad - low_ok
        if integer and width <= 1:
            stopped = "bracket narrowed to one user"
            break
        if not integer and width <= rel_tol * high_bad:
            stopped = f"bracket narrower than {rel_tol:.0%} of the load"
            break
        if len(evaluate.probes) >= max_probes:
            stopped = f"probe budget of {max_probes} spent"
            break
        mid = (low_ok + high_bad) / 2.0
        if integer:
            mid = float(math.floor(mid))
        probe = evaluate(mid)
        record(probe)
        if not probe.decided:
            stopped = (f"at {mid:.4g} the SLO intervals straddle their thresholds even with {probe.replications} "
                       f"replications: the capacity is there within the simulation's noise")
    answer = low_ok if best is not None else 0.0
    util, waits = _utilisation(best)
    return CapacityResult(variable, answer, (answer, high_bad), stopped, tuple(slos), tuple(evaluate.probes), util, waits)


def format_capacity(result: CapacityResult) -> str:
    from gwsim.labels import resource_label

    unit = "req/s" if result.variable == "rate" else "users"
    lines = []
    lines.append("probes:")
    for p in sorted(result.probes, key=lambda p: p.load):
        parts = []
        for v in p.verdicts:
            parts.append(f"{v.slo.text} {v.slo.format_value(v.value)}")
        lines.append(f"  {p.load:10.4g} {unit:5s}  {'meets' if p.feasible else 'misses':6s}"
                     f"{'' if p.decided else ' (within noise)':16s} n={p.replications:<3d} " + "; ".join(parts))
    lo, hi = result.bracket
    hi_s = f"{hi:.4g}" if math.isfinite(hi) else "not found"
    lines.append("")
    lines.append(f"capacity: {result.answer:.4g} {unit} meets {', '.join(s.text for s in result.slos)} "
                 f"(lowest load that misses: {hi_s})")
    lines.append(f"stopped: {result.stopped}")
    if not result.utilisation.empty:
        lines.append("")
        lines.append(f"utilisation at {result.answer:.4g} {unit} (saturates first: {resource_label(result.bottleneck or '')}):")
        for r in result.utilisation.itertuples():
            ci = f" [{r.lo * 100:.1f}, {r.hi * 100:.1f}]" if math.isfinite(r.lo) and math.isfinite(r.hi) else ""
            lines.append(f"  {resource_label(r.resource):40s} {r.utilisation * 100:6.1f} %{ci}")
    waits = result.waits[result.waits["mean_ms"] > 0]
    if not waits.empty:
        lines.append("")
        lines.append("time per successful request by stage at the answer (mean ms):")
        for r in waits.head(6).itertuples():
            lines.append(f"  {r.stage:24s} {r.mean_ms:10.1f}")
    return "\n".join(lines)

