"""The policies' event logs: what a state machine did and when, newest last.

A test reads a policy's whole log.  A run (simulated or real) can last millions of
requests, so the policies it holds for the whole run keep only their recent past,
``RUN_LOG_LIMIT`` entries, and their memory does not grow with the run.
"""

from __future__ import annotations

from collections import deque

__all__ = ["RUN_LOG_LIMIT", "new_log"]

#: entries a run's long-lived policy keeps in its log (breaker transitions, pool dials,
#: batch dispatches, rate-limit rejections): enough for `repr`, /stats and a look back
RUN_LOG_LIMIT = 1000


def new_log(log_limit: int | None) -> list[tuple[str, float]]:
    """A whole log (``None``) or the newest ``log_limit`` entries (a bounded deque, appended at
    list cost; ``0`` keeps none)."""
    return [] if log_limit is None else deque(maxlen=log_limit)  # type: ignore[return-value]
