"""Fitting a workload model to a request trace, so production traffic can be scaled for what-ifs.

A trace is bursty in three ways that a Poisson stream at the mean rate loses: its rate drifts
over minutes (diurnal load, a deploy, a batch job), requests cluster within a minute (a user's
follow-ups, an agent's tool calls, a retry storm), and token lengths vary together with the
kind of request.  ``fit_workload`` writes a ``[workload]`` section that keeps each:

* **rate profile**: requests per bin (60 s by default) as step factors on the mean rate;
* **burstiness within bins**: the trace is put in *operational time* (each bin stretched so
  that its rate is 1, ``simulator.arrivals``' time change run backwards) and two stationary
  processes are fitted there: a gamma renewal (the gaps' CV, by moments) and a two-state
  Markov-modulated Poisson process (least squares on the index of dispersion of counts over
  window lengths from 1 to ~1,000 mean gaps, and on the gaps' CV).  Both are generated through
  the real arrival code and compared with the trace on wall-clock figures (gap CV, index of
  dispersion of counts at 1 s and 10 s); the closer one is chosen, the renewal process on a
  near tie (fewer parameters), and the reason is printed with the figures;
* **tokens**: a Gaussian copula over the two empirical marginals (quantile tables with finer
  steps in the tails), whose parameter is set from Spearman's rank correlation, so the
  input/output dependence (rank correlation) is kept;
* **endpoint or model mix**: the shares of each value of the trace's endpoint column.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator.arrivals import arrival_times, draw_tokens
from simulator.scenario import TokenCopula, Workload
from simulator.trace import TraceData, window, window_length
from simulator.units import format_duration

#: Quantile levels of the token marginals: every percent, finer in both tails.
LEVELS = tuple(sorted({0.0, 0.001, 0.002, 0.005, 0.995, 0.998, 0.999, 1.0} | {i / 100 for i in range(1, 100)}))
#: Realisations of each fitted candidate the goodness-of-fit figures average over.
REALISATIONS = 20
#: Gamma (renewal) is chosen unless the MMPP's score is better by more than this factor.
PREFER_RENEWAL = 0.8


@dataclass(frozen=True)
class Figures:
    """Arrival statistics on the wall clock."""

    requests: float
    rate: float  # req/s
    gap_cv: float
    idc_1s: float
    idc_10s: float

    def as_dict(self) -> dict[str, float]:
        return {"requests": self.requests, "rate_per_s": self.rate, "gap_cv": self.gap_cv, "idc_1s": self.idc_1s,
                "idc_10s": self.idc_10s}


@dataclass(frozen=True)
class WorkloadFit:
    source: str
    format: str
    requests: int
    window_s: float
    start_s: float
    bin_s: float
    mean_rate: float
    factors: tuple[float, ...]
    gamma_cv: float
    mmpp: dict[str, Any]  # low_ratio, high_for, low_for (durations with units)
    process: str  # the chosen: "gamma" or "mmpp"
    reason: str
    trace_figures: Figures
    candidates: dict[str, Figures]
    tokens: TokenCopula | None
    token_rows: list[tuple[str, float, float]]  # (figure, trace, fitted)
    mix: dict[str, float]
    notes: tuple[str, ...] = field(default=())
    workload: dict[str, Any] = field(default_factory=dict)

    @property
    def fitted_figures(self) -> Figures:
        return self.candidates[self.process]


# --------------------------------------------------------------------------- statistics


def idc(times: np.ndarray, width_s: float, span_s: float) -> float:
    """Index of dispersion of counts (variance / mean) in consecutive windows of ``width_s``
    over [0, span) (the last, partial window left out)."""
    n = int(span_s // width_s)
    if n < 2:
        return math.nan
    counts = np.bincount((times[times < n * width_s] // width_s).astype(np.int64), minlength=n)
    mean = counts.mean()
    return float(counts.var(ddof=1) / mean) if mean > 0 else math.nan


def figures(times: np.ndarray, span_s: float) -> Figures:
    gaps = np.diff(times)
    cv = float(gaps.std() / gaps.mean()) if gaps.size > 1 and gaps.mean() > 0 else math.nan
    return Figures(float(times.size), times.size / span_s, cv, idc(times, 1.0, span_s), idc(times, 10.0, span_s))


def operational(times: np.ndarray, bin_s: float, span_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-bin counts, each request's operational time): the expected count before it under
    the per-bin rates, so that every bin runs at rate 1 (empty bins vanish)."""
    n_bins = int(math.ceil(span_s / bin_s))
    idx = np.minimum((times // bin_s).astype(np.int64), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(float)
    lengths = np.full(n_bins, bin_s)
    lengths[-1] = span_s - bin_s * (n_bins - 1)
    before = np.concatenate([[0.0], np.cumsum(counts)])[:-1]
    u = before[idx] + (times - idx * bin_s) * counts[idx] / lengths[idx]
    return counts, u


# --------------------------------------------------------------------------- MMPP


def _logistic(x: float) -> float:
    return 1 / (1 + math.exp(-min(max(x, -50.0), 50.0)))


def _mmpp_params(theta: np.ndarray) -> tuple[float, float, float]:
    # bounded so that a near-Poisson trace gives a near-Poisson MMPP, not a degenerate one
    p = 0.01 + 0.98 * _logistic(theta[0])  # share of (operational) time in the high state
    c = 0.999 * _logistic(theta[1])  # low rate / high rate
    s = 1e-4 * math.exp(math.log(1e5) * _logistic(theta[2]))  # sum of the switching rates, 1e-4 .. 10 per mean gap
    return p, c, s


def mmpp_idc(p: float, c: float, s: float, T: np.ndarray) -> np.ndarray:
    """IDC of a mean-rate-1 two-state MMPP's counts in windows of length T (a Cox process
    with rate covariance p(1-p) d^2 exp(-s tau))."""
    high = 1 / (p + (1 - p) * c)
    d = high * (1 - c)
    return 1 + 2 * p * (1 - p) * d * d / s * (1 - (1 - np.exp(-s * T)) / (s * T))


def mmpp_gap_cv2(p: float, c: float, s: float) -> float:
    """Squared CV of a mean-rate-1 two-state MMPP's gaps (a phase-type distribution)."""
    high = 1 / (p + (1 - p) * c)
    rates = np.array([high, high * c])
    leave = np.array([(1 - p) * s, p * s])  # high -> low, low -> high
    d0 = np.array([[-(rates[0] + leave[0]), leave[0]], [leave[1], -(rates[1] + leave[1])]])
    pi = np.array([p, 1 - p])
    phi = pi * rates / (pi @ rates)
    inv = np.linalg.inv(-d0)
    m1 = phi @ inv @ np.ones(2)
    m2 = 2 * phi @ inv @ inv @ np.ones(2)
    return float(m2 / (m1 * m1) - 1)


def _logit(q: float) -> float:
    return math.log(q / (1 - q))


def fit_mmpp(u: np.ndarray) -> tuple[float, float, float]:
    """(p, c, s) of the two-state MMPP closest to the operational-time stream ``u``: least
    squares on log IDC over window lengths 1 .. total/30 and on the log of the gaps' CV^2."""
    from scipy import optimize

    total = float(u[-1])
    lengths = np.unique(np.geomspace(1.0, max(total / 30, 2.0), 12).round(3))
    target = np.array([idc(u, T, total) for T in lengths])
    keep = np.isfinite(target) & (target > 0)
    lengths, target = lengths[keep], target[keep]
    gaps = np.diff(u)
    cv2 = float(gaps.var() / gaps.mean() ** 2)

    def loss(theta: np.ndarray) -> float:
        p, c, s = _mmpp_params(theta)
        model = mmpp_idc(p, c, s, lengths)
        err = np.sum((np.log(model) - np.log(target)) ** 2)
        try:
            err += (math.log(max(mmpp_gap_cv2(p, c, s), 1e-9)) - math.log(max(cv2, 1e-9))) ** 2
        except (np.linalg.LinAlgError, ValueError):
            return 1e9
        return float(err)

    best = None
    for p0 in (0.1, 0.3, 0.6):
        for c0 in (0.01, 0.2, 0.6):
            for s0 in (0.01, 0.1, 1.0):
                x0 = np.array([_logit((p0 - 0.01) / 0.98), _logit(c0 / 0.999), _logit(math.log(s0 / 1e-4) / math.log(1e5))])
                res = optimize.minimize(loss, x0, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-8, "maxiter": 2000})
                if best is None or res.fun < best.fun:
                    best = res
    return _mmpp_params(best.x)


# --------------------------------------------------------------------------- tokens


def fit_tokens(inputs: np.ndarray, outputs: np.ndarray) -> TokenCopula:
    """The copula's parameter is set from Spearman's rank correlation (for a Gaussian copula
    rho_s = 6/pi asin(rho/2)), so the fitted tokens keep the trace's rank correlation."""
    rho_s = _spearman(inputs, outputs) if np.ptp(inputs) > 0 and np.ptp(outputs) > 0 else 0.0
    rho = 2 * math.sin(math.pi * rho_s / 6) if math.isfinite(rho_s) else 0.0
    q = np.asarray(LEVELS)
    return TokenCopula(
        levels=LEVELS,
        input=tuple(float(round(x, 1)) for x in np.quantile(inputs, q)),
        output=tuple(float(round(x, 1)) for x in np.quantile(outputs, q)),
        correlation=round(rho, 4),
    )


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


def token_rows(inputs: np.ndarray, outputs: np.ndarray, copula: TokenCopula, seed: int) -> list[tuple[str, float, float]]:
    fin, fout = draw_tokens(copula, np.random.default_rng(seed), max(100_000, inputs.size))
    rows = []
    for name, data, fitted in (("input tokens", inputs, fin), ("output tokens", outputs, fout)):
        for q in (50, 90, 99):
            rows.append((f"{name} P{q}", float(np.percentile(data, q)), float(np.percentile(fitted, q))))
        rows.append((f"{name} mean", float(data.mean()), float(fitted.mean())))
    rows.append(("input/output rank correlation", _spearman(inputs, outputs), _spearman(fin[:50_000], fout[:50_000])))
    return rows


# --------------------------------------------------------------------------- the fit


def _score(fit: Figures, trace: Figures) -> float:
    """Mean absolute log ratio of gap CV and IDC at 1 s and 10 s, fitted against the trace."""
    terms = []
    for a, b in ((fit.gap_cv, trace.gap_cv), (fit.idc_1s, trace.idc_1s), (fit.idc_10s, trace.idc_10s)):
        if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b):
            terms.append(abs(math.log(a / b)))
    return float(np.mean(terms)) if terms else math.inf


