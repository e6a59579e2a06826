"""Tiny simulated systems whose outcome can be computed by hand: (event, time) checks of
the batching station, the connection pool, timeouts, fallbacks and the breaker in a flow."""

from __future__ import annotations

import copy

import pytest
import simpy

from simulator.engine import Replication
from simulator.model.ai_service import SimAIService
from simulator.model.context import RequestContext
from simulator.rng import Streams
from simulator.scenario import scenario_from_data

BASE = {
    "run": {"duration": "10s", "drain": "60s", "replications": 1, "seed": 3},
    "workload": {"mode": "open", "arrivals": {"process": "burst", "size": 1, "every": "1s"}, "mix": {"chat": 1.0}},
    "endpoints": {"chat": {"kind": "chat_completions", "model_selection": False, "classes": [{"name": "c", "provider": "a"}]}},
    "providers": {
        "a": {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "100ms"}}},
        "b": {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "200ms"}}},
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


def records(sc):
    return Replication(sc, 0, sc.run.seed).run().records


def test_batching_station_log() -> None:
    sc = scenario(ai_service={"workers": 1, "max_batch_size": 3, "batch_timeout": "50ms", "batch_base": {"dist": "deterministic", "value": "100ms"}})
    env = simpy.Environment()
    station = SimAIService(env, sc.ai_service, Streams(1, 0)["ai_service"], {})
    klass = sc.endpoints["chat"].classes[0]
    log = []

    def client(i, at):
        yield env.timeout(at)
        ctx = RequestContext(i, "chat", sc.endpoints["chat"], klass, 0, env.now)
        yield station.submit(ctx, ("chat", "c"))
        log.append((f"done{i}", round(env.now, 6)))

    for i, at in enumerate([0.0, 0.01, 0.02, 0.03, 0.2]):
        env.process(client(i, at))
    env.run(until=2)
    # batch 1: full at t=0.02 (3 items) -> done 0.12; item 3 waits for the worker (free at 0.12),
    # collects from 0.12 until 0.17 (timeout), alone -> done 0.27; item 4 arrives 0.2 while the
    # worker is busy, collected from 0.27, times out 0.32 -> done 0.42
    assert log == [("done0", 0.12), ("done1", 0.12), ("done2", 0.12), ("done3", 0.27), ("done4", 0.42)]
    assert list(station.batch_sizes) == [3, 1, 1]


def test_client_timeout_is_status_zero_at_exactly_the_timeout() -> None:
    sc = scenario(workload__client_timeout="50ms")
    rec = records(sc)
    assert set(rec.outcome) == {"client_timeout"}
    assert set(rec.status_code) == {0}
    assert rec.latency_s.round(9).eq(0.05).all()


def test_sequential_fallback_after_an_outage() -> None:
    sc = scenario(providers__a__faults=[{"start": "0s", "end": "5s", "kind": "outage"}])
    rec = records(sc)
    early = rec[rec.arrived_at < 5]
    late = rec[rec.arrived_at >= 5]
    assert (early.provider == "b").all() and early.fallback_used.all() and (early.attempts == 2).all()
    assert early.latency_s.round(9).eq(0.2).all()
    assert (late.provider == "a").all() and (~late.fallback_used).all()
    assert (rec.outcome == "ok").all()


def test_race_takes_the_first_success_and_hedge_waits_its_delay() -> None:
    race = records(scenario(fallback={"mode": "race", "max_attempts": 2, "race_width": 2}))
    assert (race.provider == "a").all() and race.latency_s.round(9).eq(0.1).all()
    hedge = records(
        scenario(
            fallback={"mode": "hedge", "max_attempts": 2, "hedge_delay": "50ms"},
            providers__a__latency={"model": "plain", "time": {"dist": "deterministic", "value": "1s"}},
        )
    )
    # a answers at 1 s; b started at 50 ms answers at 250 ms and wins
    assert (hedge.provider == "b").all() and hedge.latency_s.round(9).eq(0.25).all()
    assert hedge.fallback_used.all()


def test_attempt_timeout_on_a_hang_then_fallback() -> None:
    sc = scenario(
        fallback={"mode": "sequential", "max_attempts": 2, "attempt_timeout": "300ms"},
        providers__a__faults=[{"start": "0s", "end": "100s", "kind": "hang"}],
    )
    rec = records(sc)
    assert (rec.provider == "b").all()
    assert rec.latency_s.round(9).eq(0.5).all()  # 300 ms deadline + 200 ms on b


def test_connection_churn_only_above_the_idle_limit() -> None:
    def churn(size: int, idle: int) -> tuple[int, int]:
        sc = scenario(
            workload__arrivals={"process": "burst", "size": size, "every": "1s"},
            providers__a__pool={"max_idle_per_host": idle, "dial_time": {"dist": "deterministic", "value": "10ms"}},
        )
        rep = Replication(sc, 0, 1)
        rep.run()
        policy = rep.gateway.provider_pools["a"].policy
        return policy.dials, policy.churn_closes

    dials, closes = churn(12, 10)
    assert closes == 2 * 10 and dials == 10 + 2 * 10  # every burst of 12 closes 2 and dials 2 anew
    dials, closes = churn(8, 10)
    assert closes == 0 and dials == 8


