"""The seed model held out: fitted on one half of the published run, predicting the other.

``scenarios/seed/heavy_load.toml`` was fitted to the whole published run (6,000 requests of
the seed gateway's load test), so its agreement with that run is in-sample.  This module
refits the same parameters on the requests sent in one half of the run (0-300 s or
300-600 s) and predicts the other half, in both directions, per figure of
``gwsim.seed.compare``; and it compares figures that are in no fit's loss: completions and
the P50 per 10 s, the distribution of requests in flight, and the AI service's batch sizes as
far as the data shows them.

What is refitted on the fitting half: the 10 Nelder-Mead parameters of ``gwsim.seed.FIT_GROUPS``
(started from the middle of their bounds, not from the whole-run answer), the hang probability
of the weather chats (their failures over their count) and the AI service's batch time (a line
through the time between back-to-back batch completions against the batch's size).  What is
not: the values read off the whole run by hand (``READ_OFF_WHOLE_RUN``), which therefore carry
information from the held-out half into the prediction; the Redis step at 420 s above all.

Each fit evaluation simulates the whole 600 s run (one replication, the scenario's seed) and
cuts its records at the same instants as the published ones; the reported figures come from
the scenario's own replications.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gwsim import seed

#: The two halves of the run, by the instant a request was sent.
HALVES: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 300.0), (300.0, 600.0))
WHOLE = (HALVES[0][0], HALVES[1][1])
#: Width of the windows of the time series compared (s).
SERIES_WINDOW_S = 10.0
#: Select payloads that the data shows answered in the AI service's batches.
AI_CLASSES = ("france", "fibonacci")
#: Completions of AI-path requests closer than this belong to one batch: a batch takes at least
#: ~0.5 s (0.45 s + 0.05 s per item) on the one worker, and within a batch the replies leave
#: within ~10 ms; the published gaps between completions have nothing between 0.1 s and 0.3 s.
BATCH_GAP_S = 0.25
#: Gaps of 20-100 ms are ambiguous (29 of them in the published run): a batch's replies
#: leaving late, or two batches.  They are counted as one batch; ``batch_sizes`` reports them.
AMBIGUOUS_GAP_S = (0.02, 0.1)
#: The failures of the published run: weather chats that got no answer (hang_probability).
HANG_CLASS = "weather"
HANG_KEY = "providers.provider_c.hang_probability"
#: The Redis slowdown that ended at ~420 s (read off the whole run): the first half cannot see it.
STEP_KEY = "redis.faults.0.latency_factor"
BATCH_KEYS = ("ai_service.batch_base.value", "ai_service.per_item.value")

#: Values of heavy_load.toml read off the whole run by hand (DATA in the file), kept as they are
#: in both directions: what each was read from.  They leak the held-out half into the fit.
READ_OFF_WHOLE_RUN: dict[str, str] = {
    "redis.faults.0.end": "the step at ~420 s in every scan's time (in the second half)",
    "model_selection.semantic_cache.embedding_time.p95": "the quantum payload's spread",
    "providers.provider_a.latency.ttft.p95": "the short 'hello' replies' spread",
    "providers.provider_a.latency.tokens_per_s": "'hello' latency against reply size",
    "endpoints.chat_completions.classes.0.output_tokens (3 values)": "'hello' reply sizes: 84 % short (20 tokens), the rest 100-1,050",
}
#: Number of values in READ_OFF_WHOLE_RUN (the output-token mixture holds three).
READ_OFF_COUNT = 7
#: Values re-estimated from the fitting half without the optimizer (DATA in the file).
REESTIMATED = (HANG_KEY, *BATCH_KEYS)

DEFAULT_MAX_EVALS = 80
QUICK_MAX_EVALS = 20


@dataclass(frozen=True)
class Row:
    """A figure outside the fit's loss, published against model on one stretch of the run.

    ``error``: relative (``unit`` ms, count, req) or a distance between distributions in [0, 1]
    (``unit`` "distance").
    """

    name: str
    published: float
    model: float
    error: float
    unit: str
    detail: str = ""
    #: False for a magnitude (an RMS, a mean absolute error): printed without a sign
    signed: bool = True


@dataclass(frozen=True)
class Direction:
    label: str
    fit_on: tuple[float, float]
    predict: tuple[float, float]
    fitted: dict[str, float]
    reestimated: dict[str, float]
    fits: list[seed.FitResult]
    in_sample: list[seed.Check]
    held_out: list[seed.Check]
    extra_in_sample: list[Row]
    extra_held_out: list[Row]
    #: the model's P50 per 10 s of sends over the whole run (ms), for charts
    p50_series: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Holdout:
    directions: list[Direction]
    whole_run: list[seed.Check]
    whole_run_halves: list[list[seed.Check]]
    whole_run_extra: list[Row]
    max_evals: int
    fit_replications: int
    replications: int
    elapsed_s: float = 0.0
    #: P50 per 10 s of sends over the whole run (ms): published, and the whole-run fit's
    published_p50_series: list[float] = field(default_factory=list)
    whole_run_p50_series: list[float] = field(default_factory=list)
    fitted_count: int = field(default=sum(len(g) for g in seed.FIT_GROUPS.values()))


# ----------------------------------------------------------------------------- values read off a half


def hang_probability(published: pd.DataFrame) -> float:
    """The weather chats' failures over their count (all failures of the run are theirs)."""
    weather = published["request_class"] == HANG_CLASS
    n = int(weather.sum())
    return float((weather & (published["outcome"] != "ok")).sum() / n) if n else 0.0


