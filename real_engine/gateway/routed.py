"""The real gateway's chat endpoint behind a LiteLLM-style router (scenario ``[router]``).

The request's model (the body's ``model`` when it names a group, else its class's) is walked
through ``simulator.policies.routing`` with the run time passed in: each call on a deployment
is a real HTTP call to its provider's emulator through the gateway's connection pool, under
the router's ``timeout``; the waits between retries are real sleeps.  What the router learns
from a call (latency per completion token from the reply's ``usage``, a 429's Retry-After) is
read off the real reply.  A request that fails is answered with the status LiteLLM's proxy
would give (429, 408, 500, 503), and its record outcome follows from it.

A streamed request (``"stream": true``) is answered as the flow's are: a call succeeds at its
reply's first chunk (the router's timeout bounds the wait for it, and the latency it learns
is that time to first token, as LiteLLM's lowest-latency routing does for streams), and the
open stream goes back as a ``flow.StreamRelay`` for ``app`` to relay; its completion tokens,
not known before the end, are the request's own count when it sent one (else none).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from real_engine.gateway.http_pool import CallTiming, UpstreamError
from simulator.policies.eventlog import RUN_LOG_LIMIT
from simulator.policies.routing import Attempt, Router, RouterConfig, client_outcome

if TYPE_CHECKING:
    from real_engine.gateway.flow import GatewayCore, RequestContext

#: Prompt tokens of a request that does not say (the emulated provider counts about this many
#: for a load-generator prompt); only a deployment's tpm limit looks at it.
PROMPT_TOKENS = 5


def _retry_after(value: str | None) -> float | None:
    try:
        return float(int(value)) if value else None
    except ValueError:
        return None


class RealRouter:
    """The router of one gateway process (as one LiteLLM proxy worker keeps its state)."""

    def __init__(self, core: "GatewayCore", rng) -> None:
        scenario = core.scenario
        assert scenario.router is not None
        self.core = core
        self.scenario = scenario
        self.settings = scenario.router
        self.policy = Router(RouterConfig.from_settings(scenario.router), rng, log_limit=RUN_LOG_LIMIT)

    def group_of(self, body: dict[str, Any], ep_name: str, class_name: str) -> str:
        model = body.get("model")
        if isinstance(model, str) and model in self.settings.groups:
            return model
        _, cls = self.core.class_of(ep_name, class_name)
        if cls is None:
            return next(iter(self.settings.groups))
        return self.scenario.router_group(cls)

    async def chat(self, ctx: "RequestContext", ep_name: str, body: dict[str, Any]) -> "tuple[bytes, str] | StreamRelay":
        from real_engine.gateway.flow import FlowError, StreamRelay, emulator_queue_s, status_kind

        core = self.core
        clock = core.clock
        own = body.get("gwsim_input_tokens")
        input_tokens = own if isinstance(own, int) and not isinstance(own, bool) and own >= 0 else PROMPT_TOKENS
        route = self.policy.route(self.group_of(body, ep_name, ctx.class_name), clock.now(), input_tokens)
        headers = {
            "Content-Type": "application/json",
            "X-Gwsim-Request-Id": ctx.request_id,
            "X-Gwsim-Endpoint": ep_name,
            "X-Gwsim-Class": ctx.class_name,
        }
        payload = json.dumps(body).encode()
        stream = body.get("stream") is True
        own_out = body.get("gwsim_output_tokens")
        stream_tokens = own_out if isinstance(own_out, int) and not isinstance(own_out, bool) and own_out > 0 else 0
        reply: "tuple[bytes, str] | StreamRelay | None" = None
        while not route.done:
            what, detail = route.step
            if what == "wait":
                if detail > 0:
                    await asyncio.sleep(detail)
                route.advance(clock.now())
                continue
            provider = detail.provider
            ctx.attempts += 1
            await core._cpu_per_hop(ctx)
            timing = CallTiming()
            started = time.perf_counter()
            resp = None
            upstream = None
            try:
                async with asyncio.timeout(self.settings.timeout):
                    if stream:
                        resp, upstream, first = await self._open_stream(provider, payload, headers, timing)
                    else:
                        resp = await core.provider_pools[provider].request("POST", "/v1/chat/completions", payload, headers, timing)
                kind = None if resp.status == 200 else status_kind(resp.status)
            except UpstreamError as exc:
                kind = exc.kind
            except TimeoutError:
                kind = "timeout"
            except BaseException:
                if upstream is not None:
                    upstream.close()
                raise
            elapsed = time.perf_counter() - started
            ctx.add("provider_pool_wait", timing.pool_wait_s)
            ctx.add("provider_connect", timing.connect_s)
            if upstream is not None:  # the relay adds the provider's time when the stream ends
                queue_s = emulator_queue_s(upstream)  # type: ignore[arg-type] - it reads .headers only
                ctx.add("provider_queue", queue_s)
                core.metrics.upstream_calls.labels(provider, "ok").inc()
                reply = StreamRelay(first, upstream, queue_s, _nothing_after)
                route.advance(clock.now(), Attempt(None, elapsed, stream_tokens, stream_tokens + input_tokens))
                continue
            queue_s = min(emulator_queue_s(resp), timing.exchange_s) if resp is not None else 0.0
            ctx.add("provider_queue", queue_s)
            ctx.add("provider", max(0.0, timing.exchange_s - queue_s))
            core.metrics.upstream_calls.labels(provider, kind or "ok").inc()
            if kind is None:
                assert resp is not None
                completion, total = _usage(resp.body)
                reply = (resp.body, resp.headers.get("content-type", "application/json"))
                route.advance(clock.now(), Attempt(None, elapsed, completion, total))
            else:
                retry_after = _retry_after(resp.headers.get("retry-after")) if resp is not None else None
                route.advance(clock.now(), Attempt(kind, elapsed, retry_after_s=retry_after))
        result = route.step[1]
        ctx.fallback_used = result.fallback_used
        if not result.ok:
            if isinstance(reply, StreamRelay):
                reply.upstream.close()
            raise FlowError(client_outcome(result.status), f"router: {result.kind}", status=result.status, error_type=result.kind)
        ctx.provider = result.deployment.provider
        assert reply is not None
        return reply


    async def _open_stream(self, provider: str, payload: bytes, headers: dict[str, str], timing: CallTiming):
        """(reply head, the open stream on success else None, its first piece) of a streamed call."""
        from real_engine.gateway.flow import HttpResponse

        up = await self.core.provider_pools[provider].open_stream("POST", "/v1/chat/completions", payload, headers, timing)
        try:
            if up.status != 200:
                return HttpResponse(up.status, up.headers, await up.read_all(), False), None, b""
            first = await up.piece()
            if not first:
                raise UpstreamError("reset", f"{provider}: a stream that ended before its first chunk")
        except BaseException:
            up.close()
            raise
        return up, up, first


async def _nothing_after(reply: bytes) -> None:
    """A routed stream has no prompt-cache SET or selection store after it."""


def _usage(raw: bytes) -> tuple[int, int]:
    """(completion tokens, total tokens) of a chat completion's ``usage`` (0, 0 when absent)."""
    try:
        usage = json.loads(raw).get("usage") or {}
        return int(usage.get("completion_tokens") or 0), int(usage.get("total_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0, 0
