"""The gateway's HTTP face: an aiohttp server on 127.0.0.1 built from the scenario.

Routes: each endpoint's ``http_path`` (``POST /v1/select-model``,
``POST /v1/chat/completions`` by default), ``GET /healthz``, ``GET /metrics``
(Prometheus text) and ``GET /openapi.json`` (the two endpoints and their error replies).
A request passes admission first (``gateway.max_in_flight``: 503 ``overloaded`` at once
beyond it, as the simulator does), then its body is read within
``gateway.body_read_timeout`` (408 and the connection closed when a client trickles it),
then, in the seed's (and the simulator's) order: the gateway's per-request CPU, the
sliding-window rate limiter (429), the body limit (413), the content type (415 unless
JSON or unsaid), the ``X-Gwsim-*`` request headers and the JSON body (400), then its flow
(``flow.GatewayCore``).  Every reply carries ``Server-Timing`` (one entry per record
stage, milliseconds) and the ``X-Gwsim-*`` headers the load generator turns into a
``RequestRecord``; every error reply has a JSON body ``{"error": {"message", "type"}}``.

A streamed chat reply (``flow.StreamRelay``) goes out as it comes: the status and the
``X-Gwsim-*`` headers with the provider's first chunk, then each piece the moment it arrives
(no buffering), then, after the provider's ``data: [DONE]``, one SSE comment line
``: gwsim {"outcome": ..., "server_timing": ...}`` with what only the end can tell (SSE
clients ignore comments; the load generator reads it).  A provider failing after the first
chunk cannot be fallen back from: the client gets ``data: {"error": {...}}`` and the end of
the stream, and the request counts as ``reset`` (or ``timeout``).

Like the seed's Fiber server, by default a client that goes away does not cancel its
handler: the gateway finishes the work (and spends the upstream calls) regardless.
``gateway.cancel_on_disconnect`` cancels it instead (upstream calls, pool waits and
breaker permits given back) and counts the request once as ``client_gone``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, http_exceptions, web

from real_engine import settings
from real_engine.gateway.flow import OUTCOME_STATUS, FlowError, GatewayCore, RequestContext, StreamRelay
from real_engine.gateway.http_pool import UpstreamError
from real_engine.gateway.metrics import GatewayMetrics
from simulator.scenario import Endpoint, Scenario

log = logging.getLogger(__name__)

#: aiohttp waits this long for handlers still running at shutdown, then cancels them.
SHUTDOWN_TIMEOUT_S = 2.0
_NO_LIMIT_BYTES = 64 * 1024 * 1024
#: Deeper JSON bodies get 400: a chat body is a few levels deep, and the recursion of
#: json.dumps when the body is passed on must stay far from Python's recursion limit.
MAX_JSON_DEPTH = 64
#: The X-Gwsim-* request headers go on to the upstreams: short printable ASCII only.
MAX_GWSIM_HEADER_CHARS = 256
_GWSIM_HEADERS = ("X-Gwsim-Request-Id", "X-Gwsim-Class", "X-Gwsim-Prompt-Nonce")


def _json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((c, depth + 1) for c in children)
    return deepest


def _is_json_type(request: web.Request) -> bool:
    """JSON, ``application/*+json`` or no Content-Type at all (read as JSON, leniently)."""
    if not request.headers.get(hdrs.CONTENT_TYPE, "").strip():
        return True
    mime = request.content_type.lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _check_gwsim_headers(request: web.Request) -> None:
    for name in _GWSIM_HEADERS:
        value = request.headers.get(name, "")
        if len(value) > MAX_GWSIM_HEADER_CHARS or not all(" " <= ch <= "~" for ch in value):
            raise FlowError("bad_request", f"malformed request: {name} must be printable ASCII of at most "
                            f"{MAX_GWSIM_HEADER_CHARS} characters")


def _parse_body(raw: bytes) -> tuple[Any, str]:
    """(body, prompt), or FlowError bad_request naming what is wrong."""
    try:
        body = json.loads(raw)
        if _json_depth(body) > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return body, _prompt_of(body)
    except RecursionError:
        raise FlowError("bad_request", f"malformed request: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise FlowError("bad_request", f"malformed request: {exc}") from None


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
    # Lone surrogates ("\ud800" is valid JSON) cannot reach Redis or a cache key.
    content.encode("utf-8")
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
        app.router.add_get("/openapi.json", self.openapi_view)
        return app

    async def openapi_view(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_spec(self.scenario))

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics_view(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render(request.headers.get(hdrs.ACCEPT))
        # set as a header: aiohttp's content_type argument refuses the version parameter
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})

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

    async def _read_body(self, request: web.Request) -> tuple[bytes, bool]:
        """(body, too large); FlowError when the client is too slow or goes away."""
        limit = self.scenario.gateway.body_limit_bytes
        if limit is not None and (request.content_length or 0) > limit:
            return b"", True
        try:
            async with asyncio.timeout(self.scenario.gateway.body_read_timeout):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return b"", True
        except TimeoutError:
            self.metrics.edge_events.labels("body_timeout").inc()
            raise FlowError(
                "bad_request", f"request body not received within {self.scenario.gateway.body_read_timeout:g}s",
                status=408, error_type="request_timeout", close=True,
            ) from None
        except ConnectionError:
            raise FlowError("client_gone", "the client went away while sending its body") from None
        except http_exceptions.HttpProcessingError as exc:
            raise FlowError("bad_request", f"malformed request body: {exc.message}", close=True) from None
        return raw, limit is not None and len(raw) > limit

    async def handle(self, request: web.Request, ep_name: str, ep: Endpoint) -> web.StreamResponse:
        started = time.perf_counter()
        core = self.core
        request_id = request.headers.get("X-Gwsim-Request-Id", "")
        class_name = request.headers.get("X-Gwsim-Class", "")
        if not class_name and ep.classes:
            class_name = ep.classes[0].name
        ctx = RequestContext(request_id=request_id, endpoint=ep_name, class_name=class_name)
        if not core.admission.enter():
            # Refused before any work, so an overload costs a reply, not a growing queue.
            ctx.outcome = "rejected"
            self.metrics.edge_events.labels("overloaded").inc()
            error = FlowError("rejected", f"gateway overloaded: {core.admission.limit} requests in flight",
                              error_type="overloaded")
            return self._reply(ctx, ep_name, started, *_error_body(error), status=503)
        self.metrics.in_flight.inc()
        body_bytes = b""
        content_type = "application/json"
        status: int | None = None
        close = False
        try:
            try:
                raw, too_large = await self._read_body(request)
                # The seed's order: middleware (CPU, rate limiter) before the body is judged.
                await core.cpu_per_request(ctx)
                if core.rate_limited(self._rate_key(request, request_id)):
                    raise FlowError("rate_limited", "rate limit exceeded")
                if too_large:
                    raise FlowError("too_large", f"body over {self.scenario.gateway.body_limit_bytes} bytes")
                if not _is_json_type(request):
                    self.metrics.edge_events.labels("unsupported_media_type").inc()
                    raise FlowError("bad_request", f"expected Content-Type application/json, got {request.content_type}",
                                    status=415, error_type="unsupported_media_type")
                _check_gwsim_headers(request)
                body, prompt = _parse_body(raw)
                if ep.kind == "select_model":
                    reply = await core.select_model(ctx, ep_name, ep, prompt)
                    body_bytes = json.dumps(reply).encode()
                else:
                    nonce = request.headers.get("X-Gwsim-Prompt-Nonce", "")
                    reply = await core.chat(ctx, ep_name, ep, body, prompt, nonce)
                    if isinstance(reply, StreamRelay):
                        return await self._relay(request, ctx, ep_name, started, reply)
                    body_bytes, content_type = reply
                ctx.outcome = "ok"
            except FlowError as exc:
                ctx.outcome = exc.outcome
                status, close = exc.status, exc.close
                body_bytes, content_type = _error_body(exc)
                if exc.outcome == "client_gone":
                    self.metrics.edge_events.labels("client_gone").inc()
            except asyncio.CancelledError:
                # cancel_on_disconnect (the client left) or shutdown: the flow's own finally
                # blocks gave back pools, permits and attempts; count the request once, then go.
                gone = request.transport is None or request.transport.is_closing()
                ctx.outcome = "client_gone" if gone else "cancelled"
                self.metrics.edge_events.labels(ctx.outcome).inc()
                self._count(ctx, ep_name, started, OUTCOME_STATUS["client_gone"])
                raise
            except Exception:  # noqa: BLE001 - a gateway bug still answers with the record headers
                log.exception("request %s on %s failed unexpectedly", request_id, ep_name)
                ctx.outcome = "upstream_error"
                body_bytes = json.dumps({"error": {"message": "internal error", "type": "upstream_error"}}).encode()
                content_type = "application/json"
        finally:
            self.metrics.in_flight.dec()
            core.admission.leave()
        return self._reply(ctx, ep_name, started, body_bytes, content_type, status=status, close=close)

    async def _relay(
        self, request: web.Request, ctx: RequestContext, ep_name: str, started: float, relay: StreamRelay
    ) -> web.StreamResponse:
        """Relay a streamed reply piece by piece as the provider sends it (see the module's doc)."""
        upstream = relay.upstream
        parts = [relay.first]
        ctx.outcome = "ok"
        try:
            headers = ctx.headers()
            headers.pop("Server-Timing", None)  # known at the end: in the closing comment
            resp = web.StreamResponse(status=200, headers={**headers, "Cache-Control": "no-cache"})
            resp.content_type = "text/event-stream"
            try:
                await resp.prepare(request)
                await resp.write(relay.first)
                while True:
                    try:
                        piece = await upstream.piece()
                    except UpstreamError as exc:
                        ctx.outcome = "reset"
                        error = {"error": {"message": f"provider stream broke after its first chunk: {exc}", "type": "reset"}}
                        await resp.write(b"data: " + json.dumps(error).encode() + b"\n\n")
                        break
                    if not piece:
                        break
                    parts.append(piece)
                    await resp.write(piece)
            finally:
                upstream.close()
                ctx.add("provider", max(0.0, upstream.timing.exchange_s - relay.queue_s))
            if ctx.outcome == "ok":
                await relay.finish(b"".join(parts))
            timing = ", ".join(f"{name};dur={v * 1e3:.3f}" for name, v in ctx.stages.items() if v > 0)
            total = f"total;dur={(time.perf_counter() - started) * 1e3:.3f}"
            closing = {"outcome": ctx.outcome, "server_timing": f"{timing}, {total}" if timing else total}
            await resp.write(b": gwsim " + json.dumps(closing).encode() + b"\n\n")
            await resp.write_eof()
        except ConnectionError:
            # the client went away mid-stream (aiohttp's ClientConnectionResetError is one)
            ctx.outcome = "client_gone"
            self.metrics.edge_events.labels("client_gone").inc()
            self._count(ctx, ep_name, started, OUTCOME_STATUS["client_gone"])
            return resp
        self._count(ctx, ep_name, started, 200)
        return resp

    def _count(self, ctx: RequestContext, ep_name: str, started: float, status: int) -> None:
        """The request's one entry in the outcome counts and the duration histogram."""
        self.core.outcomes[ctx.outcome] = self.core.outcomes.get(ctx.outcome, 0) + 1
        self.metrics.request_duration.labels(ep_name, str(status)).observe(time.perf_counter() - started)

    def _reply(
        self, ctx: RequestContext, ep_name: str, started: float, body_bytes: bytes, content_type: str,
        *, status: int | None = None, close: bool = False,
    ) -> web.Response:
        status = status or OUTCOME_STATUS.get(ctx.outcome, 502)
        self._count(ctx, ep_name, started, status)
        ctype = content_type.split(";", 1)[0].strip() or "application/json"
        headers = ctx.headers()
        # "total": the whole handler, so a client can tell gateway time from network time
        # (not a record stage; the load generator ignores it).
        total = f"total;dur={(time.perf_counter() - started) * 1e3:.3f}"
        headers["Server-Timing"] = f"{headers['Server-Timing']}, {total}" if "Server-Timing" in headers else total
        resp = web.Response(body=body_bytes, status=status, headers=headers, content_type=ctype)
        if close:
            resp.force_close()
        return resp


def _error_body(exc: FlowError) -> tuple[bytes, str]:
    return json.dumps({"error": {"message": str(exc), "type": exc.error_type}}).encode(), "application/json"


def openapi_spec(scenario: Scenario) -> dict[str, Any]:
    """OpenAPI 3.0 description of the scenario's endpoints and the gateway's error replies."""
    message = {
        "type": "object",
        "required": ["content"],
        "properties": {
            "role": {"type": "string"},
            "content": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "object", "properties": {"text": {"type": "string"}}}},
                ]
            },
        },
    }
    request_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["messages"],
                    "properties": {"model": {"type": "string"}, "messages": {"type": "array", "minItems": 1, "items": message}},
                }
            }
        },
    }
    error = {"$ref": "#/components/schemas/Error"}
    error_reply = {"description": "", "content": {"application/json": {"schema": error}}}
    errors = {
        "400": "malformed JSON, wrong shape, malformed X-Gwsim-* header (outcome bad_request)",
        "408": "the body did not arrive within gateway.body_read_timeout (outcome bad_request)",
        "413": "body over gateway.body_limit_bytes (outcome too_large)",
        "415": "Content-Type neither JSON nor absent (outcome bad_request)",
        "429": "the gateway's rate limiter (outcome rate_limited)",
        "502": "an upstream failed or answered with an error (outcomes upstream_error, connect_error, reset)",
        "503": "gateway.max_in_flight reached (type overloaded) or a breaker / upstream capacity refused "
        "(outcomes rejected, breaker_open)",
        "504": "an upstream deadline fired (outcome timeout)",
    }
    paths: dict[str, Any] = {}
    for name, ep in scenario.endpoints.items():
        if ep.kind == "select_model":
            ok_schema = {
                "type": "object",
                "properties": {
                    "provider": {"type": "string"}, "model": {"type": "string"},
                    "alternatives": {"type": "array", "items": {"type": "string"}},
                },
            }
        else:
            ok_schema = {"type": "object", "description": "An OpenAI-style chat completion from the chosen provider."}
        responses = {"200": {"description": "ok", "content": {"application/json": {"schema": ok_schema}}}}
        responses.update({code: {**error_reply, "description": text} for code, text in errors.items()})
        paths[ep.http_path] = {
            "post": {
                "operationId": name,
                "summary": f"{ep.kind} endpoint {name!r}",
                "parameters": [
                    {"name": h, "in": "header", "required": False, "schema": {"type": "string", "maxLength": MAX_GWSIM_HEADER_CHARS}}
                    for h in _GWSIM_HEADERS
                ],
                "requestBody": request_body,
                "responses": responses,
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {"title": f"gwsim gateway ({scenario.run.name})", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type"],
                            "properties": {"message": {"type": "string"}, "type": {"type": "string"}},
                        }
                    },
                }
            }
        },
    }


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
            "embedding_calls": dict(core.embedding_calls),
            "cpu": {"workers": core.cpu.workers, "jobs": core.cpu.jobs, "busy_s": round(core.cpu.busy_total_s, 6)},
            "admission": {
                "max_in_flight": core.admission.limit, "peak": core.admission.peak,
                "admitted": core.admission.admitted, "rejections": core.admission.rejections,
            },
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
    redis_url: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    key_prefix: str | None = None,
) -> GatewayHandle:
    """Build and start the gateway; Redis seeded and the port bound when it returns."""
    prefix = key_prefix or f"gwsim:{uuid.uuid4().hex[:12]}:"
    metrics = GatewayMetrics()
    core = GatewayCore(scenario, upstream_urls, t0, seed, settings.redis_url(redis_url), prefix, metrics)
    runner: web.AppRunner | None = None
    try:
        await core.prepare()
        app = GatewayApp(core, metrics).build()
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S, handle_signals=False,
            handler_cancellation=scenario.gateway.cancel_on_disconnect,
            # A body the handler did not read (408 slow client, 413 by Content-Length,
            # 503 overloaded) is not waited for: aiohttp would otherwise keep reading and
            # discarding it for 10 s, which is what a slow client wants.  The connection
            # closes after the reply instead.
            lingering_time=0,
        )
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
