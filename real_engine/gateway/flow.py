"""The gateway's request flows: model selection and chat completions, as the seed ran them.

``select``: semantic cache (exact GET; on a miss, embedding + SCAN/GET of every entry),
then the AI service through the pooled client (per-attempt timeout, retries, breaker);
any AI-service failure returns the static ``fallback_choice`` with 200.
``chat``: the same selection, provider-client construction (real CPU, per request or
pooled), the prompt cache when the class opts in, the provider call under the fallback
plan (sequential, race or hedge, losers really cancelled when configured, per-attempt
timeout), then on success the prompt-cache SET and the selection store.

Every decision comes from ``simulator.policies`` with the run time passed in; this
module does the I/O and writes down where the time went (``RequestContext.stages``),
which ``app`` turns into ``Server-Timing`` and ``X-Gwsim-*`` headers.

A streamed chat request (``"stream": true``) is answered as its provider streams: an attempt
succeeds at the reply's first chunk (the attempt timeout bounds the wait for it; a race or
hedge is won by the first chunk), and ``chat`` returns a ``StreamRelay`` that ``app``
relays to the client piece by piece as the pieces arrive.  Until that first chunk every
failure can fall back as for a plain request; once it is relayed, the client has a 200 and
part of the answer, so a failure after it cannot fall back: the gateway ends the stream
with an error event (``data: {"error": ...}``), as LiteLLM's proxy does.  The prompt
cache keys streamed and plain replies apart (a stored JSON reply never answers a stream).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import numpy as np

from real_engine.clock import RunClock
from real_engine.gateway.caches import RedisCaches
from real_engine.gateway.cpu import CpuPool
from real_engine.gateway.http_pool import CallTiming, HttpPool, HttpResponse, UpstreamError, UpstreamStream
from real_engine.gateway.metrics import GatewayMetrics
from real_engine.gateway.routed import RealRouter
from simulator.policies.admission import InFlightLimit
from simulator.policies.breaker import CircuitBreaker, make_breaker
from simulator.policies.cache import similarity_hit_probability, stores_selection
from simulator.policies.eventlog import RUN_LOG_LIMIT
from simulator.policies.fallback import FallbackPlan, rank_candidates, ranked_selection
from simulator.policies.quota import retry_after_wait
from simulator.policies.ratelimit import SlidingWindowLimiter
from simulator.policies.retry import RetryPolicy
from simulator.records import STAGES
from simulator.scenario import ConnectionPool, Endpoint, RequestClass, Scenario

log = logging.getLogger(__name__)

#: Error kind (policy vocabulary) -> record outcome.
KIND_OUTCOME = {
    "timeout": "timeout",
    "connect": "connect_error",
    "reset": "reset",
    "429": "upstream_error",  # a provider's 429 is its error reply (as the simulator counts it)
    "rejected": "rejected",
    "500": "upstream_error",
    "503": "upstream_error",
    "breaker_open": "breaker_open",
}

#: Outcome -> HTTP status the gateway answers with (the wire protocol's table).
OUTCOME_STATUS = {
    "ok": 200,
    "timeout": 504,
    "upstream_error": 502,
    "connect_error": 502,
    "reset": 502,
    "rejected": 503,
    "rate_limited": 429,
    "breaker_open": 503,
    "too_large": 413,
    "bad_request": 400,
    # nginx's "client closed request": never sent (nobody is listening), only counted
    "client_gone": 499,
}

STAGE_NAMES = tuple(s.removesuffix("_s") for s in STAGES)

#: The gateway's random sources, in spawn order (append only).
GATEWAY_SOURCES = (
    "cpu", "construction", "race_setup", "ai_pool", "embedding_pool", "providers", "cache_filler", "redis_op_time",
    "router",
)

_EMU_TIMING = re.compile(r"(\w+);dur=([0-9.eE+-]+)")


def status_kind(status: int) -> str:
    """The policy error kind of an upstream's HTTP error status."""
    if status == 429:
        return "429"
    if status == 503:
        return "503"
    return "500"


def emulator_queue_s(resp: HttpResponse) -> float:
    """The upstream's own queueing time, from ``X-Emulator-Timing`` (0 when absent)."""
    raw = resp.headers.get("x-emulator-timing")
    if not raw:
        return 0.0
    for name, value in _EMU_TIMING.findall(raw):
        if name == "queue":
            try:
                return max(0.0, float(value) / 1e3)
            except ValueError:
                return 0.0
    return 0.0


