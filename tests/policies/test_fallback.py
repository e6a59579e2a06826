"""Provider fallback plans: sequential, race, hedge, none."""

from __future__ import annotations

import pytest

from simulator.policies import FallbackPlan, rank_candidates
from simulator.scenario import Fallback

P = ["a", "b", "c", "d"]


def test_rank_candidates() -> None:
    assert rank_candidates(["a", "b", "c"], "b") == ["b", "a", "c"]
    assert rank_candidates(["a", "b"], "z") == ["z", "a", "b"]
    assert rank_candidates(["a", "a", "b"], "a") == ["a", "b"]


def test_none_mode_never_falls_back() -> None:
    plan = FallbackPlan("none", P, 3)
    assert plan.start(0) == ["a"]
    assert plan.on_failure("a", "503", 1) == []
    assert plan.done and plan.winner is None and not plan.fallback_used
    assert plan.log == [("start:a", 0), ("fail:a", 1), ("exhausted", 1)]


def test_sequential_until_max_attempts() -> None:
    plan = FallbackPlan("sequential", P, 3)
    assert plan.start(0) == ["a"]
    assert plan.on_failure("a", "timeout", 1) == ["b"]
    assert plan.on_failure("b", "500", 2) == ["c"]
    assert plan.on_failure("c", "500", 3) == []  # three attempts made
    assert plan.done and plan.attempts == 3 and plan.fallback_used and plan.winner is None
    assert plan.failures == {"a": "timeout", "b": "500", "c": "500"}


def test_sequential_non_triggering_error_stops() -> None:
    plan = FallbackPlan("sequential", P, 3, trigger_on=("timeout",))
    plan.start(0)
    assert not plan.should_trigger("503")
    assert plan.on_failure("a", "503", 1) == []
    assert plan.done and plan.attempts == 1


def test_sequential_success_after_fallback() -> None:
    plan = FallbackPlan("sequential", P, 2)
    plan.start(0)
    plan.on_failure("a", "connect", 0.5)
    assert plan.on_success("b", 2) == []
    assert plan.winner == "b" and plan.done and plan.fallback_used
    assert plan.on_failure("b", "timeout", 3) == []  # stale report ignored


def test_attempts_capped_by_candidates() -> None:
    plan = FallbackPlan("sequential", ["a", "b"], 5)
    plan.start(0)
    assert plan.on_failure("a", "503", 1) == ["b"]
    assert plan.on_failure("b", "503", 2) == [] and plan.done


def test_race_batches() -> None:
    plan = FallbackPlan("race", P, 4, race_width=2)
    assert plan.start(0) == ["a", "b"] and not plan.fallback_used
    assert plan.on_failure("a", "503", 1) == []  # b still running
    assert plan.on_failure("b", "timeout", 2) == ["c", "d"]
    assert plan.fallback_used and plan.attempts == 4
    assert plan.on_success("d", 3) == ["c"]  # c to cancel
    assert plan.winner == "d" and plan.running == {"c"}
    plan.on_cancel("c", 3)
    assert plan.running == set()


def test_race_width_limited_by_max_attempts() -> None:
    plan = FallbackPlan("race", P, 3, race_width=2)
    assert plan.start(0) == ["a", "b"]
    plan.on_failure("b", "503", 1)
    assert plan.on_failure("a", "503", 2) == ["c"]  # one attempt left
    assert plan.on_failure("c", "503", 3) == [] and plan.done
    assert FallbackPlan("race", P, 1, race_width=3).start(0) == ["a"]


def test_race_loser_answering_late_is_ignored() -> None:
    plan = FallbackPlan("race", P, 2)
    plan.start(0)
    assert plan.on_success("b", 1) == ["a"]
    assert plan.on_success("a", 2) == []  # not cancelled, answered later: winner stays b
    assert plan.winner == "b"


def test_hedge_timer_and_failure() -> None:
    plan = FallbackPlan("hedge", P, 3, hedge_delay_s=1.0)
    assert plan.start(0) == ["a"] and plan.next_hedge_at() == 1.0
    assert plan.on_hedge_timer(1.0) == ["b"] and plan.next_hedge_at() == 2.0
    assert plan.on_hedge_timer(1.0) == []  # stale timer: the clock restarted at 1.0
    assert plan.on_failure("a", "503", 1.5) == ["c"]  # a failure starts the next at once
    assert plan.next_hedge_at() is None  # no attempts left
    assert plan.on_hedge_timer(2.5) == []
    assert plan.on_success("c", 3) == ["b"]
    assert plan.log == [("start:a", 0), ("start:b", 1.0), ("fail:a", 1.5), ("start:c", 1.5), ("win:c", 3)]


def test_hedge_no_timer_after_success() -> None:
    plan = FallbackPlan("hedge", P, 3, hedge_delay_s=0.5)
    plan.start(0)
    plan.on_success("a", 0.2)
    assert plan.next_hedge_at() is None and plan.on_hedge_timer(0.5) == [] and not plan.fallback_used


def test_hedge_timer_rounding_slack() -> None:
    plan = FallbackPlan("hedge", P, 2, hedge_delay_s=1.0)
    plan.start(0.1)
    due = plan.next_hedge_at()
    assert plan.on_hedge_timer(due - 1e-12) == ["b"]


def test_from_config_and_validation() -> None:
    cfg = Fallback.model_validate({"mode": "hedge", "max_attempts": 3, "hedge_delay": "250ms", "trigger_on": ["timeout"]})
    plan = FallbackPlan.from_config(cfg, ["x", "y"])
    assert plan.hedge_delay_s == 0.25 and plan.trigger_on == frozenset({"timeout"})
    with pytest.raises(ValueError):
        FallbackPlan("bogus", P, 2)
    with pytest.raises(ValueError):
        FallbackPlan("sequential", [], 2)
    plan.start(0)
    with pytest.raises(RuntimeError):
        plan.start(1)
    assert "mode=hedge" in repr(plan)


def test_ranked_selection_class_provider_first_else_rotation():
    from simulator.policies.fallback import ranked_selection

    order = ["a", "b", "c"]
    assert ranked_selection(order, 0) == ["a", "b", "c"]
    assert ranked_selection(order, 1) == ["b", "a", "c"]
    assert ranked_selection(order, 4) == ["b", "a", "c"]
    assert ranked_selection(order, 2, "a") == ["a", "b", "c"]
