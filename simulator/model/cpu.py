"""The gateway's CPUs: a fixed number of cores running request handlers.

When the CPU work per request times the arrival rate approaches the core count, handlers
queue for a core; that queue is the CPU saturation a capacity planner looks for.
"""

from __future__ import annotations

import simpy

from simulator.model.slots import Slots


class GatewayCPU:
    __slots__ = ("env", "cores", "busy_s")

    def __init__(self, env: simpy.Environment, cores: int) -> None:
        self.env = env
        self.cores = Slots(env, cores)  # not simpy.Resource: no heap events for a free core
        self.busy_s = 0.0

    def work(self, ctx, seconds: float):
        """Run ``seconds`` of CPU work for ``ctx``, waiting for a free core first."""
        if seconds <= 0:
            return
        env = self.env
        asked = env.now
        cores = self.cores
        waiting = cores.acquire()
        if waiting is not None:
            try:
                yield waiting
            except BaseException:
                cores.cancel(waiting)
                raise
            ctx.cpu_wait_s += env.now - asked
        try:
            yield env.timeout(seconds)
        finally:
            cores.release()
        ctx.cpu_s += seconds
        self.busy_s += seconds

    @property
    def queued(self) -> int:
        return len(self.cores.queue)

    def __repr__(self) -> str:
        return f"<GatewayCPU busy={self.cores.count}/{self.cores.capacity} queued={self.queued}>"
