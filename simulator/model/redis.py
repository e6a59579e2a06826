"""Redis as the gateway's client sees it: a connection pool, a round trip per operation,
timeouts that turn into cache misses, and stalls or outages of the server.

A multi-round-trip operation (the semantic cache's SCAN plus one GET per entry) holds one
pooled connection for all its round trips; the operation timeout bounds each round trip
(each command), as redis-py's ``socket_timeout`` and the real gateway's per-command
timeout do.
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

    def operation(self, round_trips: int = 1, op_timeout: float | None = None) -> tuple[float, bool]:
        """One pooled operation of ``round_trips`` round trips, asked for now: (seconds until its
        answer or its failure, whether it succeeded).  All of it is known at once: the pool is
        booked first come first served, so no event is spent until the caller sleeps.

        ``op_timeout`` (or the scenario's) bounds each round trip, as a Redis client's socket
        timeout bounds each command (the first one's wait for a connection included): the
        first round trip that would take longer ends the operation at its timeout, a miss,
        not an error the caller sees.  While a stall is in force the server answers nothing
        until it ends; a slow window stretches every round trip (both judged at the start).
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
        held = 0.0  # a stall holds the first round trip until it ends
        factor = 1.0
        if faults:
            if start != now:
                fault = active_fault(faults, start)
            if fault is not None and fault.kind in ("stall", "hang"):
                held = fault.end - start
            elif fault is not None and fault.kind == "slow":
                factor = fault.latency_factor
        constant = self.op_time.constant
        ok = True
        if timeout is None:
            trips = constant * round_trips if constant is not None else sum(self.op_time() for _ in range(round_trips))
            service = trips * factor + held
        elif constant is not None and not held:
            # every round trip alike: the first one decides (it alone has the wait in its timeout)
            trip = constant * factor
            budget = timeout - (start - now)
            service = trip * round_trips
            if trip > budget:
                service, ok = max(budget, 0.0), False
        else:
            service = 0.0
            budget = timeout - (start - now)
            for i in range(round_trips):
                trip = (constant if constant is not None else self.op_time()) * factor + (held if i == 0 else 0.0)
                if trip > budget:
                    # the client gives up on this round trip and frees the connection
                    service, ok = service + max(budget, 0.0), False
                    break
                service += trip
                budget = timeout
        if not ok:
            self.timeouts += 1
        return pool.book(now, start, service) - now, ok

    def __repr__(self) -> str:
        return f"<SimRedis pool={self.pool!r} timeouts={self.timeouts}>"
