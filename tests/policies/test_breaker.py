"""Circuit breakers: hand-computed (event, time) logs for scripted allow/record sequences."""

from __future__ import annotations

import pytest

from simulator.policies import (
    BreakerState,
    ConsecutiveBreaker,
    GoBreaker,
    Permit,
    RateBreaker,
    make_breaker,
)
from simulator.scenario import Breaker

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def call(b, t0: float, t1: float, success: bool, duration: float = 0.0) -> Permit:
    """Admit a call at t0 and record its outcome at t1 (it must be admitted)."""
    p = b.allow(t0)
    assert p is not None, f"call at {t0} rejected: {b!r}"
    b.record(p, t1, success, duration)
    return p


# --------------------------------------------------------------------------- consecutive


def test_consecutive_plain_cycle() -> None:
    b = ConsecutiveBreaker(3, 2, 30.0)
    call(b, 0, 0, False)
    call(b, 1, 1, False)
    call(b, 2, 2, True)  # any success resets the count
    assert b.failures == 0
    for t in (3, 4, 5):
        call(b, t, t, False)
    assert b.state(5) is OPEN and b.last_failure_at == 5
    assert b.allow(20) is None
    assert b.allow(35) is None  # exactly open_for after: not yet ("more than")
    probe = b.allow(35.5)
    assert probe is not None and probe.state is HALF
    assert b.allow(36) is None  # one probe in flight at most
    b.record(probe, 37, True)
    assert b.state(37) is HALF  # 1 of 2 successes
    call(b, 38, 39, True)
    assert b.state(39) is CLOSED
    for t in (40, 41, 42):
        call(b, t, t, False)
    call(b, 72.5, 73, True)  # counter was reset on entering half-open: 1 of 2
    assert b.state(73) is HALF
    call(b, 73.5, 74, True)
    assert b.log == [("open", 5), ("half_open", 35.5), ("closed", 39), ("open", 42), ("half_open", 72.5), ("closed", 74)]
    assert b.rejections == 3


def test_consecutive_late_failure_ignored_without_quirk() -> None:
    b = ConsecutiveBreaker(3, 1, 30.0)
    inflight = b.allow(0)
    for t in (1, 2, 3):
        call(b, t, t, False)
    b.record(inflight, 10, False)  # a call still in flight when it opened fails late
    assert b.last_failure_at == 3
    assert b.allow(33.5) is not None
    assert b.log == [("open", 3), ("half_open", 33.5)]


def test_consecutive_seed_quirks() -> None:
    """Seed: open extended by late failures, half-open unlimited, success count never reset."""
    b = ConsecutiveBreaker(
        3, 2, 30.0, extend_open_on_late_failure=True, half_open_unlimited=True, reset_success_count=False
    )
    inflight = b.allow(0)
    for t in (0, 1, 2):
        call(b, t, t, False)
    b.record(inflight, 10, False)  # late failure while open refreshes the timer
    assert b.last_failure_at == 10
    assert b.allow(35) is None  # 25 s after the last failure
    assert b.allow(40) is None
    probes = [b.allow(40.5), b.allow(41), b.allow(41)]  # half-open lets every call through
    assert all(p is not None and p.state is HALF for p in probes)
    b.record(probes[0], 42, True)
    b.record(probes[1], 43, True)  # second success closes (threshold 2)
    b.record(probes[2], 44, True)
    assert b.state(44) is CLOSED and b.successes == 2  # counted only in half-open
    for t in (50, 51, 52):
        call(b, t, t, False)
    call(b, 82.1, 83, True)  # never reset: the second recovery closes after ONE success
    assert b.log == [("open", 2), ("half_open", 40.5), ("closed", 43), ("open", 52), ("half_open", 82.1), ("closed", 83)]
    assert b.rejections == 2