def batch_sizes(records: pd.DataFrame, lo: float = 0.0, hi: float = float("inf")) -> tuple[np.ndarray, np.ndarray, int]:
    """Batch sizes the completions of the AI-path payloads imply, per replication pooled.

    Successful france/fibonacci requests finishing in [lo, hi), sorted by completion; a gap of
    more than ``BATCH_GAP_S`` starts a new batch.  Returns (sizes, the completion instant of each
    batch's last reply, the number of ambiguous gaps).
    """
    sizes, ends, ambiguous = [], [], 0
    ok = records["outcome"].to_numpy() == "ok"
    cls = records["request_class"].isin(AI_CLASSES).to_numpy()
    fin = records["finished_at"].to_numpy()
    sel = ok & cls & (fin >= lo) & (fin < hi)
    for _, sub in records.loc[sel].groupby("replication"):
        t = np.sort(sub["finished_at"].to_numpy())
        if t.size == 0:
            continue
        gaps = np.diff(t)
        ambiguous += int(((gaps > AMBIGUOUS_GAP_S[0]) & (gaps <= AMBIGUOUS_GAP_S[1])).sum())
        parts = np.split(t, np.flatnonzero(gaps > BATCH_GAP_S) + 1)
        sizes.extend(len(p) for p in parts)
        ends.extend(float(p[-1]) for p in parts)
        ends.append(float("nan"))  # no gap across replications
    return np.array(sizes, dtype=int), np.array(ends[:-1] if ends else [], dtype=float), ambiguous


def batch_time(records: pd.DataFrame) -> tuple[float, float]:
    """(base s, per item s): a least-squares line through the time between consecutive batch
    completions (under 1.5 s: the worker busy back to back) against the later batch's size."""
    sizes, ends, _ = batch_sizes(records)
    keep = [i for i in range(1, len(sizes)) if np.isfinite(ends[i - 1]) and np.isfinite(ends[i])]
    gap = np.array([ends[i] - ends[i - 1] for i in keep])
    size = np.array([sizes[i] for i in keep], dtype=float)
    m = gap < 1.5
    a = np.vstack([np.ones(int(m.sum())), size[m]]).T
    base, per_item = np.linalg.lstsq(a, gap[m], rcond=None)[0]
    return float(base), float(per_item)


# ----------------------------------------------------------------------------- figures outside the loss


