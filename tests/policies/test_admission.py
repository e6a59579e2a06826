"""The gateway's in-flight cap: the policy, and the simulator answering to it."""

from __future__ import annotations

import pytest

from simulator.engine import Replication
from simulator.policies import InFlightLimit
from simulator.scenario import scenario_from_data


def test_in_flight_limit_admits_up_to_the_cap() -> None:
    lim = InFlightLimit(2)
    assert [lim.enter() for _ in range(4)] == [True, True, False, False]
    lim.leave()
    assert lim.enter() is True
    assert (lim.in_flight, lim.peak, lim.admitted, lim.rejections) == (2, 2, 3, 2)
    assert "limit=2" in repr(lim)


def test_in_flight_limit_none_admits_everything_and_counts() -> None:
    lim = InFlightLimit(None)
    assert all(lim.enter() for _ in range(1000))
    assert lim.peak == 1000 and lim.rejections == 0


def test_in_flight_limit_rejects_misuse() -> None:
    with pytest.raises(ValueError):
        InFlightLimit(0)
    with pytest.raises(RuntimeError):
        InFlightLimit(1).leave()


def _scenario(max_in_flight: int | None) -> object:
    # 4 requests at once every second, each held 1.5 s by its provider: 6 in flight at the
    # peak without a cap
    data = {
        "run": {"duration": "10s", "drain": "10s", "replications": 1, "seed": 3},
        "workload": {"mode": "open", "arrivals": {"process": "burst", "size": 4, "every": "1s"}, "mix": {"chat": 1.0}},
        "endpoints": {"chat": {"kind": "chat_completions", "model_selection": False, "classes": [{"name": "c", "provider": "a"}]}},
        "providers": {"a": {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "1500ms"}}}},
        "gateway": {"max_in_flight": max_in_flight},
    }
    return scenario_from_data(data, "<test>")


def test_simulator_refuses_beyond_max_in_flight_with_503() -> None:
    free = Replication(_scenario(None), 0, 3).run().records
    assert set(free.outcome) == {"ok"} and len(free) == 40
    capped = Replication(_scenario(5), 0, 3).run().records
    assert len(capped) == 40
    rejected = capped[capped.outcome == "rejected"]
    assert set(rejected.status_code) == {503}
    assert (rejected.latency_s == 0).all()  # refused on arrival, no work
    # per burst: admitted = the room left by those still running, and never beyond the cap
    for t in range(10):
        burst = capped[capped.arrived_at.round(6) == t]
        admitted = int((burst.outcome == "ok").sum())
        # never more than 5 in flight: what is admitted at t plus what is still running
        running = int(((capped.outcome == "ok") & (capped.arrived_at < t) & (capped.finished_at > t)).sum())
        assert admitted + running <= 5, (t, admitted, running)
        assert admitted == min(4, 5 - running), (t, admitted, running)
    assert 0 < len(rejected) < 40
