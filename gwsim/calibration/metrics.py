"""The comparison of a prediction with a measurement, as a load-test reviewer would make it.

Per endpoint: P50/P95/P99 error in % of the
measured value, throughput error in %, success-rate difference in percentage points.  Each of
those *figures* is judged against its threshold, but only once the measurement has decided
it: the half-width of the measured value's 95 % confidence interval must be smaller than the
threshold, else the figure is ``inconclusive`` (the run was too short to tell a model error of
that size from sampling noise).  The intervals:

* percentiles: the wider of the distribution-free order-statistic interval (exact binomial
  ranks, right for independent latencies) and a block bootstrap that resamples whole seconds
  of arrivals (requests that met the same queue are not independent, and whole seconds keep
  them together);
* success rate: the wider of the Wilson (binomial) interval and the same block bootstrap
  (failures of a breaker-open spell come in bursts);
* throughput: count based.  Successful requests in the window are a Poisson count when
  open-loop arrivals are random (``n +- 1.96 sqrt(n)``), a binomial share of a fixed arrival
  schedule when they are not (``sqrt(n (1 - n/N))``); the block bootstrap of the per-second
  counts is taken when wider.  A closed loop's count is more regular than Poisson (each user
  waits for its answer): there the bootstrap of the measured per-second counts alone.

An endpoint whose requests stream (records' ``stream``) has three more figures, over its
successful streamed requests: TTFT P50 and P95 (``ttft_s``) and TPOT P50 (``tpot_s``, over
those of two tokens or more), errors in % of the measured value, each decided by the same
rule (the wider of the order-statistic interval and the block bootstrap of the measured
value, below the threshold).

The latency distributions as a whole are compared by the two-sample Kolmogorov-Smirnov
statistic ``D`` of the successful requests' latencies against its 1 % critical value for the
two sample sizes (scipy's ``kstwobign``): ``D`` above it fails the endpoint.  A TOST
equivalence verdict at +-10 % on P50 and P95 (90 % bootstrap interval of the relative
difference inside the margin) is reported alongside, not judged.  Every bootstrap has a fixed
seed, so a verdict is reproducible from the same records.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

#: Acceptance thresholds (issue C): |error| limits in %, success in percentage points.
THRESHOLDS = {"p50": 5.0, "p95": 10.0, "p99": 10.0, "throughput": 3.0, "success_pp": 0.5,
              "ttft_p50": 5.0, "ttft_p95": 10.0, "tpot_p50": 5.0}
#: The compared figures, in table order.
FIGURES = ("p50", "p95", "p99", "throughput", "success_pp")
#: The figures of an endpoint with streamed requests besides (issue 15): record field, percentile.
STREAM_FIGURES = {"ttft_p50": ("ttft_s", 50.0), "ttft_p95": ("ttft_s", 95.0), "tpot_p50": ("tpot_s", 50.0)}
TOST_MARGIN = 0.10
QUANTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
#: Confidence of the measured figures' intervals.
CI_LEVEL = 0.95
#: Significance level of the KS verdict.
KS_ALPHA = 0.01
#: Block length of the bootstrap: a second of arrivals resampled as one piece.
BLOCK_S = 1.0
N_BOOT = 1000

_Z = float(sps.norm.ppf(0.5 + CI_LEVEL / 2))


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


def ks_critical(n: int, m: int, alpha: float = KS_ALPHA) -> float | None:
    """The two-sample KS statistic's critical value at level ``alpha`` for sample sizes n and m
    (the Kolmogorov limit distribution, ``c(alpha) sqrt((n + m) / (n m))``)."""
    if n <= 0 or m <= 0:
        return None
    return float(sps.kstwobign.isf(alpha)) * math.sqrt((n + m) / (n * m))


def quantile_order_interval(sorted_x: np.ndarray, q: float, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Distribution-free interval of the ``q``-th percentile from order statistics: ranks from
    the binomial(n, q/100) quantiles, exact for independent samples.  None when a bound would
    lie beyond the smallest or largest sample (too few samples for that percentile)."""
    n = len(sorted_x)
    if n < 2:
        return None
    p = q / 100.0
    a = (1.0 - level) / 2
    lo = int(sps.binom.ppf(a, n, p))  # ranks are 1-based: X_(lo) .. X_(hi)
    hi = int(sps.binom.ppf(1.0 - a, n, p)) + 1
    if lo < 1 or hi > n:
        return None  # too few samples to bound the percentile on that side
    return float(sorted_x[lo - 1]), float(sorted_x[hi - 1])


