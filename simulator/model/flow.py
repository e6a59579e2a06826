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


class Stuck:
    """Waits that never end (a call that hangs with nothing to give up on it), kept alive.

    A flow waiting on an event that nothing else refers to forms a reference cycle with it
    (generator, event, its callback, the flow); Python's cycle collector would free that
    cycle whenever it next runs and so run the flow's cleanup (its ``finally``: giving back an
    admission slot, a connection, a core) at a moment the allocator chose.  Results would
    then change with unrelated code.  Held here, a stuck request keeps what it holds to the
    end of the run, as a hung handler does in the real gateway.
    """

    __slots__ = ("env", "_held")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._held: list[simpy.Event] = []

    def wait(self) -> simpy.Event:
        """An event that never fires, for one stuck wait."""
        event = self.env.event()
        self._held.append(event)
        return event

    def __len__(self) -> int:
        return len(self._held)

    def __repr__(self) -> str:
        return f"<Stuck waits={len(self._held)}>"
