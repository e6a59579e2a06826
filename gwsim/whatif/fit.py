"""Fitting service-time distributions to measured latencies, as one does before writing a
scenario: take what a load test or a Prometheus histogram recorded, fit lognormal, gamma,
Weibull and exponential by maximum likelihood (scipy.stats), rank them by AIC (with the
Kolmogorov-Smirnov distance beside it), keep the empirical distribution as the reference,
and print the scenario snippet of the best fit.

Inputs: CSV (a column of latencies), Parquet (gwsim records: ``latency_s`` of successful
requests), plain text (one number a line), or Prometheus text exposition with histogram
``_bucket{le="..."}`` counts.  Binned data are fitted by the interval-censored likelihood
(each bucket's count times the log of the probability the fitted CDF puts in it).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sst

from simulator.errors import UsageError
from simulator.units import format_duration

_Z95 = 1.6448536269514722
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Samples:
    """Latencies in seconds (``values``), or bucket counts (``edges`` upper bounds in seconds,
    ``counts`` per bucket, the last bucket open to +inf)."""

    source: str
    column: str
    unit: str
    values: np.ndarray | None = None
    edges: np.ndarray | None = None
    counts: np.ndarray | None = None
    dropped: int = 0  # non-positive or non-finite values left out
    notes: tuple[str, ...] = field(default=())

    @property
    def binned(self) -> bool:
        return self.values is None

    @property
    def n(self) -> int:
        return int(self.values.size) if self.values is not None else int(self.counts.sum())  # type: ignore[union-attr]


def _unit_for(column: str, unit: str | None) -> str:
    if unit:
        if unit not in _UNITS:
            raise UsageError(f"--unit {unit}: expected one of {sorted(_UNITS)}")
        return unit
    name = column.lower()
    if name.endswith(("_ms", "ms", "_milliseconds", "milliseconds")):
        return "ms"
    if name.endswith(("_us", "_microseconds")):
        return "us"
    return "s"


# a histogram's bucket line, whatever its labels hold (a value may contain "}")
_PROM_BUCKET = re.compile(r'^\s*[A-Za-z_:][A-Za-z0-9_:]*_bucket\{')


def _is_prometheus(text: str) -> bool:
    return any(_PROM_BUCKET.match(line) for line in text.splitlines()[:2000])


def _prometheus_samples(text: str, source: str) -> list[Any]:
    """Every sample of the exposition, read by prometheus_client's own parser (text format, or
    OpenMetrics when the text ends with ``# EOF``)."""
    if text.rstrip().endswith("# EOF"):
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    try:
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise UsageError(f"{source}: expected Prometheus text exposition, got a line it cannot read ({detail})") from None


def read_prometheus(text: str, source: str, metric: str | None, unit: str | None, where: Sequence[str] = ()) -> Samples:
    """Sum cumulative bucket counts over the label sets of one histogram metric that match every
    ``--where LABEL=VALUE``."""
    conditions = []
    for cond in where:
        if "=" not in cond:
            raise UsageError(f"--where {cond}: expected LABEL=VALUE")
        label, _, value = cond.partition("=")
        conditions.append((label.strip(), value.strip()))
    buckets: dict[str, dict[float, float]] = {}
    labels_seen: set[str] = set()
    matched: dict[str, int] = {}
    for sample in _prometheus_samples(text, source):
        if not sample.name.endswith("_bucket") or "le" not in sample.labels:
            continue
        name = sample.name[: -len("_bucket")]
        labels_seen.update(k for k in sample.labels if k != "le")
        if any(sample.labels.get(label) != value for label, value in conditions):
            continue
        try:
            bound = float(sample.labels["le"])  # "+Inf" reads as inf
        except ValueError:
            raise UsageError(f"{source}: {name}: expected a number as le, got {sample.labels['le']!r}") from None
        value = float(sample.value)
        if not math.isfinite(value) or value < 0:
            raise UsageError(f"{source}: {name}: expected bucket counts >= 0, got {sample.value!r}")
        per = buckets.setdefault(name, {})
        per[bound] = per.get(bound, 0.0) + value
        matched[name] = matched.get(name, 0) + 1
    for label, _ in conditions:
        if label not in labels_seen:
            raise UsageError(f"--where {label}=...: expected a label of the histogram series from {sorted(labels_seen)}")
    if not buckets:
        if conditions:
            raise UsageError(f"{source}: --where {' '.join(where)}: expected histogram series with those labels, found none")
        raise UsageError(f"{source}: expected Prometheus histogram lines such as name_bucket{{le=\"0.5\"}} 12, found none")
    if metric is None:
        if len(buckets) > 1:
            raise UsageError(f"{source}: several histograms, expected --column with one of {sorted(buckets)}")
        metric = next(iter(buckets))
    if metric not in buckets:
        raise UsageError(f"{source}: --column {metric}: expected one of the histograms {sorted(buckets)}")
    cum = sorted(buckets[metric].items())
    bounds = np.array([b for b, _ in cum])
    counts_cum = np.array([c for _, c in cum])
    if np.any(np.diff(counts_cum) < 0):
        raise UsageError(f"{source}: {metric}: expected cumulative bucket counts that never decrease")
    if not math.isinf(bounds[-1]):
        bounds = np.append(bounds, math.inf)
        counts_cum = np.append(counts_cum, counts_cum[-1])
    counts = np.diff(np.concatenate([[0.0], counts_cum]))
    u = _unit_for(metric, unit if unit else ("ms" if "millisecond" in metric else "s"))
    edges = bounds[:-1] * _UNITS[u]
    if counts.sum() <= 0:
        raise UsageError(f"{source}: {metric}: expected some observations, got all-zero bucket counts")
    if edges.size < 2:
        raise UsageError(f"{source}: {metric}: expected at least two finite buckets to fit, got {edges.size}")
    notes = tuple(f"where {label} = {value}" for label, value in conditions)
    return Samples(source, metric, u, edges=edges, counts=counts, notes=notes)


