"""The gateway's CPUs: a fixed number of cores running request handlers.

When the CPU work per request times the arrival rate approaches the core count, handlers
queue for a core; that queue is the CPU saturation a capacity planner looks for.

A slice is the handler's CPU work between two waits (parse and middleware; building a client
and encoding the upstream call).  On dedicated cores its length is its CPU time, so it is
booked on the first free core, first come first served (``Servers``), and the handler sleeps
once, until the slice ends, together with whatever pure delay follows it.  A booked slice
runs to its end: a handler abandoned meanwhile (a race loser) does not hand its core back
early, as a goroutine finishes the code it is running before it notices its context was
cancelled.

With a machine model (``scenario.machine.cores > 0``) the workers are threads of the
gateway process on a shared machine: a worker's work runs at the share of a core the
machine gives it (and not while the event loop holds the GIL), so it can take longer
than its CPU time and cannot be booked ahead; the handler then holds a core (``Slots``)
while the machine runs it (``work``).
"""

from __future__ import annotations

import simpy

from simulator.model.servers import Servers
from simulator.model.slots import Slots


class GatewayCPU:
    __slots__ = ("env", "booked", "cores", "busy_s", "machine", "_free")

    def __init__(self, env: simpy.Environment, cores: int, machine=None) -> None:
        self.env = env
        self.machine = machine if machine is not None and machine.cpu is not None else None
        #: dedicated cores: slices booked ahead (``run``); None on a machine model (``work``)
        self.booked = Servers(cores) if self.machine is None else None
        self.cores = Slots(env, cores) if self.machine is not None else None
        self._free = [self.machine.worker(i) for i in range(cores)] if self.machine is not None else []
        self.busy_s = 0.0

    def run(self, ctx, now: float, seconds: float) -> float:
        """Book ``seconds`` of CPU for ``ctx`` from ``now`` on dedicated cores; returns when the slice ends."""
        start, end = self.booked.take(now, seconds)
        if start > now:
            ctx.cpu_wait_s += start - now
        ctx.cpu_s += seconds
        self.busy_s += seconds
        return end

    def work(self, ctx, seconds: float):
        """Generator, on a machine model: run ``seconds`` of CPU work for ``ctx``, waiting for a free core first."""
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
        thread = self._free.pop()
        try:
            yield from self.machine.cpu.run(thread, seconds)
        finally:
            self._free.append(thread)
            cores.release()
        took = env.now - begun  # wall time on the worker (the real gateway records the same)
        ctx.cpu_s += took
        self.busy_s += took

    def queued(self, now: float) -> int:
        return self.booked.queued(now) if self.booked is not None else len(self.cores.queue)

    def __repr__(self) -> str:
        state = repr(self.booked) if self.booked is not None else repr(self.cores)
        return f"<GatewayCPU {state} busy_s={self.busy_s:g}>"
