"""A request's thread of control in the simulated gateway: the handler goroutine (or
coroutine) that runs from the request's arrival to its reply.

It is written as a generator that yields SimPy events, as a SimPy process is, but driven
without ``simpy.Process``: it starts at once, in the instant it is created (no Initialize
event through the heap), and each wake-up is a plain callback on the awaited event.  What
it gives up are the things no request flow uses: being interrupted, and being waited on as
an event.  Sub-tasks that need those (a race's attempts) are started as real processes
and awaited like any other event.
"""

from __future__ import annotations

from collections.abc import Generator

import simpy


class Flow:
    __slots__ = ("_gen", "_wake")

    def __init__(self, gen: Generator[simpy.Event, object, object]) -> None:
        self._gen = gen
        self._wake = self._resume  # one bound method for every wait
        try:
            event = gen.send(None)
        except StopIteration:
            self._wake = None
            return
        if event.callbacks is not None:
            event.callbacks.append(self._wake)
        else:
            self._resume(event)

    def _resume(self, event: simpy.Event) -> None:
        gen = self._gen
        while True:
            try:
                if event._ok:
                    event = gen.send(event._value)
                else:
                    event._defused = True  # handled here: thrown into the flow
                    event = gen.throw(event._value)
            except StopIteration:
                self._wake = None  # no cycle left through the bound method: freed by refcount
                return
            if event.callbacks is not None:
                event.callbacks.append(self._wake)
                return
            # already processed: go on at once with its outcome, as simpy.Process does
