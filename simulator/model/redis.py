"""Redis as the gateway's client sees it: a connection pool, a round trip per operation,
timeouts that turn into cache misses, and stalls or outages of the server.

A multi-round-trip operation (the semantic cache's SCAN plus one GET per entry) holds one
pooled connection for all its round trips, as a Go or redis-py client does.
"""

from __future__ import annotations

import simpy

from simulator.distributions import Sampler
from simulator.model.slots import Slots
from simulator.scenario import Redis, active_fault


class RedisResult:
    __slots__ = ("ok", "elapsed_s", "error")

    def __init__(self, ok: bool, elapsed_s: float, error: str = "") -> None:
        self.ok = ok
        self.elapsed_s = elapsed_s
        self.error = error


class SimRedis:
    __slots__ = ("env", "cfg", "pool", "op_time", "timeouts", "errors", "ops")

    def __init__(self, env: simpy.Environment, cfg: Redis, rng) -> None:
        self.env = env
        self.cfg = cfg
        self.pool = Slots(env, cfg.pool_size)  # not simpy.Resource: no heap events for a free connection
        self.op_time = Sampler(cfg.op_time, rng)
        self.timeouts = 0
        self.errors = 0
        self.ops = 0

    def _service_time(self, round_trips: int) -> float:
        if self.op_time.constant is not None:
            return self.op_time.constant * round_trips
        return sum(self.op_time() for _ in range(round_trips))

    def operation(self, round_trips: int = 1, op_timeout: float | None = None):
        """Generator: one pooled operation of ``round_trips`` round trips; returns a RedisResult.

        ``op_timeout`` (or the scenario's) bounds the operation; a timeout is a miss, not an error
        the caller sees.  While a stall is in force the server answers nothing until it ends.
        """
        env = self.env
        start = env.now
        timeout = op_timeout if op_timeout is not None else self.cfg.op_timeout
        self.ops += 1
        fault = active_fault(self.cfg.faults, start) if self.cfg.faults else None
        if fault is not None and fault.kind in ("outage", "reset", "errors"):
            self.errors += 1
            return RedisResult(False, 0.0, "connect")
        # Pool wait, bounded by the pool timeout.
        pool = self.pool
        waiting = pool.acquire()
        if waiting is not None:
            limit = self.cfg.pool_timeout
            if timeout is not None:
                limit = timeout if limit is None else min(limit, timeout)
            try:
                if limit is None:
                    yield waiting
                else:
                    result = yield waiting | env.timeout(limit)
                    if waiting not in result:
                        pool.cancel(waiting)
                        self.timeouts += 1
                        return RedisResult(False, env.now - start, "pool_timeout")
            except BaseException:
                pool.cancel(waiting)
                raise
        try:
            service = self._service_time(round_trips)
            fault = active_fault(self.cfg.faults, env.now) if self.cfg.faults else None
            if fault is not None and fault.kind in ("stall", "hang"):
                service += fault.end - env.now
            elif fault is not None and fault.kind == "slow":
                service *= fault.latency_factor
            if timeout is not None:
                remaining = timeout - (env.now - start)
                if service > remaining:
                    yield env.timeout(max(remaining, 0.0))
                    self.timeouts += 1
                    return RedisResult(False, env.now - start, "timeout")
            yield env.timeout(service)
            return RedisResult(True, env.now - start)
        finally:
            pool.release()

    def __repr__(self) -> str:
        return f"<SimRedis in_use={self.pool.count}/{self.pool.capacity} queued={len(self.pool.queue)} timeouts={self.timeouts}>"
