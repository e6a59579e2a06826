"""Simulator halves of the scenario fields that now mean the same in both executors (issue
13): ``pool.dial_timeout`` (a dial slower than it fails as a connect error at the timeout)
and the per-round-trip Redis ``op_timeout`` ((event, time) checks on tiny systems)."""

from __future__ import annotations

import copy

import pytest
import simpy

from simulator.engine import Replication
from simulator.model.context import Failure
from simulator.model.http_pool import SimHttpPool
from simulator.rng import Streams, stream
from simulator.scenario import ConnectionPool, scenario_from_data

DET = lambda v: {"dist": "deterministic", "value": v}  # noqa: E731

BASE = {
    "run": {"duration": "3s", "drain": "30s", "replications": 1, "seed": 3},
    "workload": {"mode": "open", "arrivals": {"process": "burst", "size": 1, "every": "1s"}, "mix": {"chat": 1.0}},
    "endpoints": {"chat": {"kind": "chat_completions", "model_selection": False, "classes": [{"name": "c", "provider": "a"}]}},
    "providers": {
        "a": {"latency": {"model": "plain", "time": DET("100ms")}},
        "b": {"latency": {"model": "plain", "time": DET("200ms")}},
    },
    "fallback": {"mode": "sequential", "max_attempts": 2},
}


def scenario(**patch):
    data = copy.deepcopy(BASE)
    for path, value in patch.items():
        node = data
        keys = path.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return scenario_from_data(data, "<test>")


# --------------------------------------------------------------------------- dial_timeout


def test_a_dial_slower_than_dial_timeout_fails_as_connect_error_at_the_timeout() -> None:
    env = simpy.Environment()
    cfg = ConnectionPool(max_idle_per_host=1, max_conns_per_host=1, dial_time=DET("2s"), dial_timeout="500ms")
    pool = SimHttpPool(env, cfg, Streams(1, 0)["pool"])
    log: list[tuple[str, float]] = []

    def caller(name: str, at: float, deadline: float | None = None):
        yield env.timeout(at)
        try:
            lease = yield from pool.acquire(deadline)
        except Failure as failure:
            log.append((f"{name}:{failure.kind}", env.now))
            return
        log.append((f"{name}:ok", env.now))
        pool.release(lease)

    env.process(caller("first", 0.0))
    env.process(caller("waiter", 0.1))  # waits for the one slot, then dials itself when it frees
    env.process(caller("deadline", 3.0, deadline=3.2))  # its own deadline comes first: a timeout
    env.run()
    assert log == [("first:connect", 0.5), ("waiter:connect", 1.0), ("deadline:timeout", 3.2)]
    assert pool.policy.dial_failures == 3 and pool.policy.active == 0  # every slot given back


def test_dial_timeout_in_a_run_fails_over_to_the_next_provider() -> None:
    """Provider a's dials take 2 s against a 500 ms dial_timeout: each request's first attempt
    is a connect error at 0.5 s, then b answers in 200 ms (without dial_timeout: 2.1 s on a)."""
    slow = {"max_idle_per_host": 0, "dial_time": DET("2s")}
    rec = Replication(scenario(providers__a__pool={**slow, "dial_timeout": "500ms"}), 0, 1).run().records
    assert (rec.outcome == "ok").all() and (rec.provider == "b").all()
    assert rec.latency_s.round(9).eq(0.7).all()
    rec = Replication(scenario(providers__a__pool=slow), 0, 1).run().records
    assert (rec.provider == "a").all() and rec.latency_s.round(9).eq(2.1).all()


# --------------------------------------------------------------------------- redis op_timeout


def _redis(op_time, op_timeout=None, faults=(), pool_size=1):
    from simulator.model.redis import SimRedis
    from simulator.scenario import Redis

    env = simpy.Environment()
    cfg = Redis(op_time=op_time, op_timeout=op_timeout, faults=list(faults), pool_size=pool_size)
    return env, SimRedis(env, cfg, Streams(1, 0)["redis"])


def test_redis_op_timeout_bounds_each_round_trip_not_the_whole_scan() -> None:
    env, redis = _redis(DET("8ms"), "40ms")
    wait, ok = redis.operation(35)  # 280 ms in all, each round trip well within 40 ms
    assert ok and wait == pytest.approx(0.28)
    env, redis = _redis(DET("60ms"), "40ms")
    wait, ok = redis.operation(35)  # the first round trip times out
    assert not ok and wait == pytest.approx(0.04) and redis.timeouts == 1


def test_redis_op_timeout_sampled_round_trips_and_a_stall() -> None:
    """Round trips drawn from a distribution: the operation ends at the first one longer than
    the timeout, after the ones before it.  A stall holds the first round trip to its end."""
    env, redis = _redis({"dist": "uniform", "low": "1ms", "high": "100ms"}, "50ms")
    draws = stream(1, 0, "redis")  # the stream the model draws its round trips from
    trips = [draws.uniform(0.001, 0.1) for _ in range(200)]
    first_slow = next(i for i, t in enumerate(trips) if t > 0.05)
    wait, ok = redis.operation(200)
    assert not ok and wait == pytest.approx(sum(trips[:first_slow]) + 0.05)

    stall = [{"kind": "stall", "start": "0s", "end": "30ms"}]
    env, redis = _redis(DET("5ms"), "40ms", stall)
    wait, ok = redis.operation(10)  # 30 ms held + 5 ms, then 9 x 5 ms
    assert ok and wait == pytest.approx(0.035 + 0.045)
    env, redis = _redis(DET("5ms"), "20ms", stall)
    wait, ok = redis.operation(10)
    assert not ok and wait == pytest.approx(0.02)


# --------------------------------------------------------------------------- the cache's entries


def test_a_full_semantic_cache_evicts_with_a_set_and_a_del() -> None:
    """3 entries at the start, a cap of 5, every request a new prompt stored after the AI
    service's answer: the first two stores add an entry (one 10 ms SET), the others evict
    the oldest stored one (SET + DEL, 20 ms); the count stays at the cap."""
    sc = scenario(
        workload__mix={"select": 1.0},
        endpoints={"select": {"kind": "select_model", "classes": [{"name": "s"}]}},
        model_selection={"semantic_cache": {"initial_entries": 3, "max_entries": 5, "scan_on_miss": False, "write_on_select": True}},
        redis={"op_time": DET("10ms")},
        run__duration="6s",
    )
    rep = Replication(sc, 0, 1)
    rec = rep.run().records.sort_values("arrived_at")
    assert len(rec) == 6
    assert rec.store_s.round(9).tolist() == [0.01, 0.01, 0.02, 0.02, 0.02, 0.02]
    entries = rep.gateway.cache_entries
    assert entries.entries == 5 and (entries.adds, entries.evictions) == (2, 4)
