"""Redis reached through a Python client on the gateway's event loop (with a machine model).

The measured gateway talks to Redis with ``redis.asyncio``: each command is encoded and its
reply parsed by Python on the gateway's one event loop, a cost of the order of 100 us per
round trip, several times the wire and server time on loopback.  A semantic-cache scan is
one such round trip per SCAN call and per entry, and decodes each entry's vector and
compares it besides: a few hundred entries are tens of milliseconds of the loop's CPU per
lookup, which every other request's loop work queues behind.

A command holds its pooled connection from its send to the parse of its reply, so when the
loop is busy a connection is held for as long as the reply waits for the loop: the pool runs
out long before the wire does.  Modelled here, per operation of ``round_trips`` round trips:
take a connection (FIFO, bounded by the pool timeout), run the client's CPU on the
machine's gateway-loop thread (``machine.redis_cpu`` per round trip, ``machine.scan_entry_cpu``
per entry compared), then the wire and server time (``redis.op_time`` per round trip, with
the profile's ``redis_op_time``), then hand the connection back.  A scan runs as one such
exchange per SCAN batch, so other requests' loop work interleaves with it as it does on the
real loop (a batch at a time rather than a round trip at a time).

A scan keeps its connection from its first round trip to its last.  redis-py's
``BlockingConnectionPool`` takes a connection per command, but a scan releases it and asks for
it again in one stretch of the loop's work, before the waiter its release woke can run: the
waiter finds the pool empty and waits again (an ``asyncio.Condition`` does not hand over).  So
while two scans hold both connections of a 2-connection pool, a one-GET lookup waits for a scan
to end, not for a round trip (measured 2026-12-07 15:00, ``semantic_scan``: the exact-match
GET's median 11 ms and P90 79 ms with scans of about 150 ms under way, 0.4 ms with none).

Without a machine model (or with no client CPU in it) the gateway uses ``SimRedis``.
"""

from __future__ import annotations

import simpy

from simulator.distributions import Sampler
from simulator.model.slots import Slots
from simulator.scenario import Redis, active_fault


class LoopRedis:
    __slots__ = ("env", "cfg", "machine", "pool", "wire", "cpu", "entry_cpu", "timeouts", "errors", "ops")

    def __init__(self, env: simpy.Environment, cfg: Redis, machine, rng) -> None:
        self.env = env
        self.cfg = cfg
        self.machine = machine
        self.pool = Slots(env, cfg.pool_size)
        self.wire = Sampler(cfg.op_time, rng)
        self.cpu = machine.redis_cpu
        self.entry_cpu = machine.scan_entry_cpu
        self.timeouts = 0
        self.errors = 0
        self.ops = 0

    def _wire_time(self, round_trips: int) -> float:
        c = self.wire.constant
        return c * round_trips if c is not None else sum(self.wire() for _ in range(round_trips))

    def _cpu_time(self, round_trips: int, entries: int) -> float:
        cpu = self.cpu.constant
        total = cpu * round_trips if cpu is not None else sum(self.cpu() for _ in range(round_trips))
        if entries:
            e = self.entry_cpu.constant
            total += e * entries if e is not None else sum(self.entry_cpu() for _ in range(entries))
        return total

    def operation(self, round_trips: int = 1, op_timeout: float | None = None, entries: int = 0):
        """Generator: one pooled operation of ``round_trips`` round trips comparing ``entries``
        scanned entries; returns whether it succeeded (a timeout or a failed connection is a
        miss, never an error the caller sees).

        ``op_timeout`` (or the scenario's) bounds the wait for a connection and each round
        trip's time on the wire; a stall longer than it is a timeout.
        """
        return (yield from self.scan((round_trips,), op_timeout, (entries,)))

    def scan(self, round_trips: tuple[int, ...], op_timeout: float | None = None,
             entries: tuple[int, ...] | None = None):
        """Generator: exchanges of ``round_trips[i]`` round trips (comparing ``entries[i]``
        entries) one after the other on one pooled connection, taken before the first and
        handed back after the last or the first that fails; returns whether all succeeded."""
        timeout = op_timeout if op_timeout is not None else self.cfg.op_timeout
        self.ops += 1
        if self._refused():
            return False
        got = yield from self._take_connection(timeout)
        if not got:
            return False
        try:
            for i, trips in enumerate(round_trips):
                if i and self._refused():
                    return False
                ok = yield from self._exchange(trips, entries[i] if entries else 0, timeout)
                if not ok:
                    return False
            return True
        finally:
            self.pool.release()

    def _refused(self) -> bool:
        """An outage, a reset or errors now: the operation fails at once."""
        faults = self.cfg.faults
        fault = active_fault(faults, self.env.now) if faults else None
        if fault is not None and fault.kind in ("outage", "reset", "errors"):
            self.errors += 1
            return True
        return False

    def _take_connection(self, timeout: float | None):
        """Generator: a pooled connection, waited for FIFO up to the pool timeout (and the
        operation's); returns whether one was taken."""
        env = self.env
        pool = self.pool
        waiting = pool.acquire()
        if waiting is None:
            return True
        limit = self.cfg.pool_timeout
        if timeout is not None:
            limit = timeout if limit is None else min(limit, timeout)
        if limit is None:
            yield waiting
            return True
        fired = yield waiting | env.timeout(limit)
        if waiting not in fired:
            pool.cancel(waiting)
            self.timeouts += 1
            return False
        return True

    def _exchange(self, round_trips: int, entries: int, timeout: float | None):
        """Generator, holding a connection: the client's CPU on the loop, then the wire and the
        server (stalls and slow faults included); returns whether it succeeded."""
        env = self.env
        faults = self.cfg.faults
        yield from self.machine.work(self.machine.loop, self._cpu_time(round_trips, entries))
        wire = self._wire_time(round_trips)
        if faults:
            fault = active_fault(faults, env.now)
            if fault is not None and fault.kind in ("stall", "hang"):
                held = fault.end - env.now
                if timeout is not None and held > timeout:
                    yield env.timeout(timeout)
                    self.timeouts += 1
                    return False
                wire += held
            elif fault is not None and fault.kind == "slow":
                wire *= fault.latency_factor
        if timeout is not None and round_trips and wire / round_trips > timeout:
            yield env.timeout(timeout)
            self.timeouts += 1
            return False
        if wire > 0:
            yield env.timeout(wire)
        return True

    def __repr__(self) -> str:
        return f"<LoopRedis pool={self.pool!r} timeouts={self.timeouts}>"
