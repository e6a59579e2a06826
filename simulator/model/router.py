"""A LiteLLM router on the simulated gateway's chat endpoint: each chat request asks its model
group, and ``simulator.policies.routing`` walks it through deployments, retries, cooldowns and
fallback groups; this module spends the simulated time between its steps.

A call on a deployment is the gateway's provider attempt (its connection pool, the hop's CPU,
the provider's latency, errors, concurrency and faults) under the router's ``timeout``.  What
the router learns from a success (latency per completion token, tokens this minute) uses the
request's own output tokens when it has them (a trace's), else the mean of its class's (the
emulated provider draws them; the router's averages see the same mean).
"""

from __future__ import annotations

from simulator.model.context import Failure, RequestContext
from simulator.policies.eventlog import RUN_LOG_LIMIT
from simulator.policies.routing import Attempt, Router, RouterConfig
from simulator.scenario import PlainLatency, Scenario

#: Retry-After of an emulated provider's 429 (real_engine.emulators.faults.error_reply).
PROVIDER_RETRY_AFTER_S = 1.0
#: Prompt tokens the emulated provider counts for a load-generator prompt ("gwsim:ep:class #id").
PROMPT_TOKENS = 5


def status_kind(status: int) -> str:
    """The ``Failure`` kind of a request the router answered with ``status``."""
    return f"http_{status}"


class SimRouter:
    """The router of one replication, driving its policy with the gateway's provider attempts."""

    def __init__(self, gateway, scenario: Scenario, rng) -> None:
        assert scenario.router is not None
        self.gateway = gateway
        self.env = gateway.env
        self.scenario = scenario
        self.settings = scenario.router
        self.policy = Router(RouterConfig.from_settings(scenario.router), rng, log_limit=RUN_LOG_LIMIT)
        self._tokens: dict[tuple[str, str], float] = {}
        for ep_name, ep in scenario.endpoints.items():
            for klass in ep.classes:
                self._tokens[(ep_name, klass.name)] = self._mean_tokens(klass)

    def _mean_tokens(self, klass) -> float:
        if klass.output_tokens is not None:
            return klass.output_tokens.mean
        return -1.0  # the provider's default: known per provider only

    def _completion_tokens(self, ctx: RequestContext, provider: str) -> int:
        if ctx.output_tokens >= 0:
            return max(1, round(ctx.output_tokens))
        tokens = self._tokens.get((ctx.endpoint, ctx.klass.name), -1.0)
        if tokens < 0:
            lat = self.scenario.providers[provider].latency
            tokens = 16.0 if isinstance(lat, PlainLatency) else lat.default_output_tokens.mean
        return max(1, round(tokens))

    def chat(self, ctx: RequestContext):
        """Generator: the request's router walk; raises ``Failure(http_<status>)`` when it fails."""
        env = self.env
        group = self.scenario.router_group(ctx.klass)
        input_tokens = ctx.input_tokens if ctx.input_tokens >= 0 else PROMPT_TOKENS
        route = self.policy.route(group, env.now, input_tokens)
        timeout = self.settings.timeout
        while not route.done:
            what, detail = route.step
            if what == "wait":
                if detail > 0:
                    yield env.timeout(detail)
                route.advance(env.now)
                continue
            provider = detail.provider
            begun = env.now
            ctx.attempts += 1
            failure = yield from self.gateway._provider_attempt(ctx, provider, timeout)
            elapsed = env.now - begun
            if failure is None:
                completion = self._completion_tokens(ctx, provider)
                route.advance(env.now, Attempt(None, elapsed, completion, completion + input_tokens))
            else:
                kind = failure.kind if failure.kind in ("429", "500", "503", "timeout", "connect", "reset") else "500"
                retry_after = failure.retry_after_s if failure.retry_after_s is not None else (
                    PROVIDER_RETRY_AFTER_S if kind == "429" else None)
                route.advance(env.now, Attempt(kind, elapsed, retry_after_s=retry_after))
        result = route.step[1]
        ctx.fallback_used = result.fallback_used
        if not result.ok:
            raise Failure(status_kind(result.status), result.status)
        ctx.provider = result.deployment.provider
