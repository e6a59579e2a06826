"""The gateway's admission control: a cap on requests handled at once.

Without it an overloaded gateway takes every request and its queues (CPU, pools, the AI
service, providers) grow for as long as the overload lasts; afterwards it takes as long
again to drain them.  With ``max_in_flight`` set, a request arriving while that many are
being handled is refused at once (503, outcome ``rejected``), so the backlog, the memory
it holds and the time to recover stay bounded.  Both executors ask this object, the
simulator with its model's requests and the real gateway with its handlers.
"""

from __future__ import annotations

__all__ = ["InFlightLimit"]


class InFlightLimit:
    """``enter()`` -> bool (admitted or not); every admitted request calls ``leave()`` once.

    ``limit=None`` admits everything (and still counts, so the peak is known).
    """

    __slots__ = ("limit", "in_flight", "peak", "admitted", "rejections")

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"expected max_in_flight >= 1 or None, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.peak = 0
        self.admitted = 0
        self.rejections = 0

    def enter(self) -> bool:
        if self.limit is not None and self.in_flight >= self.limit:
            self.rejections += 1
            return False
        self.in_flight += 1
        self.admitted += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight
        return True

    def leave(self) -> None:
        if self.in_flight <= 0:
            raise RuntimeError("InFlightLimit.leave() without a matching enter()")
        self.in_flight -= 1

    def __repr__(self) -> str:
        return (
            f"<InFlightLimit limit={self.limit} in_flight={self.in_flight} peak={self.peak} "
            f"admitted={self.admitted} rejections={self.rejections}>"
        )