def _pick_column(columns: Sequence[str], column: str | None, source: str) -> str:
    if column is not None:
        if column not in columns:
            raise UsageError(f"{source}: --column {column}: expected one of {list(columns)}")
        return column
    for name in ("latency_s", "latency_ms", "latency"):
        if name in columns:
            return name
    for name in columns:
        if "latency" in name.lower() or "duration" in name.lower():
            return name
    raise UsageError(f"{source}: expected --column (no latency column found among {list(columns)})")


def _filter(frame: pd.DataFrame, where: Sequence[str], all_outcomes: bool, source: str) -> tuple[pd.DataFrame, list[str]]:
    notes = []
    for cond in where:
        if "=" not in cond:
            raise UsageError(f"--where {cond}: expected COLUMN=VALUE")
        col, _, value = cond.partition("=")
        if col not in frame.columns:
            raise UsageError(f"--where {cond}: expected a column from {list(frame.columns)}")
        frame = frame.loc[frame[col].astype(str) == value]
        notes.append(f"where {col} = {value}")
    if not all_outcomes:
        if "outcome" in frame.columns:
            frame = frame.loc[frame["outcome"].astype(str) == "ok"]
            notes.append("successful requests only (outcome ok)")
        elif "success" in frame.columns:
            frame = frame.loc[frame["success"].astype(str).str.lower().isin(["true", "1"])]
            notes.append("successful requests only (success true)")
    return frame, notes


def read_samples(path: str | Path, column: str | None = None, unit: str | None = None, where: Sequence[str] = (),
                 all_outcomes: bool = False) -> Samples:
    from gwsim.datafiles import missing_hint, resolve_user_path

    path = resolve_user_path(path)  # a bare name of a data file gwsim knows: its data directory
    source = str(path)
    if not path.is_file():
        raise UsageError(f"{source}: expected a file of latencies, found nothing there{missing_hint(path)}")
    if path.suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds
            raise UsageError(f"{source}: expected a readable Parquet file, got {exc.__class__.__name__}") from None
        frame, notes = _filter(frame, where, all_outcomes, source)
        col = _pick_column(list(frame.columns), column, source)
        raw = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype="float64")
        return _clean(raw, source, col, _unit_for(col, unit), notes)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{source}: expected a readable text file, got {exc.__class__.__name__}") from None
    if not text.strip():
        raise UsageError(f"{source}: expected latencies, found an empty file")
    if _is_prometheus(text):
        return read_prometheus(text, source, column, unit, where)
    first = text.lstrip().splitlines()[0]
    try:
        float(first.split(",")[0])
        header = False
    except ValueError:
        header = True
    if header:
        try:
            frame = pd.read_csv(io.StringIO(text))
        except (pd.errors.ParserError, csv.Error) as exc:
            raise UsageError(f"{source}: expected CSV, got {exc}") from None
        frame, notes = _filter(frame, where, all_outcomes, source)
        col = _pick_column(list(frame.columns), column, source)
        raw = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype="float64")
        return _clean(raw, source, col, _unit_for(col, unit), notes)
    if column is not None or where:
        raise UsageError(f"{source}: --column/--where need a header row, got a bare list of numbers")
    values = []
    for i, line in enumerate(text.splitlines(), start=1):
        line = line.strip().split(",")[0]
        if not line:
            continue
        try:
            values.append(float(line))
        except ValueError:
            raise UsageError(f"{source}:{i}: expected a number, got {line!r}") from None
    return _clean(np.asarray(values), source, "value", _unit_for("value", unit), [])


