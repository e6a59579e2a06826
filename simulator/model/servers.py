"""A station of ``c`` identical servers taking work first come, first served, where each
piece of work's length is known when it reaches the head of the line: gateway cores running
a CPU slice, a Redis connection pool serving an operation's round trips, a provider's
concurrency limit over calls that cannot be abandoned.

Because the discipline is FCFS and service times are known up front, a newcomer's start is
fixed the moment it arrives: it takes the server that frees first, at ``max(now, that
time)`` (the Kiefer-Wolfowitz recursion of the G/G/c queue).  So the wait and the hand-over
need no events at all; the caller sleeps once, until its own end.  Bookings cannot be
taken back, which is why a stage whose work can be abandoned part way (a deadline that
walks away from a call, a race loser interrupted) uses ``Slots`` instead.
"""

from __future__ import annotations

import heapq
from collections import deque


class Servers:
    __slots__ = ("capacity", "_free", "_waits")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"expected at least one server, got {capacity}")
        self.capacity = capacity
        self._free = [0.0] * capacity  # a heap: when each server is next free
        self._waits: deque[float] = deque()  # starts still in the future, in order (for `queued`)

    def next_start(self, now: float) -> float:
        """When work arriving now would start (nothing is booked)."""
        first = self._free[0]
        return first if first > now else now

    def book(self, now: float, start: float, seconds: float) -> float:
        """Book the first free server from ``start`` (``next_start(now)``, asked just before)
        for ``seconds``; returns the end."""
        end = start + seconds
        heapq.heapreplace(self._free, end)
        if start > now:
            self._waits.append(start)  # starts are non-decreasing under FCFS
        return end

    def take(self, now: float, seconds: float) -> tuple[float, float]:
        """``next_start`` and ``book`` in one: (start, end) of ``seconds`` of work arriving now."""
        free = self._free
        start = free[0]
        if start > now:
            self._waits.append(start)
        else:
            start = now
        end = start + seconds
        heapq.heapreplace(free, end)
        return start, end

    def queued(self, now: float) -> int:
        """Bookings that have not started yet (the queue a monitor would see now)."""
        waits = self._waits
        while waits and waits[0] <= now:
            waits.popleft()
        return len(waits)

    def busy(self, now: float) -> int:
        return sum(1 for t in self._free if t > now)

    def __repr__(self) -> str:
        return f"<Servers c={self.capacity} next_free={self._free[0]:g}>"
