"""The AI service (the seed's LitServe model router) as a real HTTP server with dynamic batching.

``POST /predict`` puts the request in a queue.  A collector task forms batches with the
shared ``BatchPolicy`` (largest batch ``max_batch_size``, wait up to ``batch_timeout``
to fill one) whenever one of ``workers`` batch executors is free; the executor takes
``batch_base + sum(per_item * class.ai_work)`` for the batch (the two classifiers run
once per batch), then each item's ``ai_extra`` in turn (token counting, filtering and
reply encoding run per request after the batch, one after another in the worker).  The
network round trip is added once the item is done, before the reply (as the simulator
adds it after the AI service's answer).

The reply ranks the providers as ``simulator.policies.fallback.ranked_selection`` does: the
class's own provider, else the provider order rotated by the class's index, so each class
gets a fixed selection.

Faults (as ``simulator.model.ai_service`` applies them): ``outage`` refuses connections
(and drops requests arriving on connections already open) and ``hang`` never answers,
both judged on arrival; ``slow`` multiplies batch and per-item time, judged when the batch
starts; ``errors`` (``error_status`` with probability ``error_rate``), ``reset`` (abort
halfway through the reply body) and ``hang`` again are judged when the item is done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from real_engine.clock import RunClock
from real_engine.emulators.base import EmulatorServer, timing_header
from real_engine.emulators.faults import error_reply, reset_midway
from simulator.distributions import ZERO
from simulator.policies.batching import BatchPolicy
from simulator.policies.eventlog import RUN_LOG_LIMIT
from simulator.policies.fallback import ranked_selection
from simulator.scenario import Scenario

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class _Item:
    """One queued request: what the batch needs and where its result goes."""

    request_id: str
    ai_work: float
    extra: Any  # the class's ai_extra distribution
    enqueued_at: float  # time.monotonic()
    future: asyncio.Future = field(repr=False)


@dataclass(frozen=True, slots=True)
class ItemResult:
    queue_s: float
    service_s: float  # measured: batch + own extra (+ extras before it in the worker)
    intended_s: float  # sampled: the same parts, as the distributions drew them
    batch_size: int


class AIServiceEmulator(EmulatorServer):
    """The model router: queue, collector, ``workers`` batch executors."""

    kind = "ai_service"

    def __init__(self, scenario: Scenario, clock: RunClock, rng: np.random.Generator, rtt_rng: np.random.Generator,
                 fault_rng: np.random.Generator, host: str = "127.0.0.1"):
        cfg = scenario.ai_service
        super().__init__("ai_service", cfg.faults, clock, host)
        self.cfg = cfg
        self.policy = BatchPolicy(cfg.max_batch_size, cfg.batch_timeout, log_limit=RUN_LOG_LIMIT)
        self._rng = rng
        self._rtt_rng = rtt_rng
        self._fault_rng = fault_rng
        order = scenario.provider_order()
        # (endpoint, class) -> (class index within the endpoint, class config)
        self._classes = {
            (ep_name, c.name): (i, c) for ep_name, ep in scenario.endpoints.items() for i, c in enumerate(ep.classes)
        }
        self._order = order
        self.queue: deque[_Item] = deque()
        self._arrival = asyncio.Event()
        self._idle_workers = asyncio.Semaphore(cfg.workers)
        self._batches: asyncio.Queue[tuple[list[_Item], float]] = asyncio.Queue()
        self.batch_sizes: Counter = Counter()
        self.busy_workers = 0
        self.max_queue = 0
        self.rejected = 0

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/predict", self.predict)

    def _on_start(self) -> None:
        self._spawn(self._collector(), "collector")
        for i in range(self.cfg.workers):
            self._spawn(self._worker(), f"worker{i}")

    async def _on_close(self) -> None:
        # Queued and batched requests get an error now rather than waiting for a worker.
        while self.queue:
            item = self.queue.popleft()
            if not item.future.done():
                item.future.set_exception(ConnectionAbortedError("emulator closing"))
        while not self._batches.empty():
            batch, _ = self._batches.get_nowait()
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(ConnectionAbortedError("emulator closing"))

    # ------------------------------------------------------------------ selection

    def selection(self, endpoint: str, class_name: str) -> dict[str, Any]:
        """The ranked choice for a class, as the simulator's AI service makes it."""
        idx, cls = self._classes.get((endpoint, class_name), (0, None))
        ranked = ranked_selection(self._order, idx, cls.provider if cls is not None else None)
        return {"provider": ranked[0], "model": f"{ranked[0]}-model", "alternatives": ranked[1:]}

    # ------------------------------------------------------------------ batching

    async def _collector(self) -> None:
        """Form a batch whenever a worker is free, as the shared BatchPolicy decides."""
        while True:
            await self._idle_workers.acquire()
            free_since = time.monotonic()
            while not self.queue:
                self._arrival.clear()
                await self._arrival.wait()
            # Collection starts when both a worker and a request are there.
            collecting_since = max(free_since, self.queue[0].enqueued_at)
            while True:
                now = time.monotonic()
                decision = self.policy.decide(len(self.queue), collecting_since, now)
                if decision.take > 0:
                    batch = [self.queue.popleft() for _ in range(min(decision.take, len(self.queue)))]
                    self._batches.put_nowait((batch, time.monotonic()))
                    break
                self._arrival.clear()
                timeout = None if decision.wake_at is None else max(0.0, decision.wake_at - now)
                try:
                    await asyncio.wait_for(self._arrival.wait(), timeout)
                except asyncio.TimeoutError:
                    pass

    async def _worker(self) -> None:
        while True:
            batch, taken_at = await self._batches.get()
            self.busy_workers += 1
            try:
                await self._run_batch(batch, taken_at)
            finally:
                self.busy_workers -= 1
                self._idle_workers.release()

    async def _run_batch(self, batch: list[_Item], taken_at: float) -> None:
        self.batch_sizes[len(batch)] += 1
        fault = self.fault_now()
        factor = fault.latency_factor if fault is not None and fault.kind == "slow" else 1.0
        rng = self._rng
        intended = self.cfg.batch_base.sample(rng) + sum(self.cfg.per_item.sample(rng) * it.ai_work for it in batch)
        intended *= factor
        actual = await self.delay(intended)
        done_intended, done_actual = intended, actual
        for item in batch:
            extra = item.extra.sample(rng) * factor
            done_intended += extra
            done_actual += await self.delay(extra)
            if not item.future.done():
                item.future.set_result(ItemResult(taken_at - item.enqueued_at, done_actual, done_intended, len(batch)))

    # ------------------------------------------------------------------ handler

    async def predict(self, request: web.Request) -> web.StreamResponse:
        self.stats.arrived()
        status = 499  # the client went away (handler cancelled) unless set below
        try:
            fault = self.fault_now()
            if fault is not None and fault.kind == "outage":
                status = 0
                return self.drop_connection(request)
            if fault is not None and fault.kind == "hang":
                return await self.hold_until_client_leaves(request)
            body = await request.json(loads=json.loads)
            endpoint, class_name = str(body.get("endpoint", "")), str(body.get("class", ""))
            rid = request.headers.get("X-Gwsim-Request-Id", "")
            rtt = self.cfg.network_rtt.sample(self._rtt_rng)
            if self.cfg.queue_limit is not None and len(self.queue) >= self.cfg.queue_limit:
                status = 503
                self.rejected += 1
                return error_reply(503, "queue full", timing_header(0, 0, 0))
            _, cls = self._classes.get((endpoint, class_name), (0, None))
            loop = asyncio.get_running_loop()
            item = _Item(rid, cls.ai_work if cls else 1.0, cls.ai_extra if cls else ZERO, time.monotonic(), loop.create_future())
            self.queue.append(item)
            self.max_queue = max(self.max_queue, len(self.queue))
            self._arrival.set()
            try:
                result: ItemResult = await item.future
            except ConnectionAbortedError:
                status = 503
                return error_reply(503, "emulator closing", timing_header(0, 0, 0))
            # Faults in force when the item is done decide its fate, as in the simulator.
            fault = self.fault_now()
            if fault is not None and fault.kind == "hang":
                return await self.hold_until_client_leaves(request)
            await self.delay(rtt)
            timing = timing_header(result.queue_s, result.service_s, result.intended_s)
            if fault is not None and fault.kind == "errors" and self._fault_rng.random() < fault.error_rate:
                status = fault.error_status
                return error_reply(fault.error_status, "injected fault", timing)
            headers = {"X-Emulator-Timing": timing}
            payload = json.dumps(self.selection(endpoint, class_name)).encode()
            if fault is not None and fault.kind == "reset":
                status = 0
                return await reset_midway(request, payload, headers)
            status = 200
            return web.Response(body=payload, content_type="application/json", headers=headers)
        finally:
            self.stats.left(status)

    def snapshot(self) -> dict[str, Any]:
        out = super().snapshot()
        out.update(
            batch_sizes={str(k): v for k, v in sorted(self.batch_sizes.items())},
            batches=sum(self.batch_sizes.values()),
            max_queue=self.max_queue,
            queue_rejected=self.rejected,
        )
        return out

    def __repr__(self) -> str:
        return (
            f"<AIServiceEmulator port={self.port} queued={len(self.queue)} busy_workers={self.busy_workers}"
            f"/{self.cfg.workers} batches={sum(self.batch_sizes.values())} requests={self.stats.requests}>"
        )

