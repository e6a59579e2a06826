"""The comparison of a prediction with a measurement, as a load-test reviewer would make it.

Per endpoint: P50/P95/P99 error in % of the measured value, throughput error in %, success
rate difference in percentage points, the two-sample Kolmogorov-Smirnov statistic of the
successful requests' latencies, and a TOST (two one-sided tests) equivalence verdict at
+-10 % on P50 and P95: the 90 % bootstrap interval of the relative difference of the
percentile must lie inside (-10 %, +10 %).  Bootstrap resamples both samples with a fixed
seed so a verdict is reproducible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

#: Acceptance thresholds (issue C): |error| limits in %, success in percentage points.
THRESHOLDS = {"p50": 5.0, "p95": 10.0, "p99": 10.0, "throughput": 3.0, "success_pp": 0.5}
TOST_MARGIN = 0.10
QUANTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}


def pct_error(predicted: float | None, measured: float | None) -> float | None:
    """Error of the prediction in % of the measurement (None when undefined)."""
    if predicted is None or measured is None or not np.isfinite(predicted) or not np.isfinite(measured) or measured == 0:
        return None
    return 100.0 * (predicted - measured) / measured


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sample KS statistic (sup distance of the empirical CDFs)."""
    if len(a) == 0 or len(b) == 0:
        return None
    return float(sps.ks_2samp(a, b).statistic)


def tost_quantile(
    predicted: np.ndarray, measured: np.ndarray, q: float, margin: float = TOST_MARGIN, *, n_boot: int = 400, seed: int = 0
) -> dict:
    """Equivalence of the q-th percentile within +-margin (relative), by a 90 % percentile bootstrap.

    Two one-sided tests at alpha 0.05 each are equivalent to the 90 % interval lying inside
    the margin.  Returns the interval and the verdict ('equivalent' / 'not equivalent').
    """
    if len(predicted) < 2 or len(measured) < 2:
        return {"low": None, "high": None, "equivalent": False}
    rng = np.random.default_rng(seed)
    # Bootstrap quantiles of each sample independently (they are independent runs).
    qp = np.percentile(rng.choice(predicted, size=(n_boot, len(predicted)), replace=True), q, axis=1) if len(predicted) * n_boot <= 4e7 else _boot_big(rng, predicted, q, n_boot)
    qm = np.percentile(rng.choice(measured, size=(n_boot, len(measured)), replace=True), q, axis=1) if len(measured) * n_boot <= 4e7 else _boot_big(rng, measured, q, n_boot)
    rel = qp / np.where(qm > 0, qm, np.nan) - 1.0
    rel = rel[np.isfinite(rel)]
    if rel.size == 0:
        return {"low": None, "high": None, "equivalent": False}
    low, high = np.percentile(rel, [5.0, 95.0])
    return {"low": float(low), "high": float(high), "equivalent": bool(-margin < low and high < margin)}


def _boot_big(rng: np.random.Generator, x: np.ndarray, q: float, n_boot: int) -> np.ndarray:
    return np.array([np.percentile(rng.choice(x, size=len(x), replace=True), q) for _ in range(n_boot)])


@dataclass
class EndpointComparison:
    endpoint: str
    n_measured: int
    n_predicted: int
    measured: dict  # p50/p95/p99 in ms, throughput rps, success rate (0-1)
    predicted: dict
    errors: dict  # p50/p95/p99/throughput in %, success_pp in percentage points
    ks: float | None
    tost: dict = field(default_factory=dict)  # p50/p95 -> interval + verdict
    misses: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.misses

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def _side(df: pd.DataFrame, window_s: float, replications: int) -> tuple[dict, np.ndarray]:
    ok = df.loc[df["outcome"] == "ok"]
    lat = ok["latency_s"].to_numpy(dtype="float64") * 1000.0
    out = {k: (float(np.percentile(lat, q)) if lat.size else None) for k, q in QUANTILES.items()}
    out["throughput"] = len(ok) / window_s / max(replications, 1) if window_s > 0 else None
    out["success"] = (len(ok) / len(df)) if len(df) else None
    return out, lat


def compare_frames(
    predicted: pd.DataFrame,
    measured: pd.DataFrame,
    *,
    window: tuple[float, float],
    predicted_replications: int = 1,
    measured_replications: int = 1,
    endpoints: list[str] | None = None,
    thresholds: dict | None = None,
    by: str = "endpoint",
) -> list[EndpointComparison]:
    """Compare record frames over the arrival window ``[start, end)`` per endpoint (plus 'all')."""
    th = {**THRESHOLDS, **(thresholds or {})}
    start, end = window
    span = end - start

    def win(df: pd.DataFrame) -> pd.DataFrame:
        a = df["arrived_at"].astype("float64")
        return df.loc[(a >= start) & (a < end)]

    p_all, m_all = win(predicted), win(measured)
    names = list(endpoints) if endpoints is not None else sorted(set(m_all[by]) | set(p_all[by]))
    out = []
    for name in [*names, "all"]:
        p = p_all if name == "all" else p_all.loc[p_all[by] == name]
        m = m_all if name == "all" else m_all.loc[m_all[by] == name]
        ps, plat = _side(p, span, predicted_replications)
        ms, mlat = _side(m, span, measured_replications)
        errors = {k: pct_error(ps[k], ms[k]) for k in (*QUANTILES, "throughput")}
        errors["success_pp"] = None if ps["success"] is None or ms["success"] is None else 100.0 * (ps["success"] - ms["success"])
        tost = {k: tost_quantile(plat, mlat, QUANTILES[k]) for k in ("p50", "p95")}
        misses = []
        for key, limit in (("p50", th["p50"]), ("p95", th["p95"]), ("p99", th["p99"]), ("throughput", th["throughput"]), ("success_pp", th["success_pp"])):
            e = errors[key]
            if e is None:
                side = "success" if key == "success_pp" else key
                if (ms.get(side) is not None) != (ps.get(side) is not None):
                    misses.append(key)
            elif abs(e) > limit:
                misses.append(key)
        out.append(EndpointComparison(name, len(m), len(p), ms, ps, errors, ks_statistic(plat, mlat), tost, misses))
    return out