def test_consecutive_quirk_off_needs_full_threshold_again() -> None:
    b = ConsecutiveBreaker(1, 2, 10.0, half_open_unlimited=True, reset_success_count=True)
    call(b, 0, 0, False)
    call(b, 11, 11, True)
    call(b, 12, 12, True)
    call(b, 13, 13, False)
    call(b, 24, 24, True)
    assert b.state(24) is HALF  # reset on entering half-open: one success is not enough
    call(b, 25, 25, True)
    assert b.log == [("open", 0), ("half_open", 11), ("closed", 12), ("open", 13), ("half_open", 24), ("closed", 25)]


def test_consecutive_half_open_failure_reopens_from_then() -> None:
    b = ConsecutiveBreaker(2, 1, 5.0, half_open_max_calls=2)
    call(b, 0, 0, False)
    call(b, 0, 1, False)
    a, c = b.allow(6.5), b.allow(6.6)
    assert a is not None and c is not None and b.allow(6.7) is None  # two probes at most
    b.record(a, 7, False)  # reopens, timer from 7
    b.record(c, 8, True)  # open: a success changes nothing
    assert b.allow(12) is None
    assert b.allow(12.01) is not None
    assert b.log == [("open", 1), ("half_open", 6.5), ("open", 7), ("half_open", 12.01)]


def test_consecutive_stale_success_counts_in_half_open_like_the_seed() -> None:
    b = ConsecutiveBreaker(1, 1, 5.0, half_open_max_calls=1)
    old = b.allow(0)
    call(b, 0, 0, False)
    probe = b.allow(6)
    assert probe is not None
    b.record(old, 6.5, True)  # no generations in the seed: this closes it
    assert b.state(6.5) is CLOSED
    b.record(probe, 7, True)  # stale probe: no effect, and the probe count stays sane
    assert b.log == [("open", 0), ("half_open", 6), ("closed", 6.5)]


def test_consecutive_cancel_frees_probe_slot() -> None:
    b = ConsecutiveBreaker(1, 1, 5.0)
    call(b, 0, 0, False)
    probe = b.allow(6)
    assert b.allow(6.1) is None
    b.cancel(probe, 7)
    assert b.allow(7.1) is not None


def test_consecutive_state_is_pure_and_reject_logging_optional() -> None:
    b = ConsecutiveBreaker(1, 1, 5.0, log_rejects=True)
    call(b, 0, 0, False)
    assert b.state(100) is OPEN  # no allow yet: the seed only moves on a call
    assert b.log == [("open", 0)]
    assert b.allow(1) is None
    assert b.log == [("open", 0), ("reject", 1)]
    assert "state=open" in repr(b) and "rejections=1" in repr(b)


# --------------------------------------------------------------------------- gobreaker


def test_gobreaker_probe_limit_and_stale_generation() -> None:
    b = GoBreaker(failure_threshold=3, open_for=10.0, half_open_max_calls=2)
    p = [b.allow(0) for _ in range(4)]
    b.record(p[0], 1, False)
    b.record(p[1], 2, False)
    b.record(p[2], 3, False)
    assert b.state(3) is OPEN
    b.record(p[3], 4, True)  # generation 0 result after opening: ignored
    assert b.allow(13) is None  # open until strictly after 3 + 10
    h1, h2 = b.allow(13.5), b.allow(13.6)
    assert h1 is not None and h2 is not None and h1.state is HALF
    assert b.allow(13.7) is None  # only half_open_max_calls in the generation
    b.record(h1, 14, True)
    assert b.state(14) is HALF
    b.record(h2, 15, True)  # max consecutive successes -> closed
    assert b.log == [("open", 3), ("half_open", 13), ("closed", 15)]  # half-open stamped when due
    assert b.rejections == 2


