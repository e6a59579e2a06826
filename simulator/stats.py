"""Statistics a load-test report gives: throughput, success rate, latency percentiles, CIs.

This is what a load tester (the seed's web-perf tool, Locust, Vidur's metrics store) prints
after a run, computed the same way for the simulator and for the real engine so that the two
can be compared number for number.  Input is the DataFrame of ``simulator.records`` (one row
per request, column ``replication`` telling replications apart).

Conventions (see docs/metrics.md for the formulas):

* the measurement window is ``warmup_s <= arrived_at < end_s``; a request belongs to the
  window in which it *arrived*, whatever became of it;
* latency statistics are over successful (``outcome == "ok"``) requests only, pooled over
  replications, percentiles by linear interpolation (numpy's default, as the seed tool);
* every confidence interval printed contains the point estimate printed next to it, and no
  latency bound is negative (``latency_cis``):
  - several replications: Student-t over the per-replication values, with the spread of those
    values, centred on the pooled estimate (not on the mean of per-replication values, which
    for a percentile carries each replication's small-sample bias and can lie outside);
  - one replication, mean: the same, over 10 batches by arrival order (batch means);
  - one replication, percentiles: the distribution-free order-statistic interval, its ranks
    from the binomial distribution of the number of values below the true percentile
    (``order_statistic_interval``); ``None`` when the sample is too small for a finite upper
    bound at 95 % (p95 needs 72 successes, p99 367);
  - a t-interval's lower end below 0 is raised to 0: latencies are never negative, so this
    cuts off only values the true latency cannot take and keeps the coverage;
* the what-if commands (validate, sweep, capacity, sensitivity) print the mean over
  replications with ``t_interval`` over the per-replication values, cut the same way to the
  range the metric can take (``gwsim.whatif.runner.metric_range``);
* nothing in a summary is NaN: undefined values are ``None`` (JSON ``null``), and floats are
  rounded to 6 significant digits so that equal inputs give byte-identical JSON;
* a block whose requests include streamed ones (records' ``stream``) also has ``streamed``
  (their count), ``ttft_ms`` and ``tpot_ms`` (mean, p50, p90, p95, p99 over the successful
  streamed requests; TPOT over those with two tokens or more), next to ``latency_ms``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from simulator import student_t
from simulator.records import OUTCOMES

log = logging.getLogger(__name__)

#: Latency metrics in a STATS block, with the percentile each stands for (None = not one).
LATENCY_KEYS = ("mean", "p50", "p90", "p95", "p99", "max")
#: Metrics that carry a 95 % confidence interval.
CI_KEYS = ("mean", "p50", "p95", "p99")
#: Number of batches for the batch-means CI of a single replication.
BATCHES = 10
#: Name of the all-endpoints row in per-replication frames, time series and comparisons.
ALL = "all"
#: Metrics compared between two runs, mapped to (per-replication column, unit).
COMPARE_METRICS = {
    "mean": ("mean_ms", "ms"),
    "p50": ("p50_ms", "ms"),
    "p95": ("p95_ms", "ms"),
    "p99": ("p99_ms", "ms"),
    "throughput": ("throughput_rps", "req/s"),
    "success": ("success_rate", "fraction"),
}

_SUMMARY_COLS = ("id", "replication", "endpoint", "arrived_at", "latency_s", "outcome", "stream", "ttft_s", "tpot_s")
#: Keys of the ``ttft_ms`` and ``tpot_ms`` blocks of a streamed block.
STREAM_KEYS = ("mean", "p50", "p90", "p95", "p99")
_PCT = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}


# --------------------------------------------------------------------------- helpers


def _r(x: Any) -> float | None:
    """A float rounded to 6 significant digits, or None when it is missing or not finite."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    if x == 0.0:
        return 0.0  # also turns -0.0 into 0.0 so the JSON does not flicker
    return float(f"{x:.6g}")


def _ok_mask(df: pd.DataFrame) -> pd.Series:
    if df.empty:
        return pd.Series(np.zeros(0, dtype=bool), index=df.index)
    return (df["outcome"] == "ok") & np.isfinite(df["latency_s"].astype("float64"))