def _simulated(workload: dict[str, Any], span_s: float, seed: int) -> Figures:
    wl = Workload.model_validate(workload)
    runs = []
    for r in range(REALISATIONS):
        rng = np.random.default_rng([seed, r])
        runs.append(figures(np.fromiter(arrival_times(wl, span_s, rng), dtype=float), span_s))
    return Figures(*(float(np.nanmean([getattr(f, k) for f in runs])) for k in ("requests", "rate", "gap_cv", "idc_1s", "idc_10s")))


def _seconds(x: float) -> str:
    """A time with every digit it needs (profile points of a day-long trace stay exact)."""
    return f"{round(x, 3):.12g}s"


def _rate_text(rate: float) -> str:
    return f"{rate:.6g}/s"


def _workload_dict(mean_rate: float, arrivals: dict[str, Any], factors: tuple[float, ...], bin_s: float,
                   mix: dict[str, float], tokens: TokenCopula | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mode": "open",
        "arrivals": {"process": arrivals["process"], "rate": _rate_text(mean_rate), **arrivals},
        "mix": mix,
        "profile_shape": "steps",
        "rate_profile": [{"at": _seconds(i * bin_s), "factor": f} for i, f in enumerate(factors)],
    }
    if tokens is not None:
        out["tokens"] = tokens.model_dump()
    return out


