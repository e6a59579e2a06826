"""LitServe-style dynamic batching decisions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.policies import BatchDecision, BatchPolicy
from simulator.scenario import AIService


def test_full_batch_goes_at_once_and_never_above_max() -> None:
    p = BatchPolicy(8, 0.05)
    assert p.decide(8, 0.0, 0.0) == BatchDecision(8, None)
    assert p.decide(30, 0.0, 0.01) == BatchDecision(8, None)


def test_nothing_queued_sleeps_until_arrival() -> None:
    assert BatchPolicy(8, 0.05).decide(0, None, 1.0) == BatchDecision(0, None)


def test_timeout_honoured() -> None:
    p = BatchPolicy(8, 0.05)
    assert p.decide(3, 1.0, 1.02) == BatchDecision(0, 1.05)
    assert p.decide(3, 1.0, 1.05) == BatchDecision(3, None)
    assert p.decide(5, 1.0, 1.2) == BatchDecision(5, None)
    assert p.decide(2, None, 2.0) == BatchDecision(0, 2.05)  # starts collecting now
    assert p.batches == 2 and p.items == 8 and p.log == [("dispatch", 1.05), ("dispatch", 1.2)]
    assert "batches=2" in repr(p)


def test_zero_timeout_dispatches_immediately() -> None:
    p = BatchPolicy(8, 0.0)
    assert p.decide(1, None, 3.0) == BatchDecision(1, None)
    assert p.decide(3, 3.0, 3.0) == BatchDecision(3, None)


def test_from_config_and_bad_values() -> None:
    p = BatchPolicy.from_config(AIService.model_validate({"max_batch_size": 8, "batch_timeout": "50ms"}))
    assert (p.max_batch_size, p.batch_timeout_s) == (8, 0.05)
    with pytest.raises(ValueError):
        BatchPolicy(0, 0.1)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 16), st.floats(0, 1), st.integers(0, 40), st.floats(0, 2), st.floats(0, 2))
def test_decision_bounds(size: int, timeout: float, queued: int, since: float, dt: float) -> None:
    d = BatchPolicy(size, timeout).decide(queued, since, since + dt)
    assert 0 <= d.take <= min(size, queued)
    if d.take == 0 and queued:
        assert d.wake_at == since + timeout and since + dt < d.wake_at
    if queued >= size or (queued and since + dt >= since + timeout):
        assert d.take == min(size, queued)