def _clean(raw: np.ndarray, source: str, column: str, unit: str, notes: list[str]) -> Samples:
    good = np.isfinite(raw) & (raw > 0)
    values = raw[good] * _UNITS[unit]
    if values.size < 10:
        raise UsageError(f"{source}: {column}: expected at least 10 positive latencies to fit, got {values.size}")
    return Samples(source, column, unit, values=np.sort(values), dropped=int((~good).sum()), notes=tuple(notes))


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class Fit:
    name: str
    params: dict[str, float]
    k: int  # free parameters
    loglik: float
    aic: float
    ks: float  # Kolmogorov-Smirnov distance (sup |F_data - F_fit|)
    ks_pvalue: float | None
    frozen: Any  # scipy frozen distribution (None for empirical)
    snippet: str | None  # scenario inline table (every family here has one in the schema)
    quantiles: dict[str, float]  # mean, p50, p95, p99 in seconds


def _quantiles(dist) -> dict[str, float]:  # noqa: ANN001
    return {"mean": float(dist.mean()), "p50": float(dist.ppf(0.5)), "p95": float(dist.ppf(0.95)), "p99": float(dist.ppf(0.99))}


def _snippet(name: str, dist, samples: Samples) -> str | None:  # noqa: ANN001
    if name == "lognormal":
        sigma = dist.kwds.get("s", dist.args[0] if dist.args else None)
        median = float(dist.ppf(0.5))
        p95 = median * math.exp(_Z95 * sigma)
        return f'{{ dist = "lognormal", median = "{format_duration(median)}", p95 = "{format_duration(p95)}" }}'
    if name == "gamma":
        mean, var = float(dist.mean()), float(dist.var())
        return f'{{ dist = "gamma", mean = "{format_duration(mean)}", cv = {math.sqrt(var) / mean:.4g} }}'
    if name == "exponential":
        return f'{{ dist = "exponential", mean = "{format_duration(float(dist.mean()))}" }}'
    if name == "weibull":
        params = _named_params(name, dist)
        return f'{{ dist = "weibull", shape = {params["shape"]:.4g}, scale = "{format_duration(params["scale_s"])}" }}'
    return None


def _empirical_snippet(samples: Samples) -> str:
    if not samples.binned:
        unit = samples.unit
        col = f', column = "{samples.column}"' if samples.column != "value" else ""
        return f'{{ dist = "empirical", file = "{samples.source}"{col}, unit = "{unit}" }}'
    # binned: a mixture of uniform distributions, one per bucket (the open last bucket is left out)
    assert samples.edges is not None and samples.counts is not None
    lows = np.concatenate([[0.0], samples.edges[:-1]])
    parts = []
    for low, high, count in zip(lows, samples.edges, samples.counts[:-1]):
        if count > 0:
            parts.append(f'{{ weight = {count:g}, of = {{ dist = "uniform", low = "{format_duration(low)}", '
                         f'high = "{format_duration(high)}" }} }}')
    return '{ dist = "mixture", components = [\n    ' + ",\n    ".join(parts) + "\n  ] }"


_FAMILIES = {
    "lognormal": (sst.lognorm, 2),
    "gamma": (sst.gamma, 2),
    "weibull": (sst.weibull_min, 2),
    "exponential": (sst.expon, 1),
}


def _fit_raw(name: str, values: np.ndarray):  # noqa: ANN202
    family, _ = _FAMILIES[name]
    params = family.fit(values, floc=0)
    return family(*params)


def _named_params(name: str, dist) -> dict[str, float]:  # noqa: ANN001
    args = dist.args
    kw = dist.kwds
    scale = kw.get("scale", args[-1] if args else 1.0)
    if name == "lognormal":
        return {"sigma": float(args[0]), "mu": math.log(float(scale))}
    if name == "gamma":
        return {"shape": float(args[0]), "scale_s": float(scale)}
    if name == "weibull":
        return {"shape": float(args[0]), "scale_s": float(scale)}
    return {"mean_s": float(scale)}


def _binned_loglik(dist, edges: np.ndarray, counts: np.ndarray) -> float:  # noqa: ANN001
    cdf = np.concatenate([[0.0], dist.cdf(edges), [1.0]])
    probs = np.clip(np.diff(cdf), 1e-300, None)
    return float(np.sum(counts * np.log(probs)))