def _per_rep(records: pd.DataFrame) -> list[pd.DataFrame]:
    return [sub for _, sub in records.groupby("replication")]


def _completion_series(records: pd.DataFrame, lo: float, hi: float) -> np.ndarray:
    edges = np.arange(lo, hi + 1e-9, SERIES_WINDOW_S)
    counts = [np.histogram(r["finished_at"].to_numpy(), bins=edges)[0] for r in _per_rep(records)]
    return np.mean(counts, axis=0)


def _p50_series(records: pd.DataFrame, lo: float, hi: float) -> np.ndarray:
    edges = np.arange(lo, hi + 1e-9, SERIES_WINDOW_S)
    at = records["arrived_at"].to_numpy()
    lat = records["latency_s"].to_numpy() * 1000.0
    idx = np.digitize(at, edges) - 1
    return np.array([np.percentile(lat[idx == i], 50) if (idx == i).any() else np.nan for i in range(len(edges) - 1)])


def in_flight_distribution(records: pd.DataFrame, lo: float, hi: float) -> np.ndarray:
    """Share of the time in [lo, hi) with k requests in flight (sent, not yet finished), k = 0..;
    replications pooled."""
    weights: dict[int, float] = {}
    for r in _per_rep(records):
        times = np.concatenate([r["started_at"].to_numpy(), r["finished_at"].to_numpy()])
        steps = np.concatenate([np.ones(len(r)), -np.ones(len(r))])
        order = np.argsort(times, kind="stable")
        times, level = times[order], np.cumsum(steps[order])
        # level[i] holds on [times[i], times[i+1])
        bounds = np.clip(np.append(times, hi), lo, hi)
        dur = np.diff(bounds)
        start_level = int(level[times < lo][-1]) if (times < lo).any() else 0
        first = bounds[0] - lo  # before the first event in the window
        if first > 0:
            weights[start_level] = weights.get(start_level, 0.0) + first
        for k, d in zip(level.astype(int), dur):
            if d > 0:
                weights[k] = weights.get(k, 0.0) + d
    top = max(weights) if weights else 0
    dist = np.zeros(top + 1)
    for k, d in weights.items():
        dist[k] += d
    return dist / dist.sum() if dist.sum() else dist


def _quantile(dist: np.ndarray, q: float) -> float:
    return float(np.searchsorted(np.cumsum(dist), q))


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    return np.pad(a, (0, n - len(a)))


