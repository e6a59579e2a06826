"""The gateway's two request flows, as the seed gateway ran them and the scenario generalises:

``select_model``: admission (the in-flight cap, 503 beyond it), middleware (CPU, rate
limiter, body limit), model selection (semantic cache exact GET; on a miss an embedding
call and a scan of every entry; then the AI service through a pooled HTTP client with a
request timeout, retries and a circuit breaker; any failure returns a static choice), reply.

``chat_completions``: the same selection, a provider SDK client built (CPU), the prompt
cache when the request opts in, the provider call with its fallback (sequential, race or
hedge), then on success the selection stored in the semantic cache.

Every decision (breaker, pool, batching, fallback, retry, rate limit, cache) is made by
``simulator.policies``; this module only spends simulated time between decisions.
"""

from __future__ import annotations

import math

import simpy

from simulator.distributions import ZERO, Sampler
from simulator.model.ai_service import SimAIService
from simulator.model.context import Failure, RequestContext
from simulator.model.cpu import GatewayCPU
from simulator.model.deadlines import Deadlines
from simulator.model.flow import Flow, Stuck
from simulator.model.http_pool import SimHttpPool
from simulator.model.machine import MachineModel
from simulator.model.provider import SimProvider
from simulator.model.redis import SimRedis
from simulator.model.redis_loop import LoopRedis
from simulator.model.router import SimRouter
from simulator.policies.admission import InFlightLimit
from simulator.policies.breaker import make_breaker
from simulator.policies.cache import (
    SemanticEntries,
    counts_as_hit,
    scan_round_trips,
    similar_found,
    similarity_hit_probability,
    stores_selection,
)
from simulator.policies.eventlog import RUN_LOG_LIMIT
from simulator.policies.fallback import FallbackPlan, ranked_selection
from simulator.policies.ratelimit import SlidingWindowLimiter
from simulator.policies.routing import client_outcome
from simulator.policies.quota import retry_after_wait
from simulator.policies.retry import RetryPolicy
from simulator.policies.streaming import CACHED_REPLY_TOKENS
from simulator.scenario import Scenario, active_fault

#: error kind -> (record outcome, HTTP status the gateway answers with)
_FAILURE_OUTCOME = {
    "timeout": ("timeout", 504),
    "connect": ("connect_error", 502),
    "reset": ("reset", 502),
    "429": ("upstream_error", 502),
    "500": ("upstream_error", 502),
    "503": ("upstream_error", 502),
    "rejected": ("rejected", 503),
    "breaker_open": ("breaker_open", 503),
    "stream_reset": ("reset", 200),  # a relayed stream broke: its 200 and first chunks were out
    "rate_limited": ("rate_limited", 429),
    "too_large": ("too_large", 413),
    "bad_request": ("bad_request", 400),
}


def failure_outcome(kind: str) -> tuple[str, int]:
    if kind.startswith("http_"):  # the router's answer (simulator.model.router): its status says it
        status = int(kind[5:])
        return client_outcome(status), status
    return _FAILURE_OUTCOME.get(kind, ("upstream_error", 502))


class _Uniforms:
    """Block-drawn uniforms for per-request coin flips."""

    __slots__ = ("_rng", "_buf", "_i")

    def __init__(self, rng) -> None:
        self._rng = rng
        self._buf: list[float] = []
        self._i = 4096  # the first call draws a block of 4096

    def __call__(self) -> float:
        i = self._i
        if i >= 4096:
            self._buf = self._rng.random(4096).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]


