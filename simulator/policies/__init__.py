"""Policy cores shared by both executors: pure state machines with the time passed in.

Circuit breakers (seed, sony/gobreaker, resilience4j-like), Go net/http connection-pool
admission and churn, LitServe-style dynamic batching, provider fallback plans, a
sliding-window rate limiter, a retry policy and the gateway's in-flight cap.  No I/O, no
SimPy, no asyncio here.
"""

from simulator.policies.admission import InFlightLimit
from simulator.policies.batching import BatchDecision, BatchPolicy
from simulator.policies.breaker import (
    BreakerState,
    CircuitBreaker,
    ConsecutiveBreaker,
    GoBreaker,
    Permit,
    RateBreaker,
    make_breaker,
)
from simulator.policies.fallback import DEFAULT_TRIGGER_ON, FALLBACK_MODES, FallbackPlan, rank_candidates
from simulator.policies.pool import Acquire, ConnectionPoolPolicy, Release
from simulator.policies.ratelimit import SlidingWindowLimiter
from simulator.policies.retry import RetryPolicy

__all__ = [
    "DEFAULT_TRIGGER_ON",
    "FALLBACK_MODES",
    "Acquire",
    "BatchDecision",
    "BatchPolicy",
    "BreakerState",
    "CircuitBreaker",
    "ConnectionPoolPolicy",
    "ConsecutiveBreaker",
    "FallbackPlan",
    "GoBreaker",
    "InFlightLimit",
    "Permit",
    "RateBreaker",
    "Release",
    "RetryPolicy",
    "SlidingWindowLimiter",
    "make_breaker",
    "rank_candidates",
]
