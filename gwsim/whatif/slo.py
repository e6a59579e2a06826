"""Service-level objectives as a rollout gate states them: "p95<2s", "success>=0.995",
"chat_completions:p99<=5s", "throughput>=20/s", "wait<200ms"; for streamed traffic
"ttft_p95<800ms", "tpot_p50<=40ms", and "goodput>=0.95": the share of requests meeting
every per-request target of ``--goodput 'ttft<1s,tpot<50ms'`` (``parse_goodput``).

An SLO is judged on per-replication values (replications are independent, so a Student-t
interval over them is honest): the estimate is their mean, the margin is how far the
estimate is on the good side of the threshold (positive = room to spare), and the margin
carries the same 95 % interval.  ``decided`` says whether the whole interval lies on one
side of the threshold, i.e. whether the verdict is beyond the simulation's noise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from simulator.errors import UsageError
from simulator.stats import t_interval
from simulator.units import DURATION_UNITS_TEXT, UnitError, parse_duration, parse_rate

#: SLO metric name -> (per-replication column, kind).  kind: latency (ms), fraction, rate.
METRIC_COLUMNS: dict[str, tuple[str, str]] = {
    "mean": ("mean_ms", "latency"),
    "p50": ("p50_ms", "latency"),
    "median": ("p50_ms", "latency"),
    "p90": ("p90_ms", "latency"),
    "p95": ("p95_ms", "latency"),
    "p99": ("p99_ms", "latency"),
    "max": ("max_ms", "latency"),
    "wait": ("wait_ms", "latency"),
    "success": ("success_rate", "fraction"),
    "errors": ("error_rate", "fraction"),
    "error_rate": ("error_rate", "fraction"),
    "throughput": ("throughput_rps", "rate"),
    # streamed requests (records' ttft_s, tpot_s): the runner's stream columns
    **{f"{m}_{k}": (f"{m}_{k}_ms", "latency") for m in ("ttft", "tpot") for k in ("mean", "p50", "p90", "p95", "p99")},
    "goodput": ("goodput", "fraction"),
}

_SLO_RE = re.compile(r"^\s*(?:(?P<ep>[A-Za-z0-9_\-]+)\s*:)?\s*(?P<metric>[A-Za-z_0-9]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>\S.*?)\s*$")

_OPS = {
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
}


@dataclass(frozen=True)
class SLO:
    """One objective: ``endpoint`` ("" = all traffic), metric, operator and threshold.

    ``threshold`` is in the column's unit: ms for latencies, a fraction for success and
    errors, req/s for throughput.
    """

    text: str
    endpoint: str
    metric: str
    op: str
    threshold: float

    @property
    def column(self) -> str:
        base = METRIC_COLUMNS[self.metric][0]
        return f"{self.endpoint}:{base}" if self.endpoint else base

    @property
    def kind(self) -> str:
        return METRIC_COLUMNS[self.metric][1]

    @property
    def upper_bound(self) -> bool:
        """True for "value must stay below" (latency), False for "must stay above" (success)."""
        return self.op in ("<", "<=")

    def met(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            # no successful request at all: a latency bound cannot be said to hold
            return False
        return bool(_OPS[self.op](value, self.threshold))

    def margin(self, value: float) -> float:
        """Room to spare: positive when met, in the column's unit."""
        return self.threshold - value if self.upper_bound else value - self.threshold

    def format_value(self, value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "-"
        if self.kind == "latency":
            return f"{value:.0f} ms" if abs(value) >= 100 else f"{value:.1f} ms"
        if self.kind == "fraction":
            return f"{value * 100:.2f} %"
        return f"{value:.2f} req/s"

    def format_margin(self, value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "-"
        if self.kind == "latency":
            return f"{value:+.0f} ms" if abs(value) >= 100 else f"{value:+.1f} ms"
        if self.kind == "fraction":
            return f"{value * 100:+.2f} pp"
        return f"{value:+.2f} req/s"

    def __str__(self) -> str:
        return self.text


def _parse_threshold(raw: str, kind: str, text: str) -> float:
    raw = raw.strip()
    if kind == "latency":
        try:
            return parse_duration(raw) * 1000.0
        except UnitError:
            raise UsageError(f"--slo {text!r}: expected a duration with a unit of {DURATION_UNITS_TEXT}, such as 2s or 250ms, got {raw!r}") from None
    if kind == "fraction":
        try:
            if raw.endswith("%"):
                value = float(raw[:-1]) / 100.0
            else:
                value = float(raw)
        except ValueError:
            raise UsageError(f"--slo {text!r}: expected a fraction such as 0.995 or 99.5%, got {raw!r}") from None
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"--slo {text!r}: expected a fraction between 0 and 1 (or 0% to 100%), got {raw!r}")
        return value
    try:
        return parse_rate(raw)
    except UnitError:
        try:
            return float(raw)
        except ValueError:
            raise UsageError(f"--slo {text!r}: expected a rate such as 20/s, got {raw!r}") from None


def parse_slo(text: str, endpoints: Sequence[str] | None = None) -> SLO:
    """Read ``[endpoint:]metric OP value``; raise UsageError with one line otherwise."""
    m = _SLO_RE.match(text or "")
    if not m:
        raise UsageError(f"--slo {text!r}: expected [endpoint:]metric OP value, e.g. 'p95<2s' or 'success>=0.995'")
    metric = m.group("metric").lower()
    if metric not in METRIC_COLUMNS:
        raise UsageError(f"--slo {text!r}: expected a metric from {sorted(METRIC_COLUMNS)}, got {metric!r}")
    endpoint = m.group("ep") or ""
    if endpoints is not None and endpoint and endpoint not in endpoints:
        raise UsageError(f"--slo {text!r}: expected an endpoint from {sorted(endpoints)}, got {endpoint!r}")
    kind = METRIC_COLUMNS[metric][1]
    threshold = _parse_threshold(m.group("value"), kind, text)
    return SLO(text.strip(), endpoint, metric, m.group("op"), threshold)


#: --goodput metric -> the record column it judges (seconds).
GOODPUT_METRICS = {"ttft": "ttft_s", "tpot": "tpot_s", "itl": "itl_max_s", "latency": "latency_s"}
_GOODPUT_RE = re.compile(r"^\s*(?P<metric>[A-Za-z_]+)\s*(?P<op><=|<)\s*(?P<value>\S.*?)\s*$")


@dataclass(frozen=True)
class GoodputTarget:
    """One per-request target of ``--goodput``: ``metric op threshold_s``."""

    metric: str  # ttft, tpot, itl (the largest gap between chunks) or latency
    op: str  # < or <=
    threshold_s: float

    def met(self, values_s: np.ndarray) -> np.ndarray:
        return values_s < self.threshold_s if self.op == "<" else values_s <= self.threshold_s


def parse_goodput(text: str | None) -> tuple[GoodputTarget, ...]:
    """``'ttft<1s,tpot<50ms'`` -> its targets (() for None or ''); UsageError with one line otherwise."""
    if not text or not text.strip():
        return ()
    targets = []
    for part in text.split(","):
        m = _GOODPUT_RE.match(part)
        metric = m.group("metric").lower() if m else ""
        if not m or metric not in GOODPUT_METRICS:
            raise UsageError(f"--goodput {text!r}: expected targets such as 'ttft<1s,tpot<50ms' (metrics "
                             f"{', '.join(GOODPUT_METRICS)}; < or <=), got {part.strip()!r}")
        try:
            threshold = parse_duration(m.group("value"))
        except UnitError:
            raise UsageError(f"--goodput {text!r}: expected a duration with a unit such as 1s or 50ms, got "
                             f"{m.group('value')!r}") from None
        targets.append(GoodputTarget(metric, m.group("op"), threshold))
    return tuple(targets)


def goodput_share(win, targets: Sequence[GoodputTarget]) -> float:  # noqa: ANN001 - a records DataFrame
    """The share of the window's requests that succeeded and met every target (NaN with none).

    A request that did not stream got its first token with its whole reply: its TTFT is its
    latency, and it has no TPOT or chunk gap to miss; nor has a one-token stream a TPOT."""
    n = len(win)
    if not n:
        return math.nan
    good = win["outcome"].to_numpy() == "ok"
    latency = win["latency_s"].to_numpy(dtype="float64")
    stream = win["stream"].to_numpy(dtype=bool) if "stream" in win.columns else np.zeros(n, dtype=bool)
    for target in targets:
        if target.metric == "latency":
            good &= target.met(latency)
        elif target.metric == "ttft":
            ttft = win["ttft_s"].to_numpy(dtype="float64") if "ttft_s" in win.columns else latency
            good &= target.met(np.where(stream, ttft, latency))
        elif GOODPUT_METRICS[target.metric] in win.columns:
            values = win[GOODPUT_METRICS[target.metric]].to_numpy(dtype="float64")
            good &= np.isnan(values) | target.met(values)
    return float(good.sum()) / n


def check_goodput(slos: Sequence[SLO], text: str | None) -> tuple[GoodputTarget, ...]:
    """The ``--goodput`` targets, refusing a goodput SLO without them."""
    targets = parse_goodput(text)
    for slo in slos:
        if slo.metric == "goodput" and not targets:
            raise UsageError(f"--slo {slo.text!r}: expected --goodput with the per-request targets, e.g. "
                             "--goodput 'ttft<1s,tpot<50ms'")
    return targets


def parse_slos(texts: Sequence[str], endpoints: Sequence[str] | None = None) -> list[SLO]:
    if not texts:
        raise UsageError("expected at least one --slo, e.g. --slo 'p95<2s' --slo 'success>=0.995'")
    return [parse_slo(t, endpoints) for t in texts]


@dataclass(frozen=True)
class Verdict:
    """An SLO judged on one configuration's replications."""

    slo: SLO
    value: float | None  # mean of per-replication values
    ci: tuple[float, float] | None  # 95 % t interval of that mean
    margin: float | None
    margin_ci: tuple[float, float] | None
    passed: bool
    decided: bool  # the whole interval is on one side of the threshold
    replications: int

    def as_dict(self) -> dict:
        def f(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else float(f"{x:.6g}")

        return {
            "slo": self.slo.text,
            "endpoint": self.slo.endpoint or "all",
            "metric": self.slo.metric,
            "threshold": f(self.slo.threshold),
            "value": f(self.value),
            "ci95": None if self.ci is None else [f(self.ci[0]), f(self.ci[1])],
            "margin": f(self.margin),
            "margin_ci95": None if self.margin_ci is None else [f(self.margin_ci[0]), f(self.margin_ci[1])],
            "passed": self.passed,
            "decided": self.decided,
            "replications": self.replications,
        }


def slo_values(frame, slo: SLO) -> np.ndarray:  # noqa: ANN001 - a pandas DataFrame
    """The per-replication values of ``slo``'s column in a metrics frame.  A scenario with a
    single endpoint has no per-endpoint columns: its endpoint's values are the overall ones."""
    column = slo.column
    if column not in frame.columns:
        column = METRIC_COLUMNS[slo.metric][0]
    if column not in frame.columns:  # e.g. a TTFT objective on traffic that does not stream: unmet
        return np.full(len(frame), np.nan)
    return frame[column].to_numpy(dtype="float64")


def judge(slo: SLO, values: Sequence[float] | np.ndarray) -> Verdict:
    """Judge ``slo`` on per-replication values of its column.

    A replication without a single success has no latency: it counts as an infinitely slow
    replication, so the latency SLO fails (and no interval is given).
    """
    arr = np.asarray(values, dtype="float64")
    n = int(arr.size)
    if n == 0:
        return Verdict(slo, None, None, None, None, False, False, 0)
    if slo.kind == "latency":
        arr = np.where(np.isnan(arr), np.inf, arr)
    else:
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            return Verdict(slo, None, None, None, None, False, False, n)
    value = float(np.mean(arr))
    if not math.isfinite(value):
        return Verdict(slo, None, None, None, None, False, True, n)
    # cut to the values the metric can take (a latency or a rate is never below 0, a share
    # stays in [0, 1]): with 2 replications a latency's t-interval often reaches below 0
    ci = t_interval(arr, floor=0.0, ceiling=1.0 if slo.kind == "fraction" else None)
    margin = slo.margin(value)
    if ci is None:
        margin_ci = None
        decided = False
    else:
        ends = sorted((slo.margin(ci[0]), slo.margin(ci[1])))
        margin_ci = (ends[0], ends[1])
        # a strict bound met exactly at the edge is still met, so compare the margins, not the op
        decided = margin_ci[0] > 0 or margin_ci[1] < 0 or (slo.op in ("<=", ">=") and margin_ci[0] >= 0)
    return Verdict(slo, value, ci, margin, margin_ci, slo.met(value), decided, n)
