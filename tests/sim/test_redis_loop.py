"""The gateway's Redis client on its event loop (``simulator/model/redis_loop.py``): a semantic
scan keeps its pooled connection from its first round trip to its last, as redis-py's
``BlockingConnectionPool`` lets it (closed forms on a two-request run)."""

from __future__ import annotations

import pytest

from simulator.engine import Replication
from simulator.scenario import scenario_from_data

DET = lambda v: {"dist": "deterministic", "value": v}  # noqa: E731

# Requests at 10 and 20 ms, each a miss that scans 20 entries in 2 batches of 11 round trips;
# 1 ms of the loop's CPU per round trip, no wire time; one pooled Redis connection; the
# embedding call 4 ms, the AI service 1 ms; no other costs.
TWO_SCANS = {
    "run": {"duration": "25ms", "drain": "5s", "replications": 1, "seed": 3},
    "workload": {"mode": "open", "arrivals": {"process": "constant", "rate": "100/s"}, "mix": {"select": 1.0}},
    "endpoints": {"select": {"kind": "select_model", "classes": [{"name": "new"}]}},
    "ai_service": {"workers": 1, "max_batch_size": 1, "batch_base": DET("1ms")},
    "model_selection": {"candidates": ["p"], "semantic_cache": {
        "enabled": True, "scan_on_miss": True, "initial_entries": 20, "scan_batch": 10, "embedding_time": DET("4ms")}},
    "redis": {"pool_size": 1, "op_time": DET("0ms")},
    "providers": {"p": {"latency": {"model": "plain", "time": DET("10ms")}}},
    "machine": {"cores": 2, "redis_cpu": DET("1ms")},
}


def test_a_scan_keeps_its_connection_so_a_lookup_waits_for_the_whole_scan() -> None:
    """A: GET 10-11, embedding 11-15, scan 15-37, AI service 37-38 (28 ms).  B's GET at 20 waits
    for A's scan to end, not for its first batch (15-26): GET 37-38, embedding 38-42, scan
    42-64, AI 64-65 (45 ms; its cache stage 18 + 22 ms).  Handing the connection over
    between batches would give 29 and 41 ms."""
    rec = Replication(scenario_from_data(TWO_SCANS, "<test>"), 0, 1).run().records.sort_values("arrived_at")
    assert rec.arrived_at.tolist() == pytest.approx([0.010, 0.020])
    assert rec.latency_s.tolist() == pytest.approx([0.028, 0.045])
    assert rec.cache_s.tolist() == pytest.approx([0.023, 0.040])
    assert not rec.cache_hit.any()