def _latency_values(lat_ms: np.ndarray) -> dict[str, float]:
    """Mean, percentiles and max of an array of latencies (ms); the array is non-empty."""
    out = {"mean": float(np.mean(lat_ms))}
    for key, q in _PCT.items():
        out[key] = float(np.percentile(lat_ms, q))
    out["max"] = float(np.max(lat_ms))
    return out


def _point(lat_ms: np.ndarray, key: str) -> float:
    if key == "mean":
        return float(np.mean(lat_ms))
    return float(np.percentile(lat_ms, _PCT[key]))


def t_interval(
    values: Sequence[float] | np.ndarray,
    level: float = 0.95,
    floor: float | None = None,
    ceiling: float | None = None,
) -> tuple[float, float] | None:
    """Student-t interval ``mean ± t_{(1+level)/2, k-1} · s / sqrt(k)`` over finite values.

    ``floor``/``ceiling``: the range the quantity can take (0 for a latency, a rate or a count;
    0 and 1 for a share); an end beyond it is brought back to it.  The true value lies in that
    range, so cutting the interval to it drops only impossible values and keeps its coverage;
    with two or three replications (t = 12.7 or 4.3) a latency's t-interval often reaches
    below 0, which is how ``gwsim validate -n 2`` came to print a negative P95 bound.  The
    interval still holds the mean it is centred on when the values themselves lie in the range.
    None when fewer than two finite values exist (no spread can be estimated).
    """
    arr = np.asarray(values, dtype="float64")
    arr = arr[np.isfinite(arr)]
    k = arr.size
    if k < 2:
        return None
    m = float(np.mean(arr))
    s = float(np.std(arr, ddof=1))
    half = student_t.ppf(0.5 + level / 2.0, k - 1) * s / math.sqrt(k)
    lo, hi = m - half, m + half
    if floor is not None and lo < floor:
        lo = floor
    if ceiling is not None and hi > ceiling:
        hi = ceiling
    return (lo, hi)


def centred_interval(
    point: float, values: Sequence[float] | np.ndarray, level: float = 0.95, floor: float | None = 0.0
) -> tuple[float, float] | None:
    """``point ± t_{(1+level)/2, k-1} · s / sqrt(k)``: the spread of ``k`` independent values
    (replications, or batches of one replication), centred on the pooled estimate ``point``.

    The t-interval over per-replication values estimates the spread well, but its centre, the
    mean of per-replication values, is not the estimate printed: for a percentile each
    replication's value is biased by its smaller sample, and the mean of those can lie outside
    the interval around the pooled value (and even outside the t-interval).  The pooled
    estimator has about the same standard error, so it takes the same half-width.
    ``floor``: the lowest value the quantity can take (0 for a latency); a lower end below it
    is raised to it, which removes only impossible values.  None with fewer than two finite
    values or a non-finite ``point``.
    """
    arr = np.asarray(values, dtype="float64")
    arr = arr[np.isfinite(arr)]
    k = arr.size
    if k < 2 or point is None or not math.isfinite(point):
        return None
    s = float(np.std(arr, ddof=1))
    half = student_t.ppf(0.5 + level / 2.0, k - 1) * s / math.sqrt(k)
    lo = point - half
    if floor is not None and lo < floor:
        lo = floor
    return (lo, point + half)