def extra_figures(published: pd.DataFrame, model: pd.DataFrame, lo: float, hi: float) -> list[Row]:
    """The figures outside the fit's loss on [lo, hi): completions and P50 per 10 s, requests in
    flight, AI batch sizes."""
    rows: list[Row] = []
    pc, mc = _completion_series(published, lo, hi), _completion_series(model, lo, hi)
    rms = float(np.sqrt(np.mean((mc - pc) ** 2)))
    rows.append(Row("completions per 10 s (RMS)", float(pc.mean()), float(mc.mean()), rms / float(pc.mean()), "count", signed=False,
                    detail=f"RMS difference {rms:.1f} per window over {len(pc)} windows, relative to the mean; "
                    "mostly set by the arrival schedule"))
    pp, mp = _p50_series(published, lo, hi), _p50_series(model, lo, hi)
    err = (mp - pp) / pp
    worst = int(np.nanargmax(np.abs(err)))
    rows.append(Row("P50 per 10 s (mean |error|)", float(np.nanmedian(pp)), float(np.nanmedian(mp)), float(np.nanmean(np.abs(err))), "ms", signed=False,
                    detail=f"P50 of the requests sent in each window; worst window {lo + worst * SERIES_WINDOW_S:.0f}-{lo + (worst + 1) * SERIES_WINDOW_S:.0f} s: "
                    f"{pp[worst]:.0f} vs {mp[worst]:.0f} ms ({err[worst] * 100:+.0f} %)"))
    pd_, md = in_flight_distribution(published, lo, hi), in_flight_distribution(model, lo, hi)
    n = max(len(pd_), len(md))
    pd_, md = _pad(pd_, n), _pad(md, n)
    k = np.arange(n)
    pm, mm = float((pd_ * k).sum()), float((md * k).sum())
    rows.append(Row("in flight: time-weighted mean", pm, mm, (mm - pm) / pm, "req"))
    for q in (0.05, 0.5, 0.95):
        a, b = _quantile(pd_, q), _quantile(md, q)
        rows.append(Row(f"in flight: P{q * 100:.0f}", a, b, (b - a) / a if a else float("nan"), "req"))
    ks = float(np.max(np.abs(np.cumsum(pd_) - np.cumsum(md))))
    rows.append(Row("in flight: KS distance", float("nan"), float("nan"), ks, "distance",
                    "largest gap between the two time-weighted distributions"))
    ps, _, amb_p = batch_sizes(published, lo, hi)
    ms_, _, amb_m = batch_sizes(model, lo, hi)
    reps = max(model["replication"].nunique(), 1)
    rows.append(Row("AI batches (count)", float(len(ps)), len(ms_) / reps, (len(ms_) / reps - len(ps)) / len(ps) if len(ps) else float("nan"), "count",
                    f"ambiguous gaps of 20-100 ms: {amb_p} published, {amb_m / reps:.1f} model per run"))
    rows.append(Row("AI batch size: mean", float(ps.mean()), float(ms_.mean()), float((ms_.mean() - ps.mean()) / ps.mean()), "req"))
    top = max(int(ps.max(initial=0)), int(ms_.max(initial=0)), 8)
    hp = np.bincount(ps, minlength=top + 1)[1:] / max(len(ps), 1)
    hm = np.bincount(ms_, minlength=top + 1)[1:] / max(len(ms_), 1)
    rows.append(Row("AI batch sizes: total variation", float("nan"), float("nan"), float(0.5 * np.abs(hp - hm).sum()), "distance",
                    "shares of sizes 1..%d: published %s; model %s" % (top, " ".join(f"{x:.2f}" for x in hp), " ".join(f"{x:.2f}" for x in hm))))
    return rows


# ----------------------------------------------------------------------------- the held-out check


def start_values() -> dict[str, float]:
    """The middle of every fitted parameter's bounds: the fit does not start from the answer."""
    return {n: (lo + hi) / 2.0 for g in seed.FIT_GROUPS.values() for n, (lo, hi) in g.items()}


def _sets(values: dict[str, float]) -> list[str]:
    return [f"{k}={v!r}" for k, v in values.items()]


def _sets_with_units(reest: dict[str, float]) -> list[str]:
    out = []
    for k, v in reest.items():
        out.append(f"{k}=\"{v * 1000:.6g}ms\"" if k in BATCH_KEYS else f"{k}={v!r}")
    return out


def fit_half(published: pd.DataFrame, window: tuple[float, float], *, max_evals: int, replications: int = 1,
             path: Path = seed.BASELINE, no_step: bool = False,
             progress: Callable[[str], None] | None = None) -> tuple[dict[str, float], dict[str, float], list[seed.FitResult]]:
    """Refit on the requests sent in ``window``: values read off that half, then each group.
    ``no_step``: the Redis slowdown's factor is 1 (no step at 420 s) and not fitted."""
    half = seed.arrived_in(published, *window)
    base, per_item = batch_time(half)
    reest = {HANG_KEY: hang_probability(half), BATCH_KEYS[0]: base, BATCH_KEYS[1]: per_item}
    values = start_values()
    exclude: tuple[str, ...] = ()
    if no_step:
        values[STEP_KEY] = 1.0
        exclude = (STEP_KEY,)
    fits = []
    for group, names in seed.FIT_GROUPS.items():
        if progress:
            progress(f"fitting {group} on arrivals {window[0]:.0f}-{window[1]:.0f} s{' without the step' if no_step else ''} "
                     f"({max_evals} evaluations at most)")
        others = {k: v for k, v in values.items() if k not in names or k in exclude}
        res = seed.fit(group, path=path, replications=replications, max_evals=max_evals, published=published, window=window,
                       start=values, overrides=_sets_with_units(reest) + _sets(others), exclude=exclude)
        values.update(res.best)
        fits.append(res)
    return values, reest, fits


