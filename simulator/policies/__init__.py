"""Policy cores shared by both executors: pure state machines with the time passed in.

Circuit breakers (seed, sony/gobreaker, resilience4j-like), Go net/http connection-pool
admission and churn, LitServe-style dynamic batching, provider fallback plans, a
sliding-window rate limiter and a retry policy.  No I/O, no SimPy, no asyncio here.
"""

from simulator.policies.breaker import (
    BreakerState,
    CircuitBreaker,
    ConsecutiveBreaker,
    GoBreaker,
    Permit,
    RateBreaker,
    make_breaker,
)
from simulator.policies.pool import Acquire, ConnectionPoolPolicy, Release

__all__ = [
    "Acquire",
    "BreakerState",
    "CircuitBreaker",
    "ConnectionPoolPolicy",
    "ConsecutiveBreaker",
    "GoBreaker",
    "Permit",
    "RateBreaker",
    "Release",
    "make_breaker",
]
