"""One-at-a-time sensitivity: which of the scenario's parameters move a metric most?

Each chosen parameter is set X % below and X % above its value while everything else stays
as it is; the metric's change from the baseline is measured with common random numbers
(same seed, so the change is the parameter's doing, with a paired 95 % interval), and the
parameters are ranked by the swing between the two (a tornado chart).

A parameter is a dotted path into the scenario: a number (``gateway.cpu_workers``), a
duration or a rate (``fallback.attempt_timeout``, ``workload.arrivals.rate``), or a whole
distribution (``providers.alpha.latency.ttft``), which is scaled: every time-like field
(mean, median, p95, value, low, high, scale) is multiplied, shape-like fields (cv, sigma,
shape) are kept.  Integer parameters move by at least one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gwsim.whatif.runner import (DaskExecutor, LocalExecutor, Progress, ScenarioSource, Variant, get_path, replication_interval,
                                 run_variants)
from gwsim.whatif.slo import METRIC_COLUMNS
from simulator.errors import ScenarioError, UsageError
from simulator.stats import t_interval
from simulator.units import UnitError, format_duration, parse_duration, parse_rate

_SCALED_KEYS = ("mean", "median", "p95", "value", "low", "high", "scale")
#: Parameters tried when none are named: the capacities, timeouts and service times a planner tunes.
_AUTO_SKIP_TOP = ("run", "endpoints")


def metric_column(metric: str) -> str:
    """``p95`` -> ``p95_ms``; ``chat:p95`` -> ``chat:p95_ms``; a column name stays as it is."""
    endpoint, _, name = metric.rpartition(":")
    base = METRIC_COLUMNS.get(name.lower(), (name, ""))[0]
    return f"{endpoint}:{base}" if endpoint else base


def _set_path(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = data
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def _scale_scalar(value: Any, factor: float, integer_step: int) -> tuple[Any, float]:
    """The value scaled, and the factor actually applied (integers round, moving by >= 1)."""
    if isinstance(value, bool):
        raise TypeError("a switch cannot be scaled")
    if isinstance(value, int):
        new = int(round(value * factor))
        if new == value:
            new = value + integer_step
        return new, (new / value if value else math.nan)
    if isinstance(value, float):
        return value * factor, factor
    if isinstance(value, str):
        try:
            return format_duration(parse_duration(value) * factor), factor
        except UnitError:
            pass
        try:
            return f"{parse_rate(value) * factor:.6g}/s", factor
        except UnitError:
            pass
    raise TypeError(f"expected a number, a duration, a rate or a distribution, got {value!r}")


def _scale_distribution(table: dict[str, Any], factor: float) -> dict[str, Any]:
    out = copy.deepcopy(table)
    kind = out.get("dist")
    if kind == "lognormal" and "mu" in out:
        out["mu"] = float(out["mu"]) + math.log(factor)
        return out
    if kind == "mixture":
        out["components"] = [dict(c, of=_scale_distribution(c["of"], factor)) for c in out.get("components", [])]
        return out
    if kind == "empirical":
        raise TypeError("an empirical distribution (a file of samples) cannot be scaled")
    for key in _SCALED_KEYS:
        if key in out:
            out[key], _ = _scale_scalar(out[key], factor, 0)
    return out


def scaled(data: dict[str, Any], key: str, factor: float, integer_step: int) -> tuple[dict[str, Any], Any, float]:
    """Raw data with the parameter at ``key`` scaled; returns (data, new value, applied factor)."""
    out = copy.deepcopy(data)
    try:
        value = get_path(out, key)
    except (KeyError, IndexError, ValueError, TypeError):
        raise UsageError(f"--param {key}: expected a key present in the scenario file, found nothing there") from None
    try:
        if isinstance(value, dict):
            if "dist" not in value:
                raise TypeError("a table that is not a distribution cannot be scaled")
            new, applied = _scale_distribution(value, factor), factor
        else:
            new, applied = _scale_scalar(value, factor, integer_step)
    except TypeError as exc:
        raise UsageError(f"--param {key}: {exc}") from None
    _set_path(out, key, new)
    return out, new, applied


def discover(data: dict[str, Any]) -> list[str]:
    """Parameters worth trying: every distribution, number, duration and rate outside run
    settings, endpoints, the traffic mix, fault schedules, probabilities and switches."""
    found: list[str] = []

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            if "dist" in node:
                if node.get("dist") not in ("empirical", "deterministic") or node.get("value", 0) not in (0, "0s", "0ms"):
                    found.append(".".join(path))
                return
            for k, v in node.items():
                if not path and k in _AUTO_SKIP_TOP:
                    continue
                if k in ("faults", "mix", "errors", "rate_profile", "trigger_on", "backoff", "candidates"):
                    continue
                walk(v, path + [str(k)])
        elif isinstance(node, bool):
            return
        elif isinstance(node, (int, float)):
            if 0 < float(node) and not (isinstance(node, float) and node <= 1.0):  # leave probabilities alone
                found.append(".".join(path))
        elif isinstance(node, str):
            for parse in (parse_duration, parse_rate):
                try:
                    if parse(node) > 0:
                        found.append(".".join(path))
                    return
                except UnitError:
                    continue

    walk(data, [])
    return found


@dataclass(frozen=True)
class SensitivityResult:
    metric: str
    delta_pct: float
    baseline: float
    baseline_ci: tuple[float, float] | None
    table: pd.DataFrame  # one row per parameter, ranked by swing
    per_replication: pd.DataFrame
    skipped: tuple[str, ...]  # "param: reason"


def _fmt_value(v: Any) -> str:
    if isinstance(v, dict):
        if v.get("dist") == "lognormal" and "median" in v:
            return f"median {v['median']}"
        for key in _SCALED_KEYS:
            if key in v:
                return f"{key} {v[key]}"
        return str(v.get("dist"))
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def run_sensitivity(
    source: ScenarioSource,
    params: Sequence[str],
    executor: LocalExecutor | DaskExecutor,
    *,
    metric: str = "p95",
    delta_pct: float = 20.0,
    replications: int | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
) -> SensitivityResult:
    if not 0 < delta_pct < 100:
        raise UsageError(f"--delta {delta_pct}: expected a percentage between 0 and 100")
    base_data = source.data()
    base = source.build()
    params = list(dict.fromkeys(params)) or discover(base_data)
    if not params:
        raise UsageError("sensitivity: expected --param key.path (no numeric parameter found to vary)")
    column = metric_column(metric)
    n = replications if replications is not None else base.run.replications
    if n < 2:
        raise UsageError("sensitivity needs at least 2 replications for paired intervals")
    s = seed if seed is not None else base.run.seed
    variants = [Variant({"parameter": "(baseline)", "side": "base", "value": ""}, base)]
    skipped: list[str] = []
    info: dict[tuple[str, str], tuple[Any, float]] = {}
    for key in params:
        for side, factor, step in (("low", 1 - delta_pct / 100, -1), ("high", 1 + delta_pct / 100, 1)):
            data, new, applied = scaled(base_data, key, factor, step)
            try:
                sc = source.build(transform=lambda _d, data=data: data)
            except ScenarioError as exc:
                skipped.append(f"{key} {side}: {exc}")
                continue
            info[(key, side)] = (new, applied)
            variants.append(Variant({"parameter": key, "side": side, "value": _fmt_value(new)}, sc))
    per_rep = run_variants(variants, executor, replications=n, seed=s, progress=progress)
    if column not in per_rep.columns:
        from gwsim.whatif.runner import metric_columns

        raise UsageError(f"--metric {metric}: expected one of {sorted(metric_columns(per_rep, ['parameter', 'side', 'value']))}")
    base_vals = per_rep.loc[per_rep["variant"] == 0].sort_values("replication")[column].to_numpy(dtype="float64")
    baseline = float(np.nanmean(base_vals))
    rows = []
    for key in params:
        row: dict[str, Any] = {"parameter": key, "base_value": _fmt_value(get_path(base_data, key))}
        for side in ("low", "high"):
            sub = per_rep.loc[(per_rep["parameter"] == key) & (per_rep["side"] == side)].sort_values("replication")
            if sub.empty:
                row.update({f"{side}_value": None, f"{side}_label": f"{'-' if side == 'low' else '+'}{delta_pct:g} %",
                            f"{side}_delta": math.nan, f"{side}_lo": math.nan, f"{side}_hi": math.nan, f"{side}_factor": math.nan})
                continue
            diffs = sub[column].to_numpy(dtype="float64") - base_vals
            diffs = diffs[np.isfinite(diffs)]
            ci = t_interval(diffs)
            new, applied = info[(key, side)]
            pct = (applied - 1) * 100
            row.update({
                f"{side}_value": _fmt_value(new),
                f"{side}_label": f"{pct:+.0f} %" if abs(pct - (delta_pct if side == 'high' else -delta_pct)) > 0.5 else
                                 f"{'-' if side == 'low' else '+'}{delta_pct:g} %",
                f"{side}_delta": float(diffs.mean()) if diffs.size else math.nan,
                f"{side}_lo": ci[0] if ci else math.nan,
                f"{side}_hi": ci[1] if ci else math.nan,
                f"{side}_factor": applied,
            })
        lo_d, hi_d = row["low_delta"], row["high_delta"]
        row["swing"] = abs(np.nan_to_num(hi_d) - np.nan_to_num(lo_d))
        # elasticity: relative change of the metric per relative change of the parameter
        if baseline and math.isfinite(lo_d) and math.isfinite(hi_d):
            span = row["high_factor"] - row["low_factor"]
            row["elasticity"] = ((hi_d - lo_d) / baseline) / span if span else math.nan
        else:
            row["elasticity"] = math.nan
        row["significant"] = bool(
            (math.isfinite(row["low_lo"]) and (row["low_lo"] > 0 or row["low_hi"] < 0))
            or (math.isfinite(row["high_lo"]) and (row["high_lo"] > 0 or row["high_hi"] < 0)))
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("swing", ascending=False, kind="stable").reset_index(drop=True)
    base_ci = replication_interval(column, base_vals)  # a difference (the deltas above) may be negative; the baseline not
    label_labels = {"low_label", "high_label"}
    for col in label_labels:
        if col in table:
            table[col] = table[col].astype(str)
    return SensitivityResult(column, delta_pct, baseline, base_ci, table, per_rep, tuple(skipped))


def _signed(x: float) -> str:
    return f"{x:+.0f}" if abs(x) >= 100 else f"{x:+.3g}"


def format_sensitivity(result: SensitivityResult) -> str:
    from gwsim.labels import label

    ci = result.baseline_ci
    ci_s = f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
    lines = [f"{label(result.metric)} at baseline: {result.baseline:.4g}{ci_s}; each parameter -/+{result.delta_pct:g} %, "
             f"change from baseline with paired 95 % CI; ranked by swing", ""]
    headers = ["rank", "parameter", "base", f"-{result.delta_pct:g} %", "change", f"+{result.delta_pct:g} %", "change", "elasticity", "sig"]
    rows = []
    for i, r in enumerate(result.table.itertuples(), start=1):
        def cell(side: str) -> str:
            d, lo, hi = getattr(r, f"{side}_delta"), getattr(r, f"{side}_lo"), getattr(r, f"{side}_hi")
            if not math.isfinite(d):
                return "-"
            return _signed(d) + (f" [{_signed(lo)}, {_signed(hi)}]" if math.isfinite(lo) else "")

        rows.append([str(i), r.parameter, str(r.base_value), str(r.low_value or "-"), cell("low"),
                     str(r.high_value or "-"), cell("high"),
                     f"{r.elasticity:+.2f}" if math.isfinite(r.elasticity) else "-", "*" if r.significant else ""])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    for s in result.skipped:
        lines.append(f"skipped {s}")
    return "\n".join(lines)