def holdout(*, max_evals: int = DEFAULT_MAX_EVALS, fit_replications: int = 1, replications: int | None = None,
            data: str | Path | None = None, path: Path = seed.BASELINE,
            progress: Callable[[str], None] | None = None) -> Holdout:
    """Fit on each half, predict the other; the whole-run fit (the file) on the same stretches."""
    began = time.monotonic()
    published = seed.load_published(data)
    if progress:
        progress("the whole-run fit (scenario file as it is)")
    whole = seed.run(path=path, replications=replications, workers=1)
    halves = [seed.arrived_in(published, *h) for h in HALVES]
    whole_halves = [seed.compare(seed.arrived_in(whole.records, *h), p) for h, p in zip(HALVES, halves)]
    plans = [
        ("0-300 s -> 300-600 s", HALVES[0], HALVES[1], False),
        ("300-600 s -> 0-300 s", HALVES[1], HALVES[0], False),
        ("no step: 0-300 -> 300-600", HALVES[0], HALVES[1], True),
    ]
    directions = []
    for label, fit_on, predict, no_step in plans:
        fitted, reest, fits = fit_half(published, fit_on, max_evals=max_evals, replications=fit_replications, path=path,
                                       no_step=no_step, progress=progress)
        sim = seed.run(_sets_with_units(reest) + _sets(fitted), path=path, replications=replications, workers=1)
        a, b = seed.arrived_in(sim.records, *fit_on), seed.arrived_in(sim.records, *predict)
        pa, pb = halves[HALVES.index(fit_on)], halves[HALVES.index(predict)]
        directions.append(Direction(
            label, fit_on, predict, fitted, reest, fits,
            seed.compare(a, pa), seed.compare(b, pb),
            extra_figures(published, sim.records, *fit_on),
            extra_figures(published, sim.records, *predict),
            _p50_series(sim.records, *WHOLE).tolist(),
        ))
    return Holdout(directions, seed.compare(whole.records, published), whole_halves,
                   extra_figures(published, whole.records, *WHOLE), max_evals, fit_replications, whole.replications,
                   elapsed_s=time.monotonic() - began,
                   published_p50_series=_p50_series(published, *WHOLE).tolist(),
                   whole_run_p50_series=_p50_series(whole.records, *WHOLE).tolist())


# ----------------------------------------------------------------------------- output


def _success_cell(c: seed.Check) -> str:
    # note: "X failures per run; published K, 95 % Poisson range lo-hi"
    model = c.note.split(" failures per run")[0]
    published = c.note.split("published ")[1].split(",")[0]
    return f"{model} vs {published}{'' if c.ok else '!'}"


def _named(checks: list, name: str):
    """The check (or row) called ``name``: lists of two stretches are matched by name, never by position."""
    return next(c for c in checks if c.name == name)


def _cell(c: seed.Check) -> str:
    if c.unit == "pp":
        return _success_cell(c)
    if not np.isfinite(c.error):
        return "n/a" if c.ok else "n/a!"
    mark = "" if (c.ok or not c.evidence) else "!"
    return f"{c.error * 100:+.1f}%{mark}"


def _row_cell(r: Row) -> str:
    if not np.isfinite(r.error):
        return "n/a"
    if r.unit == "distance":
        return f"{r.error:.3f}"
    return f"{r.error * 100:+.1f}%" if r.signed else f"{r.error * 100:.1f}%"


def _half(w: tuple[float, float]) -> str:
    return f"{w[0]:.0f}-{w[1]:.0f} s"