def wilson_halfwidth(ok: int, n: int, level: float = CI_LEVEL) -> float | None:
    """Half-width of the Wilson score interval of a binomial proportion."""
    if n <= 0:
        return None
    z = float(sps.norm.ppf(0.5 + level / 2))
    p = ok / n
    return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


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
    qp = _boot_quantile(rng, predicted, q, n_boot)
    qm = _boot_quantile(rng, measured, q, n_boot)
    rel = qp / np.where(qm > 0, qm, np.nan) - 1.0
    rel = rel[np.isfinite(rel)]
    if rel.size == 0:
        return {"low": None, "high": None, "equivalent": False}
    low, high = np.percentile(rel, [5.0, 95.0])
    return {"low": float(low), "high": float(high), "equivalent": bool(-margin < low and high < margin)}


def _boot_quantile(rng: np.random.Generator, x: np.ndarray, q: float, n_boot: int) -> np.ndarray:
    """``n_boot`` i.i.d. bootstrap replicates of the q-th percentile (in chunks: bounded memory)."""
    out = []
    chunk = max(1, int(4e6 // max(len(x), 1)))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        out.append(np.percentile(rng.choice(x, size=(k, len(x)), replace=True), q, axis=1))
    return np.concatenate(out)


# --------------------------------------------------------------------------- the measured side


@dataclass(frozen=True)
class MeasuredSide:
    """The measured requests of one endpoint in the window, with the block (second) of each."""

    latency_ms: np.ndarray  # successful requests, in arrival order
    ok_block: np.ndarray  # block of each successful request
    all_block: np.ndarray  # block of every request
    blocks: int


def _blocks(arrived: np.ndarray, start: float, span: float, block_s: float) -> tuple[np.ndarray, int]:
    k = max(1, int(math.ceil(span / block_s - 1e-9)))
    idx = np.clip(((arrived - start) // block_s).astype(np.int64), 0, k - 1)
    return idx, k


def block_bootstrap(
    side: MeasuredSide, *, quantiles: dict[str, float], n_boot: int = N_BOOT, seed: int = 0, level: float = CI_LEVEL
) -> dict[str, tuple[float, float] | None]:
    """Percentile intervals of the quantiles, the success share and the success count, when whole
    blocks (seconds of arrivals) are resampled with replacement.

    Each resample is a vector of block multiplicities; a request counts as often as its block
    was drawn, so a weighted quantile over the sorted latencies gives the resampled percentile
    without building the resampled arrays.
    """
    k = side.blocks
    out: dict[str, tuple[float, float] | None] = {}
    if k < 2 or len(side.all_block) < 2:
        return {**{key: None for key in quantiles}, "success": None, "count": None}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_boot, k))
    weights = np.zeros((n_boot, k))
    np.add.at(weights, (np.repeat(np.arange(n_boot), k), draws.ravel()), 1.0)
    all_per_block = np.bincount(side.all_block, minlength=k).astype(float)
    ok_per_block = np.bincount(side.ok_block, minlength=k).astype(float)
    ok_count = weights @ ok_per_block
    total = weights @ all_per_block
    a = (1.0 - level) / 2 * 100
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, ok_count / total, np.nan)
    share = share[np.isfinite(share)]
    out["success"] = tuple(np.percentile(share, [a, 100 - a])) if share.size else None
    out["count"] = tuple(np.percentile(ok_count, [a, 100 - a]))
    n = len(side.latency_ms)
    if n < 2:
        return {**out, **{key: None for key in quantiles}}
    order = np.argsort(side.latency_ms, kind="stable")
    lat = side.latency_ms[order]
    blk = side.ok_block[order]
    reps = {key: np.empty(n_boot) for key in quantiles}
    chunk = max(1, int(2e6 // n))
    for s in range(0, n_boot, chunk):
        w = weights[s : s + chunk][:, blk]  # (chunk, n): each request's multiplicity
        cum = np.cumsum(w, axis=1)
        tot = cum[:, -1]
        for key, q in quantiles.items():
            target = q / 100.0 * tot
            pos = np.minimum((cum < target[:, None]).sum(axis=1), n - 1)
            reps[key][s : s + chunk] = np.where(tot > 0, lat[pos], np.nan)
    for key, values in reps.items():
        values = values[np.isfinite(values)]
        out[key] = tuple(np.percentile(values, [a, 100 - a])) if values.size else None
    return out


# --------------------------------------------------------------------------- comparison


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
    misses: list[str] = field(default_factory=list)  # decided figures beyond their threshold
    ci_halfwidth: dict = field(default_factory=dict)  # measured figure's 95 % CI half-width (% or pp)
    inconclusive: list[str] = field(default_factory=list)  # figures the measurement did not decide
    ks_critical: float | None = None
    ks_pvalue: float | None = None
    thresholds: dict = field(default_factory=dict)
    streamed: int = 0  # measured successful streamed requests in the window (0: no stream figures)

    @property
    def figure_keys(self) -> tuple[str, ...]:
        """The figures compared for this endpoint: the stream ones too when either side streamed."""
        return FIGURES + tuple(STREAM_FIGURES) if any(k in self.measured for k in STREAM_FIGURES) else FIGURES

    @property
    def ks_failed(self) -> bool:
        return self.ks is not None and self.ks_critical is not None and self.ks > self.ks_critical

    @property
    def passed(self) -> bool:
        return not self.misses and not self.inconclusive and not self.ks_failed

    def status(self, figure: str) -> str:
        """``ok``, ``miss``, ``inconclusive`` or ``-`` (not compared: no value on either side)."""
        if figure in self.inconclusive:
            return "inconclusive"
        if figure in self.misses:
            return "miss"
        return "-" if self.errors.get(figure) is None else "ok"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        d["ks_failed"] = self.ks_failed
        d["figures"] = {
            key: {
                "measured": self.measured.get("success" if key == "success_pp" else key),
                "predicted": self.predicted.get("success" if key == "success_pp" else key),
                "error": self.errors.get(key),
                "ci_halfwidth": self.ci_halfwidth.get(key),
                "threshold": self.thresholds.get(key),
                "status": self.status(key),
            }
            for key in self.figure_keys
        }
        return d


def _side(df: pd.DataFrame, window_s: float, replications: int) -> tuple[dict, np.ndarray]:
    ok = df.loc[df["outcome"] == "ok"]
    lat = ok["latency_s"].to_numpy(dtype="float64") * 1000.0
    out = {k: (float(np.percentile(lat, q)) if lat.size else None) for k, q in QUANTILES.items()}
    out["throughput"] = len(ok) / window_s / max(replications, 1) if window_s > 0 else None
    out["success"] = (len(ok) / len(df)) if len(df) else None
    return out, lat


def streamed(df: pd.DataFrame) -> bool:
    """Whether any request of ``df`` asked for a streamed reply."""
    return "stream" in df.columns and bool(df["stream"].to_numpy(dtype=bool).any())


def _stream_values(df: pd.DataFrame, column: str) -> np.ndarray:
    """``column`` (seconds) of the successful streamed requests of ``df`` where defined, in ms,
    in ``df``'s order (TPOT is undefined for a one-token reply)."""
    if column not in df.columns:
        return np.empty(0)
    x = df[column].to_numpy(dtype="float64")[_streamed_ok(df)] * 1000.0
    return x[np.isfinite(x)]


def _streamed_ok(df: pd.DataFrame) -> np.ndarray:
    """Mask of ``df``'s successful streamed requests (all False without a ``stream`` column)."""
    if "stream" not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return (df["outcome"] == "ok").to_numpy() & df["stream"].to_numpy(dtype=bool)


def _stream_side(df: pd.DataFrame) -> dict:
    out = {}
    for key, (column, q) in STREAM_FIGURES.items():
        x = _stream_values(df, column)
        out[key] = float(np.percentile(x, q)) if x.size else None
    return out


def _percentile_halfwidths(values: np.ndarray, boot: dict, quantiles: dict[str, float]) -> dict[str, float | None]:
    """Half-width, in % of the point estimate, of each percentile's interval: the wider of the
    order-statistic interval of ``values`` and the block bootstrap's (``boot``, by key); None
    where it is not bounded (undecided)."""
    out: dict[str, float | None] = {}
    srt = np.sort(values)
    for key, q in quantiles.items():
        if values.size < 2:
            out[key] = None
            continue
        point = float(np.percentile(values, q))
        order = quantile_order_interval(srt, q)
        if order is None or point <= 0:
            out[key] = None
            continue
        widths = [(iv[1] - iv[0]) / 2 for iv in (order, boot.get(key)) if iv is not None]
        out[key] = float(100.0 * max(widths) / point)
    return out


#: How the count of requests in a window varies from run to run (``compare_frames``'s ``counts``).
COUNT_MODELS = ("poisson", "fixed", "closed")


def measured_halfwidths(
    m: pd.DataFrame, *, start: float, span: float, counts: str, arrivals_total: int, block_s: float = BLOCK_S,
    n_boot: int = N_BOOT, seed: int = 0,
) -> dict[str, float | None]:
    """Half-widths of the measured figures' 95 % intervals: percentiles and throughput in % of
    the measured value, success in percentage points (see the module docstring)."""
    if counts not in COUNT_MODELS:
        raise ValueError(f"counts: expected one of {COUNT_MODELS}, got {counts!r}")
    m = m.sort_values("arrived_at", kind="stable")
    arrived = m["arrived_at"].to_numpy(dtype="float64")
    ok_mask = (m["outcome"] == "ok").to_numpy()
    lat = m["latency_s"].to_numpy(dtype="float64")[ok_mask] * 1000.0
    all_block, k = _blocks(arrived, start, span, block_s)
    side = MeasuredSide(lat, all_block[ok_mask], all_block, k)
    boot = block_bootstrap(side, quantiles=QUANTILES, n_boot=n_boot, seed=seed)
    out: dict[str, float | None] = _percentile_halfwidths(lat, boot, QUANTILES)
    n_ok, n_all = int(ok_mask.sum()), len(m)
    if n_all:
        wil = wilson_halfwidth(n_ok, n_all)
        bs = boot.get("success")
        out["success_pp"] = float(100.0 * max(wil or 0.0, (bs[1] - bs[0]) / 2 if bs else 0.0))
    else:
        out["success_pp"] = None
    if n_ok:
        if counts == "fixed":
            q = n_ok / max(arrivals_total, n_ok)
            sd = math.sqrt(n_ok * (1.0 - q))
        elif counts == "poisson":
            sd = math.sqrt(n_ok)
        else:
            sd = 0.0
        bc = boot.get("count")
        half = max(_Z * sd, (bc[1] - bc[0]) / 2 if bc else 0.0)
        out["throughput"] = float(100.0 * half / n_ok)
    else:
        out["throughput"] = None
    return out


def stream_halfwidths(
    m: pd.DataFrame, *, start: float, span: float, block_s: float = BLOCK_S, n_boot: int = N_BOOT, seed: int = 0,
) -> dict[str, float | None]:
    """Half-widths (in % of the measured value) of the stream figures' 95 % intervals: the wider
    of the order-statistic interval and the block bootstrap over seconds of arrivals, as for
    the latency percentiles (streams decoding together share the server, so are not independent)."""
    m = m.sort_values("arrived_at", kind="stable")
    keep = _streamed_ok(m)
    all_block, k = _blocks(m["arrived_at"].to_numpy(dtype="float64"), start, span, block_s)
    out: dict[str, float | None] = {}
    for column in sorted({c for c, _ in STREAM_FIGURES.values()}):
        keys = {key: q for key, (c, q) in STREAM_FIGURES.items() if c == column}
        x = m[column].to_numpy(dtype="float64") * 1000.0 if column in m.columns else np.full(len(m), np.nan)
        sel = keep & np.isfinite(x)
        values = x[sel]
        boot = block_bootstrap(MeasuredSide(values, all_block[sel], all_block, k), quantiles=keys, n_boot=n_boot, seed=seed)
        out.update(_percentile_halfwidths(values, boot, keys))
    return out


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
    counts: str = "poisson",
    block_s: float = BLOCK_S,
    include_all: bool = False,
) -> list[EndpointComparison]:
    """Compare record frames over the arrival window ``[start, end)`` per endpoint (and, with
    ``include_all`` and several endpoints, over all of them: not judged by the check, whose
    endpoints' latencies differ by design, so the pooled median can fall between them where
    the data is thin).

    ``counts``: how the measured number of requests varies: ``poisson`` (random open-loop
    arrivals), ``fixed`` (a fixed schedule, constant or burst arrivals: the count of successes
    is a share of a known number) or ``closed`` (a closed loop: as the measured per-second
    counts vary).
    """
    th = {**THRESHOLDS, **(thresholds or {})}
    start, end = window
    span = end - start

    def win(df: pd.DataFrame) -> pd.DataFrame:
        a = df["arrived_at"].astype("float64")
        return df.loc[(a >= start) & (a < end)]

    p_all, m_all = win(predicted), win(measured)
    names = list(endpoints) if endpoints is not None else sorted(set(m_all[by]) | set(p_all[by]))
    out = []
    for name in [*names, "all"] if include_all and len(names) > 1 else names:
        p = p_all if name == "all" else p_all.loc[p_all[by] == name]
        m = m_all if name == "all" else m_all.loc[m_all[by] == name]
        ps, plat = _side(p, span, predicted_replications)
        ms, mlat = _side(m, span, measured_replications)
        errors = {k: pct_error(ps[k], ms[k]) for k in (*QUANTILES, "throughput")}
        errors["success_pp"] = None if ps["success"] is None or ms["success"] is None else 100.0 * (ps["success"] - ms["success"])
        half = measured_halfwidths(m, start=start, span=span, counts=counts, arrivals_total=len(m_all), block_s=block_s)
        keys = FIGURES
        if streamed(m) or streamed(p):
            # streamed on either side: TTFT and TPOT are compared (one side without them misses)
            ms.update(_stream_side(m))
            ps.update(_stream_side(p))
            errors.update({k: pct_error(ps[k], ms[k]) for k in STREAM_FIGURES})
            half.update(stream_halfwidths(m, start=start, span=span, block_s=block_s))
            keys = FIGURES + tuple(STREAM_FIGURES)
        tost = {k: tost_quantile(plat, mlat, QUANTILES[k]) for k in ("p50", "p95")}
        misses, undecided = [], []
        for key in keys:
            limit = th[key]
            e = errors[key]
            side = "success" if key == "success_pp" else key
            if e is None:
                if (ms.get(side) is not None) != (ps.get(side) is not None):
                    misses.append(key)  # one side has the figure, the other has none
                continue
            h = half.get(key)
            if h is None or h >= limit:
                undecided.append(key)
            elif abs(e) > limit:
                misses.append(key)
        ks = pval = None
        if len(plat) and len(mlat):
            res = sps.ks_2samp(plat, mlat, method="asymp")
            ks, pval = float(res.statistic), float(res.pvalue)
        crit = ks_critical(len(mlat), len(plat))
        out.append(EndpointComparison(
            name, len(m), len(p), ms, ps, errors, ks, tost, misses, half, undecided, crit, pval, dict(th),
            streamed=int(_stream_values(m, "ttft_s").size),
        ))
    return out
