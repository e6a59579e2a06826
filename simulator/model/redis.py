"""Redis as the gateway's client sees it: a connection pool, a round trip per operation,
timeouts that turn into cache misses, and stalls or outages of the server.

A multi-round-trip operation (the semantic cache's SCAN plus one GET per entry) holds one
pooled connection for all its round trips, as a Go or redis-py client does.
"""

from __future__ import annotations

import simpy

from simulator.distributions import Sampler
from simulator.model.servers import Servers
from simulator.scenario import Redis, active_fault


class SimRedis:
    __slots__ = ("env", "cfg", "pool", "op_time", "_faults", "_op_timeout", "_pool_timeout", "timeouts", "errors", "ops")

    def __init__(self, env: simpy.Environment, cfg: Redis, rng) -> None:
        self.env = env
        self.cfg = cfg
        self.pool = Servers(cfg.pool_size)  # booked FCFS: no events for the wait or the hand-over
        self.op_time = Sampler(cfg.op_time, rng)
        self._faults = cfg.faults or None
        self._op_timeout = cfg.op_timeout
        self._pool_timeout = cfg.pool_timeout
        self.timeouts = 0
        self.errors = 0
        self.ops = 0

    def _service_time(self, round_trips: int) -> float:
        if self.op_time.constant is not None:
            return self.op_time.constant * round_trips
        return sum(self.op_time() for _ in range(round_trips))

    def operation(self, round_trips: int = 1, op_timeout: float | None = None) -> tuple[float, bool]:
        """One pooled operation of ``round_trips`` round trips, asked for now: (seconds until its
        answer or its failure, whether it succeeded).  All of it is known at once: the pool is
        booked first come first served, so no event is spent until the caller sleeps.

        ``op_timeout`` (or the scenario's) bounds the operation; a timeout is a miss, not an error
        the caller sees.  While a stall is in force the server answers nothing until it ends.
        """
        now = self.env.now
        timeout = op_timeout if op_timeout is not None else self._op_timeout
        self.ops += 1
        faults = self._faults
        fault = active_fault(faults, now) if faults else None
        if fault is not None and fault.kind in ("outage", "reset", "errors"):
            self.errors += 1
            return 0.0, False
        pool = self.pool
        start = pool.next_start(now)
        if start > now:
            # the wait for a connection, bounded by the pool timeout: one that would wait longer
            # gives up at the limit and never holds a connection
            limit = self._pool_timeout
            if timeout is not None:
                limit = timeout if limit is None else min(limit, timeout)
            if limit is not None and start - now > limit:
                self.timeouts += 1
                return limit, False
        constant = self.op_time.constant
        service = constant * round_trips if constant is not None else self._service_time(round_trips)
        if faults:
            if start != now:
                fault = active_fault(faults, start)
            if fault is not None and fault.kind in ("stall", "hang"):
                service += fault.end - start
            elif fault is not None and fault.kind == "slow":
                service *= fault.latency_factor
        ok = True
        if timeout is not None:
            remaining = timeout - (start - now)
            if service > remaining:
                service = max(remaining, 0.0)  # the client gives up and frees the connection
                ok = False
                self.timeouts += 1
        return pool.book(now, start, service) - now, ok

    def __repr__(self) -> str:
        return f"<SimRedis pool={self.pool!r} timeouts={self.timeouts}>"