def format_holdout(h: Holdout) -> str:
    evidence = len(seed.evidence(h.whole_run))
    in_loss = sum(1 for c in h.whole_run if c.evidence and c.unit != "pp")
    ds = h.directions
    w = 12
    lines = [
        f"seed model held out: {h.fitted_count} parameters fitted by Nelder-Mead ({h.max_evals} evaluations at most per group of "
        f"{'/'.join(str(len(g)) for g in seed.FIT_GROUPS.values())}, {h.fit_replications} replication each, started mid-bounds),",
        f"{len(REESTIMATED)} re-estimated from the fitting half (hang probability, AI batch base and per-item time) and "
        f"{READ_OFF_COUNT} read off the whole run and kept,",
        f"against {evidence} figures counted as evidence ({in_loss} in the fit's loss, plus the failure count); "
        f"figures from {h.replications} replications.",
        "error: model vs published on the same requests (those sent in the stretch named); ! outside tolerance "
        "(10 %; failures: outside the 95 % Poisson range of the published count)",
        "",
        f"{'figure (fit -> predict)':<31}{'whole run':>10} | " + " | ".join(f"{d.label:>{2 * w + 1}}" for d in ds),
        f"{'':<31}{'in-sample':>10} | " + " | ".join(f"{'in-sample':>{w}} {'held-out':>{w}}" for d in ds),
    ]

    def line(name: str, whole: str, cells: list[tuple[str, str]]) -> str:
        return f"{name:<31}{whole:>10} | " + " | ".join(f"{a:>{w}} {b:>{w}}" for a, b in cells)

    for i, c in enumerate(h.whole_run):
        name = "failures per run, model vs pub" if c.unit == "pp" else c.name + (" *" if not c.evidence else "")
        lines.append(line(name, _cell(c), [(_cell(_named(d.in_sample, c.name)), _cell(_named(d.held_out, c.name))) for d in ds]))
    lines.append(line("loss (mean sq. log error)", f"{seed.loss(h.whole_run):.5f}",
                      [(f"{seed.loss(d.in_sample):.5f}", f"{seed.loss(d.held_out):.5f}") for d in ds]))

    def within(x: list[seed.Check]) -> str:
        return f"{sum(c.ok for c in seed.evidence(x))}/{len(seed.evidence(x))}"

    lines.append(line("within tolerance", within(h.whole_run), [(within(d.in_sample), within(d.held_out)) for d in ds]))
    lines.append(f"* {seed.THROUGHPUT_NOTE}; printed, not counted, not in the loss")
    lines.append("'no step': fitted on 0-300 s without the Redis slowdown that ended at ~420 s (factor 1, not fitted): "
                 "what the first half alone shows")
    lines += ["", "figures in no fit's loss (error: relative, or a distance between distributions in 0-1)"]
    for i, r in enumerate(h.whole_run_extra):
        lines.append(line(r.name[:31], _row_cell(r), [(_row_cell(_named(d.extra_in_sample, r.name)), _row_cell(_named(d.extra_held_out, r.name))) for d in ds]))
    lines += ["", "whole run, published vs model:"]
    for r in h.whole_run_extra:
        if np.isfinite(r.published):
            lines.append(f"  {r.name}: {r.published:.2f} vs {r.model:.2f}" + (f" ({r.detail})" if r.detail else ""))
        elif r.detail:
            lines.append(f"  {r.name}: {r.detail}")
    from gwsim.calibration.fit import _get_path
    from simulator.scenario import read_scenario_data

    raw = read_scenario_data(seed.BASELINE)
    lines += ["", "values (whole-run file's in brackets): " + "; ".join(f"[{i + 1}] {d.label}" for i, d in enumerate(ds))]
    for k in [*ds[0].fitted, *ds[0].reestimated]:
        vals = "  ".join(f"[{i + 1}] {({**d.fitted, **d.reestimated})[k]:.4g}" for i, d in enumerate(ds))
        tag = " (re-estimated from the half)" if k in REESTIMATED else ""
        lines.append(f"  {k}: {vals}   ({_file_value(raw, k):.4g}){tag}")
    for i, d in enumerate(ds):
        lines.append(f"  [{i + 1}] " + "; ".join(f"{f.group}: loss {f.start_loss:.4f} -> {f.best_loss:.4f} in {f.evaluations} runs" for f in d.fits))
    lines += ["", "kept from the whole run (read off it by hand, so they carry the held-out half into the prediction):"]
    lines += [f"  {k}: {why}" for k, why in READ_OFF_WHOLE_RUN.items()]
    lines.append(f"took {h.elapsed_s:.0f} s")
    return "\n".join(lines)


