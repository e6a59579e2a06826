"""Bounded-memory results: what an HdrHistogram-style load tester keeps instead of a log line
per request (``gwsim run --records none``).

Per replication and endpoint a ``LatencySketch`` holds, for the requests that arrived in the
measurement window, the count by outcome and a histogram of the successful latencies over
fixed log-spaced bins (``BINS_PER_DECADE`` per factor of ten, from ``LOW_S`` to ``HIGH_S``),
plus the exact sum, minimum and maximum.  The bins are the same everywhere, so sketches merge
by adding arrays: across replications, across worker processes, across batches.

Bin error: a percentile read from the histogram is the geometric middle of the bin holding
the ranked value, so it is within a factor ``10 ** (1 / (2 * BINS_PER_DECADE))`` of the value
numpy would interpolate from the raw latencies (+-0.58 % with 200 bins a decade); the mean,
max, counts, throughput and success rate are exact.  A single replication's confidence
interval of the mean uses 10 batches of equal *time* (by arrival) instead of 10 batches of
equal count; its percentile intervals are the order statistics of ``simulator.stats``, read
from the bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from simulator.records import OUTCOMES

#: Log-spaced bins: 200 a decade from 1 microsecond to 1e6 seconds (2,400 bins).
BINS_PER_DECADE = 200
LOW_S = 1e-6
HIGH_S = 1e6
N_BINS = int(round(math.log10(HIGH_S / LOW_S) * BINS_PER_DECADE))
#: Worst-case relative error of a percentile read from the bins (half a bin, geometrically).
RELATIVE_ERROR = 10 ** (1 / (2 * BINS_PER_DECADE)) - 1
#: Time batches of a window for a single replication's batch-means intervals.
BATCHES = 10

_LOG_LOW = math.log10(LOW_S)
# Bin k covers [LOW_S * 10**(k/B), LOW_S * 10**((k+1)/B)); its value is the geometric middle.
_MIDS_MS = 1000.0 * LOW_S * 10 ** ((np.arange(N_BINS) + 0.5) / BINS_PER_DECADE)
_OUTCOME_INDEX = {name: i for i, name in enumerate(OUTCOMES)}


def bin_of(latency_s: float) -> int:
    """The bin of a latency; below ``LOW_S`` goes to the first bin, above ``HIGH_S`` to the last."""
    if latency_s <= LOW_S:
        return 0
    k = int((math.log10(latency_s) - _LOG_LOW) * BINS_PER_DECADE)
    return k if k < N_BINS else N_BINS - 1


def bin_value_ms(k: int | np.ndarray) -> float | np.ndarray:
    """The value (ms) a bin stands for: its geometric middle."""
    return _MIDS_MS[k]


class LatencySketch:
    """Outcome counts and an ok-latency histogram for one replication and endpoint, in time batches.

    ``counts[b, k]``: successful requests of batch ``b`` in latency bin ``k``;
    ``outcomes[b, o]``: requests of batch ``b`` with outcome ``OUTCOMES[o]`` (unknown outcomes
    are kept by name in ``other``); ``lat_sum_s[b]``, ``lat_min_s``, ``lat_max_s``: exact.
    """

    __slots__ = ("counts", "outcomes", "other", "lat_sum_s", "lat_max_s", "lat_min_s")

    def __init__(self, batches: int = BATCHES) -> None:
        self.counts = np.zeros((batches, N_BINS), dtype=np.int64)
        self.outcomes = np.zeros((batches, len(OUTCOMES)), dtype=np.int64)
        self.other: dict[str, int] = {}
        self.lat_sum_s = np.zeros(batches, dtype=np.float64)
        self.lat_max_s = -math.inf
        self.lat_min_s = math.inf

    def add(self, batch: int, outcome: str, latency_s: float) -> None:
        o = _OUTCOME_INDEX.get(outcome)
        if o is None:
            self.other[outcome] = self.other.get(outcome, 0) + 1
        else:
            self.outcomes[batch, o] += 1
        if o == 0 and math.isfinite(latency_s):  # OUTCOMES[0] == "ok"
            self.counts[batch, bin_of(latency_s)] += 1
            self.lat_sum_s[batch] += latency_s
            if latency_s > self.lat_max_s:
                self.lat_max_s = latency_s
            if latency_s < self.lat_min_s:
                self.lat_min_s = latency_s

    def merge(self, other: "LatencySketch") -> "LatencySketch":
        """A new sketch holding both (batches add up pairwise)."""
        out = LatencySketch(self.counts.shape[0])
        out.counts = self.counts + other.counts
        out.outcomes = self.outcomes + other.outcomes
        out.other = dict(self.other)
        for name, n in other.other.items():
            out.other[name] = out.other.get(name, 0) + n
        out.lat_sum_s = self.lat_sum_s + other.lat_sum_s
        out.lat_max_s = max(self.lat_max_s, other.lat_max_s)
        out.lat_min_s = min(self.lat_min_s, other.lat_min_s)
        return out

    @property
    def count(self) -> int:
        return int(self.outcomes.sum()) + sum(self.other.values())

    @property
    def ok(self) -> int:
        return int(self.outcomes[:, 0].sum())

    def __repr__(self) -> str:
        return f"<LatencySketch count={self.count} ok={self.ok} bins={N_BINS}>"


def percentile_ms(hist: np.ndarray, q: float) -> float:
    """Percentile ``q`` (0..100) of the values a histogram counts, as numpy's linear method would
    give it on the raw values, each value replaced by its bin's middle."""
    n = int(hist.sum())
    if n == 0:
        return math.nan
    cum = np.cumsum(hist)
    h = (n - 1) * q / 100.0
    lo = int(math.floor(h))
    frac = h - lo
    k_lo = int(np.searchsorted(cum, lo + 1))  # bin of the value of rank lo (0-based)
    v = float(_MIDS_MS[k_lo])
    if frac > 0 and lo + 1 < n:
        k_hi = int(np.searchsorted(cum, lo + 2))
        v += frac * (float(_MIDS_MS[k_hi]) - v)
    return v


