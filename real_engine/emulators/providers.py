"""An LLM provider's chat-completions API (OpenAI-style) as a real HTTP server.

``POST /v1/chat/completions`` answers after the provider's latency: ``ttft + tokens /
tokens_per_s`` for a token model (the request's own ``gwsim_output_tokens`` when the load
generator sends a trace's, else drawn from the request class's ``output_tokens``, else the
provider's ``default_output_tokens``) or a plain whole-reply time.  With ``"stream": true``
the reply is Server-Sent Events in the OpenAI chat-completions format: the first chunk (the
assistant role and the first token) at ttft, then the tokens at their decode times, the last
at ttft + tokens / tokens_per_s (grouped so chunks are at least ``MIN_CHUNK_S`` apart, as
``simulator.policies.streaming`` schedules them for both executors), then a chunk with
``finish_reason`` and ``usage``, then ``data: [DONE]``.  A reset fault on a stream breaks
it at half the service time: after the first chunk when that has gone out by then.

``Provider.errors`` answers 429 (with ``Retry-After: 1``), 500 or 503 with the given
probabilities, about when the first token would have come.  ``rpm`` and ``tpm`` are the
provider's quotas (``simulator.policies.quota``, checked on arrival after the outage): a
request over them gets 429 after the round trip with the Retry-After the quota computes; it
is charged its input tokens (``gwsim_input_tokens``, else a load-generator prompt's 5) plus
its ``max_tokens``, then what it used once answered.  ``concurrency`` bounds requests in
service; beyond it a request waits in FIFO order (``over_limit="queue"``) or gets 429 after a
round trip (``"reject"``).  ``hang_probability``: a call, once in service, is never answered
(a stuck response stream) with that probability, drawn from the provider's own hang stream;
the client's timeout ends it, as in the simulator.  Faults: slow (x latency_factor), errors,
outage (refused), hang (never answers), reset (headers and half the body after half the
service time, then the connection is aborted).  The network round trip is added to the
time to first byte.

An ``llm`` latency model is an inference server that slows under load, paced by
``simulator.policies.llm_server.SharedDecode`` as the simulator times it: after the round
trip a request waits for the prefill (one prompt at a time, FIFO; ``prefill_base`` + input
tokens / ``prefill_tokens_per_s``; the request's ``gwsim_input_tokens``, else the provider's
``default_input_tokens``), whose end is the first token, then its tokens come as its share
of the server's decode allows (a stream's chunks as they are decoded); an error status or a
reset comes at the end of the prefill.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any

import numpy as np
from aiohttp import web

from real_engine.clock import RunClock
from real_engine.emulators.base import EmulatorServer, timing_header
from real_engine.emulators.faults import abort, error_reply, reset_midway
from simulator.policies.llm_server import DecodeJob, SharedDecode
from simulator.policies.quota import DEFAULT_MAX_TOKENS, PROMPT_TOKENS, ProviderQuota, QuotaEntry, header_seconds
from simulator.policies.streaming import MIN_CHUNK_S, PLAIN_REPLY_TOKENS, chunk_schedule, reply_tokens, tokens_per_chunk
from simulator.scenario import LLMServerLatency, PlainLatency, Provider, Scenario

log = logging.getLogger(__name__)

__all__ = ["FifoLimiter", "MIN_CHUNK_S", "ProviderEmulator"]

_WORD = "tok "


class FifoLimiter:
    """At most ``limit`` holders; waiters served first come, first served.

    A released slot is handed straight to the oldest waiter, so a late arrival cannot
    overtake the queue.  A waiter cancelled before or right after being handed a slot
    gives it on (no slot is lost on cancellation).
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0
        self._waiters: deque[asyncio.Future] = deque()
        self.max_waiting = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def full(self) -> bool:
        return self.active >= self.limit

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.max_waiting = max(self.max_waiting, len(self._waiters))
        try:
            await fut  # a handoff keeps ``active`` as it is: the slot changes hands
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us as we were cancelled
            else:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.active -= 1

    def __repr__(self) -> str:
        return f"<FifoLimiter active={self.active}/{self.limit} waiting={len(self._waiters)}>"


