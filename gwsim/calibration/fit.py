"""``gwsim calibrate fit``: free scenario parameters fitted to measured per-request records.

The objective is the distance between predicted and measured latency distributions per
endpoint and class: the mean squared log-ratio of a ladder of quantiles (P10 ... P99) of the
successful requests, weighted by each group's share of the measurement.  Every evaluation
runs the simulator with the same seed (common random numbers), so two parameter vectors are
compared on the same arrivals and service draws and the objective is smooth enough for a
bounded Nelder-Mead (several parameters) or a bounded Brent search (one).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.errors import UsageError
from simulator.scenario import load_scenario, read_scenario_data, apply_overrides

log = logging.getLogger(__name__)

LADDER = np.array([10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0])

#: Column defaults for a CSV such as the seed run's (heavy_load_2025-08-14.csv).
CSV_DEFAULTS = {"endpoint": "endpoint", "latency_s": "latency_ms", "success": "success", "request_class": None, "arrived_at": None}


def read_measured(path: str | Path, mapping: dict[str, str] | None = None) -> pd.DataFrame:
    """Measured records as a frame with at least endpoint, request_class, latency_s, outcome, arrived_at.

    Parquet is taken as real-engine records.  A CSV is mapped with ``mapping`` (record field ->
    column; a column whose name ends in ``_ms`` is converted to seconds); ``success`` (bool) or
    ``outcome`` gives the outcome; without ``arrived_at``, ``completed_at_s - latency`` is used
    when a ``completed_at_s`` column exists.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: expected a measured-records file (parquet or CSV), found nothing there")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    raw = pd.read_csv(path)
    m = {**CSV_DEFAULTS, **(mapping or {})}
    out = pd.DataFrame(index=raw.index)
    for fieldname in ("endpoint", "latency_s"):
        col = m.get(fieldname)
        if not col or col not in raw:
            raise UsageError(f"{path}: expected a column for {fieldname} (map it with --map {fieldname}=COLUMN), columns are {list(raw.columns)}")
    out["endpoint"] = raw[m["endpoint"]].astype(str)
    lat = raw[m["latency_s"]].astype("float64")
    out["latency_s"] = lat / 1000.0 if m["latency_s"].endswith("_ms") else lat
    cls_col = m.get("request_class")
    out["request_class"] = raw[cls_col].astype(str) if cls_col and cls_col in raw else ""
    if m.get("outcome") and m["outcome"] in raw:
        out["outcome"] = raw[m["outcome"]].astype(str)
    elif m.get("success") and m["success"] in raw:
        ok = raw[m["success"]].astype(str).str.lower().isin(["true", "1", "yes"])
        out["outcome"] = np.where(ok, "ok", "upstream_error")
    else:
        out["outcome"] = "ok"
    if m.get("arrived_at") and m["arrived_at"] in raw:
        out["arrived_at"] = raw[m["arrived_at"]].astype("float64")
    elif "completed_at_s" in raw:
        out["arrived_at"] = raw["completed_at_s"].astype("float64") - out["latency_s"]
    else:
        out["arrived_at"] = 0.0
    return out


def _groups(measured: pd.DataFrame, scenario) -> list[tuple[str, str | None]]:
    """(endpoint, class or None): by class where the measured class names are the scenario's."""
    groups = []
    for ep_name, ep in scenario.endpoints.items():
        sub = measured.loc[measured["endpoint"] == ep_name]
        if sub.empty:
            continue
        names = {c.name for c in ep.classes}
        seen = set(sub["request_class"].astype(str)) if "request_class" in sub else set()
        if len(names) > 1 and seen and seen <= names:
            groups += [(ep_name, c) for c in sorted(seen)]
        else:
            groups.append((ep_name, None))
    if not groups:
        raise UsageError(f"no measured endpoint matches the scenario's endpoints {sorted(scenario.endpoints)}")
    return groups