def test_redis_stall_is_a_prompt_cache_miss_bounded_by_the_timeout() -> None:
    sc = scenario(
        endpoints={"chat": {"kind": "chat_completions", "model_selection": False,
                            "classes": [{"name": "c", "provider": "a", "prompt_cache_opt_in": True, "prompt_cache_hit": 1.0}]}},
        redis={"op_time": {"dist": "deterministic", "value": "1ms"}, "faults": [{"start": "0s", "end": "5s", "kind": "stall"}]},
        prompt_cache={"op_timeout": "200ms"},
    )
    rec = records(sc)
    stalled = rec[rec.arrived_at < 4.5]
    healthy = rec[rec.arrived_at >= 5]
    assert (~stalled.prompt_cache_hit).all() and (stalled.outcome == "ok").all()
    # GET times out at 200 ms, provider 100 ms, SET times out at 200 ms
    assert stalled.latency_s.round(9).eq(0.5).all()
    assert healthy.prompt_cache_hit.all() and healthy.latency_s.round(9).eq(0.001).all()


def test_breaker_opens_on_ai_outage_and_static_choice_answers() -> None:
    data = copy.deepcopy(BASE)
    data["endpoints"] = {"select": {"kind": "select_model", "classes": [{"name": "s"}]}}
    data["workload"]["mix"] = {"select": 1.0}
    data["workload"]["arrivals"] = {"process": "constant", "rate": "1/s"}
    data["run"]["duration"] = "60s"
    data["ai_service"] = {"batch_base": {"dist": "deterministic", "value": "50ms"}, "faults": [{"start": "0s", "end": "20s", "kind": "outage"}]}
    data["model_selection"] = {
        "semantic_cache": {"enabled": False},
        "fallback_choice": {"provider": "b"},
        "ai_client": {"request_timeout": "1s", "breaker": {"semantics": "consecutive", "failure_threshold": 3, "success_threshold": 1, "open_for": "10s"}},
    }
    sc = scenario_from_data(data, "<test>")
    rep = Replication(sc, 0, 1)
    rec = rep.run().records
    assert (rec.outcome == "ok").all()
    events = [e for e, _ in rep.gateway.breaker.log]
    assert events[:2] == ["open", "half_open"]
    assert [e for e in events if e == "closed"], events
    during = rec[rec.arrived_at < 20]
    assert during.selection_fallback.all()
    assert (rec[rec.arrived_at > 35].breaker_state == "closed").all()
    assert (rec[rec.arrived_at > 35].selection_fallback == False).all()  # noqa: E712


def test_a_hung_request_keeps_its_admission_slot_through_garbage_collections() -> None:
    """Three hung requests fill max_in_flight = 3 for good: every later one is refused, even
    though the cycle collector runs in between (it must not end the hung handlers)."""
    import gc

    sc = scenario(
        gateway={"max_in_flight": 3},
        providers__a__faults=[{"start": "0s", "end": "100s", "kind": "hang"}],
    )
    rep = Replication(sc, 0, sc.run.seed)

    def collector():
        for _ in range(20):
            yield rep.env.timeout(0.5)
            gc.collect()

    rep.env.process(collector())
    rec = rep.run().records
    assert rec.outcome.value_counts().to_dict() == {"rejected": 7, "unfinished": 3}
    assert rep.gateway.admission.in_flight == 3 and rep.gateway.in_system == 3


def test_a_long_run_keeps_only_the_recent_past_of_its_policy_logs() -> None:
    """Batch dispatches, pool dials and batch sizes are logged for every event; over a long
    run only the newest RUN_LOG_LIMIT stay, so memory does not grow with the run."""
    from simulator.policies.eventlog import RUN_LOG_LIMIT
    from simulator.scenario import load_scenario

    from pathlib import Path

    seed = Path(__file__).resolve().parents[2] / "scenarios/seed/heavy_load.toml"
    sc = load_scenario(seed, ['run.duration="1500s"'])
    rep = Replication(sc, 0, sc.run.seed, keep_records=False)
    rep.run()
    ai = rep.gateway.ai
    assert ai.batches > RUN_LOG_LIMIT  # more happened than is kept
    assert len(ai.policy.log) == len(ai.batch_sizes) == RUN_LOG_LIMIT
    assert ai.policy.log[-1][1] > 1000  # the newest are the ones kept
    assert len(rep.gateway.ai_pool.policy.log) <= RUN_LOG_LIMIT


def test_weibull_service_times_give_the_closed_form_mean_and_tail() -> None:
    """scale * Gamma(1 + 1/k) and P(X > x) = exp(-(x/scale)^k), through a provider of the model."""
    import math

    import numpy as np

    sc = scenario(
        fallback={"mode": "none", "max_attempts": 1},
        workload__arrivals={"process": "poisson", "rate": "20/s"},
        run__duration="2000s",
        providers__a__latency={"model": "plain", "time": {"dist": "weibull", "shape": 1.5, "scale": "200ms"}},
    )
    rec = records(sc)
    service = rec.provider_s.to_numpy()
    assert len(service) > 30_000
    assert service.mean() == pytest.approx(0.2 * math.gamma(1 + 1 / 1.5), rel=0.02)
    assert (service > 0.4).mean() == pytest.approx(math.exp(-(2.0 ** 1.5)), abs=0.01)
    assert np.all(service > 0)
