"""The load generator: a trustworthy HTTP load tester for the gateway, in its own process.

It plays the scenario's workload against a target URL and writes one
``RequestRecord`` per request, the same records the simulator produces.

Open loop (``workload.mode = "open"``): requests are due at the instants of the arrival
process (poisson, constant or burst, scaled over time by ``rate_profile``; gamma, MMPP and
request traces as ``simulator.arrivals`` plans them for both executors), whether or
not earlier ones have been answered.  Latency is measured from the *due* time by default
(``latency_from = "scheduled"``) so that a slow system cannot hide its queueing behind a
slow client (no coordinated omission); the generator's own lateness (send lag = when the
request's task began - when it was due) is recorded and late sends are counted.
Closed loop (``"closed"``): ``users`` each send, wait for the answer, think, repeat.

The client cap (``concurrency_cap``, a semaphore; ``started_at`` is when a request got
past it) and client timeout (outcome ``client_timeout``, status 0) are the client's, as
in the seed's load tester.  Endpoints are picked by ``mix``, payload classes by weight,
cache hits by the class probabilities; each source has its own random stream.  Those streams
are the simulator's (``simulator.rng``) for the run's seed and replication: the arrivals and the
endpoint mix of a measurement are those of the simulator's replication with the same seed and
number (common random numbers), so a prediction and a measurement differ by the gateway, not by
the draw.

Every request sent is accounted for exactly once: a record with outcome ``ok`` or a
failure reason, and requests still in flight when the run ends get ``unfinished``.

A class that streams (``stream = true``) asks for server-sent events and reads them as they
come: ``ttft_s`` runs from the request's base instant (as ``latency_s``) to the first chunk
with content, ``tpot_s`` is (last content chunk - first) / (output tokens - 1) and
``itl_max_s`` the largest gap between content chunks (``simulator.policies.streaming``);
``output_tokens`` is the reply's ``usage`` (of any reply), ``input_tokens`` the request's own
count.  The built-in gateway's closing ``: gwsim {...}`` comment gives the outcome and the
stage times; another gateway's stream is ``ok`` when it ends with ``data: [DONE]`` and no
error event.

CLI: ``python -m real_engine.loadgen --scenario PATH [--set k=v]... --target URL --t0 T
--seed S --duration D --out FILE [--progress-fd N] [--nice -5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
import numpy as np

from real_engine.clock import DEFAULT_NAP_S, DEFAULT_SPIN_S, RunClock, sleep_until_monotonic
from simulator.rng import Streams as ReplicationStreams
from simulator.arrivals import plan, time_scaled, uses_plan
from simulator.policies.routing import client_outcome, deployment_providers
from simulator.policies.streaming import figures_of
from simulator.records import OUTCOMES, STAGES, RequestRecord, records_frame
from simulator.scenario import BurstArrivals, ConstantArrivals, PoissonArrivals, Scenario, Workload, load_scenario
from simulator.units import UnitError, parse_duration
from real_engine.process import run_event_loop, setup_logging

log = logging.getLogger(__name__)

__all__ = [
    "LATE_AFTER_S",
    "LoadGenerator",
    "Planned",
    "arrival_times",
    "accounting_path",
    "build_body",
    "canonical_prompt",
    "main",
    "outcome_for_status",
    "parse_server_timing",
    "renice",
    "request_headers",
    "run_load",
    "write_results",
]

#: A send more than this late counts as a late send.
LATE_AFTER_S = 0.002
#: Before a send at least twice this long after the previous one, the generator stops sleeping
#: on the event loop's timer this long before it (instead of ``spin_s``) and naps instead
#: (``sleep_until_monotonic``): a timer after an idle stretch wakes up a few ms late (epoll's
#: millisecond timeouts, the kernel's wake-up on a shared VM), which at sparse traffic (a
#: trace's 5 req/s) made the send lag's P99 3-5 ms with the usual 0.5 ms of napping and
#: 0.6-0.9 ms with 5 ms.  Sends close together keep the usual spin: naps filling the gaps
#: between sends 2 ms apart delay reading the replies.
IDLE_SPIN_S = 0.005
#: Wait for requests in flight after a stop signal when the workload has no client timeout.
STOP_GRACE_S = 5.0
#: Connector limit when the workload has no (or a smaller) client cap: never the bottleneck.
CONNECTOR_LIMIT = 1000

_STAGE_BY_NAME = {s.removesuffix("_s"): s for s in STAGES}
_OUTCOME_SET = frozenset(OUTCOMES)


# --------------------------------------------------------------------------- arrivals


def _next_profile_change(workload: Workload, t: float) -> float | None:
    later = [p.at for p in workload.rate_profile if p.at > t]
    return min(later) if later else None


def arrival_times(workload: Workload, duration_s: float, rng: np.random.Generator) -> Iterator[float]:
    """Due times (seconds from the run start, ascending, below ``duration_s``) of an open loop.

    poisson: a non-homogeneous Poisson process with rate ``rate * factor_at(t)``, drawn
    by thinning (exact for steps and ramps).  constant: evenly spaced at the current
    rate, first at 0.  burst: ``size * factor`` requests at 0, ``every``, ``2 every`` ...
    (fractions carried over to the next burst so the mean is exact).  A factor of 0
    pauses arrivals until the profile raises it again.
    """
    arrivals = workload.arrivals
    if arrivals is None:
        raise ValueError("expected an open-loop workload with arrivals")
    factors = [p.factor for p in workload.rate_profile] + [1.0]
    if isinstance(arrivals, PoissonArrivals):
        fmax = max(factors)
        lam = arrivals.rate * fmax
        if lam <= 0:
            return
        t = 0.0
        while True:
            t += float(rng.exponential(1.0 / lam))
            if t >= duration_s:
                return
            f = workload.factor_at(t)
            if f >= fmax or rng.random() * fmax < f:
                yield t
    elif isinstance(arrivals, ConstantArrivals):
        if arrivals.rate <= 0:
            return
        # Times are anchor + n / rate within a stretch of constant rate (no summed
        # rounding error: 40/s for 1.2 s gives exactly 48), re-anchored when it changes.
        t = 0.0
        anchor, n, rate = 0.0, 0, -1.0
        while t < duration_s:
            f = workload.factor_at(t)
            if f <= 0:
                nxt = _next_profile_change(workload, t)
                if nxt is None:
                    return
                t = nxt
                continue
            yield t
            if arrivals.rate * f != rate:
                anchor, n, rate = t, 0, arrivals.rate * f
            n += 1
            t = anchor + n / rate
    elif isinstance(arrivals, BurstArrivals):
        carry = 0.0
        k = 0
        while True:
            t = k * arrivals.every
            if t >= duration_s:
                return
            carry += arrivals.size * workload.factor_at(t)
            n = int(math.floor(carry + 1e-9))
            carry -= n
            for _ in range(n):
                yield t
            k += 1
    else:  # pragma: no cover - the schema admits only the three
        raise ValueError(f"unknown arrival process {arrivals!r}")


# --------------------------------------------------------------------------- payloads


@dataclass(frozen=True, slots=True)
class Planned:
    """One request as the generator decided it, before sending."""

    id: int
    endpoint: str
    request_class: str
    due: float  # run time the request is due
    semantic_hit: bool
    prompt_hit: bool
    input_tokens: int = -1  # the request's own token counts (a trace's, or workload.tokens'); -1: none
    output_tokens: int = -1


def canonical_prompt(endpoint: str, class_name: str) -> str:
    """The prompt the gateway seeds in its caches for a class (a hit sends exactly this)."""
    return f"gwsim:{endpoint}:{class_name}"


def build_body(endpoint: str, class_name: str, request_id: int, semantic_hit: bool, request_bytes: int,
               input_tokens: int = -1, output_tokens: int = -1, model: str | None = None, stream: bool = False) -> bytes:
    """OpenAI-style body; the prompt is canonical on a semantic hit, with ``" #<id>"`` on a miss.

    ``model``: the class's model name (a model group of an external gateway such as LiteLLM);
    ``"auto"`` when the class names none (the built-in gateway's model selection chooses).

    A request with its own token counts (a trace's) asks for its output tokens
    (``max_tokens``) and carries both counts as ``gwsim_output_tokens`` and
    ``gwsim_input_tokens``, which the gateway passes on and the emulated provider generates.
    Padded with a ``"user"`` field (so the prompt, hence cache keys, stay as they are)
    to exactly ``request_bytes`` when the body is not already longer.
    """
    prompt = canonical_prompt(endpoint, class_name)
    if not semantic_hit:
        prompt += f" #{request_id}"
    body: dict[str, Any] = {"model": model or "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 256}
    if stream:
        body["stream"] = True
    if output_tokens >= 0:
        body["max_tokens"] = max(1, output_tokens)
        body["gwsim_output_tokens"] = output_tokens
    if input_tokens >= 0:
        body["gwsim_input_tokens"] = input_tokens
    raw = json.dumps(body, separators=(",", ":"))
    pad = request_bytes - len(raw) - len(',"user":""')
    if pad >= 0:
        raw = raw[:-1] + ',"user":"' + "x" * pad + '"}'
    return raw.encode()


#: An API key for an external gateway: sent as ``Authorization: Bearer KEY`` unless a header says otherwise.
API_KEY_ENV = "GWSIM_API_KEY"
#: Headers handed from ``gwsim measure`` to the load generator's process (JSON object): in the
#: environment rather than on the command line, where other users could read a key.
HEADERS_ENV = "GWSIM_LOADGEN_HEADERS"


def request_headers(given: list[str] | tuple[str, ...] = (), environ: dict[str, str] | None = None) -> dict[str, str]:
    """Headers sent with every request: ``given`` ("Name: value" each, as curl's ``-H``), those
    in ``$GWSIM_LOADGEN_HEADERS``, and ``Authorization: Bearer $GWSIM_API_KEY`` when no
    Authorization header is given.  ValueError with one line on a malformed header."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    raw = env.get(HEADERS_ENV, "")
    if raw:
        try:
            passed = json.loads(raw)
        except ValueError:
            passed = None
        if not isinstance(passed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in passed.items()):
            raise ValueError(f"${HEADERS_ENV}: expected a JSON object of header names to strings, got {raw[:40]!r}")
        out.update(passed)
    for item in given:
        name, sep, value = str(item).partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or any(c.isspace() for c in name) or "\n" in value or "\r" in value:
            shown = str(item).split(":", 1)[0][:40]
            raise ValueError(f"--header {shown!r}...: expected 'Name: value' on one line, got no name or no ':'")
        out[name] = value
    key = env.get(API_KEY_ENV, "").strip()
    if key and not any(k.lower() == "authorization" for k in out):
        out["Authorization"] = f"Bearer {key}"
    return out


class _Chooser:
    """Endpoint, class and cache draws, each from its own stream."""

    def __init__(self, scenario: Scenario, streams: ReplicationStreams):
        mix = [(name, share) for name, share in scenario.workload.mix.items() if share > 0]
        self._endpoints = [name for name, _ in mix]
        p = np.array([share for _, share in mix], dtype=float)
        self._ep_cum = np.cumsum(p / p.sum())
        self._classes: dict[str, tuple[list[Any], np.ndarray]] = {}
        for name in self._endpoints:
            classes = list(scenario.endpoints[name].classes)
            w = np.array([c.weight for c in classes], dtype=float)
            self._classes[name] = (classes, np.cumsum(w / w.sum()))
        self._scenario = scenario
        self._mix = streams["mix"]
        self._cls = streams["classes"]
        self._cache = streams["cache"]
        self._inputs = streams["input_tokens"]  # a class's input_tokens, drawn as the simulator draws them

    def class_named(self, endpoint: str, name: str):
        for cls in self._scenario.endpoints[endpoint].classes:
            if cls.name == name:
                return cls
        return self._scenario.endpoints[endpoint].classes[0]

    @staticmethod
    def _pick(cum: np.ndarray, u: float) -> int:
        return min(int(np.searchsorted(cum, u, side="right")), len(cum) - 1)

    def plan(self, request_id: int, due: float, endpoint: str | None = None, input_tokens: int = -1,
             output_tokens: int = -1) -> tuple[Planned, Any]:
        """``endpoint``: the one a trace names (else drawn from the mix); tokens: the request's own."""
        if endpoint is None:
            endpoint = self._endpoints[self._pick(self._ep_cum, self._mix.random())]
        elif endpoint not in self._classes:  # named by a trace, not in the mix
            classes = list(self._scenario.endpoints[endpoint].classes)
            w = np.array([c.weight for c in classes], dtype=float)
            self._classes[endpoint] = (classes, np.cumsum(w / w.sum()))
        classes, cum = self._classes[endpoint]
        cls = classes[self._pick(cum, self._cls.random())]
        u_sem, u_prompt = self._cache.random(2)
        semantic = bool(u_sem < cls.semantic_cache_hit)
        prompt = bool(cls.prompt_cache_opt_in and u_prompt < cls.prompt_cache_hit)
        if input_tokens < 0 and cls.input_tokens is not None:
            input_tokens = max(0, round(float(cls.input_tokens.sample(self._inputs))))
        return Planned(request_id, endpoint, cls.name, due, semantic, prompt, input_tokens, output_tokens), cls


# --------------------------------------------------------------------------- replies


def parse_server_timing(value: str) -> dict[str, float]:
    """``"cpu;dur=1.2, cache;dur=3.4"`` -> ``{"cpu_s": 0.0012, "cache_s": 0.0034}`` (record stages only)."""
    out: dict[str, float] = {}
    for entry in value.split(","):
        name, _, params = entry.strip().partition(";")
        stage = _STAGE_BY_NAME.get(name.strip())
        if stage is None:
            continue
        for param in params.split(";"):
            key, _, val = param.strip().partition("=")
            if key == "dur":
                try:
                    out[stage] = float(val.strip('"')) / 1e3
                except ValueError:
                    pass
    return out


def outcome_for_status(status: int) -> str:
    """Outcome from the status alone (an external gateway without X-Gwsim headers, such as LiteLLM's
    proxy, whose 408 is its call's timeout): ``simulator.policies.routing.client_outcome``."""
    return client_outcome(status)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _flag(headers, name: str) -> bool:
    return headers.get(name, "0").strip() in ("1", "true", "True")


class _Seen:
    """What the client saw of one reply's body: its content chunks' arrival (a stream), its
    usage, an error event, the gateway's closing comment."""

    __slots__ = ("stream", "chunks", "tokens", "error", "done", "closing")

    def __init__(self, stream: bool, payload: bytes | None = None) -> None:
        self.stream = stream
        self.chunks: list[tuple[float, int]] = []
        self.tokens = 0  # the usage's completion tokens (0: none given)
        self.error = ""
        self.done = False
        self.closing: Any = None
        if payload:
            self._usage(payload)

    def _usage(self, payload: bytes) -> None:
        if b'"usage"' not in payload:
            return
        try:
            usage = json.loads(payload).get("usage") or {}
            self.tokens = int(usage.get("completion_tokens") or 0)
        except (ValueError, AttributeError, TypeError):
            pass

    def event(self, at: float, data: bytes) -> None:
        try:
            obj = json.loads(data)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj:
            err = obj.get("error")
            self.error = str(err.get("type", "")) if isinstance(err, dict) else "upstream_error"
            return
        try:
            content = obj["choices"][0]["delta"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            content = ""
        if content:
            # tokens in the chunk: the emulated providers' "tok " words, else one per chunk
            self.chunks.append((at, content.count("tok ") or 1))
        usage = obj.get("usage")
        if isinstance(usage, dict):
            try:
                self.tokens = int(usage.get("completion_tokens") or 0)
            except (TypeError, ValueError):
                pass

    def fields(self, base: float) -> dict[str, Any]:
        out: dict[str, Any] = {"stream": self.stream}
        tokens = self.tokens
        if self.stream and self.chunks:
            tpot, itl, counted = figures_of(self.chunks)
            tokens = tokens or (counted if self.done and not self.error else 0)
            out["ttft_s"] = self.chunks[0][0] - base
            if tokens >= 2 and len(self.chunks) >= 2:
                out["tpot_s"] = (self.chunks[-1][0] - self.chunks[0][0]) / (tokens - 1)
            out["itl_max_s"] = itl
        out["output_tokens"] = tokens
        return out


# --------------------------------------------------------------------------- generator


def _percentile_ms(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q) * 1e3) if values else None


class LoadGenerator:
    """One run of the workload against ``target_url``; ``await run()`` -> (records, accounting).

    State (``sent``, ``done``, in flight) is kept apart from the I/O; ``stop()`` ends the
    sending early (a signal), after which requests in flight get ``stop_grace_s``.
    """

    def __init__(
        self,
        scenario: Scenario,
        target_url: str,
        t0: float,
        seed: int,
        duration_s: float | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
        *,
        spin_s: float = DEFAULT_SPIN_S,
        nap_s: float = DEFAULT_NAP_S,
        late_after_s: float = LATE_AFTER_S,
        drain_s: float | None = None,
        progress_interval_s: float = 1.0,
        replication: int = 0,
        headers: dict[str, str] | None = None,
    ):
        self.scenario = scenario
        #: sent with every request (an external gateway's Authorization); see ``request_headers``
        self.extra_headers = dict(headers or {})
        #: a LiteLLM proxy's deployment ids (x-litellm-model-id) -> the provider each calls
        self._deployments = deployment_providers(scenario.router)
        self.workload = scenario.workload
        self.target = target_url.rstrip("/")
        self.clock = RunClock(t0)
        self.duration_s = scenario.run.duration if duration_s is None else float(duration_s)
        self.progress = progress
        self.spin_s = spin_s
        self.nap_s = nap_s
        self.late_after_s = late_after_s
        ct = self.workload.client_timeout
        # Normal end: requests in flight get the scenario's drain, never more than a
        # client timeout (they would have timed out by then anyway).
        self.drain_s = drain_s if drain_s is not None else min(scenario.run.drain, ct + 1.0 if ct else scenario.run.drain)
        self.stop_grace_s = ct if ct else STOP_GRACE_S
        self.progress_interval_s = progress_interval_s
        self.replication = replication
        self._streams = ReplicationStreams(seed, replication)  # the simulator's: see the module docstring
        self._chooser = _Chooser(scenario, self._streams)
        cap = self.workload.concurrency_cap
        self._cap = asyncio.Semaphore(cap) if cap else None
        self._timeout = aiohttp.ClientTimeout(total=ct) if ct else aiohttp.ClientTimeout(total=None)
        self._connector_limit = max(cap or 0, CONNECTOR_LIMIT)
        self._stop = asyncio.Event()
        self._stopped_by_signal = False
        # state
        self.sent = 0
        self.records: list[RequestRecord] = []
        self.ok = 0
        self.lags: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.past_cap = 0  # requests past the client cap, in flight
        self.max_past_cap = 0
        self.connector_waits = 0  # requests that found every connector slot taken
        self._pending: dict[int, Planned] = {}
        self._started: dict[int, tuple[float, float]] = {}  # id -> (task start, past cap)
        self._tasks: set[asyncio.Task] = set()
        self._recent: list[float] = []
        self._session: aiohttp.ClientSession | None = None
        self._bodies: dict[str, Any] = {}

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Stop sending (SIGINT/SIGTERM); in-flight requests get the stop grace."""
        self._stopped_by_signal = True
        self._stop.set()

    @property
    def done(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return (
            f"<LoadGenerator target={self.target} sent={self.sent} done={self.done} ok={self.ok} "
            f"in_flight={self.in_flight} stopped={self._stop.is_set()}>"
        )

    # ------------------------------------------------------------------ run

    async def run(self) -> tuple[list[RequestRecord], dict[str, Any]]:
        connector = aiohttp.TCPConnector(limit=self._connector_limit, limit_per_host=0)
        progress_task = None
        async with aiohttp.ClientSession(connector=connector, timeout=self._timeout) as session:
            self._session = session
            driver = asyncio.ensure_future(self._drive())
            stopper = asyncio.ensure_future(self._stop.wait())
            if self.progress is not None:
                progress_task = asyncio.ensure_future(self._report_progress())
            try:
                await asyncio.wait({driver, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not driver.done():
                    driver.cancel()
                await asyncio.gather(driver, return_exceptions=True)
                if driver.done() and not driver.cancelled() and driver.exception() is not None:
                    raise driver.exception()
                grace = self.stop_grace_s if self._stopped_by_signal else self.drain_s
                await self._drain(grace)
            finally:
                # Also reached when run() itself is cancelled: nothing may outlive it.
                driver.cancel()
                stopper.cancel()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(driver, stopper, *self._tasks, return_exceptions=True)
                if progress_task is not None:
                    progress_task.cancel()
                    await asyncio.gather(progress_task, return_exceptions=True)
                self._mark_unfinished()
                self._session = None
        if self.progress is not None:
            self._emit_progress()
        self.records.sort(key=lambda r: r.id)
        return self.records, self.accounting()

    async def _drive(self) -> None:
        if self.workload.mode == "closed":
            await self._closed_loop()
        else:
            await self._open_loop()

    async def _drain(self, grace: float) -> None:
        """Wait for in-flight requests up to ``grace`` seconds (what is left is unfinished)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)

    def _mark_unfinished(self) -> None:
        now = self.clock.now()
        for rid, planned in sorted(self._pending.items()):
            began, past_cap = self._started.get(rid, (now, now))
            start = past_cap if past_cap is not None else now
            self._add(planned, start, now, "unfinished", 0, client_wait_s=max(0.0, start - began))
        self._pending.clear()

    # ------------------------------------------------------------------ open loop

    async def _open_loop(self) -> None:
        rng = self._streams["arrivals"]
        t0 = self.clock.t0
        nap = self.nap_s
        loop = asyncio.get_running_loop()
        # workload.replay is the simulator's (calibration feeds a measurement back to it)
        wl = self.workload.model_copy(update={"replay": ()}) if self.workload.replay else self.workload
        if uses_plan(wl):  # a trace, gamma or MMPP arrivals, drawn tokens: as the simulator plans them
            previous = -math.inf
            for due, endpoint, _, input_tokens, output_tokens in plan(wl, self.duration_s, rng, self._streams["tokens"]):
                await sleep_until_monotonic(t0 + due, self._spin_before(due - previous), nap)
                previous = due
                planned, cls = self._chooser.plan(self.sent, due, endpoint, input_tokens, output_tokens)
                self._dispatch(loop, planned, cls)
            return
        previous = -math.inf
        for due in arrival_times(time_scaled(wl), self.duration_s, rng):
            await sleep_until_monotonic(t0 + due, self._spin_before(due - previous), nap)
            previous = due
            planned, cls = self._chooser.plan(self.sent, due)
            self._dispatch(loop, planned, cls)

    def _spin_before(self, gap_s: float) -> float:
        """How long before a send ``gap_s`` after the previous one to stop sleeping on the timer."""
        if self.spin_s <= 0:
            return 0.0
        return max(self.spin_s, IDLE_SPIN_S) if gap_s >= 2 * IDLE_SPIN_S else self.spin_s

    def _dispatch(self, loop, planned: Planned, cls) -> asyncio.Task:
        self.sent += 1
        self._pending[planned.id] = planned
        task = loop.create_task(self._send(planned, cls))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ closed loop

    async def _closed_loop(self) -> None:
        users = self.workload.users or 0
        await asyncio.gather(*(self._user(i) for i in range(users)))

    def _active_users(self, t: float) -> int:
        return int(round((self.workload.users or 0) * self.workload.factor_at(t)))

    async def _user(self, index: int) -> None:
        """One user: send, wait for the answer, think, repeat until the run's end."""
        think = self.workload.think_time
        rng = self._streams["think"]
        due = 0.0
        while due < self.duration_s:
            await self.clock.sleep_until(due, spin_s=0)
            if index >= self._active_users(self.clock.now()):
                # Not among the active users now: look again when the profile may change.
                nxt = _next_profile_change(self.workload, self.clock.now())
                due = min(nxt if nxt is not None else self.duration_s, self.clock.now() + 0.1)
                if self.workload.profile_shape == "steps" and nxt is not None:
                    due = nxt
                continue
            planned, cls = self._chooser.plan(self.sent, due)
            task = self._dispatch(asyncio.get_running_loop(), planned, cls)
            # The request runs as its own task so that the run's end (or a stop) leaves
            # it to the drain instead of cancelling it with the user.
            await asyncio.wait({task}, timeout=max(0.0, self.duration_s - self.clock.now()))
            if not task.done():
                return
            due = self.clock.now() + think.sample(rng)

    # ------------------------------------------------------------------ one request

    async def _send(self, planned: Planned, cls) -> None:
        clock = self.clock
        began = clock.now()
        lag = began - planned.due
        self.lags.append(lag if lag > 0 else 0.0)
        self._started[planned.id] = (began, None)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        cap = self._cap
        try:
            if cap is not None:
                await cap.acquire()
            try:
                started = clock.now()
                self._started[planned.id] = (began, started)
                self.past_cap += 1
                self.max_past_cap = max(self.max_past_cap, self.past_cap)
                if self.past_cap > self._connector_limit:
                    self.connector_waits += 1  # this one waits for a connection slot
                try:
                    await self._exchange(planned, cls, began, started)
                finally:
                    self.past_cap -= 1
            finally:
                if cap is not None:
                    cap.release()
        finally:
            self.in_flight -= 1

    async def _exchange(self, planned: Planned, cls, began: float, started: float) -> None:
        ep = self.scenario.endpoints[planned.endpoint]
        stream = ep.streams(cls)
        body = build_body(planned.endpoint, planned.request_class, planned.id, planned.semantic_hit, cls.request_bytes,
                          planned.input_tokens, planned.output_tokens, cls.model, stream)
        headers = {
            **self.extra_headers,
            "Content-Type": "application/json",
            "X-Gwsim-Request-Id": str(planned.id),
            "X-Gwsim-Endpoint": planned.endpoint,
            "X-Gwsim-Class": planned.request_class,
            "X-Gwsim-Prompt-Nonce": "" if planned.prompt_hit else str(planned.id),
        }
        assert self._session is not None
        wait = started - began
        try:
            async with self._session.post(self.target + ep.http_path, data=body, headers=headers) as resp:
                if stream and resp.status == 200 and resp.content_type == "text/event-stream":
                    seen = await self._read_events(resp)
                    self._record_reply(planned, started, self.clock.now(), resp.status, resp.headers, wait, seen)
                    return
                payload = await resp.read()
                finished = self.clock.now()
                self._record_reply(planned, started, finished, resp.status, resp.headers, wait, _Seen(stream, payload))
        except asyncio.TimeoutError:
            self._add(planned, started, self.clock.now(), "client_timeout", 0, client_wait_s=wait)
        except aiohttp.ClientConnectorError:
            self._add(planned, started, self.clock.now(), "connect_error", 0, client_wait_s=wait)
        except aiohttp.ClientError:
            # disconnects, payload errors, ECONNRESET: the connection broke mid-exchange
            self._add(planned, started, self.clock.now(), "reset", 0, client_wait_s=wait)

    async def _read_events(self, resp: aiohttp.ClientResponse) -> "_Seen":
        """Read a server-sent event stream to its end, noting when each content chunk came."""
        seen = _Seen(True)
        now = self.clock.now
        async for line in resp.content:
            if line.startswith(b"data: "):
                data = line[6:].strip()
                if data == b"[DONE]":
                    seen.done = True
                    continue
                seen.event(now(), data)
            elif line.startswith(b": gwsim "):
                try:
                    seen.closing = json.loads(line[8:])
                except ValueError:
                    pass
        return seen

    def _record_reply(self, planned: Planned, started: float, finished: float, status: int, headers, wait: float,
                      seen: "_Seen | None" = None) -> None:
        closing = seen.closing if seen is not None and isinstance(seen.closing, dict) else {}
        outcome = closing.get("outcome") or headers.get("X-Gwsim-Outcome", "")
        if outcome not in _OUTCOME_SET:
            outcome = outcome_for_status(status)
            if seen is not None and seen.stream and seen.chunks and outcome == "ok" and (seen.error or not seen.done):
                outcome = seen.error if seen.error in _OUTCOME_SET else "reset"
        stages = parse_server_timing(str(closing.get("server_timing") or headers.get("Server-Timing", "")))
        stages.pop("client_wait_s", None)
        try:
            attempts = int(headers.get("X-Gwsim-Attempts", "0") or 0)
        except ValueError:
            attempts = 0
        provider = headers.get("X-Gwsim-Provider", "")
        fallback = _flag(headers, "X-Gwsim-Fallback")
        litellm_id = headers.get("x-litellm-model-id")
        if litellm_id is not None and "X-Gwsim-Outcome" not in headers:
            # LiteLLM's proxy: the deployment that answered, its retries and fallbacks
            provider = self._deployments.get(litellm_id, litellm_id)
            retries, fallbacks = _int(headers.get("x-litellm-attempted-retries")), _int(headers.get("x-litellm-attempted-fallbacks"))
            attempts, fallback = 1 + retries + fallbacks, fallbacks > 0
        self._add(
            planned, started, finished, outcome, status,
            provider=provider,
            attempts=attempts,
            fallback_used=fallback,
            selection_fallback=_flag(headers, "X-Gwsim-Selection-Fallback"),
            cache_hit=_flag(headers, "X-Gwsim-Cache-Hit"),
            prompt_cache_hit=_flag(headers, "X-Gwsim-Prompt-Cache-Hit"),
            breaker_state=headers.get("X-Gwsim-Breaker", ""),
            client_wait_s=wait,
            **stages,
            **(seen.fields(self._base(planned, started)) if seen is not None else {}),
        )

    def _base(self, planned: Planned, started: float) -> float:
        return planned.due if self.workload.latency_from == "scheduled" else started

    def _add(self, planned: Planned, started: float, finished: float, outcome: str, status: int, **fields) -> None:
        """Write the one record of a request (later calls for the same id are ignored)."""
        if self._pending.pop(planned.id, None) is None:
            return
        self._started.pop(planned.id, None)
        base = self._base(planned, started)
        fields.setdefault("stream", self.scenario.endpoints[planned.endpoint].streams(
            self._chooser.class_named(planned.endpoint, planned.request_class)))
        fields.setdefault("input_tokens", max(planned.input_tokens, 0))
        rec = RequestRecord(
            id=planned.id, replication=self.replication, endpoint=planned.endpoint,
            request_class=planned.request_class, arrived_at=planned.due, started_at=started,
            finished_at=finished, latency_s=finished - base, outcome=outcome, status_code=status, **fields,
        )
        self.records.append(rec)
        if outcome == "ok":
            self.ok += 1
            self._recent.append(rec.latency_s)

    # ------------------------------------------------------------------ reporting

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval_s)
            self._emit_progress()

    def _emit_progress(self) -> None:
        recent, self._recent = self._recent, []
        line = {
            "t": round(self.clock.now(), 3),
            "sent": self.sent,
            "done": self.done,
            "ok": self.ok,
            "p95_ms": _percentile_ms(recent, 0.95),  # ok replies since the last line
        }
        try:
            self.progress(line)  # type: ignore[misc]
        except Exception:  # a broken progress sink must not end the run
            log.exception("progress callback failed; progress reports stop")
            self.progress = None

    def accounting(self) -> dict[str, Any]:
        failures = Counter(r.outcome for r in self.records if r.outcome != "ok")
        lags = self.lags
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failures": dict(sorted(failures.items())),
            "records": len(self.records),
            "late_sends": sum(1 for x in lags if x > self.late_after_s),
            "late_after_ms": self.late_after_s * 1e3,
            "send_lag_p50_ms": _percentile_ms(lags, 0.5),
            "send_lag_p99_ms": _percentile_ms(lags, 0.99),
            "send_lag_max_ms": max(lags) * 1e3 if lags else None,
            "max_in_flight": self.max_in_flight,
            "max_past_cap": self.max_past_cap,
            "connector_limit": self._connector_limit,
            "connector_waits": self.connector_waits,
            "duration_s": self.duration_s,
            "stopped_early": self._stopped_by_signal,
            "mode": self.workload.mode,
            "latency_from": self.workload.latency_from,
        }


