"""``gwsim calibrate profile --gateway litellm``: what LiteLLM's proxy costs on this machine.

A LiteLLM proxy with one worker is one Python thread (an asyncio event loop on uvloop) that
spends CPU on every request (authentication, routing, the OpenAI client, building the reply,
its logging callbacks) and more on every failed upstream call (the exception, the cooldown
bookkeeping, the retry).  It shares the machine's cores with the load generator, the
emulated providers and whatever else runs there.  This module measures those costs with
the real proxy in front of an emulated provider that answers in a fixed time:

* a run at a quarter of the proxy's knee where every request makes one upstream call: the
  proxy's, the load generator's and the emulator's CPU per request from ``/proc``, the other
  work on the machine meanwhile, and the latency beyond the provider's fixed time, whose
  spread from request to request is the spread of the proxy's CPU per request (kept as
  samples) and whose rare long delays are the proxy's stalls (its thread busy for 0.5-0.8 s
  at once, seen once in about 1,200 requests on this machine; a full garbage collection of
  its large heap is the likely cause, not confirmed);
* a run where the provider answers 503 to half of the calls and the router retries: the
  proxy's CPU per failed call, from the difference to the first run per call made;
* a run at 20 req/s whose provider times are spread so that each reply comes back around the
  next request's arrival: a reply whose work is under way when a new request reaches the proxy
  waits for the new request's first step, one that comes during that step waits the rest of it;
  the step's length is read off those waits (``first_step``; 4.0 ms of the 10 ms before the call
  on 2026-12-07);
* the built-in engine's burst run: the load generator's CPU to send one request.

The result is a profile TOML (as ``gwsim calibrate profile`` writes for the built-in
gateway) whose ``[machine]`` table puts the proxy's costs on the gateway's event loop:
``gateway_cpu`` per request and ``gateway_hop_cpu`` per upstream call, so that a request
whose calls all succeed at the first try costs what the first run measured and each failed
call adds what the second measured, and ``gateway_loop_shared``: the proxy's event loop
interleaves the requests it holds (its work per request is many short steps between awaits),
which the simulator models as processor sharing among them, and ``gateway_replies_first``:
its work on a reply is a few long steps that run ahead of the new requests' short ones, and
``gateway_first_step``: the first of a new request's steps is long and runs ahead of everything.  (Measured
at 22 req/s against the emulator's log of when each call arrived and left: a reply that came
back while the next request was being parsed took 1.5 ms longer than the others, the next
request 4.0 ms, where sharing the loop evenly would delay both by about the reply's 4 ms.)
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gwsim.calibration.profile import (
    CpuSampler, Profile, _burst_send_gap, _settle_s, _timer_lags, less_mean, timer_lateness_table,
)

#: The emulated provider's fixed answer time: what is measured is the time beyond it.
PROVIDER_S = 0.020
#: The share of the second run's calls answered 503 (the router retries them).
ERROR_SHARE = 0.5
RETRIES = 6

_SCENARIO = """\
[run]
name = "litellm-profile-{kind}"
duration = "{duration}s"
warmup = "0s"
drain = "5s"
replications = 1
seed = 17

[workload]
arrivals = {{ process = "constant", rate = "{rate}/s" }}
mix = {{ chat = 1.0 }}

[endpoints.chat]
kind = "chat_completions"
model_selection = false
classes = [{{ name = "chat", model = "m", output_tokens = {{ dist = "deterministic", value = 20 }} }}]

[providers.p]
latency = {{ model = "plain", time = {provider} }}
{errors}

