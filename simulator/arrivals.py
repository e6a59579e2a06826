"""When the requests of an open loop arrive, written once for both executors.

The simulator's client (``simulator.engine``) and the real load generator
(``real_engine.loadgen``) both take their arrivals from ``plan()`` whenever the workload is
more than a plain Poisson, constant or burst stream: a request trace, a measured run's
traffic (``workload.replay``), a gamma renewal or two-state MMPP process, or a joint token
distribution.  A plan is a sequence of ``(at, endpoint, class name, input tokens, output
tokens)``: ``endpoint``/``class`` None let the executor draw them from the mix and the class
weights, tokens -1 leave them to the class's ``output_tokens`` (or the provider's default).

Rate profiles and ``time_scale`` work by time change: a stationary process of mean rate 1
(unit-rate Poisson, gamma renewal or MMPP) runs in *operational time* u, and a request at u
arrives at the wall time t with Lambda(t) = u, where Lambda is the integral of rate x profile
factor.  For Poisson this is the non-homogeneous Poisson process; for the others it keeps the
shape of the process (its gap CV, its bursts) while the rate follows the profile, the way a
busier minute of real traffic is the same traffic, faster.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from simulator.scenario import (
    BurstArrivals,
    ConstantArrivals,
    GammaArrivals,
    MMPPArrivals,
    PoissonArrivals,
    RatePoint,
    TokenCopula,
    Workload,
)
from simulator.trace import window, window_length

#: One planned request: (at, endpoint or None, class name or None, input tokens, output tokens).
Planned = tuple[float, "str | None", "str | None", int, float]

_BLOCK = 4096


def uses_plan(workload: Workload) -> bool:
    """Whether an executor must take this open loop's arrivals from ``plan`` (its own fast
    Poisson, constant and burst generators cover the rest)."""
    return (
        workload.mode == "trace"
        or bool(workload.replay)
        or workload.tokens is not None
        or isinstance(workload.arrivals, (GammaArrivals, MMPPArrivals))
    )


def time_scaled(workload: Workload) -> Workload:
    """The same traffic with ``time_scale`` folded in (and set to 1): rates times k, profile,
    burst, state and replay times divided by k.  A trace workload keeps its time_scale (its
    plan divides the trace's times)."""
    k = workload.time_scale
    if k == 1 or workload.mode == "trace":
        return workload
    arrivals = workload.arrivals
    if isinstance(arrivals, BurstArrivals):
        arrivals = arrivals.model_copy(update={"every": arrivals.every / k})
    elif isinstance(arrivals, MMPPArrivals):
        arrivals = arrivals.model_copy(update={"rate": arrivals.rate * k, "high_for": arrivals.high_for / k, "low_for": arrivals.low_for / k})
    elif arrivals is not None:
        arrivals = arrivals.model_copy(update={"rate": arrivals.rate * k})
    profile = tuple(RatePoint.model_construct(at=p.at / k, factor=p.factor) for p in workload.rate_profile)
    replay = tuple((at / k, ep, cls) for at, ep, cls in workload.replay)
    return workload.model_copy(update={"arrivals": arrivals, "rate_profile": profile, "replay": replay, "time_scale": 1.0})


class CumulativeRate:
    """Lambda(t) = rate x integral of the profile factor from 0 to t, and its inverse for
    increasing arguments (one pass over the profile's segments)."""

    def __init__(self, workload: Workload, rate: float) -> None:
        points = sorted(workload.rate_profile, key=lambda p: p.at)
        ramp = workload.profile_shape == "ramp"
        segments: list[tuple[float, float, float, float]] = []  # (start, end, factor at start, factor at end)
        if not points:
            segments.append((0.0, math.inf, 1.0, 1.0))
        else:
            if points[0].at > 0:
                segments.append((0.0, points[0].at, 1.0, 1.0))
            for a, b in zip(points, points[1:]):
                if b.at > a.at:
                    segments.append((a.at, b.at, a.factor, b.factor if ramp else a.factor))
            segments.append((points[-1].at, math.inf, points[-1].factor, points[-1].factor))
        self.rate = rate
        self._segments = []
        total = 0.0
        for t0, t1, f0, f1 in segments:
            self._segments.append((t0, t1, f0, f1, total))
            if math.isinf(t1):
                break
            total += rate * (f0 + f1) / 2 * (t1 - t0)
        self._i = 0

    def inverse(self, u: float) -> float:
        """The wall time t with Lambda(t) = u (inf when the profile never gets there); ``u`` must
        not decrease between calls."""
        segs = self._segments
        i = self._i
        while True:
            t0, t1, f0, f1, base = segs[i]
            if math.isinf(t1):
                if f0 <= 0:
                    return math.inf
                self._i = i
                return t0 + (u - base) / (self.rate * f0)
            top = base + self.rate * (f0 + f1) / 2 * (t1 - t0)
            if u < top:
                self._i = i
                d = (u - base) / self.rate
                if f0 == f1:
                    return t0 + d / f0
                slope = (f1 - f0) / (t1 - t0)
                return t0 + 2 * d / (f0 + math.sqrt(max(f0 * f0 + 2 * slope * d, 0.0)))
            i += 1


def _unit_times(arrivals, rng: np.random.Generator) -> Iterator[float]:
    """Operational times of a stationary process of mean rate 1, ascending (endless)."""
    if isinstance(arrivals, ConstantArrivals):
        n = 0
        while True:
            yield float(n)
            n += 1
    u = 0.0
    if isinstance(arrivals, PoissonArrivals):
        while True:
            for gap in rng.exponential(1.0, _BLOCK).tolist():
                u += gap
                yield u
    if isinstance(arrivals, GammaArrivals):
        shape = 1.0 / (arrivals.cv * arrivals.cv)
        scale = 1.0 / shape
        # the stationary start: the first gap is the forward recurrence time (a uniform share
        # of a length-biased gap), so the traffic is the same from the first second
        u = float(rng.random() * rng.gamma(shape + 1.0, scale))
        yield u
        while True:
            for gap in rng.gamma(shape, scale, _BLOCK).tolist():
                u += gap
                yield u
    if isinstance(arrivals, MMPPArrivals):
        high = arrivals.high_rate / arrivals.rate  # per unit of operational time
        rates = (high, high * arrivals.low_ratio)
        means = (arrivals.high_for * arrivals.rate, arrivals.low_for * arrivals.rate)  # sojourns, operational time
        state = 0 if rng.random() < means[0] / (means[0] + means[1]) else 1
        start = 0.0
        while True:
            stay = float(rng.exponential(means[state]))
            n = int(rng.poisson(rates[state] * stay)) if rates[state] > 0 else 0
            if n:
                for x in np.sort(rng.uniform(start, start + stay, n)).tolist():
                    yield x
            start += stay
            state = 1 - state
    raise ValueError(f"expected a renewal or modulated arrival process, got {arrivals!r}")  # pragma: no cover


def arrival_times(workload: Workload, end_s: float, rng: np.random.Generator) -> Iterator[float]:
    """Arrival times below ``end_s`` of an open loop (poisson, constant, gamma or mmpp by time
    change; burst at its ticks), ``time_scale`` included."""
    wl = time_scaled(workload)
    arrivals = wl.arrivals
    if isinstance(arrivals, BurstArrivals):
        t = 0.0
        while t < end_s:
            for _ in range(int(round(arrivals.size * wl.factor_at(t)))):
                yield t
            t += arrivals.every
        return
    clock = CumulativeRate(wl, arrivals.rate)
    for u in _unit_times(arrivals, rng):
        t = clock.inverse(u)
        if t >= end_s:
            return
        yield t


def draw_tokens(copula: TokenCopula, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (input, output) token pairs: correlated normal scores, mapped through each
    marginal's quantile table (linear between quantiles), rounded to whole tokens."""
    from scipy.special import ndtr

    z1 = rng.standard_normal(n)
    z2 = copula.correlation * z1 + math.sqrt(max(1.0 - copula.correlation**2, 0.0)) * rng.standard_normal(n)
    levels = np.asarray(copula.levels)
    inputs = np.rint(np.interp(ndtr(z1), levels, np.asarray(copula.input))).astype(np.int64)
    outputs = np.rint(np.interp(ndtr(z2), levels, np.asarray(copula.output))).astype(np.int64)
    return inputs, outputs


class TokenSampler:
    """(input, output) token pairs from a ``TokenCopula``, drawn in blocks."""

    def __init__(self, copula: TokenCopula, rng: np.random.Generator) -> None:
        self._c = copula
        self._rng = rng
        self._pairs: list[tuple[int, int]] = []
        self._i = 0

    def _fill(self) -> None:
        inputs, outputs = draw_tokens(self._c, self._rng, _BLOCK)
        self._pairs = list(zip(inputs.tolist(), outputs.tolist()))
        self._i = 0

    def __call__(self) -> tuple[int, int]:
        if self._i >= len(self._pairs):
            self._fill()
        pair = self._pairs[self._i]
        self._i += 1
        return pair


def trace_plan(workload: Workload, end_s: float) -> Iterator[Planned]:
    """A trace's requests in its window, at their times divided by ``time_scale``, looped when asked."""
    trace = workload.trace
    data = trace.data
    sl = window(data, trace.start, trace.duration)
    base = (data.at_s[sl] - trace.start).tolist()
    if not base:
        return
    length = window_length(data, trace.start, trace.duration)
    k = workload.time_scale
    names = [trace.map.get(name, name) for name in data.endpoints]
    codes = data.endpoint_codes[sl].tolist() if data.endpoint_codes is not None else None
    inputs = data.input_tokens[sl].tolist() if data.input_tokens is not None else None
    outputs = data.output_tokens[sl].tolist() if data.output_tokens is not None else None
    offset = 0.0
    while True:
        for i, at in enumerate(base):
            t = (at + offset) / k
            if t >= end_s:
                return
            yield (
                t,
                names[codes[i]] if codes is not None else None,
                None,
                inputs[i] if inputs is not None else -1,
                outputs[i] if outputs is not None else -1,
            )
        if not trace.loop or length <= 0:
            return
        offset += length


def plan(workload: Workload, end_s: float, arrivals_rng: np.random.Generator, tokens_rng: np.random.Generator) -> Iterator[Planned]:
    """Every request of an open loop with ``uses_plan(workload)``, in time order, below ``end_s``."""
    if workload.mode == "trace":
        yield from trace_plan(workload, end_s)
        return
    wl = time_scaled(workload)
    tokens = TokenSampler(wl.tokens, tokens_rng) if wl.tokens is not None else None
    if wl.replay:
        for at, endpoint, class_name in sorted(wl.replay, key=lambda r: r[0]):  # stable: a burst keeps its order
            if at >= end_s:
                return
            inp, out = tokens() if tokens is not None else (-1, -1)
            yield at, endpoint, class_name, inp, out
        return
    for t in arrival_times(wl, end_s, arrivals_rng):
        inp, out = tokens() if tokens is not None else (-1, -1)
        yield t, None, None, inp, out