def order_statistic_ranks(n: int, q: float, level: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks ``(i, j)`` in a sorted sample of ``n`` with ``P(x_(i) <= ξ_q <= x_(j)) >= level``
    for independent draws of any continuous distribution, ``ξ_q`` its ``q``-quantile.

    The number ``B`` of draws below ``ξ_q`` is Binomial(n, q), and ``x_(i) <= ξ_q <= x_(j)``
    exactly when ``i + 1 <= B <= j``; so ``i`` is the largest rank with ``P(B <= i) <= α/2`` and
    ``j`` the smallest with ``P(B <= j) >= 1 - α/2`` (α = 1 - level, equal tails, at least the
    coverage asked for).  ``i = -1``: no draw is low enough to be a lower bound.  The ranks are
    then widened, never narrowed, to hold the interpolated percentile ``h = (n - 1)·q``:
    ``i <= floor(h)``, ``j >= ceil(h)``.  None when ``j`` would be ``n`` or beyond (no finite
    upper bound: too few draws for this quantile at this level).
    """
    if n < 1 or not 0.0 < q < 1.0:
        return None
    from scipy import stats as _sst  # here, not at the top: ~0.4 CPU-s that a run with replications never needs

    tail = (1.0 - level) / 2.0
    i = int(_sst.binom.ppf(tail, n, q)) - 1  # ppf: the smallest k with P(B <= k) >= tail
    j = int(_sst.binom.ppf(1.0 - tail, n, q))
    h = (n - 1) * q
    i = min(i, math.floor(h))
    j = max(j, math.ceil(h))
    if j >= n:
        return None
    return i, j


def order_statistic_interval(
    n: int, q: float, order_stat, level: float = 0.95, floor: float = 0.0
) -> tuple[float, float] | None:
    """The distribution-free ``level`` interval of the ``q``-quantile from ``n`` values:
    ``[order_stat(i), order_stat(j)]`` with the ranks of ``order_statistic_ranks``.

    ``order_stat(r)``: the value of 0-based rank ``r`` (a sorted array's item, a histogram's
    bin).  Rank ``-1`` stands for ``floor``, the lowest value possible (0 for a latency).  It
    assumes independent values; latencies of consecutive requests in one run are correlated
    (a queue, a stall), which makes it optimistic, as any single-run interval is.
    """
    ranks = order_statistic_ranks(n, q, level)
    if ranks is None:
        return None
    i, j = ranks
    return (float(order_stat(i)) if i >= 0 else floor, float(order_stat(j)))


def latency_cis(
    points: dict[str, float],
    n: int,
    order_stat,
    groups: Sequence[dict[str, float]],
    replicated: bool,
    level: float = 0.95,
) -> dict[str, tuple[float, float] | None]:
    """The CIs of ``CI_KEYS`` (latency, ms) printed next to the pooled ``points``.

    ``n`` pooled successful latencies whose value of 0-based rank ``r`` is ``order_stat(r)``;
    ``groups``: each key's value per replication (``replicated``) or per batch of the one
    replication.  Replications: ``centred_interval`` for every key.  One replication: the mean
    by ``centred_interval`` over the batches, percentiles by ``order_statistic_interval``.
    """
    out: dict[str, tuple[float, float] | None] = {}
    for key in CI_KEYS:
        point = points.get(key)
        if point is None or not math.isfinite(point):
            out[key] = None
        elif replicated or key == "mean":
            out[key] = centred_interval(point, [g[key] for g in groups], level)
        else:
            out[key] = order_statistic_interval(n, _PCT[key] / 100.0, order_stat, level)
    return out


def _ci_pair(ci: tuple[float, float] | None) -> list[float | None] | None:
    if ci is None:
        return None
    return [_r(ci[0]), _r(ci[1])]


def _latency_cis(ok: pd.DataFrame, points: dict[str, float]) -> dict[str, list | None]:
    """CIs of mean/p50/p95/p99 latency (ms) from the successful rows of a window, around the
    pooled ``points`` (see ``latency_cis``).

    Two or more replications with successes: the groups are the replications.  One: 10
    consecutive batches by arrival order for the mean, the sorted latencies for percentiles.
    """
    if ok.empty:
        return {k: None for k in CI_KEYS}
    rep = ok["replication"].to_numpy()
    lat_all = ok["latency_s"].to_numpy(dtype="float64") * 1000.0
    rep_ids = np.unique(rep)
    replicated = rep_ids.size >= 2
    if replicated:
        # Stable sort by replication, then split: the groups keep their row order (numpy
        # arrays, not a pandas groupby over a wide frame, which copies every column).
        order = np.argsort(rep, kind="mergesort")
        bounds = np.flatnonzero(np.diff(rep[order])) + 1
        groups = np.split(lat_all[order], bounds)
        ranked = None
        values = [{key: _point(g, key) for key in CI_KEYS} for g in groups]
    else:
        # Sort by arrival (id breaks ties) so batches are the same whatever the row order.
        ids = ok["id"].to_numpy() if "id" in ok.columns else np.arange(len(ok))
        order = np.lexsort((ids, ok["arrived_at"].to_numpy(dtype="float64")))
        lat = lat_all[order]
        n_batches = min(BATCHES, lat.size)
        groups = [b for b in np.array_split(lat, n_batches) if b.size] if n_batches else []
        ranked = np.sort(lat_all)
        values = [{"mean": float(np.mean(g))} for g in groups]
    cis = latency_cis(points, lat_all.size, ranked.__getitem__ if ranked is not None else None, values, replicated)
    return {key: _ci_pair(ci) for key, ci in cis.items()}


# --------------------------------------------------------------------------- public API


def measurement_window(df: pd.DataFrame, warmup_s: float, end_s: float) -> pd.DataFrame:
    """Rows with ``warmup_s <= arrived_at < end_s`` (a copy; the index is reset)."""
    if df.empty:
        return df.copy()
    arrived = df["arrived_at"].astype("float64")
    return df.loc[(arrived >= warmup_s) & (arrived < end_s)].reset_index(drop=True)


def stats_block(df_window: pd.DataFrame, window_s: float, replications: int) -> dict:
    """One STATS dict for the rows of a measurement window (already filtered).

    ``count``: requests in the window, all replications summed.  ``throughput_rps``: successful
    requests / window_s / replications (the per-replication throughput, averaged).
    ``success_rate``: ok / count (None when count is 0).  ``latency_ms``: over successful
    requests of all replications pooled.  ``ci95_ms``: see ``latency_cis``.
    """
    count = int(len(df_window))
    mask = _ok_mask(df_window)
    ok = df_window.loc[mask]
    n_ok = int(len(ok))
    reps = max(int(replications), 1)
    throughput = n_ok / window_s / reps if window_s > 0 else 0.0
    if n_ok:
        lat = _latency_values(ok["latency_s"].to_numpy(dtype="float64") * 1000.0)
        latency = {k: _r(lat[k]) for k in LATENCY_KEYS}
    else:
        lat = {}
        latency = {k: None for k in LATENCY_KEYS}
    block = {
        "count": count,
        "throughput_rps": _r(throughput),
        "success_rate": _r(n_ok / count) if count else None,
        "latency_ms": latency,
        "ci95_ms": _latency_cis(ok, lat),
    }
    if "stream" in df_window.columns and count and df_window["stream"].to_numpy(dtype=bool).any():
        block.update(stream_blocks(df_window, ok))
    return block


def _stream_values(values_s: np.ndarray) -> dict[str, float | None]:
    ms = values_s[np.isfinite(values_s)] * 1000.0
    if not ms.size:
        return {k: None for k in STREAM_KEYS}
    out = {"mean": _r(np.mean(ms))}
    for key in STREAM_KEYS[1:]:
        out[key] = _r(np.percentile(ms, _PCT[key]))
    return out


def stream_blocks(df_window: pd.DataFrame, ok: pd.DataFrame) -> dict:
    """``streamed`` (streamed requests in the window), ``ttft_ms`` and ``tpot_ms`` (over the
    successful ones) of a window's rows and its successful rows ``ok``."""
    streamed = ok["stream"].to_numpy(dtype=bool)
    return {
        "streamed": int(df_window["stream"].to_numpy(dtype=bool).sum()),
        "ttft_ms": _stream_values(ok["ttft_s"].to_numpy(dtype="float64")[streamed]),
        "tpot_ms": _stream_values(ok["tpot_s"].to_numpy(dtype="float64")[streamed]),
    }


def outcome_counts(df: pd.DataFrame) -> dict[str, int]:
    """Requests per outcome: every known outcome (0 when absent) then unknown ones, sorted."""
    counts: dict[str, int] = {name: 0 for name in OUTCOMES}
    if not df.empty:
        for name, n in df["outcome"].astype(str).value_counts().sort_index().items():
            counts[str(name)] = counts.get(str(name), 0) + int(n)
    return counts


def _endpoint_order(df: pd.DataFrame, endpoints: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(str(e) for e in endpoints))
    if not df.empty:
        extra = sorted(set(str(e) for e in df["endpoint"].unique()) - set(names))
        if extra:
            log.warning("records name endpoints not listed in the scenario: %s", ", ".join(extra))
        names.extend(extra)
    return names


def summarize(
    df: pd.DataFrame,
    *,
    scenario: str,
    engine: str,
    replications: int,
    seed: int,
    warmup_s: float,
    end_s: float,
    endpoints: Sequence[str],
) -> dict:
    """The JSON summary of a run: overall and per-endpoint STATS over the measurement window.

    Endpoints are listed in the order given, even when they have no records; endpoints found
    in the records but not given are appended, sorted.  ``outcomes`` counts the window's
    requests by outcome (the counts sum to ``overall.count``).
    """
    window_s = float(end_s) - float(warmup_s)
    # Only the columns a STATS block reads: slicing a 33-column frame per endpoint dominated.
    win = measurement_window(df[[c for c in _SUMMARY_COLS if c in df.columns]], warmup_s, end_s)
    names = _endpoint_order(win, endpoints)
    ep_col = win["endpoint"].astype(str) if not win.empty else None
    per_ep = {}
    for name in names:
        sub = win.loc[ep_col == name] if ep_col is not None else win
        per_ep[name] = stats_block(sub, window_s, replications)
    return {
        "scenario": str(scenario),
        "engine": str(engine),
        "replications": int(replications),
        "seed": int(seed),
        "window_s": _r(window_s),
        "warmup_s": _r(warmup_s),
        "end_s": _r(end_s),
        "overall": stats_block(win, window_s, replications),
        "endpoints": per_ep,
        "outcomes": outcome_counts(win),
    }


def per_replication(
    df_window: pd.DataFrame,
    window_s: float,
    *,
    replications: Sequence[int] | None = None,
    endpoints: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (replication, endpoint), endpoint ``"all"`` included.

    Columns: replication, endpoint, count, throughput_rps (ok / window_s), success_rate,
    mean_ms, p50_ms, p90_ms, p95_ms, p99_ms (NaN where there was no success).  ``replications``
    and ``endpoints`` add rows (count 0) for combinations the records do not contain.
    """
    cols = ["replication", "endpoint", "count", "throughput_rps", "success_rate",
            "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms"]
    reps = set(int(r) for r in replications) if replications is not None else set()
    names = set(str(e) for e in endpoints) if endpoints is not None else set()
    if not df_window.empty:
        reps |= set(int(r) for r in df_window["replication"].unique())
        names |= set(df_window["endpoint"].astype(str).unique())
    rows = []
    if not df_window.empty:
        rep_col = df_window["replication"].astype("int64").to_numpy()
        ep_col = df_window["endpoint"].astype(str).to_numpy()
        ok_col = _ok_mask(df_window).to_numpy()
        lat_col = df_window["latency_s"].to_numpy(dtype="float64") * 1000.0
    for rep in sorted(reps):
        for name in [ALL] + sorted(names - {ALL}):
            if df_window.empty:
                sel = np.zeros(0, dtype=bool)
                n, lat = 0, np.zeros(0)
            else:
                sel = rep_col == rep
                if name != ALL:
                    sel &= ep_col == name
                n = int(sel.sum())
                lat = lat_col[sel & ok_col]
            row = {"replication": rep, "endpoint": name, "count": n,
                   "throughput_rps": lat.size / window_s if window_s > 0 else 0.0,
                   "success_rate": lat.size / n if n else math.nan}
            vals = _latency_values(lat) if lat.size else {}
            for key in ("mean", "p50", "p90", "p95", "p99"):
                row[f"{key}_ms"] = vals.get(key, math.nan)
            rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    return out.astype({"replication": "int64", "count": "int64"}) if not out.empty else out


def _integral_at(starts: np.ndarray, ends: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """G(x) = ∫_0^x N(t) dt where N counts intervals [s, e) covering t, at every x in xs.

    G(x) = Σ_{s<x} (x - s) - Σ_{e<x} (x - e), evaluated with sorted arrays and prefix sums so
    that a million requests over a thousand windows costs O((n + k) log n), not O(n·k).
    """
    s = np.sort(starts)
    e = np.sort(ends[np.isfinite(ends)])
    cs = np.concatenate([[0.0], np.cumsum(s)])
    ce = np.concatenate([[0.0], np.cumsum(e)])
    ns = np.searchsorted(s, xs, side="left")
    ne = np.searchsorted(e, xs, side="left")
    return (ns * xs - cs[ns]) - (ne * xs - ce[ne])


def _intervals(df: pd.DataFrame, start_col: str) -> tuple[np.ndarray, np.ndarray]:
    start = df[start_col].to_numpy(dtype="float64")
    if start_col != "arrived_at":
        # A request never sent (refused at the client cap) is in flight from its arrival.
        start = np.where(np.isfinite(start), start, df["arrived_at"].to_numpy(dtype="float64"))
    end = df["finished_at"].to_numpy(dtype="float64")
    end = np.where(np.isfinite(end), end, np.inf)  # unfinished: still in flight at the end
    end = np.maximum(end, start)
    return start, end


def time_series(df: pd.DataFrame, window_s: float, *, replications: int | None = None) -> pd.DataFrame:
    """Per window (``window_at`` = window start, windows by ``finished_at``) and endpoint.

    Columns: window_at, endpoint (``"all"`` first), completed_rps (requests that finished in
    the window, any outcome, per second and replication), success_rate (ok / completed, NaN when
    none completed), p95_ms (of the successes that finished in the window, NaN when none),
    in_flight (time-average number of requests between started_at and finished_at over the
    window, per replication).  Windows run from 0 to the last finish, empty ones included.
    """
    cols = ["window_at", "endpoint", "completed_rps", "success_rate", "p95_ms", "in_flight"]
    if window_s <= 0:
        raise ValueError(f"expected a positive window, got {window_s}")
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="object" if c == "endpoint" else "float64") for c in cols})
    fin = df["finished_at"].to_numpy(dtype="float64")
    finite = np.isfinite(fin)
    if not finite.any():
        return pd.DataFrame({c: pd.Series(dtype="object" if c == "endpoint" else "float64") for c in cols})
    n_reps = int(replications) if replications else max(int(df["replication"].nunique()), 1)
    k_last = int(math.floor(float(fin[finite].max()) / window_s))
    k_first = min(0, int(math.floor(float(fin[finite].min()) / window_s)))
    edges = np.arange(k_first, k_last + 2, dtype="float64") * window_s
    n_win = edges.size - 1
    ep_all = df["endpoint"].astype(str).to_numpy()
    ok_all = _ok_mask(df).to_numpy()
    lat_all = df["latency_s"].to_numpy(dtype="float64") * 1000.0
    # Window index of each finish; unfinished rows get -1 and never count as completed.
    widx = np.full(len(df), -1, dtype="int64")
    widx[finite] = np.floor(fin[finite] / window_s).astype("int64") - k_first
    start_all, end_all = _intervals(df, "started_at")
    frames = []
    for name in [ALL] + sorted(set(ep_all) - {ALL}):
        sel = np.ones(len(df), dtype=bool) if name == ALL else ep_all == name
        w = widx[sel]
        done = w >= 0
        completed = np.bincount(w[done], minlength=n_win)[:n_win].astype("float64")
        ok_done = np.bincount(w[done & ok_all[sel]], minlength=n_win)[:n_win].astype("float64")
        p95 = np.full(n_win, math.nan)
        lat = lat_all[sel]
        ok_sel = done & ok_all[sel]
        if ok_sel.any():
            order = np.argsort(w[ok_sel], kind="mergesort")
            ws, ls = w[ok_sel][order], lat[ok_sel][order]
            bounds = np.flatnonzero(np.diff(ws)) + 1
            for chunk_w, chunk_l in zip(np.split(ws, bounds), np.split(ls, bounds)):
                p95[chunk_w[0]] = float(np.percentile(chunk_l, 95.0))
        g = _integral_at(start_all[sel], end_all[sel], edges)
        in_flight = np.diff(g) / window_s / n_reps
        with np.errstate(invalid="ignore", divide="ignore"):
            success = np.where(completed > 0, ok_done / np.where(completed > 0, completed, 1.0), math.nan)
        frames.append(pd.DataFrame({
            "window_at": edges[:-1],
            "endpoint": name,
            "completed_rps": completed / window_s / n_reps,
            "success_rate": success,
            "p95_ms": p95,
            "in_flight": in_flight,
        }))
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["window_at"], kind="mergesort").reset_index(drop=True)[cols]


def little_check(df: pd.DataFrame, start_s: float, end_s: float) -> dict:
    """Little's law L = λ·W checked on a run, per replication averaged.

    L: time-average number in system over [start_s, end_s), from intervals
    arrived_at..finished_at clipped to the window (unfinished requests stay until the end).
    λ: arrivals in the window / (window length · replications).  W: mean finished_at - arrived_at
    of requests arriving in the window (finished ones).  Returns L, lambda, W, lambda_W,
    rel_error = |L - λW| / L, and the counts used.  The law holds exactly when the system is
    empty at both ends of the window; otherwise the edge terms make rel_error small, not 0.
    """
    span = float(end_s) - float(start_s)
    if span <= 0:
        raise ValueError(f"expected end_s > start_s, got {start_s}..{end_s}")
    if df.empty:
        return {"L": 0.0, "lambda": 0.0, "W": None, "lambda_W": None, "rel_error": None,
                "arrivals": 0, "replications": 0, "window_s": span}
    n_reps = max(int(df["replication"].nunique()), 1)
    start, end = _intervals(df, "arrived_at")
    area = np.clip(np.minimum(end, end_s) - np.maximum(start, start_s), 0.0, None).sum()
    L = float(area) / span / n_reps
    arr = df["arrived_at"].to_numpy(dtype="float64")
    inside = (arr >= start_s) & (arr < end_s)
    lam = float(inside.sum()) / span / n_reps
    fin = df["finished_at"].to_numpy(dtype="float64")
    soj = (fin - arr)[inside & np.isfinite(fin)]
    W = float(np.mean(soj)) if soj.size else None
    lw = lam * W if W is not None else None
    rel = abs(L - lw) / L if (lw is not None and L > 0) else None
    return {"L": _r(L), "lambda": _r(lam), "W": _r(W), "lambda_W": _r(lw), "rel_error": _r(rel),
            "arrivals": int(inside.sum()), "replications": n_reps, "window_s": _r(span)}


def _summary_value(summary: dict, endpoint: str, metric: str) -> float | None:
    block = summary["overall"] if endpoint == ALL else summary.get("endpoints", {}).get(endpoint)
    if block is None:
        return None
    if metric == "throughput":
        return block.get("throughput_rps")
    if metric == "success":
        return block.get("success_rate")
    return block.get("latency_ms", {}).get(metric)


def compare_summaries(a: dict, b: dict, per_rep_a: pd.DataFrame, per_rep_b: pd.DataFrame) -> list[dict]:
    """B - A per endpoint (``"all"`` first) and metric, with a paired-t 95 % CI.

    The runs must share seed and replication indices (common random numbers), so replication i
    of A and of B saw the same arrivals: their difference has far less variance than either.
    Each row: endpoint, metric, unit, a, b (pooled values from the summaries), delta = b - a,
    mean_diff (mean of per-replication differences B_i - A_i), ci95: the paired-t interval with
    the spread of those differences, centred on ``delta``, the difference printed (on
    ``mean_diff`` when a pooled value is missing; None with fewer than two pairs), n_pairs,
    significant (CI excludes 0; False when no CI).
    """
    names = [ALL] + list(dict.fromkeys(list(a.get("endpoints", {})) + list(b.get("endpoints", {}))))
    key = ["replication", "endpoint"]
    if per_rep_a.empty or per_rep_b.empty:
        paired = pd.DataFrame(columns=key)
    else:
        paired = per_rep_a.merge(per_rep_b, on=key, suffixes=("_a", "_b"), how="inner").sort_values(key)
    rows = []
    for name in names:
        sub = paired.loc[paired["endpoint"] == name] if not paired.empty else paired
        for metric, (col, unit) in COMPARE_METRICS.items():
            va, vb = _summary_value(a, name, metric), _summary_value(b, name, metric)
            if sub.empty:
                diffs = np.zeros(0)
            else:
                diffs = (sub[f"{col}_b"].to_numpy(dtype="float64") - sub[f"{col}_a"].to_numpy(dtype="float64"))
                diffs = diffs[np.isfinite(diffs)]
            delta = vb - va if (va is not None and vb is not None) else None
            centre = delta if delta is not None else (float(np.mean(diffs)) if diffs.size else None)
            ci = centred_interval(centre, diffs, floor=None) if centre is not None else None
            rows.append({
                "endpoint": name,
                "metric": metric,
                "unit": unit,
                "a": va,
                "b": vb,
                "delta": _r(delta),
                "mean_diff": _r(np.mean(diffs)) if diffs.size else None,
                "ci95": _ci_pair(ci),
                "n_pairs": int(diffs.size),
                "significant": bool(ci is not None and (ci[0] > 0 or ci[1] < 0)),
            })
    return rows


# --------------------------------------------------------------------------- text output


def _fmt_num(x: Any, spec: str) -> str:
    if x is None:
        return "-"
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(xf):
        return "-"
    return format(xf, spec)


def _fmt_ci(ci: Any) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "-"
    return f"[{float(ci[0]):.1f}, {float(ci[1]):.1f}]"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Fixed-width columns: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_table(summary: dict) -> str:
    """A readable fixed-width report of a summary: one row per endpoint, then ``all``."""
    head = (f"scenario {summary.get('scenario', '?')}  engine {summary.get('engine', '?')}  "
            f"replications {summary.get('replications', '?')}  seed {summary.get('seed', '?')}  "
            f"window {_fmt_num(summary.get('window_s'), 'g')} s")
    headers = ["endpoint", "count", "req/s", "success %", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms",
               "p95 95% CI ms"]
    blocks = list(summary.get("endpoints", {}).items()) + [(ALL, summary["overall"])]
    rows = []
    for name, st in blocks:
        lat = st.get("latency_ms", {})
        sr = st.get("success_rate")
        rows.append([
            name,
            str(st.get("count", 0)),
            _fmt_num(st.get("throughput_rps"), ".2f"),
            _fmt_num(sr * 100.0 if sr is not None else None, ".2f"),
            *(_fmt_num(lat.get(k), ".1f") for k in ("mean", "p50", "p95", "p99", "max")),
            _fmt_ci(st.get("ci95_ms", {}).get("p95")),
        ])
    lines = [head, *_table(headers, rows)]
    streamed = [(name, st) for name, st in blocks if st.get("ttft_ms") is not None]
    if streamed:
        lines.append("")
        lines.extend(_table(
            ["streamed", "metric", "count", *(f"{k} ms" for k in STREAM_KEYS)],
            [[name, metric.upper(), str(st.get("streamed", 0)), *(_fmt_num(st[f"{metric}_ms"].get(k), spec) for k in STREAM_KEYS)]
             for name, st in streamed for metric, spec in (("ttft", ".1f"), ("tpot", ".2f"))],
            left=2,
        ))
    outcomes = {k: v for k, v in summary.get("outcomes", {}).items() if v}
    if outcomes:
        lines.append("outcomes: " + ", ".join(f"{k} {v}" for k, v in outcomes.items()))
    return "\n".join(lines)


def format_compare(rows: Sequence[dict]) -> str:
    """A fixed-width table of ``compare_summaries`` rows; ``*`` marks a significant change."""
    headers = ["endpoint", "metric", "unit", "A", "B", "B-A", "paired 95% CI", "n", "sig"]
    out = []
    for r in rows:
        scale, spec = (100.0, ".2f") if r["metric"] == "success" else (1.0, ".3f" if r["unit"] == "req/s" else ".1f")
        unit = "%" if r["metric"] == "success" else r["unit"]

        def sc(x: Any, scale: float = scale) -> Any:
            return None if x is None else float(x) * scale

        ci = r.get("ci95")
        ci_s = "-" if not ci else f"[{_fmt_num(sc(ci[0]), spec)}, {_fmt_num(sc(ci[1]), spec)}]"
        out.append([r["endpoint"], r["metric"], unit, _fmt_num(sc(r["a"]), spec), _fmt_num(sc(r["b"]), spec),
                    _fmt_num(sc(r["delta"]), "+" + spec), ci_s, str(r["n_pairs"]), "*" if r["significant"] else ""])
    return "\n".join(_table(headers, out, left=3))