def _select(df: pd.DataFrame, group: tuple[str, str | None]) -> np.ndarray:
    ep, cls_ = group
    m = (df["endpoint"] == ep) & (df["outcome"] == "ok")
    if cls_ is not None:
        m &= df["request_class"] == cls_
    return df.loc[m, "latency_s"].to_numpy(dtype="float64")


def distance(predicted: pd.DataFrame, measured: pd.DataFrame, groups: list[tuple[str, str | None]]) -> float:
    """Weighted mean squared log-ratio of the quantile ladders (0 = identical quantiles)."""
    total, weight = 0.0, 0.0
    for g in groups:
        m = _select(measured, g)
        p = _select(predicted, g)
        if m.size == 0:
            continue
        w = float(m.size)
        if p.size == 0:
            total += w * 25.0  # nothing predicted where something was measured: a large, finite penalty
        else:
            qm = np.maximum(np.percentile(m, LADDER), 1e-6)
            qp = np.maximum(np.percentile(p, LADDER), 1e-6)
            total += w * float(np.mean(np.log(qp / qm) ** 2))
        weight += w
    return total / weight if weight else float("inf")


@dataclass
class FitResult:
    scenario_path: str
    free: dict[str, tuple[float, float]]
    start: dict[str, float]
    best: dict[str, float]
    start_distance: float
    best_distance: float
    evaluations: int
    seconds: float
    groups: list
    history: list = field(default_factory=list)
    quantiles: dict = field(default_factory=dict)
    fitted_data: dict = field(default_factory=dict)

    def report(self) -> dict:
        return {
            "scenario": self.scenario_path,
            "free": {k: list(v) for k, v in self.free.items()},
            "start": self.start,
            "best": self.best,
            "start_distance": self.start_distance,
            "best_distance": self.best_distance,
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 2),
            "groups": [f"{e}/{c}" if c else e for e, c in self.groups],
            "quantiles_ms": self.quantiles,
            "history": self.history,
        }

    def format(self) -> str:
        lines = [f"fit of {self.scenario_path}: distance {self.start_distance:.4f} -> {self.best_distance:.4f} "
                 f"in {self.evaluations} evaluations ({self.seconds:.1f} s)"]
        for k in self.free:
            lo, hi = self.free[k]
            lines.append(f"  {k}: {self.start.get(k, float('nan')):.6g} -> {self.best[k]:.6g}  (bounds [{lo:g}, {hi:g}])")
        for g, q in self.quantiles.items():
            lines.append(f"  {g}: measured P50/P95/P99 {q['measured'][0]:.1f}/{q['measured'][1]:.1f}/{q['measured'][2]:.1f} ms, "
                         f"fitted {q['fitted'][0]:.1f}/{q['fitted'][1]:.1f}/{q['fitted'][2]:.1f} ms")
        return "\n".join(lines)


def _get_path(data: dict, path: str) -> float | None:
    from simulator.units import parse_quantity

    node = data
    for key in path.split("."):
        if isinstance(node, list):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return None
    try:
        return parse_quantity(node)
    except Exception:  # noqa: BLE001 - a non-numeric start value just means "no start"
        return None