def default_selection(scenario: Scenario, class_index: int, cls: RequestClass | None = None) -> dict[str, Any]:
    """The selection of a class as the simulator ranks it: the class's provider when it names
    one, else the provider order rotated by the class index; the others as alternatives.
    Seeds the canonical cache entries and routes endpoints without model selection."""
    ranked = ranked_selection(scenario.provider_order(), class_index, cls.provider if cls is not None else None)
    return {"provider": ranked[0], "model": f"{ranked[0]}-model", "alternatives": ranked[1:]}


class FlowError(Exception):
    """The request ends with this outcome (and its status).

    ``status`` overrides the outcome's status (408, 415: still the record outcome
    ``bad_request``, with a more exact answer); ``error_type`` is the error body's ``type``
    (the outcome when not given); ``close`` ends the connection after the reply (a body
    left half read cannot be skipped).
    """

    def __init__(
        self, outcome: str, message: str = "", *, status: int | None = None, error_type: str | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message or outcome)
        self.outcome = outcome
        self.status = status
        self.error_type = error_type or outcome
        self.close = close


@dataclass
class RequestContext:
    """What one request met on its way; becomes the reply's headers."""

    request_id: str
    endpoint: str
    class_name: str
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGE_NAMES, 0.0))
    outcome: str = "ok"
    provider: str = ""
    attempts: int = 0
    fallback_used: bool = False
    selection_fallback: bool = False
    cache_hit: bool = False
    prompt_cache_hit: bool = False
    breaker_state: str = ""

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] += seconds

    def headers(self) -> dict[str, str]:
        timing = ", ".join(f"{name};dur={v * 1e3:.3f}" for name, v in self.stages.items() if v > 0)
        out = {
            "X-Gwsim-Outcome": self.outcome,
            "X-Gwsim-Provider": self.provider,
            "X-Gwsim-Attempts": str(self.attempts),
            "X-Gwsim-Fallback": "1" if self.fallback_used else "0",
            "X-Gwsim-Selection-Fallback": "1" if self.selection_fallback else "0",
            "X-Gwsim-Cache-Hit": "1" if self.cache_hit else "0",
            "X-Gwsim-Prompt-Cache-Hit": "1" if self.prompt_cache_hit else "0",
            "X-Gwsim-Breaker": self.breaker_state,
        }
        if timing:
            out["Server-Timing"] = timing
        return out


@dataclass
class _Attempt:
    provider: str
    started: float
    finished: float = 0.0
    timing: CallTiming = field(default_factory=CallTiming)
    queue_s: float = 0.0
    kind: str | None = None  # None: success
    response: HttpResponse | None = None
    called: bool = False  # an HTTP call was made (not refused by the breaker)
    stream: UpstreamStream | None = None  # a streamed reply, open, its first piece read
    first: bytes = b""


@dataclass
class StreamRelay:
    """A provider's streamed reply for ``app`` to relay: its first piece (already received),
    the open upstream for the rest, and the work to do once it has ended well (the prompt
    cache's SET of the whole reply, the selection store)."""

    first: bytes
    upstream: UpstreamStream
    queue_s: float
    finish: Callable[[bytes], Awaitable[None]]