_PCT = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}


def _values(hist: np.ndarray, lat_sum_s: float, lat_max_s: float) -> dict[str, float]:
    n = int(hist.sum())
    out = {"mean": lat_sum_s * 1000.0 / n}
    for key, q in _PCT.items():
        out[key] = percentile_ms(hist, q)
    out["max"] = lat_max_s * 1000.0
    return out


def _point(hist: np.ndarray, lat_sum_s: float, key: str) -> float:
    if key == "mean":
        return lat_sum_s * 1000.0 / int(hist.sum())
    return percentile_ms(hist, _PCT[key])


def stats_block(sketches: Sequence[LatencySketch], window_s: float, replications: int) -> dict:
    """A STATS dict (as ``simulator.stats.stats_block``) from one sketch per replication."""
    from simulator.stats import CI_KEYS, LATENCY_KEYS, _ci_pair, _r, latency_cis

    merged = sketches[0]
    for s in sketches[1:]:
        merged = merged.merge(s)
    count = merged.count
    n_ok = merged.ok
    reps = max(int(replications), 1)
    hist = merged.counts.sum(axis=0)
    if n_ok:
        lat = _values(hist, float(merged.lat_sum_s.sum()), merged.lat_max_s)
        latency = {k: _r(lat[k]) for k in LATENCY_KEYS}
    else:
        lat = {}
        latency = {k: None for k in LATENCY_KEYS}
    # Groups for the CIs: replications with successes, or a lone replication's time batches.
    with_ok = [s for s in sketches if s.ok]
    if len(with_ok) >= 2:
        groups = [(s.counts.sum(axis=0), float(s.lat_sum_s.sum())) for s in with_ok]
    elif len(with_ok) == 1:
        s = with_ok[0]
        groups = [(s.counts[b], float(s.lat_sum_s[b])) for b in range(s.counts.shape[0]) if s.counts[b].any()]
    else:
        groups = []
    # Around the pooled values, as simulator.stats prints them; rank r of the pooled latencies
    # is the middle of the bin holding it, as percentile_ms reads it.
    cum = np.cumsum(hist)
    cis = latency_cis(lat, n_ok, lambda r: float(_MIDS_MS[int(np.searchsorted(cum, r + 1))]),
                      [{key: _point(h, total, key) for key in CI_KEYS} for h, total in groups], len(with_ok) >= 2)
    cis = {key: _ci_pair(ci) for key, ci in cis.items()}
    return {
        "count": count,
        "throughput_rps": _r(n_ok / window_s / reps if window_s > 0 else 0.0),
        "success_rate": _r(n_ok / count) if count else None,
        "latency_ms": latency,
        "ci95_ms": cis,
    }