[router]
strategy = "simple-shuffle"
num_retries = {retries}
groups.m.deployments = [{{ provider = "p" }}]
"""


#: The rate of the run whose replies land around the next request's arrival (first_step).
COLLIDE_RATE = 20.0
#: The first step is kept when its fit is this much (a share of the mean absolute error) better
#: than no step at all; below that the data do not show one.
MIN_STEP_GAIN = 0.10

#: A request delayed this much beyond the run's median is part of a stall of the proxy's thread.
STALL_EXCESS_S = 0.150
#: Delayed requests further apart than this belong to different stalls.
STALL_GAP_S = 1.0


def per_request_cpu(excess: np.ndarray, gateway_s: float, stall_lengths: list[float]) -> tuple[dict, float, float, np.ndarray]:
    """The proxy's CPU per request beyond its upstream calls, as a distribution table: on a quiet
    machine at a quarter of the knee, the latency a request's CPU adds varies from request to
    request by as much as that CPU does (a request waits for little else), so the samples are
    ``gateway_s`` plus each undelayed request's latency beyond their mean (none below zero);
    and, in a share of requests as the stalls were seen, that plus a stall.
    Returns (the table, its steady mean, the mean stall, the samples)."""
    stall_share = len(stall_lengths) / max(len(excess), 1)
    stall_s = float(np.mean(stall_lengths)) if stall_lengths else 0.0
    steady = max(gateway_s - stall_share * stall_s, 0.0)  # the stalls' CPU was counted with the rest
    base = float(np.median(excess))
    clean = excess[excess - base <= STALL_EXCESS_S]
    # (where that would go below zero, the samples are shifted so their mean stays ``steady``)
    samples = less_mean(clean, float(clean.mean()) - steady) if clean.mean() > steady else steady + clean - clean.mean()
    table: dict = {"dist": "empirical", "file": "@gateway_cpu", "column": "seconds"}
    if stall_lengths:
        table = {"dist": "mixture", "components": [
            {"weight": 1.0 - stall_share, "of": table},
            {"weight": stall_share, "of": {"dist": "deterministic", "value": steady + stall_s}},
        ]}
    return table, steady, stall_s, samples


def stalls(arrived_at: np.ndarray, excess: np.ndarray) -> list[float]:
    """The proxy's thread stalls now and then (seen here: 0.5-0.8 s of CPU at once, about once
    a minute, all requests behind it waiting): the length of each stall, as the largest delay
    beyond the median among requests delayed by more than ``STALL_EXCESS_S`` that arrived
    within ``STALL_GAP_S`` of each other."""
    order = np.argsort(arrived_at)
    at, ex = np.asarray(arrived_at)[order], np.asarray(excess)[order]
    base = float(np.median(ex)) if ex.size else 0.0
    late = ex - base > STALL_EXCESS_S
    out: list[float] = []
    last = -np.inf
    for t, delay in zip(at[late], ex[late] - base):
        if t - last > STALL_GAP_S:
            out.append(float(delay))
        else:
            out[-1] = max(out[-1], float(delay))
        last = t
    return out


@dataclass
class ProxyRun:
    requests: int  # arrivals inside the CPU window
    calls_per_request: float  # upstream calls the provider saw per request (the whole run)
    cpu: dict[str, float]  # process -> CPU seconds in the window (+ machine, self, wall)
    background: float
    timer_lag: list[tuple[float, float]]
    excess: np.ndarray  # latency beyond the provider's fixed time, per successful request (s)
    arrived_at: np.ndarray  # of those requests (run time, s)
    before_call: np.ndarray  # from each one-call request's send to the provider seeing its call (s)
    after_call: np.ndarray  # from the provider's reply to the load generator holding it (s)
    speed: float | None = None  # the speed probe's mean meanwhile (s; gwsim.calibration.speed)
    #: each one-call request's reply (as the provider sent it) against the next request's send (s)
    reply_offset: np.ndarray = field(default_factory=lambda: np.zeros(0))


def call_phases(sent_at: np.ndarray, finished_at: np.ndarray, calls_at: np.ndarray, with_offsets: bool = False):
    """How long each request spent before its upstream call reached the provider and after the
    provider replied, from the load generator's instants (``sent_at``, ``finished_at``) and the
    emulator's log of its calls' (arrived, left) run times.  A request's call is the first one
    to arrive after its send and before the next request's send (the runs here are at a
    fraction of the knee, so a request's call comes before the next request leaves); requests
    without one are left out.  Returns (before, after) in seconds, and with ``with_offsets`` each
    reply's instant against the next request's send (the last request's: inf)."""
    order = np.argsort(sent_at)
    sent, fin = np.asarray(sent_at, float)[order], np.asarray(finished_at, float)[order]
    calls = np.asarray(calls_at, float).reshape(-1, 2)
    calls = calls[np.argsort(calls[:, 0])]
    idx = np.searchsorted(calls[:, 0], sent)
    nxt = np.append(sent[1:], np.inf)
    ok = idx < len(calls)
    ok[ok] &= calls[idx[ok], 0] < nxt[ok]
    ok[ok] &= np.isfinite(calls[idx[ok], 1]) & (calls[idx[ok], 1] <= fin[ok])
    before, after = calls[idx[ok], 0] - sent[ok], fin[ok] - calls[idx[ok], 1]
    if with_offsets:
        return before, after, calls[idx[ok], 1] - nxt[ok]
    return before, after


def first_step(offset: np.ndarray, after: np.ndarray) -> tuple[float, float, float]:
    """The length of the proxy's first step on a new request, from replies timed to land around
    the next request's arrival (``offset``: the reply's instant against the next send; ``after``:
    from the reply to the load generator holding it; seconds).  The proxy's loop runs each ready
    callback to its next await, and the new request's first step runs to its end: a reply whose
    work is under way when the request arrives waits all of it (``h``), one that comes during it
    waits the rest.  So ``after`` is a baseline plus ``h`` for offsets in ``[delta - a, delta)``,
    ``h - (offset - delta)`` for ``[delta, delta + h)``, nothing elsewhere; ``delta`` (the new
    request reaching the loop after its send) and ``a`` (the reply's own work) are fitted with it,
    by least absolute error on a grid.  Returns (h, delta, the mean absolute error's fall against
    the baseline alone, as a share)."""
    off, aft = np.asarray(offset, float), np.asarray(after, float)
    keep = np.isfinite(off) & np.isfinite(aft)
    off, aft = off[keep], aft[keep]
    if off.size < 50:
        return 0.0, 0.0, 0.0
    flat = float(np.mean(np.abs(aft - np.median(aft))))
    best = (flat, 0.0, 0.0)
    for h in np.arange(0.25e-3, 15e-3, 0.25e-3):
        for delta in np.arange(-3e-3, 4.01e-3, 0.25e-3):
            x = off - delta
            for a in np.arange(0.0, 10.01e-3, 0.5e-3):
                extra = np.where((x >= -a) & (x < 0), h, 0.0) + np.where((x >= 0) & (x < h), h - x, 0.0)
                rest = aft - extra
                loss = float(np.mean(np.abs(rest - np.median(rest))))
                if loss < best[0]:
                    best = (loss, float(h), float(delta))
    return best[1], best[2], (1.0 - best[0] / flat) if flat > 0 else 0.0


def before_call_share(before: np.ndarray, after: np.ndarray, send_s: float, read_s: float, upstream_s: float) -> float:
    """The share of the proxy's own time per request spent before its upstream call leaves:
    the mean time before the provider sees the call, less the client's send and the
    emulator's half of its CPU (reading the call), against the same after the reply, less
    the emulator's other half (writing it) and the client's read.  Loopback and wake-ups are
    about equal on both sides and are left in."""
    pre = max(float(np.mean(before)) - send_s - upstream_s / 2, 0.0) if len(before) else 0.0
    post = max(float(np.mean(after)) - read_s - upstream_s / 2, 0.0) if len(after) else 0.0
    return 0.5 if pre + post <= 0 else pre / (pre + post)


def _proxy_run(kind: str, errors: str, duration_s: float, rate: float, redis_url: str, provider: str | None = None) -> ProxyRun:
    from gwsim.litellm.proxy import launcher_for
    from real_engine.measure import measure

    text = _SCENARIO.format(kind=kind, duration=duration_s, rate=rate, errors=errors, retries=RETRIES,
                            provider=provider or f'{{ dist = "deterministic", value = "{PROVIDER_S * 1e3:g}ms" }}')
    sampler = CpuSampler()
    with tempfile.TemporaryDirectory(prefix="gwsim-litellm-profile-") as d:
        path = Path(d) / f"litellm_{kind}.toml"
        path.write_text(text)
        launcher = launcher_for(str(path))
        sampler.start()
        try:
            result = measure(str(path), [], duration_s=duration_s, redis_url=redis_url, gateway=launcher)
        finally:
            sampler.stop()
    df = result.frame()
    settle = max(_settle_s(duration_s), 5.0)  # the proxy's first requests load its OpenAI client
    ok = df.loc[(df["outcome"] == "ok") & (df["arrived_at"] >= settle)]
    if len(ok) < 10:
        raise RuntimeError(f"LiteLLM profile run {kind!r}: only {len(ok)} successful requests")
    lo, hi = result.t0 + settle, result.t0 + duration_s - 0.2
    cpu = sampler.window(lo, hi)
    if "gateway" not in cpu:
        raise RuntimeError("LiteLLM profile: the proxy's process was not found under /proc")
    arrived = df["arrived_at"].to_numpy()
    requests = int(((arrived >= lo - result.t0) & (arrived < hi - result.t0)).sum())
    provider = ((result.emulator_stats or {}).get("providers") or {}).get("p") or {}
    calls = float(provider.get("requests", 0)) / max(len(df), 1)
    one_call = ok.loc[ok["attempts"] == 1] if "attempts" in ok.columns else ok
    before, after, offset = call_phases(one_call["started_at"].to_numpy(), one_call["finished_at"].to_numpy(),
                                        np.array(provider.get("calls_at") or [], dtype=float), with_offsets=True)
    return ProxyRun(max(requests, 1), calls, cpu, sampler.background(lo, hi), _timer_lags(result),
                    ok["latency_s"].to_numpy() - PROVIDER_S, ok["arrived_at"].to_numpy(), before, after,
                    sampler.speed(lo, hi), offset)


def measure_litellm_profile(*, duration_s: float = 120.0, rate: float = 10.0, redis_url: str | None = None) -> Profile:
    """The proxy's costs on this machine (see the module docstring)."""
    from real_engine import settings

    redis_url = settings.redis_url(redis_url)
    one = _proxy_run("ok", "", duration_s, rate, redis_url)
    failing = _proxy_run("errors", f'errors = {{ "503" = {ERROR_SHARE} }}', max(duration_s / 2, 20.0), rate, redis_url)
    # Replies timed to land around the next request's arrival: at COLLIDE_RATE, a provider time
    # spread so that offsets run from before the next send to well after its first step.
    interval, b = 1.0 / COLLIDE_RATE, float(np.median(one.before_call)) if len(one.before_call) else 0.0
    low, high = max(interval - b - 0.012, 0.002), max(interval - b + 0.016, 0.010)
    collide = _proxy_run("collide", "", max(duration_s / 2, 30.0), COLLIDE_RATE, redis_url,
                         provider=f'{{ dist = "uniform", low = "{low * 1e3:.1f}ms", high = "{high * 1e3:.1f}ms" }}')
    step_s, step_delta, step_gain = first_step(collide.reply_offset, collide.after_call)
    send_gap = _burst_send_gap(min(duration_s, 12.0), redis_url)
    cores = os.cpu_count() or 1

    def per_request(run: ProxyRun, name: str) -> float:
        return run.cpu.get(name, 0.0) / run.requests

    proxy_ok = per_request(one, "gateway")
    extra_calls = failing.calls_per_request - one.calls_per_request
    per_failed_call = (per_request(failing, "gateway") - proxy_ok) / extra_calls if extra_calls > 0.1 else 0.0
    # gateway_cpu + k * gateway_hop_cpu for k calls: proxy_ok at k = 1, each failed call more
    hop = min(max(per_failed_call, 0.0), proxy_ok)
    gateway = proxy_ok - hop
    client = (per_request(one, "loadgen") + per_request(failing, "loadgen")) / 2
    upstream = (one.cpu.get("emulators", 0.0) / (one.requests * one.calls_per_request)
                if one.calls_per_request > 0 else 0.0)
    background = (one.background + failing.background) / 2
    slow = max(1.0, (1.0 + background) / cores)
    lateness, lag_mean, lag50, lag99 = timer_lateness_table(one.timer_lag + failing.timer_lag)
    stall_lengths = stalls(one.arrived_at, one.excess)
    per_request, steady, stall_s, samples = per_request_cpu(one.excess, gateway, stall_lengths)
    send = min(send_gap, client / 2)
    before_share = before_call_share(one.before_call, one.after_call, send, client / 2 - send, upstream)
    # Everything beyond the CPU the simulator charges on the path (the client's half before the
    # reply is timed, the proxy's, the emulator's) and the timer's lateness: loopback, wake-ups.
    on_path = (client / 2 + gateway + hop + upstream) * slow + lag_mean
    request_latency = less_mean(one.excess, on_path)
    values = dict(
        cores=float(cores), background=background, client_cpu=client, client_send_cpu=min(send_gap, client / 2),
        gateway_cpu=gateway, gateway_hop_cpu=hop, upstream_cpu=upstream,
        _timer_lag_p50=lag50, _timer_lag_p99=lag99,
        _one_hop_latency=float(np.median(one.excess)) + PROVIDER_S,
        _request_latency_p50=float(np.median(request_latency)), _request_latency_p99=float(np.percentile(request_latency, 99)),
        _proxy_cpu_per_request=proxy_ok, _proxy_cpu_per_failed_call=per_failed_call,
        _calls_per_request_failing=failing.calls_per_request, _stalls=float(len(stall_lengths)), _stall_s=stall_s,
        _proxy_cpu_sd=float(np.std(samples)),
        _before_call_p50=float(np.median(one.before_call)) if len(one.before_call) else 0.0,
        _after_call_p50=float(np.median(one.after_call)) if len(one.after_call) else 0.0,
    )
    step = step_s if step_gain >= MIN_STEP_GAIN else 0.0
    values["_first_step"] = step
    speeds = [run.speed for run in (one, failing) if run.speed is not None]
    if speeds:
        values["_speed_probe"] = float(np.mean(speeds))
    notes = [f"LiteLLM's proxy, one worker: {proxy_ok * 1e3:.2f} ms CPU per request with one call, "
             f"{per_failed_call * 1e3:.2f} ms per failed call ({failing.calls_per_request:.2f} calls per request "
             f"with {ERROR_SHARE:.0%} 503s)"]
    if on_path > float(one.excess.mean()):
        notes.append(f"the CPU charged on the path ({on_path * 1e3:.2f} ms) exceeds the mean latency beyond the "
                     f"provider ({one.excess.mean() * 1e3:.2f} ms): part of the proxy's CPU is spent after its reply")
    try:
        notes.append("load average at the end: " + " ".join(open("/proc/loadavg").read().split()[:3]))
    except OSError:
        pass
    notes.append(f"{before_share:.0%} of the proxy's time per request before its upstream call leaves "
                 f"({len(one.before_call)} requests: {np.median(one.before_call) * 1e3 if len(one.before_call) else 0:.1f} ms "
                 f"before, {np.median(one.after_call) * 1e3 if len(one.after_call) else 0:.1f} ms after, medians)")
    notes.append(f"the proxy's first step on a new request: {step_s * 1e3:.1f} ms{'' if step else ' (not kept)'} "
                 f"({len(collide.reply_offset)} replies timed around the next request's arrival at {COLLIDE_RATE:g} req/s, "
                 f"the step's fit {step_gain:.0%} below a flat one, the request reaching the loop {step_delta * 1e3:+.1f} ms "
                 f"after its send)")
    notes.append(f"{len(stall_lengths)} stall(s) of the proxy's thread in {len(one.excess)} requests"
                 + (f" ({', '.join(f'{x * 1e3:.0f}' for x in stall_lengths)} ms)" if stall_lengths else ""))
    return Profile(values, request_latency, np.zeros(1), notes, lateness,
                   {"gateway_cpu": per_request, "gateway_loop_shared": True, "gateway_replies_first": True,
                    "gateway_cpu_before_call": round(before_share, 3),
                    "gateway_first_step": {"dist": "deterministic", "value": round(step, 6)}},
                   {"gateway_cpu": samples})