def holdout_frame(h: Holdout) -> pd.DataFrame:
    """One row per figure: the error of the whole-run fit, then in-sample and held-out error of
    each direction (relative; the failure count as model failures per run minus published)."""

    def err(c: seed.Check) -> float:
        if c.unit == "pp":
            return float(c.note.split(" failures per run")[0]) - float(c.note.split("published ")[1].split(",")[0])
        return c.error

    rows = []
    for i, c in enumerate(h.whole_run):
        row = {"figure": c.name, "evidence": c.evidence, "whole run": err(c)}
        for d in h.directions:
            row[f"{d.label}: in-sample"] = err(_named(d.in_sample, c.name))
            row[f"{d.label}: held-out"] = err(_named(d.held_out, c.name))
        rows.append(row)
    return pd.DataFrame(rows).set_index("figure")


def _file_value(raw: dict, key: str) -> float:
    from gwsim.calibration.fit import _get_path
    from simulator.units import parse_duration

    v = _get_path(raw, key)
    return float(parse_duration(v)) if isinstance(v, str) else float(v)


def _check_json(c: seed.Check) -> dict:
    out = asdict(c)
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


def _row_json(r: Row) -> dict:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(r).items()}


def holdout_json(h: Holdout) -> dict:
    return {
        "fitted_parameters": h.fitted_count,
        "reestimated_from_fitting_half": list(REESTIMATED),
        "read_off_whole_run": READ_OFF_WHOLE_RUN,
        "read_off_whole_run_count": READ_OFF_COUNT,
        "figures_evidence": len(seed.evidence(h.whole_run)),
        "figures_in_loss": sum(1 for c in h.whole_run if c.evidence and c.unit != "pp"),
        "max_evals_per_group": h.max_evals,
        "fit_replications": h.fit_replications,
        "replications": h.replications,
        "elapsed_s": round(h.elapsed_s, 1),
        "published_p50_series_ms": h.published_p50_series,
        "whole_run": {"p50_series_ms": h.whole_run_p50_series, "checks": [_check_json(c) for c in h.whole_run], "loss": seed.loss(h.whole_run),
                      "halves": [{"window": list(w), "checks": [_check_json(c) for c in cs], "loss": seed.loss(cs)}
                                 for w, cs in zip(HALVES, h.whole_run_halves)],
                      "extra": [_row_json(r) for r in h.whole_run_extra]},
        "directions": [
            {
                "label": d.label,
                "fit_on": list(d.fit_on),
                "predict": list(d.predict),
                "fitted": d.fitted,
                "reestimated": d.reestimated,
                "fits": [{"group": f.group, "best": f.best, "start_loss": f.start_loss, "best_loss": f.best_loss, "evaluations": f.evaluations} for f in d.fits],
                "in_sample": {"checks": [_check_json(c) for c in d.in_sample], "loss": seed.loss(d.in_sample),
                              "within": sum(c.ok for c in seed.evidence(d.in_sample))},
                "held_out": {"checks": [_check_json(c) for c in d.held_out], "loss": seed.loss(d.held_out),
                             "within": sum(c.ok for c in seed.evidence(d.held_out))},
                "extra_in_sample": [_row_json(r) for r in d.extra_in_sample],
                "extra_held_out": [_row_json(r) for r in d.extra_held_out],
                "p50_series_ms": d.p50_series,
            }
            for d in h.directions
        ],
    }