def fit_scenario(
    scenario_path: str | Path,
    measured: pd.DataFrame,
    *,
    overrides: list[str] | None = None,
    free: dict[str, tuple[float, float]] | None = None,
    replications: int = 2,
    seed: int | None = None,
    max_evals: int = 40,
) -> FitResult:
    from scipy import optimize

    from simulator.api import run_scenario

    path = Path(scenario_path)
    overrides = list(overrides or [])
    base = load_scenario(path, overrides)
    free = dict(free or (base.calibration.free if base.calibration else {}))
    if not free:
        raise UsageError(f"{path}: expected free parameters in [calibration] free = {{\"path\" = [lo, hi]}}, found none")
    names = list(free)
    lo = np.array([free[n][0] for n in names])
    hi = np.array([free[n][1] for n in names])
    raw = apply_overrides(read_scenario_data(path), overrides, str(path))
    start = {n: (_get_path(raw, n) if _get_path(raw, n) is not None else float((free[n][0] + free[n][1]) / 2)) for n in names}
    s = seed if seed is not None else base.run.seed
    measured = measured.loc[measured["arrived_at"] >= base.run.warmup] if "arrived_at" in measured and measured["arrived_at"].max() > base.run.warmup else measured
    groups = _groups(measured, base)
    history: list[dict] = []
    cache: dict[tuple, float] = {}

    def simulate(values: np.ndarray) -> pd.DataFrame:
        sets = [f"{n}={float(v)!r}" for n, v in zip(names, values)]
        sc = load_scenario(path, [*overrides, *sets])
        sim = run_scenario(sc, replications=replications, seed=s, workers=1)  # same seed: common random numbers
        window = sim.records.loc[(sim.records["arrived_at"] >= sc.run.warmup) & (sim.records["arrived_at"] < sc.run.duration)]
        return window

    def objective(u: np.ndarray) -> float:
        values = lo + np.clip(u, 0.0, 1.0) * (hi - lo)
        key = tuple(np.round(values, 12))
        if key in cache:
            return cache[key]
        d = distance(simulate(values), measured, groups)
        cache[key] = d
        history.append({**{n: float(v) for n, v in zip(names, values)}, "distance": d})
        log.info("fit: %s -> %.5f", dict(zip(names, values)), d)
        return d

    t = time.perf_counter()
    u0 = np.clip((np.array([start[n] for n in names]) - lo) / (hi - lo), 0.0, 1.0)
    d0 = objective(u0)
    if len(names) == 1:
        res = optimize.minimize_scalar(lambda x: objective(np.array([x])), bounds=(0.0, 1.0), method="bounded",
                                       options={"maxiter": max_evals, "xatol": 1e-3})
        u_best = np.array([res.x])
    else:
        res = optimize.minimize(objective, u0, method="Nelder-Mead", bounds=[(0.0, 1.0)] * len(names),
                                options={"maxfev": max_evals, "xatol": 1e-3, "fatol": 1e-5})
        u_best = np.clip(res.x, 0.0, 1.0)
    # The best point ever evaluated wins (the optimiser's last point may not be it).
    best_h = min(history, key=lambda h: h["distance"])
    if best_h["distance"] <= objective(u_best):
        best_vals = np.array([best_h[n] for n in names])
    else:
        best_vals = lo + u_best * (hi - lo)
    best = {n: float(v) for n, v in zip(names, best_vals)}
    best_d = distance(simulate(best_vals), measured, groups)
    pred = simulate(best_vals)
    quantiles = {}
    for g in groups:
        m, p = _select(measured, g), _select(pred, g)
        if m.size and p.size:
            quantiles[f"{g[0]}/{g[1]}" if g[1] else g[0]] = {
                "measured": [float(x) for x in np.percentile(m, [50, 95, 99]) * 1000],
                "fitted": [float(x) for x in np.percentile(p, [50, 95, 99]) * 1000],
            }
    fitted = apply_overrides(raw, [f"{n}={v!r}" for n, v in best.items()], str(path))
    return FitResult(str(path), free, start, best, d0, best_d, len(history), time.perf_counter() - t, groups, history, quantiles, fitted)


def write_fit(result: FitResult, directory: str | Path) -> list[Path]:
    import tomli_w

    from gwsim.output import atomic_write_json, atomic_write_text, ensure_dir

    d = ensure_dir(directory)
    stem = Path(result.scenario_path).stem
    toml_path = d / f"{stem}.fitted.toml"
    json_path = d / f"{stem}.fit.json"
    header = f"# {stem} with parameters fitted by `gwsim calibrate fit` (distance {result.start_distance:.4f} -> {result.best_distance:.4f})\n"
    atomic_write_text(toml_path, header + tomli_w.dumps(result.fitted_data))
    atomic_write_json(json_path, result.report())
    return [toml_path, json_path]
