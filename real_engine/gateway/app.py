"""The gateway's HTTP face: an aiohttp server on 127.0.0.1 built from the scenario.

Routes: each endpoint's ``http_path`` (``POST /v1/select-model``,
``POST /v1/chat/completions`` by default), ``GET /healthz`` and ``GET /metrics``
(Prometheus text).  A request passes, in the seed's (and the simulator's) order: the
gateway's per-request CPU, the sliding-window rate limiter (429), the body limit (413),
JSON parsing (400), then its flow (``flow.GatewayCore``).  Every reply carries ``Server-Timing`` (one entry
per record stage, milliseconds) and the ``X-Gwsim-*`` headers the load generator turns
into a ``RequestRecord``.

Like the seed's Fiber server, a client that goes away does not cancel its handler: the
gateway finishes the work (and spends the upstream calls) regardless.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from real_engine.gateway.flow import OUTCOME_STATUS, FlowError, GatewayCore, RequestContext
from real_engine.gateway.metrics import GatewayMetrics
from simulator.scenario import Endpoint, Scenario

log = logging.getLogger(__name__)

#: aiohttp waits this long for handlers still running at shutdown, then cancels them.
SHUTDOWN_TIMEOUT_S = 2.0
_NO_LIMIT_BYTES = 64 * 1024 * 1024


def _prompt_of(body: Any) -> str:
    """The last message's text (the seed takes the last message as the prompt)."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("expected a non-empty 'messages' list")
    last = messages[-1]
    if not isinstance(last, dict):
        raise ValueError("expected each message to be an object")
    content = last.get("content", "")
    if isinstance(content, list):  # OpenAI content parts
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ValueError("expected message content to be a string")
    return content


class GatewayApp:
    """Handlers bound to one ``GatewayCore``."""

    def __init__(self, core: GatewayCore, metrics: GatewayMetrics) -> None:
        self.core = core
        self.metrics = metrics
        self.scenario: Scenario = core.scenario
        self._rl_keys = self.scenario.gateway.rate_limit.keys if self.scenario.gateway.rate_limit else 1

    def build(self) -> web.Application:
        limit = self.scenario.gateway.body_limit_bytes
        # Allow one byte beyond the limit so our own check, not aiohttp's, answers 413 with headers.
        app = web.Application(client_max_size=(limit + 1) if limit else _NO_LIMIT_BYTES)
        for ep_name, ep in self.scenario.endpoints.items():
            app.router.add_post(ep.http_path, self._handler_for(ep_name, ep))
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_view)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics_view(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    def _handler_for(self, ep_name: str, ep: Endpoint):
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, ep_name, ep)

        return handler

    def _rate_key(self, request: web.Request, request_id: str) -> str:
        rl = self.scenario.gateway.rate_limit
        if rl is None:
            return ""
        if rl.key == "ip":
            return request.remote or ""
        auth = request.headers.get("Authorization")
        if auth:
            return auth
        # The load generator spreads its traffic over `keys` API keys.
        try:
            return f"key-{int(request_id) % self._rl_keys}"
        except ValueError:
            return "key-0"

    async def handle(self, request: web.Request, ep_name: str, ep: Endpoint) -> web.StreamResponse:
        started = time.perf_counter()
        core = self.core
        request_id = request.headers.get("X-Gwsim-Request-Id", "")
        class_name = request.headers.get("X-Gwsim-Class", "")
        if not class_name and ep.classes:
            class_name = ep.classes[0].name
        ctx = RequestContext(request_id=request_id, endpoint=ep_name, class_name=class_name)
        self.metrics.in_flight.inc()
        body_bytes = b""
        content_type = "application/json"
        try:
            try:
                # The seed's order: middleware (CPU, rate limiter) before the body is judged.
                limit = self.scenario.gateway.body_limit_bytes
                too_large = limit is not None and (request.content_length or 0) > limit
                raw = b""
                if not too_large:
                    try:
                        raw = await request.read()
                    except web.HTTPRequestEntityTooLarge:
                        too_large = True
                    too_large = too_large or (limit is not None and len(raw) > limit)
                await core.cpu_per_request(ctx)
                if core.rate_limited(self._rate_key(request, request_id)):
                    raise FlowError("rate_limited", "rate limit exceeded")
                if too_large:
                    raise FlowError("too_large", f"body over {limit} bytes")
                try:
                    body = json.loads(raw)
                    prompt = _prompt_of(body)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise FlowError("bad_request", f"malformed request: {exc}") from None
                if ep.kind == "select_model":
                    reply = await core.select_model(ctx, ep_name, ep, prompt)
                    body_bytes = json.dumps(reply).encode()
                else:
                    nonce = request.headers.get("X-Gwsim-Prompt-Nonce", "")
                    body_bytes, content_type = await core.chat(ctx, ep_name, ep, body, prompt, nonce)
                ctx.outcome = "ok"
            except FlowError as exc:
                ctx.outcome = exc.outcome
                body_bytes = json.dumps({"error": {"message": str(exc), "type": exc.outcome}}).encode()
                content_type = "application/json"
            except Exception:  # noqa: BLE001 - a gateway bug still answers with the record headers
                log.exception("request %s on %s failed unexpectedly", request_id, ep_name)
                ctx.outcome = "upstream_error"
                body_bytes = json.dumps({"error": {"message": "internal error", "type": "upstream_error"}}).encode()
                content_type = "application/json"
        finally:
            self.metrics.in_flight.dec()
        status = OUTCOME_STATUS.get(ctx.outcome, 502)
        core.outcomes[ctx.outcome] = core.outcomes.get(ctx.outcome, 0) + 1
        self.metrics.request_duration.labels(ep_name, str(status)).observe(time.perf_counter() - started)
        ctype = content_type.split(";", 1)[0].strip() or "application/json"
        headers = ctx.headers()
        # "total": the whole handler, so a client can tell gateway time from network time
        # (not a record stage; the load generator ignores it).
        total = f"total;dur={(time.perf_counter() - started) * 1e3:.3f}"
        headers["Server-Timing"] = f"{headers['Server-Timing']}, {total}" if "Server-Timing" in headers else total
        return web.Response(body=body_bytes, status=status, headers=headers, content_type=ctype)


