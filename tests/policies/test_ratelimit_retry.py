"""Sliding-window rate limiter and retry policy."""

from __future__ import annotations

import pytest

from simulator.policies import RetryPolicy, SlidingWindowLimiter
from simulator.scenario import RateLimit, Retries


def test_limiter_sliding_log_per_key() -> None:
    lim = SlidingWindowLimiter(3, 10.0)
    assert [lim.allow("a", t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert lim.allow("b", 3) is True  # keys are independent
    assert lim.allow("a", 9.9) is False
    assert lim.retry_after("a", 9.9) == pytest.approx(0.1)
    assert lim.allow("a", 10.0) is True  # the hit at 0 left the window at exactly 10
    assert lim.allow("a", 10.5) is False
    assert lim.count("a", 10.5) == 3
    assert lim.allow("a", 11.0) is True
    assert lim.rejections == 3 and lim.log == [("reject", 3), ("reject", 9.9), ("reject", 10.5)]


def test_limiter_rejections_do_not_extend_the_window() -> None:
    lim = SlidingWindowLimiter(1, 1.0)
    assert lim.allow("k", 0.0)
    assert not any(lim.allow("k", 0.1 * i) for i in range(1, 10))
    assert lim.allow("k", 1.0)


def test_limiter_seed_rate() -> None:
    lim = SlidingWindowLimiter.from_config(RateLimit.model_validate({"limit": 1000, "window": "1m"}))
    ok = sum(lim.allow("key", i * 0.01) for i in range(6000))  # 100/s for 60 s
    assert ok == 1000 and lim.rejections == 5000
    assert "limit=1000/60.0s" in repr(lim)


def test_retry_delays() -> None:
    r = RetryPolicy(3, [1.0, 2.0], ["timeout", "503"])
    assert r.delay_before(1, "timeout") == 1.0
    assert r.delay_before(2, "503") == 2.0
    assert r.delay_before(3, "503") == 2.0  # last backoff repeats
    assert r.delay_before(4, "503") is None  # 1 + 3 attempts made
    assert r.delay_before(1, "429") is None  # not retried
    assert r.max_attempts == 4 and r.retries == 3 and r.give_ups == 2


def test_retry_empty_backoff_and_zero_count() -> None:
    assert RetryPolicy(2, [], ["timeout"]).delay_before(1, "timeout") == 0.0
    assert RetryPolicy(0, [1.0], ["timeout"]).delay_before(1, "timeout") is None
    with pytest.raises(ValueError):
        RetryPolicy(1, [], ["timeout"]).delay_before(0, "timeout")


def test_retry_from_config_and_log() -> None:
    r = RetryPolicy.from_config(Retries.model_validate({"count": 3, "backoff": ["1s", "2s", "3s"]}))
    assert r.delay_before(3, "timeout", now=5.0) == 3.0
    assert r.delay_before(1, "reset", now=6.0) is None  # default 'on' excludes reset
    assert r.log == [("retry", 5.0), ("give_up", 6.0)]
    assert "count=3" in repr(r)
