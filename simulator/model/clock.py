"""The simulation's clock: SimPy's environment with a leaner timeout and event loop.

``simpy.Environment.run(until=t)`` schedules a stop event at ``t`` and calls ``step()``
once per event, inside a ``try``; a replication processes millions of events, and that
method call is a noticeable share of each one.  ``Clock.run_until`` is the same loop with
``step`` written inline: events strictly before the horizon are processed in the heap's
order (time, priority, insertion), each event's callbacks run once, and a failed event that
nobody handled stops the run with its exception, as SimPy does.  At the end the clock
reads the horizon, as after ``Environment.run(until=horizon)``.

``Clock.timeout`` is ``Environment.timeout`` in one call instead of three (the bound class,
``Timeout.__init__``, ``schedule``), returning the same ``simpy.Timeout``; a request waits on
several.
"""

from __future__ import annotations

from heapq import heappop, heappush
from types import MethodType

import simpy
from simpy.core import EmptySchedule, StopSimulation
from simpy.events import NORMAL, AllOf, AnyOf, Event, EventPriority, Process, Timeout


class Clock(simpy.Environment):
    """A ``simpy.Environment`` whose ``timeout`` skips two layers of calls and whose ``now``
    is a plain attribute (SimPy's is a property over ``_now``, read a score of times per
    request); both are kept equal wherever the clock moves (``step``, ``run_until``)."""

    now: float = 0.0  # shadows Environment.now (a property): the instance's own value is read

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(initial_time)
        self.now = self._now
        # what Environment binds early for itself (its subclass's methods it does not)
        for name, cls in (("event", Event), ("process", Process), ("all_of", AllOf), ("any_of", AnyOf)):
            setattr(self, name, MethodType(cls, self))

    def timeout(self, delay: float = 0, value=None) -> Timeout:  # type: ignore[override]
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        event = Timeout.__new__(Timeout)
        event.env = self
        event.callbacks = []
        event._value = value
        event._delay = delay
        event._ok = True
        heappush(self._queue, (self._now + delay, NORMAL, next(self._eid), event))
        return event

    def step(self) -> None:
        """``Environment.step`` (``run`` calls it), moving ``now`` with ``_now``."""
        try:
            self._now, _, _, event = heappop(self._queue)
        except IndexError:
            raise EmptySchedule from None
        self.now = self._now
        callbacks, event.callbacks = event.callbacks, None
        try:
            for callback in callbacks:
                callback(event)
        except StopSimulation:
            # as SimPy: the callbacks not yet run wait for the next run
            event.callbacks = callbacks[callbacks.index(callback) + 1 :]
            self.schedule(event, EventPriority(-1))
            raise
        if not event._ok and not hasattr(event, "_defused"):
            _crash(event)

    def run_until(self, horizon: float) -> None:
        """Process every event scheduled before ``horizon``; leaves ``now == horizon``."""
        if horizon <= self.now:
            raise ValueError(f"horizon ({horizon}) must be after the current simulation time ({self.now})")
        queue = self._queue  # SimPy's own heap of (time, priority, id, event)
        while queue and queue[0][0] < horizon:
            self._now, _, _, event = heappop(queue)
            self.now = self._now
            callbacks, event.callbacks = event.callbacks, None
            for callback in callbacks:
                callback(event)
            if not event._ok and not hasattr(event, "_defused"):
                _crash(event)
        self._now = self.now = horizon


def _crash(event: Event) -> None:
    """A failed event nobody took: stop the run with (a copy of) its exception, as SimPy does."""
    exc = type(event._value)(*event._value.args)
    exc.__cause__ = event._value
    raise exc
