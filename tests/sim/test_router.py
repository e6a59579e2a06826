"""The simulated gateway with a LiteLLM router ([router]): each chat request walks
``policies.routing`` through deployments, retries, cooldowns and fallback groups, and the records
say what LiteLLM's proxy would answer (its statuses, the calls made, the deployment's provider)."""

from __future__ import annotations

import copy

import pytest

from simulator.engine import Replication
from simulator.scenario import scenario_from_data

PLAIN = {"model": "plain", "time": {"dist": "deterministic", "value": "100ms"}}
BASE = {
    "run": {"duration": "30s", "drain": "30s", "replications": 1, "seed": 5},
    "workload": {"arrivals": {"process": "constant", "rate": "10/s"}, "mix": {"chat": 1.0}},
    "endpoints": {"chat": {"kind": "chat_completions", "model_selection": False,
                           "classes": [{"name": "c", "model": "main"}]}},
    "providers": {"good": {"latency": PLAIN}, "bad": {"latency": PLAIN, "errors": {"503": 1.0}}},
    "router": {"strategy": "simple-shuffle", "num_retries": 2,
               "groups": {"main": {"deployments": [{"provider": "good"}, {"provider": "bad"}]}}},
}


def records(changes: dict | None = None):
    data = copy.deepcopy(BASE)
    for path, value in (changes or {}).items():
        node = data
        *keys, last = path.split(".")
        for k in keys:
            node = node.setdefault(k, {})
        node[last] = value
    return Replication(scenario_from_data(data, "<test>"), 0, 5).run().records


def test_a_failing_deployment_is_retried_away_then_cooled_down():
    r = records()
    assert (r.outcome == "ok").all() and (r.provider == "good").all()
    # before the bad deployment cools down (> 50 % of >= 5 calls failed) some requests pay more
    # calls (a retry draws from both again: LiteLLM excludes only a deployment that refused for
    # good); once it cools (5 s at a time) every request takes one
    assert r.attempts.max() == 3 and (r.attempts > 1).sum() < len(r) / 4
    assert r.latency_s.min() == pytest.approx(0.1) and r.latency_s.max() == pytest.approx(0.3)


def test_every_deployment_down_answers_500_then_no_deployments():
    r = records({"providers.good.faults": [{"kind": "outage", "start": 0, "end": "100s"}],
                 "providers.bad.errors": {}, "providers.bad.faults": [{"kind": "outage", "start": 0, "end": "100s"}]})
    # refused connections: 500s, retried at once; each request logs its first failure, and once
    # both deployments have 5 logged failures in the minute they cool down: 429s, no call made
    # (5 s at a time; a cooled deployment's next failure in the same minute cools it again)
    r = r.sort_values("id")
    refused, cooling = r[r.status_code == 500], r[r.status_code == 429]
    # 1 + 2 retries at once, or a single call when it cools the last healthy deployment
    assert len(refused) + len(cooling) == len(r) and (cooling.attempts == 0).all() and set(refused.attempts) == {1, 3}
    assert list(r.status_code[:8]) == [500] * 8 and len(refused) <= 10 + 2 * 6 and (cooling.outcome == "rate_limited").all()


def test_a_lone_deployment_backs_off_between_retries():
    r = records({"router.groups": {"main": {"deployments": [{"provider": "bad"}]}}})
    assert (r.status_code == 503).all() and (r.attempts == 3).all()
    # waits 0.5 s, 1 s and 2 s (after the last retry too), each plus up to 0.75 s of jitter, and 3 calls of 0.1 s
    assert r.latency_s.min() >= 3.8 and r.latency_s.max() <= 3.8 + 3 * 0.75


def test_fallback_to_another_group_and_the_timeout_as_408():
    r = records({
        "router.groups": {"main": {"deployments": [{"provider": "bad"}]}, "backup": {"deployments": [{"provider": "good"}]}},
        "router.fallbacks": {"main": ["backup"]}, "router.num_retries": 0,
    })
    assert (r.outcome == "ok").all() and r.fallback_used.all() and (r.attempts == 2).all() and (r.provider == "good").all()
    slow = {"model": "plain", "time": {"dist": "deterministic", "value": "2s"}}
    r = records({"providers.good.latency": slow, "router.groups": {"main": {"deployments": [{"provider": "good"}]}},
                 "router.timeout": "500ms", "router.num_retries": 0})
    assert (r.outcome == "timeout").all() and (r.status_code == 408).all()
    assert r.latency_s.max() == pytest.approx(0.5)


def test_max_parallel_requests_refuses_with_429_without_queueing():
    slow = {"model": "plain", "time": {"dist": "deterministic", "value": "1s"}}
    r = records({"providers.good.latency": slow, "router.num_retries": 0,
                 "router.groups": {"main": {"deployments": [{"provider": "good", "max_parallel_requests": 5}]}}})
    # 10/s for 1 s each: 10 in flight, 5 allowed
    ok, refused = r[r.outcome == "ok"], r[r.outcome == "rate_limited"]
    assert abs(len(ok) / len(r) - 0.5) < 0.05 and (refused.status_code == 429).all() and (refused.attempts == 0).all()
    assert refused.latency_s.max() < 1e-9