def summarize(
    sketches: dict[str, list[LatencySketch]],
    *,
    scenario: str,
    engine: str,
    replications: int,
    seed: int,
    warmup_s: float,
    end_s: float,
    endpoints: Sequence[str],
) -> dict:
    """The JSON summary (as ``simulator.stats.summarize``) from sketches: endpoint -> one per replication.

    Adds ``"records": "none"`` and ``"percentile_rel_error"`` so a reader knows the percentiles
    come from bins.
    """
    from simulator.stats import _r

    window_s = float(end_s) - float(warmup_s)
    names = list(dict.fromkeys(list(endpoints) + sorted(set(sketches) - set(endpoints))))
    empty = [LatencySketch() for _ in range(max(int(replications), 1))]
    per_ep = {name: stats_block(sketches.get(name, empty), window_s, replications) for name in names}
    per_rep_all = []
    for r in range(len(empty)):
        merged = LatencySketch()
        for name in names:
            group = sketches.get(name)
            if group is not None and r < len(group):
                merged = merged.merge(group[r])
        per_rep_all.append(merged)
    total = per_rep_all[0]
    for s in per_rep_all[1:]:
        total = total.merge(s)
    outcomes = {name: int(total.outcomes[:, i].sum()) for i, name in enumerate(OUTCOMES)}
    for name in sorted(total.other):
        outcomes[name] = outcomes.get(name, 0) + total.other[name]
    return {
        "scenario": str(scenario),
        "engine": str(engine),
        "replications": int(replications),
        "seed": int(seed),
        "window_s": _r(window_s),
        "warmup_s": _r(warmup_s),
        "end_s": _r(end_s),
        "overall": stats_block(per_rep_all, window_s, replications),
        "endpoints": per_ep,
        "outcomes": outcomes,
        "records": "none",
        "percentile_rel_error": _r(RELATIVE_ERROR),
    }


def per_replication(sketches: dict[str, list[LatencySketch]], window_s: float, replications: int):
    """One row per (replication, endpoint) as ``simulator.stats.per_replication`` gives it."""
    import pandas as pd

    from simulator.stats import ALL

    rows = []
    names = sorted(sketches)
    for rep in range(replications):
        merged = LatencySketch()
        per = {}
        for name in names:
            s = sketches[name][rep]
            per[name] = s
            merged = merged.merge(s)
        for name, s in [(ALL, merged)] + [(n, per[n]) for n in names if n != ALL]:
            hist = s.counts.sum(axis=0)
            n_ok, n = s.ok, s.count
            vals = _values(hist, float(s.lat_sum_s.sum()), s.lat_max_s) if n_ok else {}
            row = {"replication": rep, "endpoint": name, "count": n,
                   "throughput_rps": n_ok / window_s if window_s > 0 else 0.0,
                   "success_rate": n_ok / n if n else math.nan}
            for key in ("mean", "p50", "p90", "p95", "p99"):
                row[f"{key}_ms"] = vals.get(key, math.nan)
            rows.append(row)
    cols = ["replication", "endpoint", "count", "throughput_rps", "success_rate",
            "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms"]
    return pd.DataFrame(rows, columns=cols)