def _fit_binned(name: str, edges: np.ndarray, counts: np.ndarray):  # noqa: ANN202
    """Maximum likelihood over bucket counts, parameters on a log scale (they are positive)."""
    family, k = _FAMILIES[name]
    mids = np.concatenate([[edges[0] / 2], (edges[:-1] + edges[1:]) / 2, [edges[-1] * 1.5]])
    w = counts / counts.sum()
    mean = float(np.sum(w * mids))
    var = float(np.sum(w * (mids - mean) ** 2)) or mean * mean
    cv = math.sqrt(var) / mean
    if name == "lognormal":
        sigma0 = math.sqrt(math.log(1 + cv * cv))
        x0 = [math.log(sigma0), math.log(mean) - sigma0 ** 2 / 2]

        def make(x):  # noqa: ANN001, ANN202
            return sst.lognorm(math.exp(x[0]), scale=math.exp(x[1]))
    elif name in ("gamma", "weibull"):
        shape0 = 1.0 / max(cv * cv, 1e-3) if name == "gamma" else max(1.2 / max(cv, 1e-3), 0.1)
        x0 = [math.log(shape0), math.log(mean / shape0 if name == "gamma" else mean)]

        def make(x):  # noqa: ANN001, ANN202
            return family(math.exp(x[0]), scale=math.exp(x[1]))
    else:
        x0 = [math.log(mean)]

        def make(x):  # noqa: ANN001, ANN202
            return sst.expon(scale=math.exp(x[0]))

    def nll(x):  # noqa: ANN001, ANN202
        if np.any(np.abs(x) > 50):
            return 1e300
        return -_binned_loglik(make(x), edges, counts)

    res = optimize.minimize(nll, x0, method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 4000})
    return make(res.x)


def fit_latency(samples: Samples) -> list[Fit]:
    """Every family fitted and ranked by AIC (lowest first), the empirical reference last."""
    fits: list[Fit] = []
    for name, (_, k) in _FAMILIES.items():
        if samples.binned:
            assert samples.edges is not None and samples.counts is not None
            dist = _fit_binned(name, samples.edges, samples.counts)
            loglik = _binned_loglik(dist, samples.edges, samples.counts)
            emp = np.cumsum(samples.counts)[:-1] / samples.counts.sum()
            ks = float(np.max(np.abs(emp - dist.cdf(samples.edges))))
            pvalue = None  # the KS test's p-value assumes unbinned data
        else:
            assert samples.values is not None
            with np.errstate(all="ignore"):
                dist = _fit_raw(name, samples.values)
                loglik = float(np.sum(dist.logpdf(samples.values)))
            test = sst.kstest(samples.values, dist.cdf)
            ks, pvalue = float(test.statistic), float(test.pvalue)
        fits.append(Fit(name, _named_params(name, dist), k, loglik, 2 * k - 2 * loglik, ks, pvalue, dist,
                        _snippet(name, dist, samples), _quantiles(dist)))
    fits.sort(key=lambda f: f.aic)
    if samples.binned:
        assert samples.edges is not None and samples.counts is not None
        q = _binned_quantiles(samples.edges, samples.counts)
    else:
        assert samples.values is not None
        v = samples.values
        q = {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
             "p99": float(np.percentile(v, 99))}
    fits.append(Fit("empirical", {"n": samples.n}, 0, math.nan, math.nan, 0.0, None, None,
                    _empirical_snippet(samples), q))
    return fits


