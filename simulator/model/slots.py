"""A counting semaphore for simulated time: a fixed number of slots (cores, pooled Redis
connections, a provider's concurrency limit, the client's concurrency cap), FIFO waiters.

It stands in for ``simpy.Resource`` on the hot path.  A Resource turns every acquisition
into a Request event and every release into a Release event, each a trip through the event
heap even when a slot is free; here a free slot is taken by a plain call, and only a waiter
costs an event (the one that wakes it when a slot is handed over).  Same FIFO discipline.
"""

from __future__ import annotations

from collections import deque

import simpy


class Slots:
    __slots__ = ("env", "capacity", "count", "queue")

    def __init__(self, env: simpy.Environment, capacity: int) -> None:
        self.env = env
        self.capacity = capacity
        self.count = 0  # slots held (a handed-over slot stays counted)
        self.queue: deque[simpy.Event] = deque()

    def acquire(self) -> simpy.Event | None:
        """None when a slot was taken now; otherwise an event to wait on, fired when a slot is
        handed over.  A waiter that gives up must call ``cancel(event)``."""
        if self.count < self.capacity:
            self.count += 1
            return None
        event = self.env.event()
        self.queue.append(event)
        return event

    def cancel(self, event: simpy.Event) -> None:
        """The waiter of ``event`` walked away: leave the queue, or pass on a slot it was just given."""
        if event.triggered:
            self.release()
            return
        try:
            self.queue.remove(event)
        except ValueError:
            pass

    def release(self) -> None:
        if self.queue:
            self.queue.popleft().succeed()  # handed over: count unchanged
        else:
            self.count -= 1

    def __repr__(self) -> str:
        return f"<Slots used={self.count}/{self.capacity} queued={len(self.queue)}>"
