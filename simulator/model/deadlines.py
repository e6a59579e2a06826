"""Request deadlines (the AI client's request timeout) without a timer per request.

A client with a request timeout races each reply against a timer.  In SimPy that is a
Timeout plus an AnyOf condition per attempt, and the timer cannot be cancelled: it stays in
the event heap until it fires, long after the reply came.  Here every deadline goes into
one heap and a single timer, armed for the earliest pending one, fails the waited-on event
with ``Failure("timeout", 504)`` if it has not fired by then; replies that came in time are
dropped when they reach the head.  The one who fires the event later must check
``event.triggered`` first.
"""

from __future__ import annotations

import heapq

import simpy

from simulator.model.context import Failure


class Deadlines:
    __slots__ = ("env", "_heap", "_seq", "_timer", "_timer_at", "expired")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._heap: list[tuple[float, int, simpy.Event]] = []
        self._seq = 0
        self._timer: simpy.Event | None = None
        self._timer_at = 0.0
        self.expired = 0

    def watch(self, at: float, event: simpy.Event) -> None:
        """Fail ``event`` with a timeout at ``at`` unless it has fired by then."""
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, event))
        if self._timer is None or at < self._timer_at:
            self._arm(at)

    def _arm(self, at: float) -> None:
        timer = self.env.timeout(max(at - self.env.now, 0.0))
        timer.callbacks.append(self._ring)
        self._timer = timer
        self._timer_at = at

    def _ring(self, timer: simpy.Event) -> None:
        if timer is not self._timer:
            return  # superseded by an earlier deadline's timer
        self._timer = None
        now = self.env.now
        heap = self._heap
        while heap:
            at, _, event = heap[0]
            if event.triggered:
                heapq.heappop(heap)
                continue
            if at > now:
                break
            heapq.heappop(heap)
            self.expired += 1
            event.fail(Failure("timeout", 504))
        if heap:
            self._arm(heap[0][0])

    def __repr__(self) -> str:
        return f"<Deadlines pending={len(self._heap)} expired={self.expired}>"
