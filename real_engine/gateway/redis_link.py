"""A TCP link between the gateway and Redis that fails on the scenario's schedule.

Redis faults made real without touching the Redis server, which other programs (and
other runs) may share.  When ``redis.faults`` schedules trouble, the gateway's Redis
pool connects through this link, a byte forwarder on 127.0.0.1, instead of straight to
Redis; the link does to the connections what the fault does on a real network:

``outage``
    the link stops listening, so new connections are refused (``ECONNREFUSED``, as from
    a host whose Redis is down), and aborts every open connection (RST), so operations
    in flight fail at once; it listens again on the same port when the outage ends.
``stall`` and ``hang``
    bytes from the gateway are held (commands reach Redis only when the window ends, in
    order): every operation waits for the end of the window or its own timeout, as with
    a server that stops answering (``CLIENT PAUSE``, without pausing everyone else).
``reset`` and ``errors``
    a connection that sends a command is aborted: the operation fails at once.
``slow``
    each reply is held back until its round trip has taken ``latency_factor`` times what
    Redis took (the time from the command's forwarding to the reply), in order.

These are the simulator's semantics (``simulator.model.redis``: outage, reset and errors
fail the operation at once; stall and hang hold it until the window ends; slow multiplies
the operation's time, judged when it starts).  Outside the windows the link costs one
loopback hop per round trip, so it is only put in when the scenario has Redis faults.

``redis.op_time`` stands for the round trip to a Redis on another machine.  The gateway
pays the loopback round trip for real, so each round trip is held back by one draw of
``op_time`` on top of it (``OpDelay``, in the client's connection: ``DelayedConnection``
sleeps after reading each reply, holding its pooled connection as a remote round trip
would, at no cost of an extra hop); a ``slow`` window in force when the command went out
stretches that draw too.  The simulator adds the machine profile's loopback time to
``op_time``; the real engine, loading the scenario without its profile, injects
``op_time`` alone.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import numpy as np
import redis.asyncio as aioredis

from simulator.distributions import Deterministic, Distribution
from simulator.scenario import Fault

log = logging.getLogger(__name__)

#: Fault kinds the link makes real.
LINK_FAULTS = frozenset({"outage", "stall", "hang", "reset", "errors", "slow"})
_HOLD = frozenset({"stall", "hang"})
_ABORT_ON_USE = frozenset({"reset", "errors"})


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Upstream(asyncio.Protocol):
    """The link's connection to Redis: replies go back to the gateway's side as they come."""

    def __init__(self, side: "_GatewaySide") -> None:
        self.side = side

    def data_received(self, data: bytes) -> None:
        self.side.reply(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.side.upstream_lost()


class _GatewaySide(asyncio.Protocol):
    """One connection from the gateway's pool, paired with one connection to Redis."""

    def __init__(self, link: "RedisFaultLink") -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.held: list[bytes] = []
        self.closed = False
        #: when the oldest command not yet answered went to Redis, and the slow-down in force then
        self.sent_at: float | None = None
        self.sent_factor = 1.0
        #: a slowed reply's bytes go out no earlier than the ones before it (``time.monotonic()``)
        self.release_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.link.conns.add(self)
        self.link.spawn(self._dial(), "redis-link-dial")

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(lambda: _Upstream(self), self.link.target_host, self.link.target_port)
        except OSError as exc:
            log.debug("redis link: cannot reach redis: %s", exc)
            self.abort()
            return
        if self.closed:
            upstream.abort()
            return
        self.upstream = upstream  # type: ignore[assignment]
        self.forward()

    def data_received(self, data: bytes) -> None:
        if self.link.abort_on_use:
            self.abort()
            return
        self.held.append(data)
        self.forward()

    def forward(self) -> None:
        """Send the held bytes to Redis unless a stall holds them."""
        if self.upstream is None or self.closed or self.link.holding or not self.held:
            return
        data = b"".join(self.held)
        self.held.clear()
        if self.sent_at is None:
            self.sent_at = time.monotonic()
            self.sent_factor = self.link.slow_factor
        self.upstream.write(data)

    def reply(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            return
        now = time.monotonic()
        due = now
        if self.sent_at is not None:
            # the answer to the oldest command came: stretch its round trip by the factor
            due = now + (self.sent_factor - 1.0) * (now - self.sent_at)
            self.sent_at = None
        due = max(due, self.release_at)
        if due <= now:
            self.transport.write(data)
            return
        self.release_at = due
        asyncio.get_running_loop().call_later(due - now, self._write_late, data)

    def _write_late(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def upstream_lost(self) -> None:
        # Redis closed its end: so does the link (the gateway sees what it would see).
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.link.conns.discard(self)
        self.held.clear()
        if self.upstream is not None:
            self.upstream.close()

    def abort(self) -> None:
        self.closed = True
        self.held.clear()
        if self.transport is not None:
            self.transport.abort()
        if self.upstream is not None:
            self.upstream.abort()


class RedisFaultLink:
    """Forwarder from ``127.0.0.1:port`` to Redis at ``target``; faults applied on schedule.

    ``port`` is bound at construction (so the pool can be pointed at it at once);
    ``await start()`` serves, ``start_schedule(t0)`` plays the fault windows relative to
    ``t0`` (``time.monotonic()``), ``await close()`` ends everything (idempotent).
    """

    def __init__(self, target_host: str, target_port: int, faults: tuple[Fault, ...], host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.faults = tuple(f for f in faults if f.kind in LINK_FAULTS)
        self.host = host
        self._sock: socket.socket | None = _listening_socket(host, 0)
        self.port: int = self._sock.getsockname()[1]
        self._server: asyncio.Server | None = None
        self.conns: set[_GatewaySide] = set()
        self._tasks: set[asyncio.Task] = set()
        self._active: dict[str, int] = {}  # fault kind -> windows in force
        self._slow: list[Fault] = []  # slow windows in force
        self.outages = 0
        self.aborted = 0
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<RedisFaultLink 127.0.0.1:{self.port} -> {self.target_host}:{self.target_port} "
            f"conns={len(self.conns)} active={ {k: v for k, v in self._active.items() if v} }>"
        )

    @property
    def holding(self) -> bool:
        return any(self._active.get(k, 0) for k in _HOLD)

    @property
    def slow_factor(self) -> float:
        """How many times longer a round trip takes now (1 outside ``slow`` windows)."""
        factor = 1.0
        for fault in self._slow:
            factor *= fault.latency_factor
        return factor

    @property
    def abort_on_use(self) -> bool:
        return any(self._active.get(k, 0) for k in _ABORT_ON_USE)

    @property
    def down(self) -> bool:
        return self._active.get("outage", 0) > 0

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> None:
        if self._server is not None or self._closed:
            return
        await self._listen()

    async def _listen(self) -> None:
        sock = self._sock
        self._sock = None
        if sock is None:
            sock = _listening_socket(self.host, self.port)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _GatewaySide(self), sock=sock)

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def start_schedule(self, t0: float) -> None:
        if self.faults:
            self.spawn(self._schedule(t0), "redis-link-faults")

    async def _schedule(self, t0: float) -> None:
        events = sorted(
            [(f.start, 1, i) for i, f in enumerate(self.faults)] + [(f.end, 0, i) for i, f in enumerate(self.faults)],
            key=lambda e: (e[0], e[1]),  # at a shared instant, ends before starts
        )
        for at, starts, i in events:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if starts:
                await self._begin(self.faults[i], at)
            else:
                await self._end(self.faults[i], at)

    async def _begin(self, fault: Fault, at: float) -> None:
        kind = fault.kind
        was_down = self.down
        if kind == "slow":
            self._slow.append(fault)
        self._active[kind] = self._active.get(kind, 0) + 1
        log.info("redis link: %s from %.3fs", kind, at)
        if kind == "outage" and not was_down:
            self.outages += 1
            await self._stop_listening()
            self._abort_all()
        elif kind in _ABORT_ON_USE:
            pass  # judged on each command

    async def _end(self, fault: Fault, at: float) -> None:
        kind = fault.kind
        if fault in self._slow:
            self._slow.remove(fault)
        self._active[kind] = max(0, self._active.get(kind, 0) - 1)
        log.info("redis link: %s over at %.3fs", kind, at)
        if kind == "outage" and not self.down and not self._closed:
            for _ in range(50):
                try:
                    await self._listen()
                    break
                except OSError as exc:  # the port may linger for a moment; retry briefly
                    log.warning("redis link: listening again on %d failed (%s), retrying", self.port, exc)
                    await asyncio.sleep(0.02)
        if not self.holding:
            for conn in list(self.conns):
                conn.forward()

    def _abort_all(self) -> None:
        for conn in list(self.conns):
            self.aborted += 1
            conn.abort()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._stop_listening()
        for conn in list(self.conns):
            conn.abort()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        await asyncio.sleep(0)  # let the aborted transports close their sockets


def injects_delay(op_time: Distribution) -> bool:
    """Whether ``op_time`` asks for any delay (not the default 0)."""
    return not (isinstance(op_time, Deterministic) and op_time.value == 0)


class OpDelay:
    """Per-round-trip delays drawn from ``redis.op_time`` (one stream of the gateway's own).

    Off until ``active`` is set (the start-up seeding pays none); ``link``, when the scenario
    also has Redis faults, lends its ``slow`` factor.  ``count`` and ``total_s`` say what was
    injected.
    """

    def __init__(self, op_time: Distribution, rng: np.random.Generator, link: "RedisFaultLink | None" = None) -> None:
        self.op_time = op_time
        self.rng = rng
        self.link = link
        self.active = False
        self.count = 0
        self.total_s = 0.0

    def factor(self) -> float:
        return self.link.slow_factor if self.link is not None else 1.0

    def draw(self, factor: float = 1.0) -> float:
        if not self.active:
            return 0.0
        delay = max(self.op_time.sample(self.rng), 0.0) * factor
        self.count += 1
        self.total_s += delay
        return delay

    def __repr__(self) -> str:
        return f"<OpDelay active={self.active} count={self.count} total_s={self.total_s:.6f}>"


class DelayedConnection(aioredis.Connection):
    """A redis-py connection whose every reply comes ``op_delay`` later than Redis sent it:
    the remote part of a round trip, slept with the connection held (the caller's operation
    timeout still bounds it)."""

    def __init__(self, *args, op_delay: OpDelay, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._op_delay = op_delay
        self._factor = 1.0

    async def send_packed_command(self, command, check_health: bool = True) -> None:
        self._factor = self._op_delay.factor()  # a slow window is judged when the command goes out
        await super().send_packed_command(command, check_health)

    async def read_response(self, *args, **kwargs):
        response = await super().read_response(*args, **kwargs)
        delay = self._op_delay.draw(self._factor)
        if delay > 0:
            await asyncio.sleep(delay)
        return response
