"""Dynamic batching as LitServe's workers do it.

A worker that is free takes the first queued request, then keeps collecting until the
batch holds ``max_batch_size`` requests or ``batch_timeout`` has passed since it began
collecting, and runs whatever it holds.  This module only makes the decision; the caller
owns the queue, the clock and the sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from simulator.policies.eventlog import new_log

if TYPE_CHECKING:
    from simulator.scenario import AIService

__all__ = ["BatchDecision", "BatchPolicy"]


@dataclass(frozen=True, slots=True)
class BatchDecision:
    """``take > 0``: dispatch that many now.  ``take == 0``: sleep until ``wake_at`` (the
    collection deadline) or the next arrival, whichever is first; ``wake_at`` is None when
    nothing is queued (sleep until an arrival)."""

    take: int
    wake_at: float | None


_IDLE = BatchDecision(0, None)


class BatchPolicy:
    """Decides, for a free worker, whether to dispatch a batch now or keep collecting.

    ``decide(queued, collecting_since, now)``: ``queued`` requests wait; the worker began
    collecting at ``collecting_since`` (when it saw its first item; None means it starts
    now).  A full batch goes at once; otherwise what is queued goes once
    ``now >= collecting_since + batch_timeout_s`` (so a zero timeout dispatches
    immediately), else the worker sleeps until that deadline.

    Counts dispatched ``batches`` and ``items``; ``log`` holds ``("dispatch", time)`` per
    batch (bound it with ``log_limit``).
    """

    __slots__ = ("max_batch_size", "batch_timeout_s", "log", "batches", "items")

    def __init__(self, max_batch_size: int, batch_timeout_s: float, *, log_limit: int | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError(f"expected max_batch_size >= 1, got {max_batch_size}")
        if batch_timeout_s < 0:
            raise ValueError(f"expected batch_timeout_s >= 0, got {batch_timeout_s}")
        self.max_batch_size = max_batch_size
        self.batch_timeout_s = batch_timeout_s
        self.log: list[tuple[str, float]] = new_log(log_limit)
        self.batches = 0
        self.items = 0

    @classmethod
    def from_config(cls, cfg: "AIService", *, log_limit: int | None = None) -> "BatchPolicy":
        return cls(cfg.max_batch_size, cfg.batch_timeout, log_limit=log_limit)

    def decide(self, queued: int, collecting_since: float | None, now: float) -> BatchDecision:
        if queued <= 0:
            return _IDLE
        size = self.max_batch_size
        if queued < size:
            deadline = (now if collecting_since is None else collecting_since) + self.batch_timeout_s
            if now < deadline:
                return BatchDecision(0, deadline)
            size = queued
        self.batches += 1
        self.items += size
        self.log.append(("dispatch", now))
        return BatchDecision(size, None)

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0

    def __repr__(self) -> str:
        return (
            f"<BatchPolicy max={self.max_batch_size} timeout={self.batch_timeout_s}s "
            f"batches={self.batches} mean_batch={self.mean_batch:.2f}>"
        )