def fit_workload(
    data: TraceData,
    *,
    source: str,
    format: str,
    bin_s: float = 60.0,
    start_s: float = 0.0,
    duration_s: float | None = None,
    endpoint: str = "chat",
    process: str = "auto",
    seed: int = 1,
) -> WorkloadFit:
    """Fit a workload model to a trace's window; ``process`` is 'auto', 'gamma' or 'mmpp'."""
    from simulator.errors import UsageError

    sl = window(data, start_s, duration_s)
    span = window_length(data, start_s, duration_s)
    times = data.at_s[sl] - start_s
    n = times.size
    if n < 3:
        raise UsageError(f"{source}: expected at least 3 requests in the window to fit, got {n}")
    if not 0 < bin_s <= span:
        raise UsageError(f"--bin: expected a bin length from 0 to the window's {span:g} s, got {bin_s:g} s")
    mean_rate = n / span
    counts, u = operational(times, bin_s, span)
    lengths = np.full(counts.size, bin_s)
    lengths[-1] = span - bin_s * (counts.size - 1)
    factors = tuple(float(f"{x:.4g}") for x in counts / lengths / mean_rate)

    # within bins, in operational time (bins with fewer than two requests say nothing about gaps)
    same_bin = np.diff(np.minimum((times // bin_s).astype(np.int64), counts.size - 1)) == 0
    gaps = np.diff(u)[same_bin]
    cv = float(gaps.std() / gaps.mean()) if gaps.size > 1 else 1.0
    cv = min(max(cv, 0.05), 100.0)
    p, c, s = fit_mmpp(u)
    # operational time is in mean gaps; at the mean rate one mean gap is 1/mean_rate seconds
    mmpp = {"low_ratio": float(f"{c:.4g}") if c >= 1e-4 else 0.0,
            "high_for": format_duration(float(f"{1 / ((1 - p) * s) / mean_rate:.4g}")),
            "low_for": format_duration(float(f"{1 / (p * s) / mean_rate:.4g}"))}

    notes = []
    if data.endpoint_codes is not None:
        shares = np.bincount(data.endpoint_codes[sl], minlength=len(data.endpoints)) / n
        mix = {name: float(f"{x:.6g}") for name, x in zip(data.endpoints, shares) if x > 0}
        mix[max(mix, key=mix.get)] += 1.0 - sum(mix.values())  # shares written rounded must still sum to 1
    else:
        mix = {endpoint: 1.0}
        notes.append(f"the trace names no endpoint or model: every request goes to endpoint {endpoint!r} (--endpoint)")
    tokens = None
    rows: list[tuple[str, float, float]] = []
    if data.output_tokens is not None or data.input_tokens is not None:
        inputs = data.input_tokens[sl] if data.input_tokens is not None else np.zeros(n, dtype=np.int64)
        outputs = data.output_tokens[sl] if data.output_tokens is not None else np.zeros(n, dtype=np.int64)
        tokens = fit_tokens(inputs, outputs)
        rows = token_rows(inputs, outputs, tokens, seed)
    else:
        notes.append("the trace has no token counts: the classes' output_tokens apply")
    if data.status is not None:
        ok = (data.status[sl] >= 200) & (data.status[sl] < 400)
        notes.append(f"the trace's own success rate: {ok.mean() * 100:.2f} % (every request is kept)")
    if data.latency_s is not None:
        lat = data.latency_s[sl] * 1e3
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        notes.append(f"the trace's own latency: P50 {p50:.0f} ms, P95 {p95:.0f} ms, P99 {p99:.0f} ms (compare with gwsim run)")

    shapes = {"gamma": {"process": "gamma", "cv": float(f"{cv:.4g}")}, "mmpp": {"process": "mmpp", **mmpp}}
    candidates = {name: _simulated(_workload_dict(mean_rate, arr, factors, bin_s, mix, None), span, seed)
                  for name, arr in shapes.items()}
    trace_fig = figures(times, span)
    scores = {name: _score(fig, trace_fig) for name, fig in candidates.items()}
    if process == "auto":
        chosen = "mmpp" if scores["mmpp"] < PREFER_RENEWAL * scores["gamma"] else "gamma"
    else:
        chosen = process
    reason = _reason(chosen, process, trace_fig, candidates, scores)
    workload = _workload_dict(mean_rate, shapes[chosen], factors, bin_s, mix, tokens)
    Workload.model_validate(workload)  # what is written must load
    return WorkloadFit(
        source=source, format=format, requests=n, window_s=span, start_s=start_s, bin_s=bin_s, mean_rate=mean_rate,
        factors=factors, gamma_cv=float(f"{cv:.4g}"), mmpp=mmpp, process=chosen, reason=reason,
        trace_figures=trace_fig, candidates=candidates, tokens=tokens, token_rows=rows, mix=mix, notes=tuple(notes),
        workload=workload,
    )


def _reason(chosen: str, asked: str, trace: Figures, candidates: dict[str, Figures], scores: dict[str, float]) -> str:
    g, m = candidates["gamma"], candidates["mmpp"]
    figures_text = (f"IDC at 1 s / 10 s: trace {trace.idc_1s:.2f} / {trace.idc_10s:.2f}, gamma renewal "
                    f"{g.idc_1s:.2f} / {g.idc_10s:.2f}, MMPP {m.idc_1s:.2f} / {m.idc_10s:.2f}; gap CV: trace "
                    f"{trace.gap_cv:.2f}, gamma {g.gap_cv:.2f}, MMPP {m.gap_cv:.2f}")
    if asked != "auto":
        return f"{chosen} as asked (--process); {figures_text}"
    if chosen == "mmpp":
        return (f"MMPP: its mean log error on these figures is {scores['mmpp']:.2f} against the gamma renewal's "
                f"{scores['gamma']:.2f}: requests come in bursts that outlast one gap, which a renewal process "
                f"(independent gaps) cannot keep. {figures_text}")
    why = ("the MMPP does no better by more than 20 %, and a renewal process has fewer parameters"
           if scores["mmpp"] < scores["gamma"] else "it is the closer of the two")
    return (f"gamma renewal: mean log error {scores['gamma']:.2f} against the MMPP's {scores['mmpp']:.2f}; {why}. "
            f"{figures_text}")


# --------------------------------------------------------------------------- output


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def _wrapped(values: tuple[float, ...], indent: str = "    ", per_line: int = 10) -> str:
    lines = [indent + ", ".join(f"{v:g}" for v in values[i:i + per_line]) + "," for i in range(0, len(values), per_line)]
    return "[\n" + "\n".join(lines) + "\n]"


def to_toml(fit: WorkloadFit) -> str:
    """The ``[workload]`` section (with ``[workload.tokens]``), commented with where it came from."""
    wl = fit.workload
    head = [
        f"# gwsim fit workload {fit.source} (format {fit.format}): {fit.requests:,} requests over "
        f"{fit.window_s:,.1f} s from {fit.start_s:g} s, mean {fit.mean_rate:.4g} req/s",
        f"# rate profile: requests per {format_duration(fit.bin_s)} bin as factors on the mean rate; "
        f"set run.duration = \"{_seconds(fit.window_s)}\" to play all of it",
        f"# arrivals within bins: {'a gamma renewal process' if fit.process == 'gamma' else 'a two-state MMPP'} (see "
        "the figures `gwsim fit workload` prints)",
        f"# the other candidate: "
        + (_toml_value(dict({"process": "mmpp"}, **fit.mmpp)) if fit.process == "gamma" else f"{{ process = \"gamma\", cv = {fit.gamma_cv:g} }}"),
        "[workload]",
        f"mode = {_toml_value(wl['mode'])}",
        f"arrivals = {_toml_value(wl['arrivals'])}",
        f"mix = {_toml_value(wl['mix'])}",
        f"profile_shape = {_toml_value(wl['profile_shape'])}",
        "rate_profile = [",
    ]
    for point in wl["rate_profile"]:
        head.append(f"    {_toml_value(point)},")
    head.append("]")
    if fit.tokens is not None:
        t = fit.tokens
        head += [
            "",
            "# input and output tokens drawn together: a Gaussian copula over the trace's quantiles",
            "[workload.tokens]",
            'model = "copula"',
            f"correlation = {t.correlation:g}",
            f"levels = {_wrapped(t.levels)}",
            f"input = {_wrapped(t.input)}",
            f"output = {_wrapped(t.output)}",
        ]
    text = "\n".join(head) + "\n"
    Workload.model_validate(tomllib.loads(text)["workload"])  # the file written must load
    return text


def _num(x: float, digits: int = 4) -> str:
    if not math.isfinite(x):
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def format_fit(fit: WorkloadFit) -> str:
    """The goodness-of-fit table: trace against the fitted workload (and the other candidate)."""
    other = "mmpp" if fit.process == "gamma" else "gamma"
    t, f, o = fit.trace_figures, fit.candidates[fit.process], fit.candidates[other]
    rows = [
        ("requests in the window", "count", t.requests, f.requests, o.requests),
        ("mean rate", "req/s", t.rate, f.rate, o.rate),
        ("inter-arrival CV", "-", t.gap_cv, f.gap_cv, o.gap_cv),
        ("index of dispersion, 1 s counts", "-", t.idc_1s, f.idc_1s, o.idc_1s),
        ("index of dispersion, 10 s counts", "-", t.idc_10s, f.idc_10s, o.idc_10s),
    ]
    for name, a, b in fit.token_rows:
        unit = "-" if "correlation" in name else "tokens"
        rows.append((name, unit, a, b, math.nan))
    names = {"gamma": "gamma renewal", "mmpp": "MMPP"}
    header = ("figure", "unit", "trace", f"fitted ({names[fit.process]})", f"({names[other]})")
    table = [header] + [(r[0], r[1], _num(r[2]), _num(r[3]), _num(r[4])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = [
        f"{fit.source}: {fit.requests:,} requests over {fit.window_s:,.1f} s (mean {fit.mean_rate:.4g} req/s), "
        f"rate profile per {format_duration(fit.bin_s)} ({len(fit.factors)} bins, factors "
        f"{min(fit.factors):.3g} to {max(fit.factors):.3g})",
        f"arrivals within bins: {fit.reason}",
        "",
    ]
    for i, row in enumerate(table):
        lines.append("  ".join(cell.ljust(w) if j < 2 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(f"(fitted figures: mean of {REALISATIONS} realisations of the fitted workload over the same window; "
                 "token figures from 100,000 draws)")
    for note in fit.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def fit_payload(fit: WorkloadFit) -> dict[str, Any]:
    return {
        "source": fit.source, "format": fit.format, "requests": fit.requests, "window_s": fit.window_s,
        "start_s": fit.start_s, "bin_s": fit.bin_s, "mean_rate_per_s": fit.mean_rate, "process": fit.process,
        "reason": fit.reason, "gamma_cv": fit.gamma_cv, "mmpp": fit.mmpp,
        "trace": fit.trace_figures.as_dict(), "fitted": {k: v.as_dict() for k, v in fit.candidates.items()},
        "tokens": [{"figure": a, "trace": b, "fitted": c} for a, b, c in fit.token_rows],
        "mix": fit.mix, "notes": list(fit.notes), "workload": fit.workload,
    }
