"""The gateway's CPUs: a fixed number of cores running request handlers.

When the CPU work per request times the arrival rate approaches the core count, handlers
queue for a core; that queue is the CPU saturation a capacity planner looks for.

With a machine model (``scenario.machine.cores > 0``) the workers are threads of the
gateway process on a shared machine: a worker's work runs at the share of a core the
machine gives it (and not while the event loop holds the GIL), so it can take longer
than its CPU time.
"""

from __future__ import annotations

import simpy

from simulator.model.slots import Slots


class GatewayCPU:
    __slots__ = ("env", "cores", "busy_s", "machine", "_free")

    def __init__(self, env: simpy.Environment, cores: int, machine=None) -> None:
        self.env = env
        self.cores = Slots(env, cores)  # not simpy.Resource: no heap events for a free core
        self.busy_s = 0.0
        self.machine = machine if machine is not None and machine.cpu is not None else None
        self._free = [self.machine.worker(i) for i in range(cores)] if self.machine is not None else []

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
        begun = env.now
        try:
            if self.machine is None:
                yield env.timeout(seconds)
            else:
                thread = self._free.pop()
                try:
                    yield from self.machine.cpu.run(thread, seconds)
                finally:
                    self._free.append(thread)
        finally:
            cores.release()
        took = env.now - begun  # wall time on the worker (the real gateway records the same)
        ctx.cpu_s += took
        self.busy_s += took

    @property
    def queued(self) -> int:
        return len(self.cores.queue)

    def __repr__(self) -> str:
        return f"<GatewayCPU busy={self.cores.count}/{self.cores.capacity} queued={self.queued}>"
