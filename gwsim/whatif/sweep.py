"""Parameter sweeps: the full grid of settings a planner wants to try ("attempt timeout 1, 2,
5 s times breaker threshold 3, 5, 10"), each point simulated with the same seed (common
random numbers, so points differ only by the settings) and reported with 95 % intervals.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gwsim.whatif.runner import (
    DaskExecutor,
    LocalExecutor,
    Progress,
    ScenarioSource,
    Variant,
    aggregate,
    run_variants,
)
from simulator.errors import PartialResults, ScenarioError, UsageError
from simulator.scenario import parse_set_value
from simulator.units import UnitError, parse_duration, parse_rate


def split_values(text: str) -> list[str]:
    """Split ``v1,v2,...`` on commas outside brackets, braces and quotes (so inline TOML
    tables such as ``{dist = "exponential", mean = "1s"}`` survive)."""
    parts: list[str] = []
    depth = 0
    quote = ""
    current: list[str] = []
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


@dataclass(frozen=True)
class Param:
    key: str
    values: tuple[str, ...]


def parse_param(spec: str) -> Param:
    """``key.path=v1,v2,...`` -> Param; UsageError with one line otherwise."""
    if "=" not in spec:
        raise UsageError(f"--param {spec}: expected key.path=v1,v2,..., got no '='")
    key, _, raw = spec.partition("=")
    key = key.strip()
    if not key or not all(key.split(".")):
        raise UsageError(f"--param {spec}: expected a dotted key path such as fallback.attempt_timeout, got {key!r}")
    values = split_values(raw)
    if not values or any(v == "" for v in values):
        raise UsageError(f"--param {spec}: expected comma-separated values, got an empty value")
    if len(set(values)) != len(values):
        raise UsageError(f"--param {spec}: expected distinct values, got a repeat")
    return Param(key, tuple(values))


def numeric_value(raw: str) -> float | None:
    """A sweep value as a number for plotting: durations in seconds, rates per second,
    plain numbers as they are; None when it is none of these (a mode, a table)."""
    value = parse_set_value(raw)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        for parse in (parse_duration, parse_rate):
            try:
                return parse(value)
            except UnitError:
                continue
    return None


def column_values(values: Sequence[str]) -> list[Any]:
    """Numbers when every value reads as one (so charts get a quantitative axis), else the strings."""
    nums = [numeric_value(v) for v in values]
    if all(n is not None and math.isfinite(n) for n in nums):
        return nums
    return list(values)


def grid(params: Sequence[Param]) -> list[dict[str, str]]:
    """Every combination, the first parameter varying slowest."""
    keys = [p.key for p in params]
    if len(set(keys)) != len(keys):
        raise UsageError("--param: expected each key once, got a key twice")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(p.values for p in params))]


@dataclass(frozen=True)
class SweepResult:
    params: tuple[str, ...]
    per_replication: pd.DataFrame  # one row per (point, replication)
    points: pd.DataFrame  # one row per point: metric, metric_lo, metric_hi
    replications: int
    seed: int
    points_total: int = 0  # the grid's size; more than len(points) when interrupted
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # each parameter's values as written


def build_variants(source: ScenarioSource, params: Sequence[Param]) -> list[Variant]:
    combos = grid(params)
    converted = {p.key: dict(zip(p.values, column_values(p.values))) for p in params}
    variants = []
    for combo in combos:
        overrides = [f"{k}={v}" for k, v in combo.items()]
        try:
            scenario = source.build(overrides, extra_flag="--param")
        except ScenarioError as exc:
            if len(overrides) == 1 and str(exc).startswith("--param "):
                raise  # already names the point
            raise ScenarioError(f"{exc} (sweep point {', '.join(overrides)})") from None
        labels: dict[str, Any] = {k: converted[k][v] for k, v in combo.items()}
        labels["point"] = ", ".join(overrides)
        variants.append(Variant(labels, scenario))
    return variants


def run_sweep(
    source: ScenarioSource,
    params: Sequence[Param],
    executor: LocalExecutor | DaskExecutor,
    *,
    replications: int | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    goodput: Sequence = (),
) -> SweepResult:
    """Every point of the grid; ``goodput``: per-request targets (``slo.parse_goodput``) that add
    a ``goodput`` column."""
    if not params:
        raise UsageError("sweep needs at least one --param key.path=v1,v2,...")
    variants = build_variants(source, params)
    base = variants[0].scenario
    n = replications if replications is not None else base.run.replications
    s = seed if seed is not None else base.run.seed
    keys = [p.key for p in params] + ["point"]
    names = tuple(p.key for p in params)
    written = {p.key: tuple(p.values) for p in params}
    try:
        per_rep = run_variants(variants, executor, replications=n, seed=s, progress=progress, goodput=goodput)
    except PartialResults as stop:
        # keep the finished replications, and as points only those whose replications all
        # finished (a mean over fewer would not be comparable with the others)
        done: pd.DataFrame = stop.finished  # type: ignore[assignment]
        points = pd.DataFrame()
        if not done.empty:
            complete = done.groupby("variant")["replication"].transform("count") == n
            points = aggregate(done[complete], keys) if complete.any() else points
        raise PartialResults(SweepResult(names, done, points, n, s, len(variants), written), len(variants)) from None
    points = aggregate(per_rep, keys)
    return SweepResult(names, per_rep, points, n, s, len(variants), written)


def _header(metric: str) -> str:
    endpoint, _, name = metric.rpartition(":")
    text = {"success_rate": "success %", "error_rate": "failed %", "throughput_rps": "req/s", "offered_rps": "offered req/s",
            "wait_ms": "wait ms"}.get(name, name.replace("_ms", " ms"))
    return (f"{endpoint} " if endpoint else "") + text + " [95% CI]"


def format_points(result: SweepResult, metrics: Sequence[str] = ("p95_ms", "success_rate", "throughput_rps")) -> str:
    """A fixed-width table: one row per point, each metric with its 95 % interval; each
    setting as written, in a table's words (``2 s``, ``20``, ``none`` for a 0 meaning no cap)."""
    from gwsim.whatif.display import format_setting

    headers = [*result.params] + [_header(m) for m in metrics]
    # the points hold numbers (seconds, per second) for the charts; the table shows what was asked
    shown = {p: {conv: format_setting(p, raw) for conv, raw in zip(column_values(vs), vs)}
             for p, vs in result.values.items()}
    rows = []
    for _, row in result.points.iterrows():
        cells = [shown[p].get(row[p], str(row[p])) if p in shown
                 else (str(row[p]) if not isinstance(row[p], float) else f"{row[p]:g}") for p in result.params]
        for m in metrics:
            if m not in row:
                cells.append("-")
                continue
            scale, spec = (100.0, ".2f") if m in ("success_rate", "error_rate") or m.endswith(":success_rate") else (1.0, ".1f")
            v, lo, hi = row[m], row[f"{m}_lo"], row[f"{m}_hi"]
            if not math.isfinite(v):
                cells.append("-")
            elif math.isfinite(lo) and math.isfinite(hi):
                cells.append(f"{v * scale:{spec}} [{lo * scale:{spec}}, {hi * scale:{spec}}]")
            else:
                cells.append(f"{v * scale:{spec}}")
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) if i < len(result.params) else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i < len(result.params) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(line.rstrip() for line in lines)