def test_gobreaker_half_open_failure_reopens_and_old_probe_ignored() -> None:
    b = GoBreaker(failure_threshold=1, open_for=10.0, half_open_max_calls=2)
    call(b, 0, 0, False)
    h1, h2 = b.allow(11), b.allow(11)
    b.record(h1, 12, False)  # reopens until 22
    b.record(h2, 23, True)  # previous half-open generation: ignored even though now half-open again
    assert b.state(23) is HALF and b.consecutive_successes == 0
    assert b.log == [("open", 0), ("half_open", 10), ("open", 12), ("half_open", 22)]


def test_gobreaker_count_interval_clears_counts_on_a_grid() -> None:
    b = GoBreaker(failure_threshold=3, open_for=10.0, count_interval=10.0)
    call(b, 0, 0, True)  # first call starts the interval grid: boundaries at 10, 20, 30...
    call(b, 1, 1, False)
    call(b, 2, 2, False)
    assert b.consecutive_failures == 2 and b.generation == 0
    straddler = b.allow(9.5)
    assert b.state(10) is CLOSED and b.generation == 0  # boundary itself: not yet past it
    b.record(straddler, 10.5, False)  # counts cleared at 10: old-generation result ignored
    assert b.generation == 1 and b.consecutive_failures == 0
    call(b, 11, 11, False)
    call(b, 12, 12, False)
    assert b.state(12) is CLOSED  # 2 of 3 in this interval
    call(b, 35, 35, False)  # skips the 20 boundary; next one is 40
    assert b.generation == 2 and b.consecutive_failures == 1
    call(b, 39, 39, False)
    call(b, 40, 40, False)
    assert b.log == [("open", 40)]


def test_gobreaker_interval_failures_within_one_interval_trip() -> None:
    b = GoBreaker(failure_threshold=3, open_for=5.0, count_interval=10.0, start=0.0)
    for t in (11, 12, 13):
        call(b, t, t, False)
    assert b.log == [("open", 13)]
    call(b, 18.5, 19, True)  # closes; the interval restarts from 19
    assert b.log == [("open", 13), ("half_open", 18), ("closed", 19)]
    assert b.state(29) is CLOSED
    g = b.generation
    b.state(29.5)
    assert b.generation == g + 1


def test_gobreaker_observation_does_not_change_outcome() -> None:
    script = [(0.3 * i, (i % 7) in (2, 3, 4, 5)) for i in range(200)]

    def run(poll: bool) -> tuple[list, int]:
        b = GoBreaker(failure_threshold=3, open_for=2.0, half_open_max_calls=2, count_interval=1.0)
        for t, fail in script:
            p = b.allow(t)
            if p is not None:
                b.record(p, t + 0.25, not fail)
            if poll:  # look in between calls, never going back in time
                b.state(t + 0.26)
                b.state(t + 0.28)
        return list(b.log), b.rejections

    assert run(False) == run(True)
    assert run(False)[0]  # the script does trip the breaker


# --------------------------------------------------------------------------- rate


def test_rate_minimum_calls_thresholds_and_half_open() -> None:
    b = RateBreaker(window=10.0, failure_rate_threshold=0.5, minimum_calls=4, open_for=5.0, half_open_max_calls=2)
    call(b, 0, 1, False)
    call(b, 0, 2, True)
    call(b, 0, 3, False)  # 2/3 failed but only 3 calls: below minimum_calls
    assert b.state(3) is CLOSED and b.calls_in_window == 3
    call(b, 0, 4, True)  # 2/4 = threshold -> open
    assert b.state(4) is OPEN
    assert b.allow(9) is None
    h1, h2 = b.allow(9.5), b.allow(9.6)
    assert h1 is not None and h2 is not None and b.allow(9.7) is None
    b.record(h1, 10, True)
    assert b.state(10) is HALF  # waits for all probes
    b.record(h2, 11, False)  # 1/2 failed >= 0.5 -> reopen
    call(b, 16.5, 17, True)
    call(b, 16.6, 18, True)
    assert b.state(18) is CLOSED and b.calls_in_window == 0
    assert b.log == [("open", 4), ("half_open", 9), ("open", 11), ("half_open", 16), ("closed", 18)]
    assert b.rejections == 2