class SimGateway:
    #: Test hook, not a scenario field: False sends every request through ``handle`` (the general
    #: flow) instead of the direct and plain shortcuts, so closed-form tests hold the machinery
    #: real scenarios run to queueing theory (tests/sim/test_closed_forms_general.py).
    shortcuts = True

    def __init__(self, env: simpy.Environment, scenario: Scenario, streams) -> None:
        self.env = env
        self.scenario = scenario
        gw = scenario.gateway
        ms = scenario.model_selection
        # the measured run's processes on their shared machine (calibration profile), or nothing
        self.machine = MachineModel(env, scenario.machine, streams["machine"]) if scenario.machine.active else None
        self.cpu = GatewayCPU(env, gw.cpu_workers, self.machine)
        self.cpu_request = Sampler(gw.cpu_per_request, streams["cpu"])
        self.cpu_hop = Sampler(gw.cpu_per_hop, streams["cpu"])
        self.client_build = Sampler(gw.provider_client.construction_cpu, streams["cpu"])
        self.race_setup = Sampler(scenario.fallback.race_setup_cpu, streams["cpu"])
        self.redis = SimRedis(env, scenario.redis, streams["redis"])
        #: Redis through the Python client on the measured gateway's event loop (its CPU per round trip)
        self.loop_redis = (
            LoopRedis(env, scenario.redis, self.machine, streams["redis"])
            if self.machine is not None and (scenario.machine.redis_cpu != ZERO or scenario.machine.scan_entry_cpu != ZERO)
            else None
        )
        self.embedding = Sampler(ms.semantic_cache.embedding_time, streams["embedding"])
        extra = {}
        tokens = {}
        for ep_name, ep in scenario.endpoints.items():
            for klass in ep.classes:
                extra[(ep_name, klass.name)] = klass.ai_extra
                if klass.output_tokens is not None:
                    tokens[(ep_name, klass.name)] = klass.output_tokens
        self.ai = SimAIService(env, scenario.ai_service, streams["ai_service"], extra)
        if self.machine is not None:
            self.ai.lateness = self.machine.timer_late
        self.ai_rtt = Sampler(scenario.ai_service.network_rtt, streams["network"])
        self.ai_pool = SimHttpPool(env, ms.ai_client.pool, streams["pool"], gauged=True)  # ai_pool_in_use
        fb = scenario.fallback
        # a call can be walked away from part way: a concurrency limit must then hand its slot back
        abandonable = fb.attempt_timeout is not None or (fb.mode in ("race", "hedge") and fb.cancel_losers)
        self.providers = {
            name: SimProvider(env, name, cfg, streams[f"provider:{name}"], tokens, abandonable)
            for name, cfg in scenario.providers.items()
        }
        if self.machine is not None:
            for provider in self.providers.values():
                provider.lateness = self.machine.timer_late
                if provider.prefill is not None:
                    provider.reply_work = self.machine.llm_reply
        self.provider_pools = {name: SimHttpPool(env, cfg.pool, streams["pool"]) for name, cfg in scenario.providers.items()}
        self.breaker = make_breaker(ms.ai_client.breaker, log_limit=RUN_LOG_LIMIT) if ms.ai_client.breaker is not None else None
        self.provider_breakers = {name: make_breaker(cfg.breaker, log_limit=RUN_LOG_LIMIT) for name, cfg in scenario.providers.items() if cfg.breaker is not None}
        rl = gw.rate_limit
        self.limiter = SlidingWindowLimiter(rl.limit, rl.window, log_limit=RUN_LOG_LIMIT) if rl is not None else None
        self.limiter_keys = [f"key{i}" for i in range(rl.keys)] if rl is not None else []
        r = ms.ai_client.retries
        self.retry = RetryPolicy(r.count, r.backoff, r.on)
        self._trigger_on = frozenset(scenario.fallback.trigger_on)  # not one per request's plan
        self.cache_coin = _Uniforms(streams["cache"])
        sc = ms.semantic_cache
        # the canonical selections seeded for each class (the exact lookups' hits), fillers up to initial_entries
        canonical = [
            (ep_name, klass.name) for ep_name, ep in scenario.endpoints.items() if ep.model_selection for klass in ep.classes
        ] if sc.enabled else []
        self.cache_entries = SemanticEntries(
            max(0, sc.initial_entries - len(canonical)), sc.max_entries, canonical, log_limit=RUN_LOG_LIMIT
        )
        self.clients_built: set[str] = set()
        self.provider_order = scenario.provider_order()
        #: a LiteLLM router on the chat endpoint (scenario [router]), or None
        self.router = SimRouter(self, scenario, streams["router"]) if scenario.router is not None else None
        self.in_system = 0
        self.admission = InFlightLimit(gw.max_in_flight)
        self.deadlines = Deadlines(env)
        self.stuck = Stuck(env)
        self.body_limit = gw.body_limit_bytes
        self._selections: dict[tuple[str, int], tuple[str, tuple[str, ...]]] = {}
        #: (endpoint, class index) -> its provider, for the classes handled by the direct flow
        #: (see ``_direct``; "" for a select_model endpoint, which calls none)
        self._direct_classes = {
            (ep_name, i): ("" if ep.kind == "select_model" else ranked_selection(self.provider_order, i, klass.provider)[0])
            for ep_name, ep in scenario.endpoints.items()
            for i, klass in enumerate(ep.classes)
            if self._is_direct(ep, klass, i)
        }
        self._middleware_on = self.limiter is not None or self.body_limit is not None
        #: direct classes whose call is all there is (see ``_plain``): (endpoint, class index) -> provider
        self._plain_classes = {
            key: self.providers[primary]
            for key, primary in self._direct_classes.items()
            if primary and self._no_gateway_work() and self.providers[primary].uniform
        }
        if not self.shortcuts:
            self._direct_classes, self._plain_classes = {}, {}
        #: (endpoint, class index) -> the class's input_tokens, drawn as the client draws them
        self._input_tokens = {
            (ep_name, i): Sampler(klass.input_tokens, streams["input_tokens"])
            for ep_name, ep in scenario.endpoints.items()
            for i, klass in enumerate(ep.classes)
            if klass.input_tokens is not None
        }

    @property
    def semantic_entries(self) -> int:
        return self.cache_entries.entries

    # ------------------------------------------------------------------ helpers

    def _cpu_delay(self, ctx: RequestContext, seconds: float, then: float = 0.0) -> float:
        """On dedicated cores (``cpu.booked``): seconds from now until a CPU slice of ``seconds``
        (after any queue for a core) and ``then`` seconds of pure delay after it are over.  One
        timeout covers both, since nothing can observe the instant between them."""
        if seconds > 0:
            now = self.env.now
            return self.cpu.run(ctx, now, seconds) - now + then
        return then

    def _cpu(self, ctx: RequestContext, seconds: float, then: float = 0.0):
        """For ``yield from``: a CPU slice of ``seconds``, then ``then`` seconds of pure delay.
        On dedicated cores that is at most one timeout, handed over in a tuple rather than a
        generator wrapped around it (no frame on the request's chain)."""
        if self.cpu.booked is not None:
            wait = self._cpu_delay(ctx, seconds, then)
            return (self.env.timeout(wait),) if wait > 0 else ()
        return self._machine_cpu(ctx, seconds, then)

    def _machine_cpu(self, ctx: RequestContext, seconds: float, then: float):
        yield from self.cpu.work(ctx, seconds)
        if then > 0:
            yield self.env.timeout(then)

    def _ranked(self, ctx: RequestContext) -> tuple[str, tuple[str, ...]]:
        """The AI service's answer: primary then alternatives (deterministic per class)."""
        key = (ctx.endpoint, ctx.class_index)
        selection = self._selections.get(key)
        if selection is None:
            ranked = ranked_selection(self.provider_order, ctx.class_index, ctx.klass.provider)
            selection = self._selections[key] = (ranked[0], tuple(ranked[1:]))
        return selection

    def _middleware(self, ctx: RequestContext) -> Failure | None:
        """The rate limiter and the body limit, after the request's parse."""
        if self.limiter is not None:
            key = self.limiter_keys[ctx.id % len(self.limiter_keys)]
            if not self.limiter.allow(key, self.env.now):
                return Failure("rate_limited", 429)
        limit = self.body_limit
        if limit is not None and ctx.klass.request_bytes > limit:
            return Failure("too_large", 413)
        return None

    # ------------------------------------------------------------------ entry

    def start(self, ctx: RequestContext, done) -> None:
        """Handle ``ctx`` from now on; ``done(ctx)`` once the reply is out (outcome and status set)."""
        key = (ctx.endpoint, ctx.class_index)
        if self._input_tokens and ctx.input_tokens < 0:
            sampler = self._input_tokens.get(key)
            if sampler is not None:
                ctx.input_tokens = max(0, round(sampler()))
        provider = self._plain_classes.get(key)
        if provider is not None:
            self._plain(ctx, done, provider)
            return
        primary = self._direct_classes.get(key)
        if primary is not None:
            self._direct(ctx, done, primary)
        else:
            Flow(self.handle(ctx, done))

    # ------------------------------------------------------------------ entry

    def handle(self, ctx: RequestContext, done=None):
        """Generator: the whole server-side handling; sets ctx.outcome and ctx.status, then
        calls ``done(ctx)`` when given."""
        env = self.env
        if not self.admission.enter():
            # refused on arrival, before any CPU or upstream work (the real gateway's order)
            ctx.outcome, ctx.status = failure_outcome("rejected")
            if done is not None:
                done(ctx)
            return
        machine = self.machine
        costs = (yield from machine.request_start(lambda: setattr(ctx, "started_at", env.now), ctx)) if machine is not None else None
        self.in_system += 1
        try:
            yield from self._cpu(ctx, self.cpu_request())
            refused = self._middleware(ctx) if self._middleware_on else None
            if refused is not None:
                raise refused
            if ctx.endpoint_cfg.kind == "select_model":
                yield from self.select(ctx)
            else:
                yield from self.chat(ctx)
            ctx.outcome = "ok"
            ctx.status = 200
        except Failure as failure:
            ctx.outcome, status = failure_outcome(failure.kind)
            ctx.status = status
        finally:
            self.in_system -= 1
            self.admission.leave()
        if machine is not None:
            ctx.client_after = yield from machine.request_end(costs)
        if done is not None:
            done(ctx)

    # ------------------------------------------------------------------ selection

    def select(self, ctx: RequestContext):
        """Generator returning (primary, alternatives)."""
        env = self.env
        ms = self.scenario.model_selection
        if not ctx.endpoint_cfg.model_selection:
            return self._ranked(ctx)
        sc = ms.semantic_cache
        if sc.enabled:
            begun = env.now
            coin = self.cache_coin()
            similar_coin = self.cache_coin()
            if self.loop_redis is None:
                wait, ok = self.redis.operation(1)
                if wait > 0:
                    yield env.timeout(wait)
            else:
                ok = yield from self.loop_redis.operation(1)
            hit = counts_as_hit(ok, coin < ctx.klass.semantic_cache_hit)
            ctx.new_prompt = not hit and coin >= ctx.klass.semantic_cache_hit
            embedded = 0.0
            if not hit and sc.scan_on_miss:
                embedded, embedded_ok = yield from self._embed(ctx)
                ctx.embedding_s += embedded
                if embedded_ok:
                    similar = similar_coin < similarity_hit_probability(ctx.klass.similarity_hit, sc.similarity_hit)
                    found_at = ctx.klass.similar_entry_at if similar else 1.0
                    if self.loop_redis is None:
                        trips = scan_round_trips(self.semantic_entries, sc.scan_batch, found_at)
                        wait, ok = self.redis.operation(trips)
                        if wait > 0:
                            yield env.timeout(wait)
                    else:
                        ok = yield from self._loop_scan(sc.scan_batch, found_at)
                    hit = counts_as_hit(ok, similar_found(self.semantic_entries, similar))
                # a failed embedding call skips the scan: the lookup is a miss
            ctx.cache_s += env.now - begun - embedded
            if hit:
                ctx.cache_hit = True
                return self._ranked(ctx)
        selection = yield from self._ask_ai_service(ctx)
        if sc.enabled and stores_selection(ctx.endpoint_cfg.kind, sc.write_on_select, False, not ctx.selection_fallback):
            yield from self._store_selection(ctx)
        return selection

    def _static_choice(self, ctx: RequestContext, failure: Failure):
        choice = self.scenario.model_selection.fallback_choice
        if choice is None:
            raise failure
        ctx.selection_fallback = True
        return choice.provider, tuple(choice.alternatives)

    def _ask_ai_service(self, ctx: RequestContext):
        env = self.env
        breaker = self.breaker
        client = self.scenario.model_selection.ai_client
        is_select = ctx.endpoint_cfg.kind == "select_model"
        attempts = 0
        while True:
            permit = None
            if breaker is not None:
                permit = breaker.allow(env.now)
                if not ctx.breaker_state:
                    ctx.breaker_state = permit.state.value if permit is not None else breaker.state(env.now).value
                if permit is None:
                    return self._static_choice(ctx, Failure("breaker_open", 503))
            attempts += 1
            if is_select:
                ctx.attempts = attempts
            begun = env.now
            try:
                yield from self._ai_attempt(ctx, client.request_timeout)
            except Failure as failure:
                if permit is not None:
                    breaker.record(permit, env.now, False, env.now - begun)
                delay = self.retry.delay_before(attempts, failure.kind)
                if delay is None:
                    return self._static_choice(ctx, failure)
                if delay > 0:
                    yield env.timeout(delay)
                continue
            if permit is not None:
                breaker.record(permit, env.now, True, env.now - begun)
            return self._ranked(ctx)

    def _ai_attempt(self, ctx: RequestContext, timeout: float | None):
        env = self.env
        deadline = env.now + timeout if timeout is not None else None
        lease = self.ai_pool.take_idle()
        if lease is None:
            lease = yield from self.ai_pool.acquire(deadline)
            ctx.ai_pool_wait_s += lease.wait_s
            ctx.ai_connect_s += lease.connect_s
        reusable = False
        try:
            # encode the call, then the network round trip (counted on the way in)
            rtt = self.ai_rtt()
            machine = self.machine
            if machine is None:
                wait = self._cpu_delay(ctx, self.cpu_hop(), rtt)  # one timeout for both
            else:
                yield from self._cpu(ctx, self.cpu_hop())
                yield from machine.hop_start(ctx=ctx)
                wait = rtt
            if wait > 0:
                if deadline is not None and env.now + wait > deadline:
                    yield env.timeout(max(deadline - env.now, 0.0))
                    raise Failure("timeout", 504)
                yield env.timeout(wait)
            done = self.ai.submit(ctx, (ctx.endpoint, ctx.klass.name))
            if deadline is None:
                result = yield done
            else:
                if deadline - env.now <= 0:
                    raise Failure("timeout", 504)
                # fails `done` with Failure("timeout") at the deadline: no timer left per attempt
                self.deadlines.watch(deadline, done)
                result = yield done
            if machine is not None:
                yield from machine.hop_end()
            if result is not None:
                reusable = result.kind not in ("reset",)
                raise result
            reusable = True
        finally:
            self.ai_pool.release(lease, reusable)

    def _loop_scan(self, scan_batch: int, found_at: float):
        """Generator, with the event loop's Redis client: a semantic scan on one pooled
        connection, an exchange per SCAN batch (the SCAN and a GET per key, each key's vector
        decoded and compared), up to the first similar entry; returns whether every batch
        succeeded."""
        entries = self.semantic_entries
        left = entries if found_at >= 1.0 else min(entries, math.ceil(found_at * entries))
        keys = [min(scan_batch, left - done) for done in range(0, left, scan_batch)] or [0]
        return (yield from self.loop_redis.scan(tuple(1 + k for k in keys), entries=tuple(keys)))

    def _embed(self, ctx: RequestContext):
        """Generator: one embedding API call (CPU hop, then the call); returns (seconds in
        the call, ok).  Faults are judged when the call is made, as the emulator judges them
        on arrival; ``embedding_timeout`` bounds the call (a hang without one never ends)."""
        env = self.env
        sc = self.scenario.model_selection.semantic_cache
        embedded = self.embedding()
        hop = self.cpu_hop()
        machine = self.machine
        if self.cpu.booked is not None:
            at = env.now + self._cpu_delay(ctx, hop)  # the call goes out; slept through with it below
        else:
            yield from self._cpu(ctx, hop)
            at = env.now
        if machine is not None:
            # an HTTP call to the embedding API on the machine, as to any upstream
            sent = env.now
            yield from machine.hop_start(ctx=ctx)
            at = env.now
        ok = True
        if sc.embedding_faults:
            fault = active_fault(sc.embedding_faults, at)
            if fault is not None:
                if fault.kind == "outage":
                    embedded, ok = 0.0, False
                elif fault.kind == "hang":
                    embedded, ok = math.inf, False
                elif fault.kind == "slow":
                    embedded *= fault.latency_factor
                elif fault.kind == "errors":
                    ok = self.cache_coin() >= fault.error_rate
                elif fault.kind == "reset":
                    embedded, ok = embedded / 2, False
        timeout = sc.embedding_timeout
        if timeout is not None and embedded > timeout:
            embedded, ok = timeout, False
        if embedded == math.inf:
            yield self.stuck.wait()  # never answered, never given up on: the request stays here
        wait = at - env.now + embedded
        if wait > 0:
            yield env.timeout(wait)
        if machine is not None:
            if ok:
                yield from machine.hop_end(timer=True, delay_s=embedded)
            return env.now - sent, ok
        return embedded, ok

    def _redis_op(self):
        """Generator: one single-round-trip Redis operation; returns whether it succeeded."""
        if self.loop_redis is not None:
            return (yield from self.loop_redis.operation(1))
        wait, ok = self.redis.operation(1)
        if wait > 0:
            yield self.env.timeout(wait)
        return ok

    def _store_selection(self, ctx: RequestContext):
        """The seed's store: an embedding call, then a SET (and the DEL of the entry a full
        cache evicts), as ``policies.cache.SemanticEntries`` decides."""
        env = self.env
        begun = env.now
        yield from self._embed(ctx)  # without a vector the selection is stored all the same
        key = (ctx.endpoint, ctx.klass.name) if not ctx.new_prompt else ctx.id
        plan = self.cache_entries.plan(key, env.now, fresh=ctx.new_prompt)
        if plan.writes:
            ok = yield from self._redis_op()
            deleted = True
            if ok and plan.evicted is not None:
                deleted = yield from self._redis_op()
            self.cache_entries.done(plan, env.now, ok, deleted)
        ctx.store_s += env.now - begun

    # ------------------------------------------------------------------ chat

    def chat(self, ctx: RequestContext):
        if self.router is not None:
            yield from self.router.chat(ctx)
            if ctx.stream:
                yield from self._relay(ctx)
            return
        env = self.env
        scenario = self.scenario
        if ctx.endpoint_cfg.model_selection:
            primary, alternatives = yield from self.select(ctx)
        else:
            primary, alternatives = self._ranked(ctx)  # a fixed choice: no generator to run
        build = self._client_cpu(primary)
        pc = scenario.prompt_cache
        opted = pc.enabled and ctx.klass.prompt_cache_opt_in
        if opted:
            yield from self._cpu(ctx, build)
            build = 0.0
            begun = env.now
            coin = self.cache_coin()
            if self.loop_redis is None:
                wait, ok = self.redis.operation(1, pc.op_timeout)
                if wait > 0:
                    yield env.timeout(wait)
            else:
                ok = yield from self.loop_redis.operation(1, pc.op_timeout)
            ctx.prompt_cache_s += env.now - begun
            if counts_as_hit(ok, coin < ctx.klass.prompt_cache_hit):
                ctx.prompt_cache_hit = True
                ctx.provider = primary
                ctx.reply_tokens = CACHED_REPLY_TOKENS
                ctx.first_token_at = env.now  # a cached reply is sent whole, streamed or not
                return
        candidates = [primary] + [p for p in alternatives if p != primary]
        yield from self._call_with_fallback(ctx, candidates, build)
        if ctx.stream:
            yield from self._relay(ctx)
        if opted:
            if self.loop_redis is None:
                wait, _ = self.redis.operation(1, pc.op_timeout)
                if wait > 0:
                    yield env.timeout(wait)
            else:
                begun = env.now
                yield from self.loop_redis.operation(1, pc.op_timeout)
                wait = env.now - begun
            ctx.prompt_cache_s += wait
        sc = scenario.model_selection.semantic_cache
        if (
            ctx.endpoint_cfg.model_selection
            and sc.enabled
            and stores_selection("chat_completions", False, ctx.endpoint_cfg.store_selection_on_success, True)
        ):
            yield from self._store_selection(ctx)

    def _relay(self, ctx: RequestContext):
        """A streamed reply relayed from its first chunk to its end; a stream that broke on the
        way fails the request then (no fallback: the client has had the first chunks)."""
        env = self.env
        done = ctx.stream_done
        if done is not None:
            if not done.processed:
                yield done  # an llm server's stream: its end comes when its decode does
        elif ctx.stream_end_at > env.now:
            yield env.timeout(ctx.stream_end_at - env.now)
        if ctx.stream_error:
            raise Failure("stream_reset", 200)

    def _client_cpu(self, provider: str) -> float:
        """CPU seconds to build the provider's SDK client (none once built when clients are pooled)."""
        pooled = self.scenario.gateway.provider_client.pooled
        if pooled and provider in self.clients_built:
            return 0.0
        if pooled:
            self.clients_built.add(provider)
        return self.client_build()

    def _call_with_fallback(self, ctx: RequestContext, candidates: list[str], build: float):
        """For ``yield from``: the provider calls.  ``build``: the first attempt's
        client-building CPU, one slice with its encoding.  Returns the mode's generator itself
        (one frame less for every wake-up of the request to pass through)."""
        fb = self.scenario.fallback
        plan = FallbackPlan(fb.mode, candidates, fb.max_attempts, fb.race_width, fb.hedge_delay, self._trigger_on)
        if fb.mode in ("none", "sequential"):
            return self._sequential(ctx, plan, build)
        return self._built_then_concurrent(ctx, plan, build)

    def _built_then_concurrent(self, ctx: RequestContext, plan: FallbackPlan, build: float):
        yield from self._cpu(ctx, build)
        yield from self._concurrent(ctx, plan)

    def _sequential(self, ctx: RequestContext, plan: FallbackPlan, build: float):
        env = self.env
        fb = self.scenario.fallback
        timeout = fb.attempt_timeout
        to_start = plan.start(env.now)
        last: Failure | None = None
        waits = 0
        while to_start:
            provider = to_start[0]
            cpu = build
            if ctx.attempts > 0:
                ctx.fallback_used = True
                cpu = self.race_setup() + self._client_cpu(provider)
            ctx.attempts += 1
            failure = yield from self._provider_attempt(ctx, provider, timeout, cpu=cpu)
            while failure is not None and failure.kind == "429" and fb.retry_after_cap is not None:
                # the provider said when to come back: wait (up to the cap) and call it again
                wait = retry_after_wait(failure.retry_after_s, fb.retry_after_cap, waits, fb.retry_after_waits)
                if wait is None:
                    break
                waits += 1
                if wait > 0:
                    yield env.timeout(wait)
                ctx.attempts += 1
                failure = yield from self._provider_attempt(ctx, provider, timeout)
            if failure is None:
                plan.on_success(provider, env.now)
                ctx.provider = provider
                return
            last = failure
            to_start = plan.on_failure(provider, failure.kind, env.now)
        assert last is not None
        raise last

    def _concurrent(self, ctx: RequestContext, plan: FallbackPlan):
        """race and hedge: several attempts in flight, first success wins."""
        env = self.env
        fb = self.scenario.fallback
        running: dict[str, simpy.Process] = {}
        last: Failure | None = None

        def launch(providers: list[str]) -> None:
            for provider in providers:
                if ctx.attempts > 0:
                    ctx.fallback_used = True
                ctx.attempts += 1
                running[provider] = env.process(self._provider_attempt(ctx, provider, fb.attempt_timeout, interruptible=True))

        launch(plan.start(env.now))
        hedges_fired: set[float] = set()
        while running:
            waits = list(running.values())
            hedge_at = plan.next_hedge_at()
            if hedge_at is not None and hedge_at not in hedges_fired:
                if hedge_at <= env.now:
                    hedges_fired.add(hedge_at)
                    launch(plan.on_hedge_timer(env.now))
                    continue
                waits.append(env.timeout(hedge_at - env.now))
            yield env.any_of(waits)
            for provider, proc in list(running.items()):
                if not proc.triggered:
                    continue
                del running[provider]
                failure = proc.value
                if failure is None:
                    losers = plan.on_success(provider, env.now)
                    ctx.provider = provider
                    if fb.cancel_losers:
                        for loser in losers:
                            other = running.pop(loser, None)
                            if other is not None and other.is_alive:
                                other.interrupt("cancelled")
                    return
                last = failure
                launch(plan.on_failure(provider, failure.kind, env.now))
        raise last if last is not None else Failure("timeout", 504)

    def _provider_attempt(
        self, ctx: RequestContext, provider: str, timeout: float | None, interruptible: bool = False, cpu: float = 0.0
    ):
        """Generator returning None on success or the Failure; never raises a Failure.
        ``cpu``: the gateway's own CPU seconds before it (building the client), one slice with the encoding."""
        env = self.env
        breaker = self.provider_breakers.get(provider)
        permit = None
        if breaker is not None:
            permit = breaker.allow(env.now)
            if permit is None:
                return Failure("breaker_open", 503)
        begun = env.now
        deadline = begun + timeout if timeout is not None else None
        lease = None
        pool = self.provider_pools[provider]
        reusable = False
        try:
            lease = pool.take_idle()
            if lease is None:
                lease = yield from pool.acquire(deadline)
                ctx.provider_pool_wait_s += lease.wait_s
                ctx.provider_connect_s += lease.connect_s
            station = self.providers[provider]
            key = (ctx.endpoint, ctx.klass.name)
            machine = self.machine
            lead = 0.0  # CPU still to run before the call goes out, slept through with the call
            if machine is None:
                lead = self._cpu_delay(ctx, cpu + self.cpu_hop())
            else:
                yield from self._cpu(ctx, cpu + self.cpu_hop())
                yield from machine.hop_start(llm_server=station.reply_work is not None, ctx=ctx)
            replied: Failure | None = None  # an error reply travels back like a success
            if deadline is None and station.slots is None and not interruptible:
                # nothing can walk away from this call: placed and answered without a generator
                if lead > 0 and station.servers is not None:
                    yield env.timeout(lead)  # it joins the provider's line at its own instant
                    lead = 0.0
                start, end, replied = station.call_at(ctx, key, env.now + lead)
                if end == math.inf:
                    yield self.stuck.wait()  # never answered
                yield env.timeout(end - env.now)
                station.answered(ctx, start, end)
            elif deadline is None:
                try:
                    yield from station.call(ctx, key, lead)
                except Failure as failure:
                    replied = failure
            else:
                if lead > 0:
                    yield env.timeout(lead)
                call = env.process(station.guarded_call(ctx, key))
                remaining = deadline - env.now
                fired = yield call | env.timeout(max(remaining, 0.0))
                if call not in fired:
                    call.interrupt("deadline")
                    raise Failure("timeout", 504)
                replied = call.value
            if machine is not None:
                yield from machine.hop_end(timer=station.reply_timer,
                                           delay_s=station.first_timer_delay if ctx.stream else station.timer_delay)
                if replied is None and ctx.stream and ctx.first_token_at >= 0 and not ctx.first_relayed:
                    # the gateway has the stream's first chunk: the client reads it after its way out
                    ctx.first_relayed = True
                    ctx.first_token_at = env.now + machine.first_chunk_path()
            if replied is not None:
                raise replied
            reusable = True
        except Failure as failure:
            reusable = failure.kind not in ("reset", "timeout", "connect")
            if permit is not None:
                breaker.record(permit, env.now, False, env.now - begun)
            return failure
        except simpy.Interrupt:
            # a race loser walked away: its breaker permit had no outcome
            if permit is not None:
                breaker.cancel(permit, env.now)
            if not interruptible:
                raise
            return Failure("timeout", 504)
        finally:
            if lease is not None:
                if reusable and ctx.stream and ctx.stream_end_at > env.now:
                    # a relayed stream holds its connection to its end
                    ended = ctx.stream_done if ctx.stream_done is not None else env.timeout(ctx.stream_end_at - env.now)
                    ended.callbacks.append(lambda _: pool.release(lease, True))
                else:
                    pool.release(lease, reusable)
        if permit is not None:
            breaker.record(permit, env.now, True, env.now - begun)
        return None

    # ------------------------------------------------------------------ direct flow
    #
    # A request whose whole handling is admission, the parse, instant decisions and at most
    # one provider call that nothing can abandon (no model selection, prompt cache, fallback,
    # deadline or breaker; a connection pool nobody waits at; dedicated cores) needs no thread
    # of control: it runs as callbacks on one or two timeouts, with the same accounting as
    # ``handle``.  An M/M/c queue in front of a provider is such a request.

    def _is_direct(self, endpoint, klass, class_index: int) -> bool:
        scenario = self.scenario
        if endpoint.model_selection or self.machine is not None:
            return False
        if scenario.router is not None and endpoint.kind == "chat_completions":
            return False  # the router's walk
        if endpoint.kind == "select_model":
            return True  # the parse, the middleware, the static ranking
        if scenario.prompt_cache.enabled and klass.prompt_cache_opt_in:
            return False
        fb = scenario.fallback
        one_attempt = fb.mode == "none" or (fb.mode == "sequential" and fb.max_attempts == 1)
        if not one_attempt or fb.attempt_timeout is not None or fb.retry_after_cap is not None:
            return False
        primary = ranked_selection(self.provider_order, class_index, klass.provider)[0]
        return (
            primary not in self.provider_breakers
            and self.providers[primary].slots is None
            and self.provider_pools[primary].instant
        )

    def _direct(self, ctx: RequestContext, done, primary: str) -> None:
        if not self.admission.enter():
            ctx.outcome, ctx.status = failure_outcome("rejected")
            done(ctx)
            return
        self.in_system += 1
        wait = self._cpu_delay(ctx, self.cpu_request())
        if wait > 0:
            self.env.timeout(wait).callbacks.append(lambda _: self._direct_parsed(ctx, done, primary))
        else:
            self._direct_parsed(ctx, done, primary)

    def _direct_parsed(self, ctx: RequestContext, done, primary: str) -> None:
        failure = self._middleware(ctx) if self._middleware_on else None
        if failure is not None or not primary:
            self._direct_reply(ctx, done, failure)
            return
        ctx.attempts += 1
        lease = self.provider_pools[primary].take_idle()  # an instant pool's: never None
        wait = self._cpu_delay(ctx, self._client_cpu(primary) + self.cpu_hop())
        at = self.env.now + wait
        if wait > 0 and self.providers[primary].servers is not None:
            # the call joins the provider's line at its own instant
            self.env.timeout(wait).callbacks.append(lambda _: self._direct_call(ctx, done, primary, lease, at))
        else:
            self._direct_call(ctx, done, primary, lease, at)

    def _direct_call(self, ctx: RequestContext, done, name: str, lease, at: float) -> None:
        provider = self.providers[name]
        start, end, failure = provider.call_at(ctx, (ctx.endpoint, ctx.klass.name), at)
        if end == math.inf:
            return  # never answered, and nothing here walks away: in flight to the end
        if ctx.stream and ctx.stream_end_at > end:
            end = ctx.stream_end_at  # relayed to its end: nothing here looks at the first chunk
            if ctx.stream_error:
                failure = Failure("stream_reset", 200)

        def answered(_) -> None:
            provider.answered(ctx, start, end)
            self.provider_pools[name].release(lease, failure is None or failure.kind not in ("reset", "timeout", "connect"))
            if failure is None:
                ctx.provider = name
            self._direct_reply(ctx, done, failure)

        self.env.timeout(end - self.env.now).callbacks.append(answered)

    def _no_gateway_work(self) -> bool:
        """No CPU for the parse, the hop or a client, and no middleware to ask."""
        return (
            not self._middleware_on
            and self.cpu_request.constant == 0
            and self.cpu_hop.constant == 0
            and self.client_build.constant == 0
        )

    def _plain(self, ctx: RequestContext, done, provider: SimProvider) -> None:
        """The direct flow when the gateway spends nothing and the provider decides nothing per
        call: the call is placed on arrival and the reply is one timeout away.  The same
        accounting as ``_direct``; an M/M/c station is exactly this."""
        if not self.admission.enter():
            ctx.outcome, ctx.status = failure_outcome("rejected")
            done(ctx)
            return
        self.in_system += 1
        ctx.attempts += 1
        now = self.env.now
        start, end = provider.place(ctx, now)

        def answered(_) -> None:
            provider.in_flight -= 1
            ctx.provider_s += end - start
            ctx.provider = provider.name
            ctx.outcome = "ok"
            ctx.status = 200
            self.in_system -= 1
            self.admission.leave()
            done(ctx)

        self.env.timeout(end - now).callbacks.append(answered)

    def _direct_reply(self, ctx: RequestContext, done, failure: Failure | None) -> None:
        if failure is None:
            ctx.outcome = "ok"
            ctx.status = 200
        else:
            ctx.outcome, ctx.status = failure_outcome(failure.kind)
        self.in_system -= 1
        self.admission.leave()
        done(ctx)

    def __repr__(self) -> str:
        return f"<SimGateway in_system={self.in_system} cpu={self.cpu!r} ai={self.ai!r}>"