class GatewayCore:
    """The gateway's state (pools, breakers, caches, CPU) and its two request flows."""

    def __init__(
        self,
        scenario: Scenario,
        upstream_urls: dict[str, Any],
        t0: float,
        seed: int,
        redis_url: str,
        key_prefix: str,
        metrics: GatewayMetrics,
    ) -> None:
        from real_engine.rng import Streams

        self.scenario = scenario
        self.clock = RunClock(t0)
        self.metrics = metrics
        streams = Streams.for_process(seed, "gateway", GATEWAY_SOURCES)
        self._rng_cpu = streams["cpu"]
        self._rng_construction = streams["construction"]
        self._rng_race = streams["race_setup"]
        self._rng_filler = streams["cache_filler"]
        gw = scenario.gateway
        ms = scenario.model_selection
        self.cpu = CpuPool(gw.cpu_workers)
        self.limiter = SlidingWindowLimiter.from_config(gw.rate_limit, log_limit=RUN_LOG_LIMIT) if gw.rate_limit else None
        self.admission = InFlightLimit(gw.max_in_flight)
        self.retry = RetryPolicy.from_config(ms.ai_client.retries, log_limit=RUN_LOG_LIMIT)
        self.ai_breaker: CircuitBreaker | None = make_breaker(ms.ai_client.breaker, log_limit=RUN_LOG_LIMIT) if ms.ai_client.breaker else None
        self.provider_breakers: dict[str, CircuitBreaker] = {
            name: make_breaker(p.breaker, log_limit=RUN_LOG_LIMIT) for name, p in scenario.providers.items() if p.breaker is not None
        }
        now_mono = time.monotonic
        self.ai_pool = HttpPool(
            "ai_service", upstream_urls["ai_service"], ms.ai_client.pool, streams["ai_pool"], clock=now_mono,
            on_dial=lambda: metrics.dials.labels("ai_service").inc(),
        )
        # The embedding API is an external HTTPS service in the seed; the scenario has no
        # pool table for it, so it gets a generous keep-alive pool.
        self.embedding_pool = HttpPool(
            "embedding", upstream_urls["embedding"], ConnectionPool(max_idle_per_host=100), streams["embedding_pool"],
            clock=now_mono, on_dial=lambda: metrics.dials.labels("embedding").inc(),
        )
        provider_rngs = streams.child("providers", scenario.providers)
        self.provider_pools: dict[str, HttpPool] = {}
        for name, p in scenario.providers.items():
            self.provider_pools[name] = HttpPool(
                name, upstream_urls["providers"][name], p.pool, provider_rngs[name], clock=now_mono,
                on_dial=lambda n=name: metrics.dials.labels(n).inc(),
            )
        for pool in self.pools():
            metrics.watch_pool(pool.name, lambda p=pool: (p.in_use, p.idle))
        if self.ai_breaker is not None:
            metrics.watch_breaker("ai_service", lambda: self.ai_breaker.state(self.clock.now()).value)
        for name, br in self.provider_breakers.items():
            metrics.watch_breaker(name, lambda b=br: b.state(self.clock.now()).value)
        self.caches = RedisCaches(
            scenario, redis_url, key_prefix, run_clock=self.clock.now,
            on_result=lambda cache, status: metrics.cache.labels(cache, status).inc(),
            op_time_rng=streams["redis_op_time"],
        )
        self._built_clients: dict[str, asyncio.Future] = {}  # pooled provider clients
        self._background: set[asyncio.Task] = set()  # losers left running (cancel_losers=false)
        self._class_index = {
            (ep_name, c.name): (i, c) for ep_name, ep in scenario.endpoints.items() for i, c in enumerate(ep.classes)
        }
        self.outcomes: dict[str, int] = {}
        #: a LiteLLM-style router on the chat endpoint (scenario [router]), or None
        self.router = RealRouter(self, streams["router"]) if scenario.router is not None else None
        self.embedding_calls = {"ok": 0, "failed": 0}
        self.background_losers = 0
        self.cancelled_losers = 0

    def __repr__(self) -> str:
        return f"<GatewayCore ai={self.ai_pool!r} providers={len(self.provider_pools)} cpu={self.cpu!r}>"

    def pools(self) -> list[HttpPool]:
        return [self.ai_pool, self.embedding_pool, *self.provider_pools.values()]

    # ------------------------------------------------------------------ start-up

    async def prepare(self) -> None:
        """Seed Redis with the canonical selections and prompt-cache entries of every class."""
        canonical: dict[str, dict] = {}
        prompt_entries: dict[str, bytes] = {}
        for ep_name, ep in self.scenario.endpoints.items():
            for i, cls in enumerate(ep.classes):
                prompt = f"gwsim:{ep_name}:{cls.name}"
                if ep.model_selection:
                    canonical[prompt] = default_selection(self.scenario, i, cls)
                if ep.kind == "chat_completions" and cls.prompt_cache_opt_in:
                    stream = ep.streams(cls)
                    for provider in self.scenario.providers:
                        prompt_entries[prompt_cache_key(prompt, "", provider, stream)] = _cached_completion(provider, prompt, stream)
        vectors: dict[str, np.ndarray | None] = {}
        sc = self.scenario.model_selection.semantic_cache
        #: canonical prompt -> where the first entry similar to it sits in the scan order, for
        #: the classes whose prompts are now and then close to it (see ``RedisCaches.seed``)
        similar: dict[str, float] = {}
        if sc.enabled and sc.scan_on_miss:
            for prompt in canonical:
                vectors[prompt], _ = await self._embed_raw(prompt)
            for ep_name, ep in self.scenario.endpoints.items():
                for cls in ep.classes if ep.model_selection else ():
                    if similarity_hit_probability(cls.similarity_hit, sc.similarity_hit) > 0:
                        similar[f"gwsim:{ep_name}:{cls.name}"] = cls.similar_entry_at
        await self.caches.seed(canonical if sc.enabled else {}, vectors, self._rng_filler, prompt_entries, similar=similar)
        self.caches.start_faults(self.clock.t0)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self.pools()), return_exceptions=True)
        await self.caches.close()
        self.cpu.close()

    # ------------------------------------------------------------------ small helpers

    def class_of(self, endpoint: str, class_name: str) -> tuple[int, RequestClass | None]:
        return self._class_index.get((endpoint, class_name), (0, None))

    async def burn(self, ctx: RequestContext, seconds: float) -> None:
        if seconds > 0:
            t = await self.cpu.run(seconds)
            ctx.add("cpu_wait", t.wait_s)
            ctx.add("cpu", t.busy_s)

    async def cpu_per_request(self, ctx: RequestContext) -> None:
        await self.burn(ctx, self.scenario.gateway.cpu_per_request.sample(self._rng_cpu))

    async def _cpu_per_hop(self, ctx: RequestContext) -> None:
        await self.burn(ctx, self.scenario.gateway.cpu_per_hop.sample(self._rng_cpu))

    def rate_limited(self, key: str) -> bool:
        return self.limiter is not None and not self.limiter.allow(key, self.clock.now())

    async def _embed_raw(self, text: str, ctx: RequestContext | None = None) -> tuple[np.ndarray | None, float]:
        """One embedding call, bounded by ``embedding_timeout``: (vector or None on any
        failure, seconds spent).  A failure is counted, never raised: the caller skips the
        scan (a miss) or stores without a vector.  For a request (``ctx``) the emulator is
        told its class, as the providers are (its chance of a similar prompt)."""
        started = time.perf_counter()
        headers = {"Content-Type": "application/json"}
        if ctx is not None:
            headers.update({"X-Gwsim-Endpoint": ctx.endpoint, "X-Gwsim-Class": ctx.class_name})
        try:
            async with asyncio.timeout(self.scenario.model_selection.semantic_cache.embedding_timeout):
                resp = await self.embedding_pool.request(
                    "POST", "/v1/embeddings", json.dumps({"input": text, "model": "emb"}).encode(), headers,
                )
            if resp.status != 200:
                raise ValueError(f"status {resp.status}")
            vec = np.asarray(json.loads(resp.body)["data"][0]["embedding"], dtype=float)
        except (UpstreamError, TimeoutError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.debug("embedding call failed: %r", exc)
            self.embedding_calls["failed"] += 1
            return None, time.perf_counter() - started
        self.embedding_calls["ok"] += 1
        return vec, time.perf_counter() - started

    async def _embed(self, ctx: RequestContext, text: str, stage: str) -> np.ndarray | None:
        await self._cpu_per_hop(ctx)
        vec, took = await self._embed_raw(text, ctx)
        ctx.add(stage, took)
        return vec

    # ------------------------------------------------------------------ model selection

    async def select(self, ctx: RequestContext, ep_name: str, ep: Endpoint, prompt: str) -> dict[str, Any]:
        """The model selection: cache, then AI service, then the static fallback choice."""
        idx, cls = self.class_of(ep_name, ctx.class_name)
        if not ep.model_selection:
            return default_selection(self.scenario, idx, cls)
        ms = self.scenario.model_selection
        sc = ms.semantic_cache
        if sc.enabled:
            started = time.perf_counter()
            got = await self.caches.semantic_get(prompt)
            ctx.add("cache", time.perf_counter() - started)
            if got.hit:
                ctx.cache_hit = True
                return got.value
            if sc.scan_on_miss:
                vec = await self._embed(ctx, prompt, "embedding")
                if vec is not None:
                    started = time.perf_counter()
                    got = await self.caches.semantic_scan(vec)
                    ctx.add("cache", time.perf_counter() - started)
                    if got.hit:
                        ctx.cache_hit = True
                        return got.value
                elif got.status == "miss":
                    self.caches.semantic_miss_without_scan()
            elif got.status == "miss":
                self.caches.semantic_miss_without_scan()
        selection, kind = await self._call_ai(ctx, ep_name, prompt, count_attempts=ep.kind == "select_model")
        if selection is None:
            if ms.fallback_choice is None:
                raise FlowError(KIND_OUTCOME.get(kind or "500", "upstream_error"), f"model selection failed: {kind}")
            ctx.selection_fallback = True
            fc = ms.fallback_choice
            return {"provider": fc.provider, "model": f"{fc.provider}-model", "alternatives": list(fc.alternatives)}
        if sc.enabled and stores_selection(ep.kind, sc.write_on_select, False, succeeded=True):
            await self._store_selection(ctx, prompt, selection)
        return selection

    async def _call_ai(
        self, ctx: RequestContext, ep_name: str, prompt: str, count_attempts: bool
    ) -> tuple[dict | None, str | None]:
        """The protocol-manager client: breaker, per-attempt timeout, retries.  Returns the
        selection, or None and the last error kind.  An open breaker fails at once (no retry)."""
        client = self.scenario.model_selection.ai_client
        body = json.dumps({"prompt": prompt, "endpoint": ep_name, "class": ctx.class_name}).encode()
        headers = {"Content-Type": "application/json", "X-Gwsim-Request-Id": ctx.request_id}
        attempts = 0
        while True:
            permit = None
            now = self.clock.now()
            if self.ai_breaker is not None:
                permit = self.ai_breaker.allow(now)
                if not ctx.breaker_state:  # the state the request first met
                    ctx.breaker_state = permit.state.value if permit is not None else self.ai_breaker.state(now).value
                if permit is None:
                    self.metrics.upstream_calls.labels("ai_service", "breaker_open").inc()
                    return None, "breaker_open"
            attempts += 1
            if count_attempts:
                ctx.attempts = attempts
            await self._cpu_per_hop(ctx)
            timing = CallTiming()
            started = time.perf_counter()
            resp = None
            try:
                async with asyncio.timeout(client.request_timeout):
                    resp = await self.ai_pool.request("POST", "/predict", body, headers, timing)
                kind = None if resp.status == 200 else status_kind(resp.status)
            except UpstreamError as exc:
                kind = exc.kind
            except TimeoutError:
                kind = "timeout"
            except asyncio.CancelledError:
                if permit is not None and self.ai_breaker is not None:
                    self.ai_breaker.cancel(permit, self.clock.now())
                raise
            duration = time.perf_counter() - started
            queue_s = emulator_queue_s(resp) if resp is not None else 0.0
            ctx.add("ai_pool_wait", timing.pool_wait_s)
            ctx.add("ai_connect", timing.connect_s)
            ctx.add("ai_queue", min(queue_s, timing.exchange_s))
            ctx.add("ai_service", max(0.0, timing.exchange_s - queue_s))
            selection = None
            if kind is None:
                try:
                    selection = json.loads(resp.body)  # type: ignore[union-attr]
                    if not isinstance(selection, dict) or "provider" not in selection:
                        raise ValueError("no provider in the AI-service reply")
                except ValueError:
                    kind = "500"
            if permit is not None and self.ai_breaker is not None:
                self.ai_breaker.record(permit, self.clock.now(), kind is None, duration)
            self.metrics.upstream_calls.labels("ai_service", kind or "ok").inc()
            if kind is None:
                return selection, None
            delay = self.retry.delay_before(attempts, kind, self.clock.now())
            if delay is None:
                return None, kind
            if delay > 0:
                await asyncio.sleep(delay)

    async def _store_selection(self, ctx: RequestContext, prompt: str, selection: dict) -> None:
        """The seed's store: one embedding call and one SET, before replying."""
        vec = await self._embed(ctx, prompt, "store")  # adds the embedding call to "store"
        started = time.perf_counter()
        kept = {k: selection[k] for k in ("provider", "model", "alternatives") if k in selection}
        await self.caches.semantic_store(prompt, kept, vec)
        ctx.add("store", time.perf_counter() - started)

    # ------------------------------------------------------------------ select-model endpoint

    async def select_model(self, ctx: RequestContext, ep_name: str, ep: Endpoint, prompt: str) -> dict[str, Any]:
        selection = await self.select(ctx, ep_name, ep, prompt)
        ctx.provider = str(selection.get("provider", ""))
        return {
            "provider": selection.get("provider"),
            "model": selection.get("model"),
            "alternatives": list(selection.get("alternatives", [])),
        }

    # ------------------------------------------------------------------ chat endpoint

    async def _construct_client(self, ctx: RequestContext, provider: str) -> None:
        """Build a provider SDK client: CPU only, per request or once per provider."""
        pc = self.scenario.gateway.provider_client
        if not pc.pooled:
            await self.burn(ctx, pc.construction_cpu.sample(self._rng_construction))
            return
        fut = self._built_clients.get(provider)
        if fut is None:
            fut = self._built_clients[provider] = asyncio.get_running_loop().create_future()
            try:
                await self.burn(ctx, pc.construction_cpu.sample(self._rng_construction))
            except BaseException:
                del self._built_clients[provider]
                fut.cancel()
                raise
            fut.set_result(True)
        elif not fut.done():
            await asyncio.shield(fut)

    async def chat(
        self, ctx: RequestContext, ep_name: str, ep: Endpoint, body: dict[str, Any], prompt: str, nonce: str
    ) -> tuple[bytes, str] | StreamRelay:
        """Returns (reply body, content type), or for a streamed reply the relay to run."""
        if self.router is not None:
            return await self.router.chat(ctx, ep_name, body)
        selection = await self.select(ctx, ep_name, ep, prompt)
        primary = str(selection.get("provider", ""))
        if primary not in self.provider_pools:
            raise FlowError("upstream_error", f"selected provider {primary!r} is not configured")
        candidates = rank_candidates(
            [primary, *[p for p in selection.get("alternatives", []) if p in self.provider_pools]], primary
        )
        _, cls = self.class_of(ep_name, ctx.class_name)
        stream = body.get("stream") is True
        await self._construct_client(ctx, primary)
        pc_key = None
        if cls is not None and cls.prompt_cache_opt_in and self.scenario.prompt_cache.enabled:
            pc_key = prompt_cache_key(_strip_nonce(prompt, ctx.request_id), nonce, primary, stream)
            started = time.perf_counter()
            got = await self.caches.prompt_get(pc_key)
            ctx.add("prompt_cache", time.perf_counter() - started)
            if got.hit:
                ctx.prompt_cache_hit = True
                ctx.provider = primary
                return got.value, "text/event-stream" if stream else "application/json"
        out_body = dict(body)
        out_body["model"] = selection.get("model") or f"{primary}-model"
        payload = json.dumps(out_body).encode()
        attempt = await self._provider_calls(ctx, ep_name, candidates, payload, primary, stream)
        ctx.provider = attempt.provider

        async def finish(reply: bytes) -> None:
            if pc_key is not None:
                started = time.perf_counter()
                await self.caches.prompt_set(pc_key, reply)
                ctx.add("prompt_cache", time.perf_counter() - started)
            sc = self.scenario.model_selection.semantic_cache
            if ep.model_selection and sc.enabled and stores_selection(ep.kind, False, ep.store_selection_on_success, True):
                await self._store_selection(ctx, prompt, selection)

        if attempt.stream is not None:
            return StreamRelay(attempt.first, attempt.stream, attempt.queue_s, finish)
        resp = attempt.response
        assert resp is not None
        await finish(resp.body)
        return resp.body, resp.headers.get("content-type", "application/json")

    async def _attempt(
        self, ctx: RequestContext, att: _Attempt, ep_name: str, payload: bytes, built: set[str], stream: bool = False
    ) -> _Attempt:
        """One provider call under its breaker and the per-attempt timeout (for a stream: up to
        its first piece, the stream left open in ``att.stream``)."""
        name = att.provider
        breaker = self.provider_breakers.get(name)
        permit = None
        if breaker is not None:
            permit = breaker.allow(self.clock.now())
            if permit is None:
                att.kind = "breaker_open"
                att.finished = time.perf_counter()
                self.metrics.upstream_calls.labels(name, "breaker_open").inc()
                return att
        try:
            if name not in built:
                built.add(name)
                await self._construct_client(ctx, name)
            await self._cpu_per_hop(ctx)
            att.called = True
            headers = {
                "Content-Type": "application/json",
                "X-Gwsim-Request-Id": ctx.request_id,
                "X-Gwsim-Endpoint": ep_name,
                "X-Gwsim-Class": ctx.class_name,
            }
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.scenario.fallback.attempt_timeout):
                    if stream:
                        await self._open_stream(att, name, payload, headers)
                    else:
                        resp = await self.provider_pools[name].request("POST", "/v1/chat/completions", payload, headers, att.timing)
                        att.response = resp
                        att.kind = None if resp.status == 200 else status_kind(resp.status)
                        att.queue_s = min(emulator_queue_s(resp), att.timing.exchange_s)
            except UpstreamError as exc:
                att.kind = exc.kind
            except TimeoutError:
                att.kind = "timeout"
            att.finished = time.perf_counter()
            if breaker is not None and permit is not None:
                breaker.record(permit, self.clock.now(), att.kind is None, att.finished - started)
            self.metrics.upstream_calls.labels(name, att.kind or "ok").inc()
            return att
        except asyncio.CancelledError:
            att.finished = time.perf_counter()
            if att.stream is not None:  # a loser cancelled after its first piece: nobody relays it
                att.stream.close()
                att.stream = None
            if breaker is not None and permit is not None:
                breaker.cancel(permit, self.clock.now())
            raise

    async def _open_stream(self, att: _Attempt, name: str, payload: bytes, headers: dict[str, str]) -> None:
        """A streamed call up to its first piece: ``att.stream`` open on success, else ``att.kind``."""
        up = await self.provider_pools[name].open_stream("POST", "/v1/chat/completions", payload, headers, att.timing)
        try:
            if up.status != 200:
                att.response = HttpResponse(up.status, up.headers, await up.read_all(), False)
                att.kind = status_kind(up.status)
                att.queue_s = min(emulator_queue_s(att.response), att.timing.exchange_s)
                return
            first = await up.piece()
            if not first:
                raise UpstreamError("reset", f"{name}: a stream that ended before its first chunk")
            att.stream, att.first = up, first
            att.queue_s = emulator_queue_s(up)  # type: ignore[arg-type] - it reads .headers only
            att.kind = None
        finally:
            if att.stream is None:
                up.close()

    async def _provider_calls(
        self, ctx: RequestContext, ep_name: str, candidates: list[str], payload: bytes, primary: str,
        stream: bool = False,
    ) -> _Attempt:
        fb = self.scenario.fallback
        plan = FallbackPlan.from_config(fb, candidates)
        built = {primary}  # the primary's client was built before the prompt cache
        running: dict[asyncio.Task, _Attempt] = {}
        finished: list[_Attempt] = []
        loop = asyncio.get_running_loop()
        waits = 0  # calls made again after a 429's Retry-After (fallback.retry_after_cap)

        def launch(providers: list[str]) -> None:
            for p in providers:
                att = _Attempt(p, time.perf_counter())
                task = loop.create_task(self._attempt(ctx, att, ep_name, payload, built, stream), name=f"attempt:{ctx.request_id}:{p}")
                running[task] = att

        try:
            launch(plan.start(self.clock.now()))
            while running:
                hedge_at = plan.next_hedge_at()
                timeout = None if hedge_at is None else max(0.0, hedge_at - self.clock.now())
                done, _ = await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    new = plan.on_hedge_timer(self.clock.now())
                    launch(new)
                    continue
                for task in done:
                    att = running.pop(task)
                    att = task.result()
                    finished.append(att)
                    now = self.clock.now()
                    if att.kind is None:
                        to_cancel = plan.on_success(att.provider, now)
                        self._finish_losers(plan, running, to_cancel, fb.cancel_losers)
                        running.clear()
                        self._account(ctx, plan, finished, winner=att, again=waits)
                        return att
                    if att.kind == "429" and fb.mode in ("none", "sequential") and fb.retry_after_cap is not None:
                        # the provider said when to come back: wait (up to the cap) and call it again
                        header = att.response.headers.get("retry-after") if att.response is not None else None
                        wait = retry_after_wait(_seconds(header), fb.retry_after_cap, waits, fb.retry_after_waits)
                        if wait is not None:
                            waits += 1
                            await asyncio.sleep(wait)
                            launch([att.provider])  # still running as far as the plan knows
                            continue
                    new = plan.on_failure(att.provider, att.kind, now)
                    if fb.mode == "sequential":
                        for _ in new:
                            # the seed's "race" that only builds clients, before each real fallback call
                            await self.burn(ctx, fb.race_setup_cpu.sample(self._rng_race))
                    launch(new)
            last = max(finished, key=lambda a: a.finished)
            self._account(ctx, plan, finished, winner=None, again=waits)
            raise FlowError(KIND_OUTCOME.get(last.kind or "500", "upstream_error"), f"provider call failed: {last.kind}")
        finally:
            # Cancelled from outside (or an unexpected error): no attempt may outlive the request.
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _finish_losers(self, plan: FallbackPlan, running: dict[asyncio.Task, _Attempt], to_cancel: list[str], cancel: bool) -> None:
        now = self.clock.now()
        for task, att in list(running.items()):
            if cancel:
                task.cancel()
                plan.on_cancel(att.provider, now)
                self.cancelled_losers += 1
            else:
                self.background_losers += 1
            # Either way the request does not wait for them; the gateway reaps them.
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            task.add_done_callback(_consume_result)
            task.add_done_callback(_close_stream)

    def _account(self, ctx: RequestContext, plan: FallbackPlan, finished: list[_Attempt], winner: _Attempt | None,
                 again: int = 0) -> None:
        """Stage times along the critical path: the deciding attempt and the ones before it
        that ended before it started (overlapping losers add nothing to latency).  ``again``:
        calls made again after a Retry-After, which the plan does not count."""
        ctx.attempts = plan.attempts + again  # calls started, as the simulator counts them
        ctx.fallback_used = plan.fallback_used
        if not finished:
            return
        last = winner or max(finished, key=lambda a: a.finished)
        chain = [last]
        edge = last.started
        for att in sorted(finished, key=lambda a: a.finished, reverse=True):
            if att is last:
                continue
            if att.finished <= edge:
                chain.append(att)
                edge = att.started
        for att in chain:
            t = att.timing
            ctx.add("provider_pool_wait", t.pool_wait_s)
            ctx.add("provider_connect", t.connect_s)
            ctx.add("provider_queue", att.queue_s)
            ctx.add("provider", max(0.0, t.exchange_s - att.queue_s))


