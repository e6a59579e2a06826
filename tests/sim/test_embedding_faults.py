"""The simulator's embedding-API faults, with the real engine's semantics
(``tests/real_engine/test_faults_under_load.py``): a failed or timed-out embedding call
skips the semantic scan (the lookup is a miss, the AI service chooses) and costs what the
fault says: nothing when refused, ``embedding_timeout`` when hung, the call's time when it
errs, half of it when reset."""

from __future__ import annotations

import pytest

from simulator.engine import Replication
from simulator.scenario import scenario_from_data

EMBED_S = 0.05
OP_S = 0.001
TIMEOUT_S = 0.3


def scenario(kind: str, timeout: float | None = TIMEOUT_S):
    return scenario_from_data(
        {
            "run": {"duration": "10s", "drain": "5s", "replications": 1, "seed": 3},
            "workload": {"arrivals": {"process": "burst", "size": 1, "every": "1s"}, "mix": {"select": 1.0}},
            "endpoints": {"select": {"kind": "select_model", "classes": [{"name": "s"}]}},
            "providers": {"p": {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "10ms"}}}},
            "redis": {"op_time": {"dist": "deterministic", "value": f"{OP_S}s"}},
            "model_selection": {
                "semantic_cache": {
                    "initial_entries": 30,
                    "scan_batch": 10,
                    "embedding_time": {"dist": "deterministic", "value": f"{EMBED_S}s"},
                    "embedding_timeout": None if timeout is None else f"{timeout}s",
                    "embedding_faults": [{"kind": kind, "start": "3s", "end": "6s", "latency_factor": 3.0}],
                },
            },
        },
        "<test>",
    )


@pytest.mark.parametrize(
    "kind, spent",
    [("outage", 0.0), ("hang", TIMEOUT_S), ("errors", EMBED_S), ("reset", EMBED_S / 2), ("slow", 3 * EMBED_S)],
)
def test_a_failed_embedding_call_skips_the_scan(kind: str, spent: float) -> None:
    recs = list(Replication(scenario(kind), 0, 3).run().records.itertuples(index=False))
    assert len(recs) == 10 and all(r.outcome == "ok" and not r.cache_hit and not r.selection_fallback for r in recs)
    inside = [r for r in recs if 3.0 <= r.arrived_at < 6.0]
    outside = [r for r in recs if not 3.0 <= r.arrived_at < 6.0]
    assert len(inside) == 3
    for r in outside:
        assert r.embedding_s == pytest.approx(EMBED_S)
        assert r.cache_s > 2 * OP_S  # the exact GET, then the scan's SCAN and GET round trips
    for r in inside:
        assert r.embedding_s == pytest.approx(spent)
        if kind == "slow":  # a slow call still answers: the scan runs
            assert r.cache_s > 2 * OP_S
        else:
            assert r.cache_s == pytest.approx(OP_S)  # the exact GET only: no scan


def test_a_hang_without_a_timeout_holds_the_request_to_the_end() -> None:
    recs = list(Replication(scenario("hang", timeout=None), 0, 3).run().records.itertuples(index=False))
    inside = [r for r in recs if 3.0 <= r.arrived_at < 6.0]
    assert len(inside) == 3 and all(r.outcome == "unfinished" for r in inside)  # never answered: no bound
    assert all(r.outcome == "ok" for r in recs if not 3.0 <= r.arrived_at < 6.0)