class ProviderEmulator(EmulatorServer):
    """One provider: latency model, error statuses, concurrency limit, faults."""

    kind = "provider"

    def __init__(self, name: str, provider: Provider, scenario: Scenario, clock: RunClock, rng: np.random.Generator,
                 host: str = "127.0.0.1", hang_rng: np.random.Generator | None = None):
        super().__init__(name, provider.faults, clock, host)
        self.cfg = provider
        self._rng = rng
        # a stream of its own: a hang probability never shifts the latency and error draws
        self._hang_rng = hang_rng if hang_rng is not None else rng
        self.hung = 0
        self._classes = {(ep_name, c.name): c for ep_name, ep in scenario.endpoints.items() for c in ep.classes}
        self.limiter = FifoLimiter(provider.concurrency) if provider.concurrency else None
        self.concurrency_rejected = 0
        self.quota = ProviderQuota(provider.rpm, provider.tpm) if provider.rpm or provider.tpm else None
        lat = provider.latency
        self._llm = lat if isinstance(lat, LLMServerLatency) else None
        if self._llm is not None:
            self._prefill = FifoLimiter(1)
            self.decode = SharedDecode(lat.decode_tokens_per_s, lat.max_stream_tokens_per_s)
            self._decode_waiters: set[asyncio.Future] = set()
        self._created = int(time.time())

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)

    # ------------------------------------------------------------------ sampling

    def _draw_error(self) -> int | None:
        """A status from ``Provider.errors`` (one uniform draw over the sorted table)."""
        if not self.cfg.errors:
            return None
        u = self._rng.random()
        acc = 0.0
        for status, p in sorted(self.cfg.errors.items()):
            acc += p
            if u < acc:
                return int(status)
        return None

    def _latency(self, endpoint: str, class_name: str, own_tokens: int | None = None) -> tuple[float, float, int]:
        """(time to first token, decode time after it, output tokens to send).

        ``own_tokens``: the request's own output tokens (a trace's, sent by the load
        generator as ``gwsim_output_tokens``), else drawn from the class (or the default).
        Timing uses the token count as is (as the simulator does); the reply carries it
        rounded, at least one.
        """
        lat = self.cfg.latency
        cls = self._classes.get((endpoint, class_name))
        if isinstance(lat, PlainLatency):
            dist = cls.output_tokens if cls is not None and cls.output_tokens is not None else None
            tokens = float(own_tokens) if own_tokens is not None else dist.sample(self._rng) if dist is not None else PLAIN_REPLY_TOKENS
            return lat.time.sample(self._rng), 0.0, reply_tokens(tokens)
        if own_tokens is not None:
            tokens = float(own_tokens)
        else:
            dist = cls.output_tokens if cls is not None and cls.output_tokens is not None else lat.default_output_tokens
            tokens = max(dist.sample(self._rng), 0.0)
        return lat.ttft.sample(self._rng), tokens / lat.tokens_per_s, reply_tokens(tokens)

    # ------------------------------------------------------------------ handler

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """One completion, in the order ``simulator.model.provider`` applies things:
        outage on arrival; concurrency (reject or FIFO wait); hang; error draw; slow,
        errors or reset fault; then the reply (errors come back about at ttft)."""
        call = self.stats.arrived(self.clock.now())
        status = 499  # the client went away (handler cancelled) unless set below
        held = False
        charged: QuotaEntry | None = None  # the quota's charge, settled with what was used
        used = 0  # output tokens of the reply
        inputs = PROMPT_TOKENS
        try:
            fault = self.fault_now()
            if fault is not None and fault.kind == "outage":
                status = 0
                return self.drop_connection(request)
            body = await request.json(loads=json.loads)
            endpoint = request.headers.get("X-Gwsim-Endpoint", "")
            class_name = request.headers.get("X-Gwsim-Class", "")
            stream = bool(body.get("stream", False))
            prompt = "".join(str(m.get("content", "")) for m in body.get("messages", ()) if isinstance(m, dict))
            rtt = self.cfg.network_rtt.sample(self._rng)
            if self.quota is not None:
                inputs = self._own(body, "gwsim_input_tokens")
                inputs = inputs if inputs is not None else PROMPT_TOKENS
                asked = self._own(body, "max_tokens")
                got = self.quota.admit(time.monotonic(), inputs + (max(asked, 1) if asked is not None else DEFAULT_MAX_TOKENS))
                if not isinstance(got, QuotaEntry):
                    await self.delay(rtt)
                    status = 429
                    return error_reply(429, "rate limit: the provider's rpm or tpm quota", timing_header(0, 0, 0),
                                       retry_after=header_seconds(got))
                charged = got
            queued_at = time.monotonic()
            if self.limiter is not None:
                if self.limiter.full() and self.cfg.over_limit == "reject":
                    self.concurrency_rejected += 1
                    await self.delay(rtt)
                    status = 429
                    return error_reply(429, "concurrency limit", timing_header(0, 0, 0))
                await self.limiter.acquire()
                held = True
            queue_s = time.monotonic() - queued_at
            if fault is None:
                fault = self.fault_now()
            if (fault is not None and fault.kind == "hang") or (
                self.cfg.hang_probability and self._hang_rng.random() < self.cfg.hang_probability
            ):
                self.hung += 1
                return await self.hold_until_client_leaves(request)
            if self._llm is not None:
                status, resp, used = await self._llm_reply(request, body, endpoint, class_name, stream, fault, rtt, queue_s, prompt)
                return resp
            own = body.get("gwsim_output_tokens") if isinstance(body, dict) else None
            own = own if isinstance(own, int) and not isinstance(own, bool) and own >= 0 else None
            first, decode, tokens = self._latency(endpoint, class_name, own)
            err = self._draw_error()
            if fault is not None:
                if fault.kind == "slow":
                    first, decode = first * fault.latency_factor, decode * fault.latency_factor
                elif fault.kind == "errors" and self._rng.random() < fault.error_rate:
                    err = fault.error_status
                elif fault.kind == "reset" and stream and (first + decode) / 2 >= first:
                    # the first chunk is out before the reset: the stream breaks mid-way
                    status = 0
                    model = str(body.get("model") or f"{self.name}-model")
                    return await self._stream(request, model, {}, tokens, rtt + first, decode, queue_s,
                                              break_after=rtt + (first + decode) / 2)
                elif fault.kind == "reset":
                    service = await self.delay(rtt + (first + decode) / 2)
                    status = 0
                    if stream:  # before the first chunk: the connection goes without a byte
                        return self.drop_connection(request)
                    headers = {"X-Emulator-Timing": timing_header(queue_s, service, rtt + (first + decode) / 2)}
                    return await reset_midway(request, json.dumps(self._completion("m", tokens, {})).encode(), headers)
            if err is not None:
                # errors come back about when the first token would have
                intended = rtt + min(first + decode, first)
                service = await self.delay(intended)
                status = err
                return error_reply(err, "emulated provider error", timing_header(queue_s, service, intended))
            model = str(body.get("model") or f"{self.name}-model")
            own_in = body.get("gwsim_input_tokens")
            prompt_tokens = (own_in if isinstance(own_in, int) and not isinstance(own_in, bool) and own_in > 0
                             else max(1, len(prompt) // 4))
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens}
            if stream:
                status, used = 200, tokens
                return await self._stream(request, model, usage, tokens, rtt + first, decode, queue_s)
            service = await self.delay(rtt + first + decode)
            payload = json.dumps(self._completion(model, tokens, usage)).encode()
            status, used = 200, tokens
            headers = {"X-Emulator-Timing": timing_header(queue_s, service, rtt + first + decode)}
            return web.Response(body=payload, content_type="application/json", headers=headers)
        finally:
            if held:
                self.limiter.release()
            if charged is not None and status != 499:  # a call left hanging keeps its charge, as in the simulator
                self.quota.settle(charged, time.monotonic(), inputs + (used if status == 200 else 0))
            self.stats.left(status, call, self.clock.now())

    def _completion(self, model: str, tokens: int, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{self.name}-{self.stats.requests}",
            "object": "chat.completion",
            "created": self._created,
            "model": model,
            "provider": self.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": _WORD * tokens},
                         "finish_reason": "stop"}],
            "usage": usage,
        }

    def _chunk(self, model: str, delta: dict[str, str], finish: str | None, usage=None) -> bytes:
        obj: dict[str, Any] = {
            "id": f"chatcmpl-{self.name}-{self.stats.requests}",
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            obj["usage"] = usage
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    async def _stream(self, request: web.Request, model: str, usage: dict[str, int], tokens: int, first: float,
                      decode: float, queue_s: float, break_after: float | None = None) -> web.StreamResponse:
        """SSE: the first token (with the assistant role) at ``first``, the others as
        ``chunk_schedule`` spreads them up to ``first + decode``, then the finish chunk with
        the usage and [DONE].  ``break_after``: abort the connection that long after the
        start instead (a reset fault), with the chunks due by then sent.

        Chunk times are absolute deadlines from the start, so sleeping late once does
        not push every later chunk back.
        """
        start = time.monotonic()
        await self.delay(first)
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Emulator-Timing": timing_header(queue_s, first, first + decode),
        })
        await resp.prepare(request)
        for i, (due, n) in enumerate(chunk_schedule(first, decode, tokens)):
            if break_after is not None and due > break_after:
                break
            wait = start + due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            delta = {"role": "assistant", "content": _WORD * n} if i == 0 else {"content": _WORD * n}
            await resp.write(self._chunk(model, delta, None))
        if break_after is not None:
            wait = start + break_after - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            abort(request)
            return resp
        wait = start + first + decode - time.monotonic()  # one token: the finish comes after its decode
        if wait > 0:
            await asyncio.sleep(wait)
        await resp.write(self._chunk(model, {}, "stop", usage))
        await resp.write(b"data: [DONE]\n\n")
        self.stats.lags.append((time.monotonic() - start) - (first + decode))
        await resp.write_eof()
        return resp

    # ------------------------------------------------------------------ llm server

    def _own(self, body: dict, key: str) -> int | None:
        value = body.get(key) if isinstance(body, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    async def _llm_reply(self, request: web.Request, body: dict, endpoint: str, class_name: str, stream: bool, fault,
                         rtt: float, queue_s: float, prompt: str) -> tuple[int, web.StreamResponse, int]:
        """(status, reply, output tokens) of a call on the LLM server: round trip, prefill queue and prefill,
        then the tokens as the shared decode gives them (the simulator's ``_llm_call``)."""
        lat = self._llm
        assert lat is not None
        inp = self._own(body, "gwsim_input_tokens")
        inputs = float(inp) if inp is not None else max(lat.default_input_tokens.sample(self._rng), 0.0)
        own = self._own(body, "gwsim_output_tokens")
        if own is not None:
            out = float(own)
        else:
            cls = self._classes.get((endpoint, class_name))
            dist = cls.output_tokens if cls is not None and cls.output_tokens is not None else lat.default_output_tokens
            out = max(dist.sample(self._rng), 0.0)
        factor = fault.latency_factor if fault is not None and fault.kind == "slow" else 1.0
        prefill_s = (lat.prefill_base.sample(self._rng) + inputs / lat.prefill_tokens_per_s) * factor
        err = self._draw_error()
        if fault is not None and fault.kind == "errors" and self._rng.random() < fault.error_rate:
            err = fault.error_status
        await self.delay(rtt)
        queued_at = time.monotonic()
        await self._prefill.acquire()
        try:
            queue_s += time.monotonic() - queued_at
            service = await self.delay(prefill_s)
        finally:
            self._prefill.release()
        if fault is not None and fault.kind == "reset":
            return 0, self.drop_connection(request), 0
        if err is not None:
            return err, error_reply(err, "emulated provider error", timing_header(queue_s, service, rtt + prefill_s)), 0
        n = reply_tokens(out)
        model = str(body.get("model") or f"{self.name}-model")
        prompt_tokens = int(inputs) if inp is not None else max(1, len(prompt) // 4)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}
        started = time.monotonic()
        job = self.decode.join(started, out * factor)
        try:
            if not stream:
                await self._decoded(job, job.work)
                headers = {"X-Emulator-Timing": timing_header(queue_s, service + time.monotonic() - started, rtt + prefill_s)}
                return 200, web.Response(body=json.dumps(self._completion(model, n, usage)).encode(),
                                         content_type="application/json", headers=headers), n
            resp = web.StreamResponse(status=200, headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                "X-Emulator-Timing": timing_header(queue_s, service, rtt + prefill_s),
            })
            await resp.prepare(request)
            await resp.write(self._chunk(model, {"role": "assistant", "content": _WORD}, None))
            sent = 1
            while sent < n:
                # tokens due at even shares of the work; as many per chunk as keep chunks apart
                gap = job.work / (n - 1) / self.decode.rate() if job.work > 0 else 0.0
                upto = min(n, sent + tokens_per_chunk(gap))
                await self._decoded(job, (upto - 1) / (n - 1) * job.work)
                await resp.write(self._chunk(model, {"content": _WORD * (upto - sent)}, None))
                sent = upto
            await self._decoded(job, job.work)
            self._decode_leave(job)
            await resp.write(self._chunk(model, {}, "stop", usage))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return 200, resp, n
        finally:
            self._decode_leave(job)

    async def _decoded(self, job: DecodeJob, tokens: float) -> None:
        """Wait until ``job`` has decoded ``tokens``: a timer at the current rates, woken early
        when a stream leaves (the others speed up); a stream that joins slows it, and the wait
        that ends early is simply taken again."""
        loop = asyncio.get_running_loop()
        while True:
            left = self.decode.time_to(time.monotonic(), job, tokens)
            if left <= 0:
                return
            fut = loop.create_future()
            self._decode_waiters.add(fut)
            timer = loop.call_later(left, _wake, fut)
            try:
                await fut
            finally:
                timer.cancel()
                self._decode_waiters.discard(fut)

    def _decode_leave(self, job: DecodeJob) -> None:
        if job.active:
            self.decode.leave(time.monotonic(), job)
            for fut in list(self._decode_waiters):
                _wake(fut)

    def snapshot(self) -> dict[str, Any]:
        out = super().snapshot()
        out["hung"] = self.hung
        if self.limiter is not None:
            out.update(concurrency=self.limiter.limit, max_waiting=self.limiter.max_waiting,
                       concurrency_rejected=self.concurrency_rejected)
        if self.quota is not None:
            out.update(quota_admitted=self.quota.admitted, quota_refused=self.quota.refused)
        return out

    def __repr__(self) -> str:
        lim = f" {self.limiter!r}" if self.limiter is not None else ""
        lim += f" {self.decode!r}" if self._llm is not None else ""
        return f"<ProviderEmulator {self.name} port={self.port} requests={self.stats.requests} in_flight={self.stats.in_flight}{lim}>"


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