def _consume_result(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()  # retrieve it so asyncio does not log "exception never retrieved"


def _seconds(header: str | None) -> float | None:
    """A ``Retry-After`` in seconds (None when absent or not a number of seconds)."""
    try:
        return float(int(header)) if header else None
    except ValueError:
        return None


def _close_stream(task: asyncio.Task) -> None:
    """A loser left running that got its first piece: nobody relays its stream."""
    if not task.cancelled() and task.exception() is None:
        att = task.result()
        if att.stream is not None:
            att.stream.close()


def _strip_nonce(prompt: str, request_id: str) -> str:
    """The prompt without the load generator's semantic-cache nonce ``" #<request id>"``."""
    suffix = f" #{request_id}"
    return prompt[: -len(suffix)] if request_id and prompt.endswith(suffix) else prompt


def prompt_cache_key(prompt: str, nonce: str, provider: str, stream: bool = False) -> str:
    """Exact key over the messages, the prompt nonce, the selected provider and whether the
    reply is streamed (a stored JSON reply never answers a stream, nor the reverse)."""
    tail = "\x00stream" if stream else ""
    return hashlib.sha256(f"{provider}\x00{nonce}\x00{prompt}{tail}".encode()).hexdigest()


def _cached_completion(provider: str, prompt: str, stream: bool = False) -> bytes:
    """The completion the prompt cache is seeded with: JSON, or for a stream its SSE form (one
    chunk with the whole answer, the finish chunk with the usage, [DONE])."""
    if stream:
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": 1, "total_tokens": len(prompt.split()) + 1}
        events = [
            {"id": "chatcmpl-cached", "object": "chat.completion.chunk", "model": f"{provider}-model",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "cached"}, "finish_reason": None}]},
            {"id": "chatcmpl-cached", "object": "chat.completion.chunk", "model": f"{provider}-model",
             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage},
        ]
        return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    return json.dumps(
        {
            "id": "chatcmpl-cached",
            "object": "chat.completion",
            "model": f"{provider}-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "cached"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 1, "total_tokens": len(prompt.split()) + 1},
        }
    ).encode()