def _binned_quantiles(edges: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """Quantiles by linear interpolation inside buckets; the mean from bucket midpoints."""
    cum = np.concatenate([[0.0], np.cumsum(counts[:-1])]) / counts.sum()
    bounds = np.concatenate([[0.0], edges])
    out = {}
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        out[key] = float(np.interp(q, cum, bounds)) if q <= cum[-1] else math.inf
    mids = (bounds[:-1] + bounds[1:]) / 2
    finite = counts[:-1]
    out["mean"] = float(np.sum(mids * finite) / max(finite.sum(), 1))
    return {"mean": out["mean"], "p50": out["p50"], "p95": out["p95"], "p99": out["p99"]}


def best_snippet(fits: Sequence[Fit]) -> tuple[Fit, str]:
    """The lowest-AIC fitted family and its snippet (the empirical one if nothing was fitted)."""
    for f in fits:
        if f.name != "empirical" and f.snippet is not None:
            return f, f.snippet
    return fits[-1], fits[-1].snippet or ""


def format_fits(samples: Samples, fits: Sequence[Fit]) -> str:
    def ms(x: float) -> str:
        return "-" if not math.isfinite(x) else (f"{x * 1000:.0f}" if x >= 0.1 else f"{x * 1000:.2f}")

    ranked = [f for f in fits if f.name != "empirical"]
    best_aic = ranked[0].aic if ranked else math.nan
    ks_rank = {f.name: i + 1 for i, f in enumerate(sorted(ranked, key=lambda f: f.ks))}
    kind = "bucket counts" if samples.binned else "latencies"
    lines = [f"{samples.source}: {samples.n} {kind} from {samples.column} (unit {samples.unit})"
             + (f", {samples.dropped} non-positive or missing left out" if samples.dropped else "")]
    for note in samples.notes:
        lines.append(f"  {note}")
    lines.append("")
    headers = ["rank", "distribution", "parameters", "AIC", "dAIC", "KS", "KS rank", "KS p", "mean ms", "p50 ms", "p95 ms", "p99 ms"]
    rows = []
    for i, f in enumerate(fits, start=1):
        params = ", ".join(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.4g}" for k, v in f.params.items())
        is_emp = f.name == "empirical"
        rows.append([
            "-" if is_emp else str(i), f.name + (" (data)" if is_emp else ""), params,
            "-" if is_emp else f"{f.aic:.1f}", "-" if is_emp else f"{f.aic - best_aic:.1f}",
            "-" if is_emp else f"{f.ks:.4f}", "-" if is_emp else str(ks_rank[f.name]),
            "-" if f.ks_pvalue is None else f"{f.ks_pvalue:.3g}",
            ms(f.quantiles["mean"]), ms(f.quantiles["p50"]), ms(f.quantiles["p95"]), ms(f.quantiles["p99"]),
        ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    left = {1, 2}
    lines.append("  ".join(h.ljust(w) if i in left else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    best, snippet = best_snippet(fits)
    lines.append("")
    top = ranked[0] if ranked else None
    if top is not None and top.ks > 0.1:
        # AIC only ranks the candidates; a KS distance this large means none of them is close
        lines.append(f"# warning: even the best fit is off by up to {top.ks:.0%} of requests (KS distance); the data may be")
        lines.append("# multimodal (several payload classes?): fit each class (--where) or replay the data (empirical).")
    lines.append(f"# scenario snippet: best fit by AIC, {best.name} (KS distance {best.ks:.3f})")
    lines.append(f"time = {snippet}")
    emp = fits[-1]
    lines.append("# or replay the data itself:")
    lines.append(f"# time = {emp.snippet}" if emp.snippet and "\n" not in emp.snippet else "# time = " + (emp.snippet or "").replace("\n", "\n# "))
    if not samples.binned and (samples.notes or samples.dropped):
        lines.append("# (the file holds every row: save the selected values to a file of their own to replay just them)")
    return "\n".join(lines)


def fits_payload(samples: Samples, fits: Sequence[Fit]) -> dict:
    def f(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else float(f"{x:.6g}")

    best, snippet = best_snippet(fits)
    return {
        "source": samples.source, "column": samples.column, "unit": samples.unit, "n": samples.n,
        "binned": samples.binned, "dropped": samples.dropped,
        "fits": [{"distribution": x.name, "params": {k: f(v) for k, v in x.params.items()}, "aic": f(x.aic),
                  "ks": f(x.ks), "ks_pvalue": f(x.ks_pvalue), "snippet": x.snippet,
                  "quantiles_s": {k: f(v) for k, v in x.quantiles.items()}} for x in fits],
        "best": best.name,
        "snippet": snippet,
    }


def cdf_frame(samples: Samples, fits: Sequence[Fit], points: int = 200) -> pd.DataFrame:
    """Empirical and fitted CDFs on a log-spaced grid (for a chart): columns latency_ms, cdf, source."""
    if samples.binned:
        assert samples.edges is not None and samples.counts is not None
        lo, hi = float(samples.edges[0]) / 2, float(samples.edges[-1])
        emp_x = samples.edges
        emp_y = np.cumsum(samples.counts)[:-1] / samples.counts.sum()
    else:
        assert samples.values is not None
        v = samples.values
        lo, hi = float(v[0]), float(v[-1])
        emp_x = np.quantile(v, np.linspace(0, 1, points))
        emp_y = np.linspace(0, 1, points)
    grid = np.geomspace(max(lo, 1e-6), max(hi, lo * 1.01), points)
    frames = [pd.DataFrame({"latency_ms": emp_x * 1000.0, "cdf": emp_y, "source": "data"})]
    for fit in fits:
        if fit.frozen is not None:
            frames.append(pd.DataFrame({"latency_ms": grid * 1000.0, "cdf": fit.frozen.cdf(grid), "source": fit.name}))
    return pd.concat(frames, ignore_index=True)
