"""Retry policy of the gateway's AI-service client (the seed's protocol-manager client).

``count`` retries after the first attempt, waiting ``backoff_s[i]`` before retry i+1
(the last wait repeats; no waits means retry at once), only for error kinds in
``retry_on``.  The seed nominally had 3 retries at 1/2/3 s, but its retry test never
matched, so a faithful seed scenario sets ``count = 0`` (or an empty ``on``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from simulator.policies.eventlog import new_log

if TYPE_CHECKING:
    from simulator.scenario import Retries

__all__ = ["RetryPolicy"]


class RetryPolicy:
    """``delay_before(attempt_index, error_kind)``: seconds to wait before the next
    attempt, or None for no retry; ``attempt_index`` is the number of attempts made.

    Stateless apart from counters ``retries`` and ``give_ups``; when the caller passes
    ``now`` the decision is logged as ``("retry", now)`` or ``("give_up", now)``.
    """

    __slots__ = ("count", "backoff_s", "retry_on", "log", "retries", "give_ups")

    def __init__(
        self, count: int, backoff_s: Sequence[float], retry_on: Iterable[str], *, log_limit: int | None = None
    ) -> None:
        if count < 0 or any(b < 0 for b in backoff_s):
            raise ValueError(f"expected count >= 0 and backoffs >= 0, got count={count} backoff_s={list(backoff_s)}")
        self.count = count
        self.backoff_s = tuple(float(b) for b in backoff_s)
        self.retry_on = frozenset(retry_on)
        self.log: list[tuple[str, float]] = new_log(log_limit)
        self.retries = 0
        self.give_ups = 0

    @classmethod
    def from_config(cls, cfg: "Retries", *, log_limit: int | None = None) -> "RetryPolicy":
        return cls(cfg.count, cfg.backoff, cfg.on, log_limit=log_limit)

    @property
    def max_attempts(self) -> int:
        return self.count + 1

    def delay_before(self, attempt_index: int, error_kind: str, now: float | None = None) -> float | None:
        if attempt_index < 1:
            raise ValueError(f"expected attempt_index >= 1 (attempts already made), got {attempt_index}")
        if attempt_index > self.count or error_kind not in self.retry_on:
            self.give_ups += 1
            if now is not None:
                self.log.append(("give_up", now))
            return None
        self.retries += 1
        if now is not None:
            self.log.append(("retry", now))
        b = self.backoff_s
        if not b:
            return 0.0
        return b[attempt_index - 1] if attempt_index <= len(b) else b[-1]

    def __repr__(self) -> str:
        return (
            f"<RetryPolicy count={self.count} backoff={list(self.backoff_s)} on={sorted(self.retry_on)} "
            f"retries={self.retries} give_ups={self.give_ups}>"
        )
