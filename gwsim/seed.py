"""The seed report's load test as data, and gwsim held against it.

The seed gateway's team ran their own load tool (web-perf, scenario ``heavy_load``) on
2025-08-14 and committed one row per request (``heavy_load_2025-08-14.csv``: third-party data,
not shipped with gwsim; ``gwsim.datafiles`` finds it through ``--data``, ``GWSIM_DATA_DIR`` or
``../shared/data``).  This module reads it as a records-like frame (the columns of
``simulator.records`` that the file can fill), computes the figures the tool printed the way
the tool computed them (every request counted, failures with the time the client gave up,
percentiles by linear interpolation, throughput = completed requests / time of the last
completion), computes the same figures for a simulated run, and compares them.

It also holds the report's Phase 1 changes and the faults the report worries about as
``--set`` overrides on ``scenarios/seed/heavy_load.toml``; ``write_variants`` turns them into
the ``scenarios/seed/report_phase1*.toml`` files (generated, so they cannot drift from the
fitted baseline).

Command line: ``python -m gwsim.seed published | compare | variants | fit | holdout | write-variants``
(``holdout`` lives in ``gwsim.seed_holdout``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios" / "seed"
BASELINE = SCENARIO_DIR / "heavy_load.toml"

#: The payloads of the published run, identified by request size (reference table), named as
#: the classes of scenarios/seed/heavy_load.toml.
PAYLOADS: dict[tuple[str, int], str] = {
    ("select_model", 137): "france",
    ("select_model", 148): "quantum",
    ("select_model", 161): "fibonacci",
    ("chat_completions", 126): "hello",
    ("chat_completions", 169): "poem",
    ("chat_completions", 200): "weather",
}

#: What the report promised for Phase 1 (its "Expected Performance Improvements"), in ms.
REPORT_PROMISE_MS = {"p50": 400.0, "p95": 1500.0, "p99": 3000.0}

#: Acceptance (issue E): relative error allowed on latency figures and throughput.
TOLERANCE = 0.10
#: The success rate's former criterion, in percentage points (4 failures in 6,000 is 0.067 pp):
#: a model that never fails passed it, so ``compare`` now tests the failure count instead.
SUCCESS_TOLERANCE_PP = 0.1


# ----------------------------------------------------------------------------- the data


def data_file(data: str | Path | None = None) -> Path:
    """The published run's CSV: ``data`` (a ``--data`` directory or file), else
    ``GWSIM_DATA_DIR``, else ``../shared/data``; a one-line error naming where it looked."""
    from gwsim.datafiles import SEED_RUN, find

    return find(SEED_RUN, data)


def load_published(path: str | Path | None = None) -> pd.DataFrame:
    """The published run as a records-like frame (one replication, numbered 0).

    ``path``: the CSV, or a directory holding it; default: ``data_file()``.

    Columns: id, replication, endpoint, request_class, request_bytes, arrived_at, started_at,
    finished_at, latency_s, outcome ("ok", or "client_timeout" for status 0, else
    "upstream_error"), status_code, response_bytes.  The tool's timer started after its
    semaphore, so arrival and start are the same instant: completion minus latency.
    """
    raw = pd.read_csv(data_file(path))
    latency_s = raw["latency_ms"].to_numpy(dtype="float64") / 1000.0
    finished = raw["completed_at_s"].to_numpy(dtype="float64")
    start = finished - latency_s
    ok = raw["success"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    status = raw["status_code"].astype("int64").to_numpy()
    outcome = np.where(ok, "ok", np.where(status == 0, "client_timeout", "upstream_error"))
    names = [PAYLOADS.get((e, int(b)), f"{int(b)}B") for e, b in zip(raw["endpoint"], raw["request_bytes"])]
    frame = pd.DataFrame(
        {
            "replication": 0,
            "endpoint": raw["endpoint"].astype(str),
            "request_class": names,
            "request_bytes": raw["request_bytes"].astype("int64"),
            "arrived_at": start,
            "started_at": start,
            "finished_at": finished,
            "latency_s": latency_s,
            "outcome": outcome,
            "status_code": status,
            "response_bytes": raw["response_bytes"].astype("int64"),
        }
    )
    frame = frame.sort_values("arrived_at", kind="stable").reset_index(drop=True)
    frame.insert(0, "id", np.arange(len(frame), dtype="int64"))
    return frame


# ----------------------------------------------------------------------------- the tool's figures


def _latency_block(lat_ms: np.ndarray) -> dict[str, float]:
    if lat_ms.size == 0:
        return {k: float("nan") for k in ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")}
    p50, p95, p99 = np.percentile(lat_ms, [50, 95, 99])
    return {"mean_ms": float(lat_ms.mean()), "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "max_ms": float(lat_ms.max())}


def tool_figures(records: pd.DataFrame) -> dict[str, Any]:
    """The figures web-perf printed, computed the same way for any records frame.

    Latency over every request (a failure counts with the time until the client gave up),
    pooled over replications; ``count``, ``success_rate`` and ``throughput_rps`` (successful
    requests / time of the run's last completion) per replication, averaged.  Requests still
    unfinished at the end of a simulation count as failures with their time so far.

    Returns ``{"overall": B, "endpoints": {ep: B}, "payloads": {"ep/class": B}, "failures": F}``
    with B = count, success_rate, throughput_rps, mean_ms, p50_ms, p95_ms, p99_ms, max_ms and
    F = count (per replication), endpoints, classes, outcomes, latency_ms (min, median, max).
    """
    df = records[["replication", "endpoint", "request_class", "finished_at", "latency_s", "outcome"]]
    reps = np.unique(df["replication"].to_numpy())
    n_reps = max(len(reps), 1)
    lat_ms = df["latency_s"].to_numpy(dtype="float64") * 1000.0
    ok = (df["outcome"] == "ok").to_numpy()
    rep = df["replication"].to_numpy()
    span = {r: float(df.loc[rep == r, "finished_at"].max()) for r in reps}

    def block(mask: np.ndarray) -> dict[str, float]:
        out = _latency_block(lat_ms[mask])
        counts = [int((mask & (rep == r)).sum()) for r in reps]
        oks = [int((mask & ok & (rep == r)).sum()) for r in reps]
        out["count"] = float(np.mean(counts)) if counts else 0.0
        out["success_rate"] = float(sum(oks) / sum(counts)) if sum(counts) else float("nan")
        out["throughput_rps"] = float(np.mean([o / span[r] for o, r in zip(oks, reps)])) if reps.size else float("nan")
        return out

    everything = np.ones(len(df), dtype=bool)
    ep = df["endpoint"].astype(str).to_numpy()
    cls_ = df["request_class"].astype(str).to_numpy()
    endpoints = {name: block(ep == name) for name in dict.fromkeys(ep)}
    payloads = {f"{e}/{c}": block((ep == e) & (cls_ == c)) for e, c in dict.fromkeys(zip(ep, cls_))}
    failed = ~ok
    fail_lat = lat_ms[failed]
    failures = {
        "count": float(failed.sum()) / n_reps,
        "endpoints": sorted(set(ep[failed])),
        "classes": sorted(set(cls_[failed])),
        "outcomes": sorted(set(df["outcome"].to_numpy()[failed])),
        "latency_ms": [float(fail_lat.min()), float(np.median(fail_lat)), float(fail_lat.max())] if fail_lat.size else [],
    }
    return {"overall": block(everything), "endpoints": endpoints, "payloads": payloads, "failures": failures}


# ----------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Check:
    """One published figure against the model's.

    ``evidence`` is False for a figure the model cannot miss whatever its parameters (it is
    printed, but neither counted nor part of the fit's loss); ``note`` says why, or how the
    verdict was reached when it is not a plain tolerance.
    """

    name: str
    published: float
    model: float
    error: float  # relative (latency, throughput) or in percentage points (success)
    unit: str
    ok: bool
    evidence: bool = True
    note: str = ""


def _rel(name: str, pub: float, mod: float, unit: str, tol: float) -> Check:
    err = (mod - pub) / pub if pub else float("inf")
    return Check(name, pub, mod, err, unit, bool(np.isfinite(err) and abs(err) <= tol))


def poisson_interval(k: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval for the mean of a Poisson count ``k``."""
    from scipy.stats import chi2

    a = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else float(chi2.ppf(a, 2 * k) / 2.0)
    return lo, float(chi2.ppf(1.0 - a, 2 * k + 2) / 2.0)


#: Why the throughput figure is printed but not counted.
THROUGHPUT_NOTE = "not evidence: set by the arrival schedule, 10 req/s offered and all served"


def compare(model_records: pd.DataFrame, published: pd.DataFrame | None = None, tolerance: float = TOLERANCE) -> list[Check]:
    """The acceptance figures of issue E, published against model.

    Overall and per-endpoint P50/P95/P99, per-payload medians (all within ``tolerance``); the
    success rate; the failures' shape: failures only where the published run had them (same
    endpoints, payloads and outcome, the client's timeout) and their median latency within
    ``tolerance`` of the published failures'.  Completed requests per second is printed but
    is not evidence (``evidence=False``): below saturation an open workload's throughput is
    its arrival rate, whatever the model's parameters.  The success rate discriminates: the
    model's failures per run must lie in the exact 95 % Poisson interval of the published
    count (4 of 6,000 -> 1.1-10.2), so a model that never fails does not pass; the old
    0.1-percentage-point tolerance let 0 failures through.
    """
    pub = tool_figures(load_published() if published is None else published)
    mod = tool_figures(model_records)
    checks: list[Check] = []
    # a fixed order (not the data's order of appearance), so checks of two stretches line up
    order = list(dict.fromkeys([e for e, _ in PAYLOADS] + [f"{e}/{c}" for (e, _), c in PAYLOADS.items()]))
    rank = {name: i for i, name in enumerate(order)}
    for scope, pb, mb in [("all", pub["overall"], mod["overall"])] + [
        (name, pub["endpoints"][name], mod["endpoints"].get(name, {})) for name in sorted(pub["endpoints"], key=lambda n: rank.get(n, len(rank)))
    ]:
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            checks.append(_rel(f"{scope} {key[:3].upper()}", pb[key], mb.get(key, float("nan")), "ms", tolerance))
    t = _rel("all completed req/s", pub["overall"]["throughput_rps"], mod["overall"]["throughput_rps"], "req/s", tolerance)
    checks.append(Check(t.name, t.published, t.model, t.error, t.unit, t.ok, evidence=False, note=THROUGHPUT_NOTE))
    for name in sorted(pub["payloads"], key=lambda n: rank.get(n, len(rank))):
        pb, mb = pub["payloads"][name], mod["payloads"].get(name, {})
        checks.append(_rel(f"{name} P50", pb["p50_ms"], mb.get("p50_ms", float("nan")), "ms", tolerance))
    pf, mf = pub["failures"], mod["failures"]
    ps, ms = pub["overall"]["success_rate"] * 100, mod["overall"]["success_rate"] * 100
    k = int(round(pf["count"]))
    lo, hi = poisson_interval(k)
    checks.append(Check("all success %", ps, ms, ms - ps, "pp", bool(lo <= mf["count"] <= hi),
                        note=f"{mf['count']:.1f} failures per run; published {k}, 95 % Poisson range {lo:.1f}-{hi:.1f}"))
    shape_ok = (
        set(mf["endpoints"]) <= set(pf["endpoints"])
        and set(mf["classes"]) <= set(pf["classes"])
        and set(mf["outcomes"]) <= set(pf["outcomes"])
    )
    if pf["latency_ms"] and mf["latency_ms"]:
        c = _rel("failures median latency", pf["latency_ms"][1], mf["latency_ms"][1], "ms", tolerance)
        checks.append(Check(c.name, c.published, c.model, c.error, c.unit, c.ok and shape_ok))
    else:
        checks.append(Check("failures median latency", float("nan"), float("nan"), float("nan"), "ms", not pf["latency_ms"] and not mf["latency_ms"]))
    return checks


def evidence(checks: list[Check]) -> list[Check]:
    """The checks that count."""
    return [c for c in checks if c.evidence]


def format_checks(checks: list[Check]) -> str:
    lines = [f"{'figure':<42} {'published':>10} {'model':>10} {'error':>8}  within"]
    for c in checks:
        err = "n/a" if not np.isfinite(c.error) else f"{c.error:+.2f}pp" if c.unit == "pp" else f"{c.error * 100:+.1f}%"
        fmt = "{:>10.2f}" if c.unit in ("pp", "req/s") else "{:>10.0f}"
        verdict = ("yes" if c.ok else "NO") if c.evidence else "-"
        note = f" ({c.note})" if c.note else ""
        lines.append(f"{c.name:<42} {fmt.format(c.published)} {fmt.format(c.model)} {err:>8}  {verdict}{note}")
    return "\n".join(lines)


def format_verdict(checks: list[Check]) -> str:
    ev = evidence(checks)
    skipped = [c.name for c in checks if not c.evidence]
    tail = f" ({', '.join(skipped)} not counted: see its line)" if skipped else ""
    return f"{sum(c.ok for c in ev)}/{len(ev)} figures within tolerance{tail}"


def failure_summary(figures: dict[str, Any]) -> str:
    f = figures["failures"]
    if not f["latency_ms"]:
        return "failures: none"
    lo, med, hi = f["latency_ms"]
    return (f"failures: {f['count']:.1f} per run, endpoints {', '.join(f['endpoints'])}, payloads {', '.join(f['classes'])}, "
            f"outcome {', '.join(f['outcomes'])}, latency {lo:.0f}-{hi:.0f} ms (median {med:.0f})")


def report_arithmetic(records: pd.DataFrame) -> str:
    """The report's throughput figure and Little's law, checked on a records frame."""
    from simulator import stats

    span = float(records["finished_at"].max())
    little = stats.little_check(records, 0.0, float(np.floor(records["arrived_at"].max())) + 1.0)
    return (f"throughput: {len(records)} requests completed by {span:.1f} s = {len(records) / span:.2f} req/s "
            f"(the report says ~0.97 req/s)\n"
            f"Little's law: {little['L']:.1f} requests in flight on average; arrival rate x mean time in system = "
            f"{little['lambda']:.2f}/s x {little['W']:.2f} s = {little['lambda_W']:.1f}")


# ----------------------------------------------------------------------------- variants

#: The report's Phase 1 changes, each as --set overrides on the fitted baseline, with why.
PHASE1: dict[str, tuple[str, list[str]]] = {
    "ai_timeout": (
        "AI-service request timeout 15 s -> 3 s (report: 'Fix circuit breaker timeouts').",
        ["model_selection.ai_client.request_timeout=\"3s\""],
    ),
    "breaker": (
        "Breaker FailureThreshold 3, SuccessThreshold 2, Timeout 5 s, ResetAfter 30 s. The code "
        "already had 3 and 2 (the report quoted 5 and 3) and never used ResetAfter, so only the open "
        "period changes: 30 s -> 5 s.",
        [
            "model_selection.ai_client.breaker.failure_threshold=3",
            "model_selection.ai_client.breaker.success_threshold=2",
            "model_selection.ai_client.breaker.open_for=\"5s\"",
        ],
    ),
    "http_client": (
        "AI-service HTTP client: MaxIdleConnsPerHost 10 -> 50 (MaxIdleConns 200), IdleConnTimeout "
        "90 s -> 30 s, dial timeout 10 s -> 2 s, TLS-handshake timeout 10 s -> 5 s (the handshake here "
        "takes milliseconds, so that limit never fires), client Timeout 30 s -> 5 s, which caps the "
        "15 s request timeout at 5 s.",
        [
            "model_selection.ai_client.pool.max_idle_per_host=50",
            "model_selection.ai_client.pool.idle_timeout=\"30s\"",
            "model_selection.ai_client.pool.dial_timeout=\"2s\"",
            "model_selection.ai_client.request_timeout=\"5s\"",
        ],
    ),
    "redis": (
        "Prompt-cache Redis: operation timeout 2 s -> 200 ms, with its own pool (PoolSize 20, "
        "MinIdleConns 5, PoolTimeout 500 ms). The change is in prompt_cache.go: the semantic cache's "
        "client is not touched, and the benchmark's payloads never opt in to the prompt cache.",
        ["prompt_cache.op_timeout=\"200ms\""],
    ),
    "pooled_clients": (
        "Provider SDK clients built once per provider and reused (report: 'provider connection pooling').",
        ["gateway.provider_client.pooled=true"],
    ),
}

#: The faults the report worries about, as overrides on either configuration.
FAULTS: dict[str, tuple[str, list[str]]] = {
    "slow_ai": (
        "The AI service slows 4x from 120 s to 300 s (a batch of 8 then takes ~3.4 s: capacity "
        "~2.3/s against 5.2/s offered), the case the report's timeout and breaker changes are for.",
        ["ai_service.faults=[{start=\"120s\", end=\"300s\", kind=\"slow\", latency_factor=4.0}]"],
    ),
    "slow_provider": (
        "The provider answering 'hello' (also the static fallback's choice) slows 5x from 120 s to "
        "300 s: a provider brownout.",
        ["providers.provider_a.faults=[{start=\"120s\", end=\"300s\", kind=\"slow\", latency_factor=5.0}]"],
    ),
}


def phase1_all() -> list[str]:
    """All Phase 1 changes together; where two set the same field the stricter value wins."""
    merged: dict[str, str] = {}
    for _, sets in PHASE1.values():
        for item in sets:
            key, _, value = item.partition("=")
            merged[key] = value
    merged["model_selection.ai_client.request_timeout"] = "\"3s\""  # min(3 s request timeout, 5 s client timeout)
    return [f"{k}={v}" for k, v in merged.items()]


def variants() -> dict[str, tuple[str, list[str]]]:
    """Variant file stem -> (description, overrides on heavy_load.toml)."""
    out: dict[str, tuple[str, list[str]]] = {
        "report_phase1": ("All of the report's Phase 1 changes together.", phase1_all()),
    }
    for name, (why, sets) in PHASE1.items():
        out[f"report_phase1_{name}"] = (f"Phase 1 change alone: {why}", list(sets))
    for name, (why, sets) in FAULTS.items():
        why = why[0].lower() + why[1:]
        out[f"heavy_load_{name}"] = (f"The fitted baseline under a fault: {why}", list(sets))
        out[f"report_phase1_{name}"] = (f"All Phase 1 changes under a fault: {why}", phase1_all() + list(sets))
    return out


def variant_text(stem: str, base: Path = BASELINE) -> str:
    """The TOML text of one variant: the baseline's data with the variant's overrides applied."""
    import tomli_w

    from simulator.scenario import apply_overrides, read_scenario_data

    why, sets = variants()[stem]
    data = apply_overrides(read_scenario_data(base), sets, str(base))
    data["run"]["name"] = f"seed-{stem}"
    data["run"]["description"] = why
    header = [
        f"# GENERATED by `python -m gwsim.seed write-variants` from {base.name}: do not edit by hand.",
        "# Every value not listed below is the fitted baseline's; see heavy_load.toml for why each has its value.",
        "#",
        *[f"# {line}" for line in _wrap(why, 92)],
        "#",
        "# Overrides applied to heavy_load.toml:",
        *[f"#   --set {s}" for s in sets],
        "",
    ]
    return "\n".join(header) + "\n" + tomli_w.dumps(data)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)


def write_variants(directory: Path = SCENARIO_DIR) -> list[Path]:
    from gwsim.output import atomic_write_text

    written = []
    for stem in variants():
        path = Path(directory) / f"{stem}.toml"
        atomic_write_text(path, variant_text(stem))
        written.append(path)
    return written


#: What would actually move P50/P95 (for the notebook and the README section), as overrides.
WHAT_IFS: dict[str, tuple[str, list[str]]] = {
    "cache_selections": (
        "select-model stores its selection (one embedding call + SET), so a repeated prompt is an exact hit",
        ["model_selection.semantic_cache.write_on_select=true"] + [
            f"endpoints.select_model.classes.{i}.semantic_cache_hit=1.0" for i in range(3)
        ],
    ),
    "bounded_scan": (
        "the semantic scan bounded to the 100 newest entries (a cap with eviction, or a vector index)",
        ["model_selection.semantic_cache.initial_entries=100", "model_selection.semantic_cache.max_entries=100"],
    ),
    "no_semantic_cache": (
        "the semantic cache switched off: every selection asks the AI service",
        ["model_selection.semantic_cache.enabled=false"],
    ),
    "bigger_batches": (
        "the AI service batching up to 32 per batch with a 100 ms batch timeout",
        ["ai_service.max_batch_size=32", "ai_service.batch_timeout=\"100ms\""],
    ),
}


#: Parameters fitted to the data (``python -m gwsim.seed fit GROUP``), in two groups that touch
#: disjoint payloads: the selection path (select-model) and the providers (chat).  Bounds in
#: seconds or plain numbers.
FIT_GROUPS: dict[str, dict[str, tuple[float, float]]] = {
    "selection": {
        "model_selection.semantic_cache.embedding_time.median": (0.15, 0.5),
        "redis.op_time.value": (0.0003, 0.0009),
        "redis.faults.0.latency_factor": (1.1, 1.8),
        "endpoints.select_model.classes.0.similar_entry_at": (0.2, 0.5),
    },
    "providers": {
        "providers.provider_a.latency.ttft.median": (0.8, 1.8),
        "providers.provider_b.latency.time.median": (9.0, 12.0),
        "providers.provider_b.latency.time.p95": (11.0, 14.0),
        "providers.provider_c.latency.time.components.0.of.median": (0.4, 1.0),
        "providers.provider_c.latency.time.components.0.weight": (0.7, 0.95),
        "providers.provider_c.latency.time.components.1.of.median": (0.8, 1.6),
    },
}


@dataclass(frozen=True)
class FitResult:
    group: str
    start: dict[str, float]
    best: dict[str, float]
    start_loss: float
    best_loss: float
    evaluations: int

    def format(self) -> str:
        lines = [f"fit {self.group}: loss {self.start_loss:.5f} -> {self.best_loss:.5f} in {self.evaluations} runs "
                 "(mean squared log error of the latency and throughput figures of `compare`)"]
        lines += [f"  --set {k}={self.best[k]:.6g}   (was {self.start[k]:.6g})" for k in self.best]
        return "\n".join(lines)


def loss(checks: list[Check]) -> float:
    """Mean squared log ratio model/published over the relative figures that count as
    evidence (the latency figures: throughput is not evidence, success is a count)."""
    errs = [np.log(c.model / c.published) for c in checks if c.evidence and c.unit != "pp" and c.published > 0 and c.model > 0]
    return float(np.mean(np.square(errs))) if errs else float("inf")


def fit(group: str, *, path: Path = BASELINE, replications: int = 2, max_evals: int = 60,
        published: pd.DataFrame | None = None, window: tuple[float, float] | None = None,
        start: dict[str, float] | None = None, overrides: list[str] | None = None, exclude: tuple[str, ...] = ()) -> FitResult:
    """Fit one parameter group to the published run: bounded Nelder-Mead on ``loss``, every
    evaluation with the same seed (common random numbers), so the objective is smooth enough.

    ``window``: fit to the requests sent in [lo, hi) s only (the simulation still covers the
    whole run, and its records are cut the same way); ``start``: starting values (default: the
    scenario file's); ``overrides``: further ``--set`` values held fixed during the fit;
    ``exclude``: parameters of the group left out of the fit (set them in ``overrides``).
    """
    from scipy import optimize

    from gwsim.calibration.fit import _get_path
    from simulator.scenario import read_scenario_data

    free = {n: b for n, b in FIT_GROUPS[group].items() if n not in exclude}
    names = list(free)
    lo = np.array([free[n][0] for n in names])
    hi = np.array([free[n][1] for n in names])
    raw = read_scenario_data(path)
    begin = {n: float(_get_path(raw, n)) for n in names} if start is None else {n: float(start[n]) for n in names}
    pub = load_published() if published is None else published
    if window is not None:
        pub = arrived_in(pub, *window)
    fixed = list(overrides or [])
    seen: dict[tuple, float] = {}

    def objective(u: np.ndarray) -> float:
        values = lo + np.clip(u, 0.0, 1.0) * (hi - lo)
        key = tuple(np.round(values, 9))
        if key not in seen:
            sim = run(fixed + [f"{n}={v!r}" for n, v in zip(names, values.tolist())], path=path, replications=replications, workers=1)
            records = sim.records if window is None else arrived_in(sim.records, *window)
            seen[key] = loss(compare(records, pub))
        return seen[key]

    u0 = np.clip((np.array([begin[n] for n in names]) - lo) / (hi - lo), 0.0, 1.0)
    first = objective(u0)
    if max_evals > 1:
        optimize.minimize(objective, u0, method="Nelder-Mead", bounds=[(0.0, 1.0)] * len(names),
                          options={"maxfev": max_evals, "xatol": 1e-3, "fatol": 1e-6})
    best_key = min(seen, key=seen.get)
    return FitResult(group, begin, {n: float(v) for n, v in zip(names, best_key)}, first, seen[best_key], len(seen))


def arrived_in(records: pd.DataFrame, lo: float, hi: float) -> pd.DataFrame:
    """The requests sent in [lo, hi) s."""
    at = records["arrived_at"].to_numpy()
    return records.loc[(at >= lo) & (at < hi)]


# ----------------------------------------------------------------------------- running


def run(overrides: list[str] | None = None, *, path: Path = BASELINE, replications: int | None = None, seed: int | None = None, workers: int | None = None):
    """``gwsim run PATH --set ...`` as a library call; returns the SimRun."""
    from simulator.api import run_scenario
    from simulator.scenario import load_scenario

    scenario = load_scenario(path, list(overrides or []))
    return run_scenario(scenario, replications=replications, seed=seed, workers=workers)


def headline(records: pd.DataFrame) -> dict[str, float]:
    """P50/P95/P99 over all requests (ms), completed req/s and success % as the seed tool printed them."""
    o = tool_figures(records)["overall"]
    return {"p50_ms": o["p50_ms"], "p95_ms": o["p95_ms"], "p99_ms": o["p99_ms"], "throughput_rps": o["throughput_rps"], "success_pct": o["success_rate"] * 100}


# ----------------------------------------------------------------------------- command line


def _cli():
    import json

    import click

    from gwsim.cli import _Group

    data_option = click.option(
        "--data", type=click.Path(), default=None,
        help="Directory holding heavy_load_2025-08-14.csv, or the file itself [default: $GWSIM_DATA_DIR, else ../shared/data].")

    @click.group(cls=_Group, help="The seed report's load test against gwsim. The published run "
                 "(heavy_load_2025-08-14.csv, third-party data not shipped with gwsim) is read from --data, "
                 "GWSIM_DATA_DIR or ../shared/data.")
    def seed() -> None:
        logging.basicConfig(level=logging.WARNING)

    @seed.command(help="Print the published run's figures, computed from the data file as web-perf did.")
    @data_option
    def published(data: str | None) -> None:
        records = load_published(data)
        figs = tool_figures(records)
        click.echo(f"{'scope':<34} {'count':>6} {'req/s':>6} {'success %':>9} {'mean':>7} {'P50':>7} {'P95':>7} {'P99':>7} {'max':>7}")
        rows = [("all", figs["overall"])] + list(figs["endpoints"].items()) + list(figs["payloads"].items())
        for name, b in rows:
            click.echo(f"{name:<34} {b['count']:>6.0f} {b['throughput_rps']:>6.2f} {b['success_rate'] * 100:>9.2f} {b['mean_ms']:>7.0f} "
                       f"{b['p50_ms']:>7.0f} {b['p95_ms']:>7.0f} {b['p99_ms']:>7.0f} {b['max_ms']:>7.0f}")
        click.echo(failure_summary(figs))
        click.echo(report_arithmetic(records))

    @seed.command(name="compare", help="Run a scenario (default: the fitted baseline) and compare it with the published run.")
    @click.argument("scenario", required=False, type=click.Path(exists=True, dir_okay=False))
    @click.option("-n", "--replications", type=int, default=None)
    @click.option("--seed", "seed_", type=int, default=None)
    @click.option("--set", "overrides", multiple=True)
    @data_option
    def compare_cmd(scenario: str | None, replications: int | None, seed_: int | None, overrides: tuple[str, ...], data: str | None) -> None:
        pub = load_published(data)
        sim = run(list(overrides), path=Path(scenario) if scenario else BASELINE, replications=replications, seed=seed_)
        checks = compare(sim.records, pub)
        click.echo(f"{scenario or 'scenarios/seed/heavy_load.toml'}: {sim.replications} replications, seed {sim.seed}")
        click.echo(format_checks(checks))
        click.echo("published " + failure_summary(tool_figures(pub)))
        click.echo("model     " + failure_summary(tool_figures(sim.records)))
        click.echo(format_verdict(checks))

    @seed.command(name="variants", help="Run the baseline and every variant file; P50/P95/P99 against the report's promise.")
    @click.option("-n", "--replications", type=int, default=None)
    @click.option("--seed", "seed_", type=int, default=None)
    @click.option("--what-ifs", is_flag=True, help="Also the changes that would move P50/P95 (overrides on the baseline).")
    @data_option
    def variants_cmd(replications: int | None, seed_: int | None, what_ifs: bool, data: str | None) -> None:
        rows = [("published run (data file)", headline(load_published(data)))]
        names = ["heavy_load", *variants()]
        for stem in names:
            sim = run(path=SCENARIO_DIR / f"{stem}.toml", replications=replications, seed=seed_)
            rows.append((f"{stem}.toml", headline(sim.records)))
        if what_ifs:
            for name, (_, sets) in WHAT_IFS.items():
                sim = run(sets, replications=replications, seed=seed_)
                rows.append((f"what-if {name}", headline(sim.records)))
        rows.append(("report's Phase 1 promise", {"p50_ms": REPORT_PROMISE_MS["p50"], "p95_ms": REPORT_PROMISE_MS["p95"],
                                                  "p99_ms": REPORT_PROMISE_MS["p99"], "throughput_rps": float("nan"), "success_pct": float("nan")}))
        click.echo(f"{'configuration':<40} {'P50 ms':>8} {'P95 ms':>8} {'P99 ms':>8} {'req/s':>6} {'success %':>9}")
        for name, h in rows:
            click.echo(f"{name:<40} {h['p50_ms']:>8.0f} {h['p95_ms']:>8.0f} {h['p99_ms']:>8.0f} {h['throughput_rps']:>6.2f} {h['success_pct']:>9.2f}")

    @seed.command(name="fit", help="Fit a parameter group (selection | providers) to the data; prints the fitted values.")
    @click.argument("group", type=click.Choice(sorted(FIT_GROUPS)))
    @click.option("-n", "--replications", type=int, default=2)
    @click.option("--max-evals", type=int, default=60)
    @data_option
    def fit_cmd(group: str, replications: int, max_evals: int, data: str | None) -> None:
        click.echo(fit(group, replications=replications, max_evals=max_evals, published=load_published(data)).format())

    @seed.command(name="holdout", help="Fit on the first half of the published run (requests sent 0-300 s) and predict "
                  "the second (300-600 s), and the reverse; per figure, in-sample error next to held-out error, and "
                  "figures in no fit's loss. About 2.5 minutes of CPU on one core by default, under 1 with --quick.")
    @click.option("--max-evals", type=click.IntRange(min=1), default=None,
                  help="Simulations per parameter group and direction, at most [default: 80; --quick: 20].")
    @click.option("--quick", is_flag=True, help="20 simulations per group: the optimizer's first steps only, not converged.")
    @click.option("--fit-replications", type=click.IntRange(min=1), default=1, help="Replications per fit evaluation.")
    @click.option("-n", "--replications", type=click.IntRange(min=1), default=None,
                  help="Replications of the runs the figures come from [default: the scenario's, 4].")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
    @data_option
    def holdout_cmd(max_evals: int | None, quick: bool, fit_replications: int, replications: int | None, as_json: bool, data: str | None) -> None:
        from gwsim import seed_holdout as ho

        evals = max_evals if max_evals is not None else (ho.QUICK_MAX_EVALS if quick else ho.DEFAULT_MAX_EVALS)
        load_published(data)  # a missing file fails here, before any simulation
        result = ho.holdout(max_evals=evals, fit_replications=fit_replications, replications=replications, data=data,
                            progress=None if as_json else (lambda msg: click.echo(msg, err=True)))
        if as_json:
            click.echo(json.dumps(ho.holdout_json(result), indent=2))
        else:
            click.echo(ho.format_holdout(result))

    @seed.command(name="write-variants", help="Regenerate scenarios/seed/report_phase1*.toml and heavy_load_*.toml from heavy_load.toml.")
    def write_variants_cmd() -> None:
        for path in write_variants():
            click.echo(str(path))

    return seed


def register(cli) -> None:
    """Adds ``gwsim seed ...`` when the CLI imports this module."""
    cli.add_command(_cli(), name="seed")


if __name__ == "__main__":
    _cli()(prog_name="python -m gwsim.seed")