async def run_load(
    scenario: Scenario,
    target_url: str,
    t0: float,
    seed: int,
    duration_s: float | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> tuple[list[RequestRecord], dict[str, Any]]:
    """Run the scenario's workload against ``target_url``; return (records sorted by id, accounting).

    ``options`` go to ``LoadGenerator`` (``spin_s``, ``late_after_s``, ``drain_s``,
    ``progress_interval_s``, ``replication``).
    """
    return await LoadGenerator(scenario, target_url, t0, seed, duration_s, progress, **options).run()


# --------------------------------------------------------------------------- files and CLI


def accounting_path(out: str | Path) -> Path:
    """``FILE.accounting.json`` next to the records file."""
    p = Path(out)
    return p.with_name(p.name + ".accounting.json")


def write_results(out: str | Path, records: list[RequestRecord], accounting: dict[str, Any]) -> None:
    """Records as Parquet to ``out`` and the accounting JSON next to it, each written atomically."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    records_frame(records).to_parquet(tmp, index=False)
    os.replace(tmp, out)
    acc = accounting_path(out)
    tmp = acc.with_name(f".{acc.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(accounting, indent=1, sort_keys=True))
    os.replace(tmp, acc)


def _duration_arg(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        try:
            return parse_duration(text)
        except UnitError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m real_engine.loadgen", description="Play a scenario's workload against a target URL.")
    p.add_argument("--scenario", required=True, help="Scenario TOML file.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="Scenario override.")
    p.add_argument("--target", required=True, help="Base URL of the gateway, e.g. http://127.0.0.1:8080.")
    p.add_argument("--t0", type=float, default=None, help="Run start on time.monotonic() (default: 0.2 s from now).")
    p.add_argument("--seed", type=int, default=None, help="Root seed (default: the scenario's run.seed).")
    p.add_argument("--duration", type=_duration_arg, default=None, help="Seconds of arrivals (default: run.duration).")
    p.add_argument("--out", required=True, help="Parquet file of records; accounting goes to OUT.accounting.json.")
    p.add_argument("--progress-fd", type=int, default=None, help="File descriptor for JSON progress lines.")
    p.add_argument("--header", dest="headers", action="append", default=[], metavar="'NAME: VALUE'",
                   help=f"Header sent with every request (repeatable); ${API_KEY_ENV} adds 'Authorization: Bearer KEY'.")
    p.add_argument("--nice", type=int, default=0,
                   help="Add this to the process's niceness; negative (needs privilege) makes sends more punctual "
                        "when other processes compete for the cores.")
    return p


def renice(increment: int) -> None:
    """Change this process's niceness by ``increment``; log (not fail) when not permitted."""
    if not increment:
        return
    try:
        os.nice(increment)
    except OSError as exc:
        log.warning("could not change niceness by %d (%s); running at %d", increment, exc.strerror, os.nice(0))


def _fd_progress(fd: int) -> Callable[[dict[str, Any]], None]:
    def write(line: dict[str, Any]) -> None:
        os.write(fd, (json.dumps(line) + "\n").encode())

    return write


async def _main_async(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario, args.overrides)
    seed = scenario.run.seed if args.seed is None else args.seed
    t0 = args.t0 if args.t0 is not None else time.monotonic() + 0.2
    progress = _fd_progress(args.progress_fd) if args.progress_fd is not None else None
    gen = LoadGenerator(scenario, args.target, t0, seed, args.duration, progress, headers=request_headers(args.headers))
    # Move everything alive now (imports, the scenario) out of the collector's sight so
    # that full collections during the run, which pause sending, stay short.
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gen.stop)
    records, accounting = await gen.run()
    write_results(args.out, records, accounting)
    log.info("loadgen done: %s", {k: accounting[k] for k in ("sent", "ok", "failures", "late_sends")})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging("loadgen")
    renice(args.nice)
    return run_event_loop(_main_async(args))


if __name__ == "__main__":
    sys.exit(main())