def test_rate_window_evicts_old_calls() -> None:
    b = RateBreaker(window=10.0, failure_rate_threshold=0.5, minimum_calls=4, open_for=5.0)
    call(b, 0, 0, False)
    call(b, 0, 1, False)
    for t in (12, 13, 14):
        call(b, t, t, True)
    call(b, 15, 15, False)  # window (5, 15]: 1 of 4 failed; without eviction 3 of 6
    assert b.state(15) is CLOSED and b.calls_in_window == 4
    call(b, 22, 22, False)  # (12, 22]: 13, 14, 15, 22 -> 2/4; the call at exactly 12 is out
    assert b.log == [("open", 22)]


def test_rate_slow_calls_open_it() -> None:
    b = RateBreaker(
        window=10.0, failure_rate_threshold=1.0, minimum_calls=2, open_for=5.0,
        slow_call_duration=2.0, slow_call_rate_threshold=0.5,
    )
    call(b, 0, 1, True, duration=0.1)
    call(b, 0, 2, True, duration=1.99)
    assert b.state(2) is CLOSED
    call(b, 0, 3, True, duration=2.0)  # at the duration counts as slow: 1/3 < 0.5
    assert b.state(3) is CLOSED
    call(b, 0, 4, True, duration=7.0)  # 2/4 slow
    assert b.log == [("open", 4)]
    slow_probe = b.allow(10)
    b.record(slow_probe, 12, True, 2.5)  # a successful but slow probe reopens
    assert b.log == [("open", 4), ("half_open", 9), ("open", 12)]


def test_rate_stale_results_and_cancel() -> None:
    b = RateBreaker(window=10.0, failure_rate_threshold=0.5, minimum_calls=1, open_for=5.0)
    old = b.allow(0)
    call(b, 0, 1, False)
    probe = b.allow(7)
    b.record(old, 7.5, True)  # closed-generation result in half-open: ignored
    assert b.state(7.5) is HALF
    assert b.allow(7.6) is None
    b.cancel(probe, 8)
    assert b.allow(8.1) is not None


# --------------------------------------------------------------------------- factory


@pytest.mark.parametrize(
    ("table", "cls"),
    [
        ({}, ConsecutiveBreaker),
        ({"semantics": "gobreaker", "count_interval": "1m"}, GoBreaker),
        ({"semantics": "rate", "window": "30s", "slow_call_duration": "500ms"}, RateBreaker),
    ],
)
def test_make_breaker_dispatches_on_semantics(table: dict, cls: type) -> None:
    cfg = Breaker.model_validate({"open_for": "15s", **table})
    b = make_breaker(cfg)
    assert type(b) is cls and b.open_for == 15.0
    if cls is GoBreaker:
        assert b.count_interval == 60.0
    if cls is RateBreaker:
        assert b.window == 30.0 and b.slow_call_duration == 0.5


def test_make_breaker_seed_config_reproduces_seed_quirks() -> None:
    cfg = Breaker(
        failure_threshold=3, success_threshold=2, open_for="30s",
        extend_open_on_late_failure=True, half_open_unlimited=True, reset_success_count=False,
    )
    b = make_breaker(cfg, log_limit=2)
    for t in (0, 1, 2):
        call(b, t, t, False)
    call(b, 33, 33, True)
    call(b, 34, 34, True)
    assert list(b.log) == [("half_open", 33), ("closed", 34)]  # bounded log keeps the newest


def test_rate_threshold_is_inclusive_without_float_slop() -> None:
    b = RateBreaker(window=100.0, failure_rate_threshold=0.3, minimum_calls=10, open_for=5.0)
    for i in range(10):
        call(b, i, i, i not in (0, 1, 2))  # 3 failures of 10 = 0.3 exactly
    assert b.log == [("open", 9)]
