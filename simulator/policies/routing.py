"""LiteLLM's router: model groups of deployments, its routing strategies, retries and fallbacks.

A client asks for a model name; the router serves it with one deployment (a provider endpoint)
of that model group.  This module decides everything the router decides, with the time passed
in, and is driven by both executors (``simulator.model.router`` and the real engine's gateway):

* ``Router.pick``: among the group's deployments not cooling down (``policies.cooldown``):
  ``simple-shuffle`` draws one in proportion to the first of ``weight``, ``rpm``, ``tpm`` that
  any deployment sets (uniformly when none does); ``least-busy`` takes the one with the fewest
  calls in flight (the first listed on a tie); ``latency-based-routing`` averages each
  deployment's last ``latency_window`` successes (seconds per completion token; a timeout
  counts as 1,000), counts a deployment never seen as 0, skips those whose ``rpm``/``tpm`` the
  current minute's successes would exceed, and draws among those within ``latency_buffer`` of
  the fastest; ``usage-based-routing-v2`` takes the one with the fewest tokens this minute
  (random on a tie), skipping those at their ``tpm`` or one call short of their ``rpm``;
  ``cost-based-routing`` takes the cheapest (input + output cost per token; a missing or zero
  cost counts as 5.0) within its minute's ``rpm``/``tpm``.  None: no deployment available.
* ``Router.begin``: the deployment's ``max_parallel_requests`` (else its ``rpm``, else
  ``tpm``/1000*6) calls at once, beyond which the router refuses with a 429 without waiting;
  with ``usage-based-routing-v2`` also the ``rpm`` pre-call check (a 429, and the cooldown
  decision).  ``Router.end``: what a call's outcome teaches the strategy and the cooldowns.
* ``Router.route``: one request's walk (LiteLLM's ``async_function_with_fallbacks``): an attempt,
  then up to ``num_retries`` retries (a per-error ``retry_policy`` overrides the count) while the
  group has a deployment not cooling down, waiting 0 s between them when it has several and
  another is healthy, else the error's Retry-After (up to 60 s) or 0.5 s doubling per retry
  (at least ``retry_after``, at most 8 s), plus up to 0.75 s of jitter, also after the last
  failed retry; a 4xx other than 408/409/429 is not retried.  Then the group's ``fallbacks``,
  each walked the same way (with its own fallbacks, never a group twice, at most
  ``max_fallbacks`` deep); when they fail too the client gets the first group's error.
* LiteLLM logs one failure per request (its logging object marks the request's failure logged
  after the first): only a request's first failed call counts toward the deployment's
  cooldown, updates the latency window and gives back its least-busy count; a later failed
  call of the same request leaves its count in flight (for the hour LiteLLM keeps it), and a
  fallback group's failure has its last deployment judged for a cooldown without being
  counted.

Minutes are run-time minutes (``floor(now / 60)``); LiteLLM's are wall-clock minutes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from simulator.policies.cooldown import KIND_STATUS, CooldownConfig, Cooldowns, error_class, retryable_status
from simulator.policies.eventlog import new_log

if TYPE_CHECKING:
    from simulator.scenario import Router as RouterSettings

__all__ = [
    "STRATEGIES",
    "Attempt",
    "DeploymentSpec",
    "Route",
    "RouteResult",
    "Router",
    "RouterConfig",
    "client_outcome",
    "deployment_id",
    "deployment_providers",
    "parallel_limit",
]

STRATEGIES = ("simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2", "cost-based-routing")
#: LiteLLM's retry back-off: INITIAL_RETRY_DELAY, MAX_RETRY_DELAY, JITTER (seconds).
INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
JITTER_S = 0.75
#: What a timed-out call adds to latency-based routing's window (LiteLLM's 1000.0).
TIMEOUT_LATENCY = 1000.0
#: Cost per token LiteLLM assumes for a deployment whose cost it does not know.
UNKNOWN_COST_PER_TOKEN = 5.0
#: Retry-After of the router's own rpm refusal (usage-based-routing-v2's pre-call check).
RPM_REFUSAL_RETRY_AFTER_S = 60.0
MINUTE_S = 60.0


def deployment_id(group: str, index: int) -> str:
    """A deployment's id: its group and place in it (LiteLLM's ``model_info.id`` in an exported config)."""
    return f"{group}-{index}"


def deployment_providers(router: "RouterSettings | None") -> dict[str, str]:
    """Deployment id -> the provider it calls (to read a LiteLLM reply's ``x-litellm-model-id``)."""
    if router is None:
        return {}
    return {deployment_id(g, i): d.provider for g, group in router.groups.items() for i, d in enumerate(group.deployments)}


def client_outcome(status: int) -> str:
    """The record outcome of an HTTP status a gateway answers with when it says nothing more
    (LiteLLM's proxy, any external gateway): 429 is a rate limit, 408 and 504 a timeout, 413 too
    large, other 5xx an upstream error, other 4xx a bad request."""
    if 200 <= status < 400:
        return "ok"
    if status in (408, 504):
        return "timeout"
    known = {429: "rate_limited", 413: "too_large"}
    return known.get(status, "upstream_error" if status >= 500 else "bad_request")


def parallel_limit(max_parallel_requests: int | None, rpm: int | None, tpm: int | None) -> int | None:
    """Calls a deployment takes at once (LiteLLM's ``calculate_max_parallel_requests``)."""
    if max_parallel_requests is not None:
        return max_parallel_requests
    if rpm is not None:
        return rpm
    if tpm is not None:
        return max(1, int(tpm / 1000 * 6))
    return None


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment of a model group (an entry of LiteLLM's ``model_list``)."""

    id: str
    group: str
    provider: str
    weight: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel_requests: int | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    cooldown_s: float | None = None  # its own cooldown_time

    @property
    def cost(self) -> float:
        # LiteLLM reads the costs with `or`: an unset or zero cost is the unknown-model cost
        return (self.input_cost_per_token or UNKNOWN_COST_PER_TOKEN) + (self.output_cost_per_token or UNKNOWN_COST_PER_TOKEN)


@dataclass(frozen=True)
class RouterConfig:
    strategy: str
    groups: Mapping[str, tuple[DeploymentSpec, ...]]
    num_retries: int = 2
    retry_after_s: float = 0.0
    retry_policy: Mapping[str, int] = field(default_factory=dict)  # error_class (or "default") -> retries
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    max_fallbacks: int = 5
    latency_buffer: float = 0.0
    latency_window: int = 10
    cooldown: CooldownConfig = field(default_factory=CooldownConfig)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"expected a strategy from {list(STRATEGIES)}, got {self.strategy!r}")
        if not self.groups or any(not deps for deps in self.groups.values()):
            raise ValueError("expected model groups with at least one deployment each")

    @classmethod
    def from_settings(cls, router: "RouterSettings") -> "RouterConfig":
        """From the scenario's ``[router]`` table: deployment ids are ``GROUP-INDEX``."""
        groups = {
            name: tuple(
                DeploymentSpec(
                    deployment_id(name, i), name, d.provider, d.weight, d.rpm, d.tpm, d.max_parallel_requests,
                    d.input_cost_per_token, d.output_cost_per_token, d.cooldown_time,
                )
                for i, d in enumerate(group.deployments)
            )
            for name, group in router.groups.items()
        }
        return cls(
            router.strategy, groups, router.num_retries, router.retry_after, dict(router.retry_policy),
            {k: tuple(v) for k, v in router.fallbacks.items()}, router.max_fallbacks, router.latency_buffer,
            router.latency_window,
            CooldownConfig(router.cooldown_time, router.allowed_fails, dict(router.allowed_fails_policy), router.disable_cooldowns),
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one call on a deployment came to, as the executor saw it."""

    kind: str | None = None  # None: success; else an error kind of ``cooldown.KIND_STATUS``
    elapsed_s: float = 0.0
    completion_tokens: int = 0
    total_tokens: int = 0
    retry_after_s: float | None = None  # the error's Retry-After header


@dataclass(frozen=True, slots=True)
class RouteResult:
    ok: bool
    kind: str | None  # the error the client gets (None on success)
    status: int  # the status LiteLLM answers with
    deployment: DeploymentSpec | None  # the one that answered (or the last tried)
    calls: int  # calls made to deployments
    fallback_used: bool


class _Usage:
    """What the strategies keep about one deployment."""

    __slots__ = ("in_flight", "slots", "latencies", "minute", "minute_calls", "minute_tokens", "pre_minute", "pre_calls")

    def __init__(self, window: int) -> None:
        self.in_flight = 0  # least-busy: calls past the pre-call checks, not yet answered
        self.slots = 0  # max_parallel_requests in use
        self.latencies: deque[float] = deque(maxlen=window)
        self.minute = -1
        self.minute_calls = 0  # successes this minute
        self.minute_tokens = 0  # their total tokens
        self.pre_minute = -1
        self.pre_calls = 0  # usage-based-routing-v2: calls let through its rpm check this minute

    def this_minute(self, minute: int) -> tuple[int, int]:
        return (self.minute_calls, self.minute_tokens) if self.minute == minute else (0, 0)


class Router:
    """One router's state (one LiteLLM proxy worker); ``rng`` draws shuffles, ties and jitter."""

    def __init__(self, config: RouterConfig, rng: np.random.Generator, *, log_limit: int | None = None) -> None:
        self.config = config
        self.rng = rng
        self.deployments = {d.id: d for deps in config.groups.values() for d in deps}
        self._usage = {d: _Usage(config.latency_window) for d in self.deployments}
        has_fallback = {g: bool(config.fallbacks.get(g)) for g in config.groups}
        self.cooldowns = Cooldowns(
            config.cooldown,
            {d.id: len(config.groups[d.group]) > 1 for d in self.deployments.values()},
            {d.id: has_fallback[d.group] for d in self.deployments.values()},
            log_limit=log_limit,
        )
        self._limits = {d.id: parallel_limit(d.max_parallel_requests, d.rpm, d.tpm) for d in self.deployments.values()}
        self.log: list[tuple[str, float]] = new_log(log_limit)

    # ------------------------------------------------------------------ choosing

    def healthy(self, group: str, now: float) -> list[DeploymentSpec]:
        return [d for d in self.config.groups[group] if not self.cooldowns.cooling(d.id, now)]

    def pick(self, group: str, now: float, input_tokens: int = 0) -> DeploymentSpec | None:
        """The deployment the strategy chooses for a call now; None: none available."""
        healthy = self.healthy(group, now)
        if not healthy:
            return None
        strategy = self.config.strategy
        if strategy == "simple-shuffle":
            chosen = self._shuffle(healthy)
        elif strategy == "least-busy":
            chosen = min(healthy, key=lambda d: self._usage[d.id].in_flight)  # min keeps the first of equals
        elif strategy == "latency-based-routing":
            chosen = self._fastest(healthy, now, input_tokens)
        elif strategy == "usage-based-routing-v2":
            chosen = self._least_used(healthy, now, input_tokens)
        else:
            chosen = self._cheapest(healthy, now, input_tokens)
        if chosen is not None:
            self.log.append((f"pick:{chosen.id}", now))
        return chosen

    def _shuffle(self, healthy: list[DeploymentSpec]) -> DeploymentSpec:
        for metric in ("weight", "rpm", "tpm"):
            weights = [float(getattr(d, metric) or 0.0) for d in healthy]
            if max(weights) > 0:
                return healthy[_weighted_index(weights, self.rng.random())]
        return healthy[int(self.rng.random() * len(healthy)) % len(healthy)]

    def _within_minute(self, d: DeploymentSpec, minute: int, input_tokens: int) -> bool:
        calls, tokens = self._usage[d.id].this_minute(minute)
        return not ((d.tpm is not None and tokens + input_tokens > d.tpm) or (d.rpm is not None and calls + 1 > d.rpm))

    def _fastest(self, healthy: list[DeploymentSpec], now: float, input_tokens: int) -> DeploymentSpec | None:
        minute = int(now // MINUTE_S)
        scored = []
        for d in healthy:
            window = self._usage[d.id].latencies
            if self._within_minute(d, minute, input_tokens):
                scored.append((d, sum(window) / len(window) if window else 0.0))
        if not scored:
            return None
        lowest = min(s for _, s in scored)
        valid = [d for d, s in scored if s <= lowest + self.config.latency_buffer * lowest]
        return valid[int(self.rng.random() * len(valid)) % len(valid)]

    def _least_used(self, healthy: list[DeploymentSpec], now: float, input_tokens: int) -> DeploymentSpec | None:
        minute = int(now // MINUTE_S)
        best: list[DeploymentSpec] = []
        lowest = math.inf
        for d in healthy:
            u = self._usage[d.id]
            tokens = u.this_minute(minute)[1]
            calls = u.pre_calls if u.pre_minute == minute else 0
            if (d.tpm is not None and tokens + input_tokens > d.tpm) or (d.rpm is not None and calls + 1 >= d.rpm):
                continue
            if tokens < lowest:
                lowest, best = tokens, [d]
            elif tokens == lowest:
                best.append(d)
        if not best:
            return None
        return best[int(self.rng.random() * len(best)) % len(best)]

    def _cheapest(self, healthy: list[DeploymentSpec], now: float, input_tokens: int) -> DeploymentSpec | None:
        minute = int(now // MINUTE_S)
        within = [d for d in healthy if self._within_minute(d, minute, input_tokens)]
        return min(within, key=lambda d: d.cost) if within else None

    # ------------------------------------------------------------------ calls

    def begin(self, d: DeploymentSpec, now: float) -> str | None:
        """Before the call goes out: None, or the router's own refusal ("max_parallel": every
        slot in use; "rpm_limit": usage-based-routing-v2's rpm check, with its cooldown decision)."""
        u = self._usage[d.id]
        limit = self._limits[d.id]
        if limit is not None and u.slots >= limit:
            self.log.append((f"max_parallel:{d.id}", now))
            return "max_parallel"
        if self.config.strategy == "usage-based-routing-v2" and d.rpm is not None:
            minute = int(now // MINUTE_S)
            if u.pre_minute != minute:
                u.pre_minute, u.pre_calls = minute, 0
            if u.pre_calls >= d.rpm:
                return self._rpm_refusal(d, now)
            u.pre_calls += 1
            if u.pre_calls > d.rpm:  # pragma: no cover - one process: the increment and the check are one step
                return self._rpm_refusal(d, now)
        u.slots += 1
        u.in_flight += 1
        return None

    def _rpm_refusal(self, d: DeploymentSpec, now: float) -> str:
        self.log.append((f"rpm_limit:{d.id}", now))
        # LiteLLM cools the deployment with the router's cooldown_time (its own call, first)
        self.cooldowns.on_failure(d.id, "rpm_limit", now)
        return "rpm_limit"

    def end_unlogged(self, d: DeploymentSpec, now: float) -> None:
        """A failed call LiteLLM does not log (not its request's first failure): the slot comes
        back, its least-busy count does not, and nothing is learnt from it."""
        self._usage[d.id].slots -= 1
        self.log.append((f"unlogged:{d.id}", now))

    def end(self, d: DeploymentSpec, now: float, attempt: Attempt) -> None:
        """A call that went out came back (or was given up on) with ``attempt``."""
        u = self._usage[d.id]
        u.slots -= 1
        u.in_flight -= 1
        if attempt.kind is None:
            self.cooldowns.on_success(d.id, now)
            minute = int(now // MINUTE_S)
            if u.minute != minute:
                u.minute, u.minute_calls, u.minute_tokens = minute, 0, 0
            u.minute_calls += 1
            u.minute_tokens += attempt.total_tokens
            per_token = attempt.elapsed_s / attempt.completion_tokens if attempt.completion_tokens else attempt.elapsed_s
            u.latencies.append(per_token)
            return
        if attempt.kind == "timeout":
            u.latencies.append(TIMEOUT_LATENCY)
        self.cooldowns.on_failure(d.id, attempt.kind, now, retry_after_s=attempt.retry_after_s, deployment_cooldown_s=d.cooldown_s)

    def route(self, group: str, now: float, input_tokens: int = 0) -> "Route":
        """One request's walk, to be driven step by step (see ``Route``)."""
        return Route(self, group, now, input_tokens)

    def __repr__(self) -> str:
        return f"<Router {self.config.strategy} deployments={len(self.deployments)} {self.cooldowns!r}>"


def _weighted_index(weights: list[float], u: float) -> int:
    total = sum(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if u * total < acc:
            return i
    return len(weights) - 1


class _Error:
    __slots__ = ("kind", "retry_after_s")

    def __init__(self, kind: str, retry_after_s: float | None = None) -> None:
        self.kind = kind
        self.retry_after_s = retry_after_s


class Route:
    """One request through the router, step by step.

    ``step`` is ``("call", deployment)``: make the call and report it with ``advance(now,
    Attempt(...))``; ``("wait", seconds)``: wait, then ``advance(now)``; or ``("done",
    RouteResult)``.  The deployment of a call has passed ``Router.begin`` (its slot is held
    until the report)."""

    def __init__(self, router: Router, group: str, now: float, input_tokens: int = 0) -> None:
        if group not in router.config.groups:
            raise ValueError(f"expected a model group from {sorted(router.config.groups)}, got {group!r}")
        self.router = router
        self.now = now
        self.input_tokens = input_tokens
        self.calls = 0
        self.fallback_used = False
        self.last: DeploymentSpec | None = None
        self._last_error: _Error | None = None  # of the last call made
        self._failure_logged = False  # LiteLLM logs a request's first failure only
        self._attempted = {group}
        self._gen = self._walk(group)
        self.step: tuple[str, Any] = self._gen.send(None)

    @property
    def done(self) -> bool:
        return self.step[0] == "done"

    def advance(self, now: float, attempt: Attempt | None = None) -> tuple[str, Any]:
        if self.done:
            raise RuntimeError("the route is done")
        if (self.step[0] == "call") != (attempt is not None):
            raise ValueError(f"expected {'an Attempt' if self.step[0] == 'call' else 'no Attempt'} after a {self.step[0]!r} step")
        self.now = now
        self.step = self._gen.send(attempt)
        return self.step

    def _walk(self, group: str) -> Generator[tuple[str, Any], Any, None]:
        err = yield from self._with_fallbacks(group, 0)
        if err is None:
            result = RouteResult(True, None, 200, self.last, self.calls, self.fallback_used)
        else:
            result = RouteResult(False, err.kind, KIND_STATUS.get(err.kind, 500), self.last, self.calls, self.fallback_used)
        yield ("done", result)

    def _with_fallbacks(self, group: str, depth: int) -> Generator[tuple[str, Any], Any, _Error | None]:
        err = yield from self._with_retries(group)
        if err is None:
            return None
        cfg = self.router.config
        targets = cfg.fallbacks.get(group, ())
        if not targets or depth >= cfg.max_fallbacks:
            return err
        for target in targets:
            if target in self._attempted or target not in cfg.groups:
                continue
            self._attempted.add(target)
            depth += 1
            self.fallback_used = True
            self.router.log.append((f"fallback:{target}", self.now))
            if (yield from self._with_fallbacks(target, depth)) is None:
                return None
            self._judge_fallback_failure()
        return err  # the client gets the first group's error

    def _with_retries(self, group: str) -> Generator[tuple[str, Any], Any, _Error | None]:
        cfg = self.router.config
        err = yield from self._attempt(group)
        if err is None:
            return None
        retries = cfg.num_retries
        by_policy = cfg.retry_policy.get(error_class(err.kind), cfg.retry_policy.get("default"))
        if by_policy is not None:  # a retry policy retries even with nothing healthy left
            retries = by_policy
        if (by_policy is None and not self._may_retry(err, group)) or retries <= 0:
            return err
        yield ("wait", self._sleep(err, retries, retries, group))
        for i in range(retries):
            again = yield from self._attempt(group)
            if again is None:
                return None
            err = again
            if by_policy is None and not self._may_retry(err, group):
                return err
            yield ("wait", self._sleep(err, retries - i - 1, retries, group))
        return err

    def _judge_fallback_failure(self) -> None:
        """LiteLLM judges a failed fallback group's last deployment for a cooldown itself (its
        failure callbacks have run once already), without counting the failure."""
        err, d = self._last_error, self.last
        if err is None or d is None or not self._failure_logged:
            return
        self.router.cooldowns.on_failure(d.id, err.kind, self.now, retry_after_s=err.retry_after_s,
                                         deployment_cooldown_s=d.cooldown_s, counted=False)

    def _may_retry(self, err: _Error, group: str) -> bool:
        """LiteLLM's ``should_retry_this_error``: a retryable status and a healthy deployment left."""
        return retryable_status(KIND_STATUS.get(err.kind, 500)) and bool(self.router.healthy(group, self.now))

    def _sleep(self, err: _Error, remaining: int, retries: int, group: str) -> float:
        """LiteLLM's ``_time_to_sleep_before_retry``."""
        router = self.router
        if len(router.config.groups[group]) != 1 and router.healthy(group, self.now):
            return 0.0
        jitter = JITTER_S * router.rng.random()
        header = err.retry_after_s
        if header is not None and 0 < int(header) <= 60:
            return int(header) + jitter
        delay = INITIAL_RETRY_DELAY_S * 2.0 ** (retries - remaining)
        return min(max(delay, router.config.retry_after_s), MAX_RETRY_DELAY_S) + jitter

    def _attempt(self, group: str) -> Generator[tuple[str, Any], Any, _Error | None]:
        router = self.router
        d = router.pick(group, self.now, self.input_tokens)
        if d is None:
            return _Error("no_deployments")
        self.last = d
        refused = router.begin(d, self.now)
        if refused is not None:
            self._last_error = None
            if refused == "rpm_limit":
                self._failure_logged = True  # the refusal goes through LiteLLM's failure logging
                return _Error(refused, RPM_REFUSAL_RETRY_AFTER_S)
            return _Error(refused)
        self.calls += 1
        attempt: Attempt = yield ("call", d)
        if attempt.kind is None or not self._failure_logged:
            router.end(d, self.now, attempt)
            self._failure_logged = self._failure_logged or attempt.kind is not None
        else:
            router.end_unlogged(d, self.now)
        if attempt.kind is None:
            return None
        self._last_error = _Error(attempt.kind, attempt.retry_after_s)
        return self._last_error
