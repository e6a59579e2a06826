"""The seed gateway's in-memory sliding-window rate limiter, as a sliding log per key.

Each key keeps the times of the requests it was allowed in the last ``window_s``; a
request is allowed while fewer than ``limit`` remain after dropping those at or before
``now - window_s``.  Rejected requests are not logged against the key (they do not
extend the penalty).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from simulator.policies.eventlog import new_log

if TYPE_CHECKING:
    from simulator.scenario import RateLimit

__all__ = ["SlidingWindowLimiter"]


class SlidingWindowLimiter:
    """``allow(key, now)`` -> bool.  Counts ``rejections`` and ``allowed``; ``log`` holds
    ``("reject", time)`` per rejection (bound it with ``log_limit``)."""

    __slots__ = ("limit", "window_s", "log", "rejections", "allowed", "_hits")

    def __init__(self, limit: int, window_s: float, *, log_limit: int | None = None) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError(f"expected limit >= 1 and window_s > 0, got limit={limit} window_s={window_s}")
        self.limit = limit
        self.window_s = window_s
        self.log: list[tuple[str, float]] = new_log(log_limit)
        self.rejections = 0
        self.allowed = 0
        self._hits: dict[str, deque[float]] = {}

    @classmethod
    def from_config(cls, cfg: "RateLimit", *, log_limit: int | None = None) -> "SlidingWindowLimiter":
        return cls(cfg.limit, cfg.window, log_limit=log_limit)

    def allow(self, key: str, now: float) -> bool:
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        horizon = now - self.window_s
        while hits and hits[0] <= horizon:
            hits.popleft()
        if len(hits) < self.limit:
            hits.append(now)
            self.allowed += 1
            return True
        self.rejections += 1
        self.log.append(("reject", now))
        return False

    def count(self, key: str, now: float) -> int:
        """Requests of ``key`` in the window ending at ``now`` (read-only)."""
        hits = self._hits.get(key)
        if not hits:
            return 0
        horizon = now - self.window_s
        return sum(1 for t in hits if t > horizon)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may be allowed again (0 when it may be now)."""
        hits = self._hits.get(key)
        if hits is None or self.count(key, now) < self.limit:
            return 0.0
        # the oldest hit still inside the window must leave it
        horizon = now - self.window_s
        oldest = next(t for t in hits if t > horizon)
        return oldest + self.window_s - now

    def __repr__(self) -> str:
        return (
            f"<SlidingWindowLimiter limit={self.limit}/{self.window_s}s keys={len(self._hits)} "
            f"allowed={self.allowed} rejections={self.rejections}>"
        )
