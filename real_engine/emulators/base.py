"""What every emulated upstream shares: a real aiohttp server on loopback, a fault schedule,
and a record of how late its own timers ran.

An emulator stands for a remote machine (the AI service, an LLM provider, the embedding
API).  It listens on 127.0.0.1 on a port chosen by the kernel; during an ``outage``
window the listening socket is closed so new connections are refused, as with a
machine that is down, and reopened on the same port afterwards.  Emulated service time
is a sleep on the event loop; each sleep's intended and actual length is kept so that
``stats()`` shows how far the emulator itself lagged behind its schedule.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from real_engine.clock import RunClock
from simulator.scenario import Fault, active_fault

log = logging.getLogger(__name__)

#: How long aiohttp waits for handlers on shutdown; emulators release their handlers
#: themselves before that (hangs end, queues fail), so this only bounds stragglers.
SHUTDOWN_TIMEOUT_S = 1.0


def timing_header(queue_s: float, service_s: float, intended_s: float) -> str:
    """``X-Emulator-Timing`` value: queue, measured service and sampled (intended) time in ms."""
    return f"queue;dur={queue_s * 1e3:.3f}, service;dur={service_s * 1e3:.3f}, intended;dur={intended_s * 1e3:.3f}"


def merged_windows(faults: tuple[Fault, ...], kind: str) -> list[tuple[float, float]]:
    """The union of the ``kind`` fault windows, as sorted disjoint (start, end) pairs."""
    spans = sorted((f.start, f.end) for f in faults if f.kind == kind)
    out: list[tuple[float, float]] = []
    for start, end in spans:
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


#: Calls an emulator logs the instants of (about 1 MB of JSON in its stats file at most).
CALL_LOG_CAP = 20_000


def _quantile_ms(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q) * 1e3) if values else None


@dataclass
class EmulatorStats:
    """Counters of one emulator: requests, replies by status, timer lag, peak concurrency."""

    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    lags: list[float] = field(default_factory=list)  # actual - intended per emulated delay (s)
    in_flight: int = 0
    max_in_flight: int = 0
    #: (arrived, left) run times of the first ``CALL_LOG_CAP`` calls whose handler gave them:
    #: with the load generator's records they split a gateway's latency into its part before
    #: the upstream call and its part after (``gwsim calibrate profile --gateway litellm``).
    calls_at: list[list[float]] = field(default_factory=list)

    def arrived(self, at: float | None = None) -> int | None:
        """Count a call; with ``at`` (run time) log it.  Returns its index in the log, if logged."""
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if at is None or len(self.calls_at) >= CALL_LOG_CAP:
            return None
        self.calls_at.append([at, math.nan])
        return len(self.calls_at) - 1

    def left(self, status: int, call: int | None = None, at: float | None = None) -> None:
        self.in_flight -= 1
        self.statuses[status] += 1
        if call is not None and at is not None:
            self.calls_at[call][1] = at

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "delays": len(self.lags),
            "lag_p50_ms": _quantile_ms(self.lags, 0.5),
            "lag_p99_ms": _quantile_ms(self.lags, 0.99),
            "lag_max_ms": max(self.lags) * 1e3 if self.lags else None,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "calls_at": [[round(a, 6), None if math.isnan(b) else round(b, 6)] for a, b in self.calls_at],
        }


class EmulatorServer:
    """An aiohttp app on 127.0.0.1 with outage windows (listener closed) and lag accounting.

    Subclasses add routes in ``_routes`` and may override ``_on_close`` to release
    requests they hold (queued items, hangs) before the server shuts down.
    """

    kind = "emulator"

    def __init__(self, name: str, faults: tuple[Fault, ...], clock: RunClock, host: str = "127.0.0.1"):
        self.name = name
        self.faults = faults
        self.clock = clock
        self.host = host
        self.port: int | None = None
        self.stats = EmulatorStats()
        self.closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._listening = False
        self._tasks: set[asyncio.Task] = set()
        # set before start() when the gateway's pool to this upstream uses TLS
        self.ssl_context = None

    # ------------------------------------------------------------------ lifecycle

    def _routes(self, app: web.Application) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def start(self) -> "EmulatorServer":
        app = web.Application()
        self._routes(app)
        # handler_cancellation: a client that goes away cancels its handler, which is
        # how a hung request ends and how a queued provider request frees its place.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
        await self._runner.setup()
        await self._listen(0)
        self._spawn(self._outage_schedule(), "outages")
        self._on_start()
        return self

    def _on_start(self) -> None:
        """Hook for subclasses: start background tasks."""

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, port, reuse_address=True, backlog=1024, ssl_context=self.ssl_context)
        await site.start()
        self._site = site
        self._listening = True
        if self.port is None:
            self.port = self._runner.addresses[-1][1]

    async def _stop_listening(self) -> None:
        if self._site is not None and self._listening:
            self._listening = False
            await self._site.stop()

    async def _outage_schedule(self) -> None:
        """Close the listener for each outage window so new connections are refused."""
        for start, end in merged_windows(self.faults, "outage"):
            await self.clock.sleep_until(start, spin_s=0)
            if self.closing.is_set():
                return
            log.info("%s: outage from %.3fs to %.3fs", self.name, start, end)
            await self._stop_listening()
            await self.clock.sleep_until(end, spin_s=0)
            if self.closing.is_set():
                return
            for attempt in range(50):
                try:
                    await self._listen(self.port or 0)
                    break
                except OSError as exc:  # the port may linger for a moment; retry briefly
                    log.warning("%s: reopening port %s failed (%s), retrying", self.name, self.port, exc)
                    await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Release held requests, stop background tasks and the server (idempotent)."""
        if self.closing.is_set() and self._runner is None:
            return
        self.closing.set()
        await self._stop_listening()
        await self._on_close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _on_close(self) -> None:
        """Hook for subclasses: release requests held in queues."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ helpers

    def fault_now(self) -> Fault | None:
        return active_fault(self.faults, self.clock.now())

    async def delay(self, seconds: float) -> float:
        """Sleep an emulated ``seconds``; record and return the actual time slept."""
        if seconds <= 0:
            return 0.0  # nothing emulated: no sleep, no lag sample
        start = time.monotonic()
        await asyncio.sleep(seconds)
        actual = time.monotonic() - start
        self.stats.lags.append(actual - seconds)
        return actual

    async def hold_until_client_leaves(self, request: web.Request) -> web.StreamResponse:
        """A hung upstream: never answer.  The handler is cancelled when the client goes."""
        await self.closing.wait()
        raise web.HTTPServiceUnavailable(text="emulator closing")

    @staticmethod
    def drop_connection(request: web.Request) -> web.StreamResponse:
        """Close the connection without a reply (outage on a connection already open)."""
        if request.transport is not None:
            request.transport.abort()
        # aiohttp finds the transport gone and writes nothing.
        return web.Response(status=503)

    def snapshot(self) -> dict[str, Any]:
        out = self.stats.snapshot()
        out["url"] = self.url
        return out

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} port={self.port} listening={self._listening} "
            f"requests={self.stats.requests} in_flight={self.stats.in_flight}>"
        )