@dataclass
class GatewayHandle:
    """A running gateway: where it listens, its state, and how to stop it."""

    url: str
    host: str
    port: int
    core: GatewayCore
    metrics: GatewayMetrics
    key_prefix: str
    _runner: web.AppRunner
    _closed: bool = False

    def stats(self) -> dict[str, Any]:
        core = self.core
        now = core.clock.now()
        breakers: dict[str, Any] = {}
        if core.ai_breaker is not None:
            breakers["ai_service"] = {
                "state": core.ai_breaker.state(now).value,
                "rejections": core.ai_breaker.rejections,
                "log": [list(e) for e in core.ai_breaker.log],
            }
        for name, br in core.provider_breakers.items():
            breakers[name] = {"state": br.state(now).value, "rejections": br.rejections, "log": [list(e) for e in br.log]}
        return {
            "url": self.url,
            "outcomes": dict(core.outcomes),
            "pools": {p.name: p.stats() for p in core.pools()},
            "breakers": breakers,
            "caches": {k: dict(v) for k, v in core.caches.counts.items()},
            "cache_entries": core.caches.entries,
            "semantic_scan": {"scan_calls": core.caches.scan_calls, "keys_read": core.caches.scanned_keys},
            "cpu": {"workers": core.cpu.workers, "jobs": core.cpu.jobs, "busy_s": round(core.cpu.busy_total_s, 6)},
            "rate_limiter": (
                {"allowed": core.limiter.allowed, "rejections": core.limiter.rejections} if core.limiter else None
            ),
            "retries": {"retries": core.retry.retries, "give_ups": core.retry.give_ups},
            "losers": {"cancelled": core.cancelled_losers, "left_running": core.background_losers},
            "key_prefix": self.key_prefix,
        }

    async def close(self) -> None:
        """Stop listening, let handlers finish (briefly), close pools, delete Redis keys."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._runner.cleanup()
        finally:
            await self.core.close()

    async def __aenter__(self) -> "GatewayHandle":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<GatewayHandle {self.url} {self.core!r}>"


async def start_gateway(
    scenario: Scenario,
    upstream_urls: dict[str, Any],
    t0: float,
    seed: int,
    redis_url: str = "redis://127.0.0.1:6379/0",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    key_prefix: str | None = None,
) -> GatewayHandle:
    """Build and start the gateway; Redis seeded and the port bound when it returns."""
    prefix = key_prefix or f"gwsim:{uuid.uuid4().hex[:12]}:"
    metrics = GatewayMetrics()
    core = GatewayCore(scenario, upstream_urls, t0, seed, redis_url, prefix, metrics)
    runner: web.AppRunner | None = None
    try:
        await core.prepare()
        app = GatewayApp(core, metrics).build()
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
        await site.start()
        bound = runner.addresses[0][1]
    except BaseException:
        if runner is not None:
            await runner.cleanup()
        await core.close()
        raise
    url = f"http://{host}:{bound}"
    log.info("gateway listening on %s (redis keys under %s)", url, prefix)
    return GatewayHandle(url=url, host=host, port=bound, core=core, metrics=metrics, key_prefix=prefix, _runner=runner)
