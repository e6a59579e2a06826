"""LiteLLM-style routing: strategies, the router's own refusals, and one request's walk through
retries, cooldowns and fallbacks, as (event, time) logs and step sequences."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from simulator.policies.cooldown import CooldownConfig
from simulator.policies.routing import Attempt, DeploymentSpec, Router, RouterConfig, parallel_limit


def dep(group: str, i: int, **kw) -> DeploymentSpec:
    return DeploymentSpec(f"{group}/{i}", group, kw.pop("provider", f"p{i}"), **kw)


def router(strategy: str = "simple-shuffle", groups=None, seed: int = 0, **kw) -> Router:
    groups = groups or {"g": (dep("g", 0), dep("g", 1))}
    return Router(RouterConfig(strategy, groups, **kw), np.random.default_rng(seed))


def call(r: Router, d: DeploymentSpec, t0: float, t1: float, kind: str | None = None, **kw) -> None:
    assert r.begin(d, t0) is None
    r.end(d, t1, Attempt(kind, t1 - t0, **kw))


def drive(route, outcomes):
    """Walk ``route``: each call gets the next outcome of ``outcomes[deployment id]`` (a list of
    (kind, seconds)); returns the steps as (what, detail, time) and the result."""
    steps = []
    while not route.done:
        what, detail = route.step
        now = route.now
        if what == "call":
            kind, took = outcomes[detail.id].pop(0)
            steps.append(("call", detail.id, now))
            route.advance(now + took, Attempt(kind, took, retry_after_s=1.0 if kind == "429" else None))
        else:
            steps.append(("wait", round(detail, 3), now))
            route.advance(now + detail)
    return steps, route.step[1]


# --------------------------------------------------------------------------- strategies


def test_shuffle_follows_weights_then_rpm_then_uniform():
    r = router(groups={"g": (dep("g", 0, weight=3.0), dep("g", 1, weight=1.0))})
    picks = Counter(r.pick("g", 0.0).id for _ in range(4000))
    assert abs(picks["g/0"] / 4000 - 0.75) < 0.03
    r = router(groups={"g": (dep("g", 0, rpm=100), dep("g", 1, rpm=300))})
    picks = Counter(r.pick("g", 0.0).id for _ in range(4000))
    assert abs(picks["g/1"] / 4000 - 0.75) < 0.03
    r = router()
    picks = Counter(r.pick("g", 0.0).id for _ in range(4000))
    assert abs(picks["g/0"] / 4000 - 0.5) < 0.03


def test_least_busy_counts_calls_in_flight_and_takes_the_first_of_equals():
    r = router("least-busy", groups={"g": (dep("g", 0), dep("g", 1), dep("g", 2))})
    a = r.pick("g", 0.0)
    assert a.id == "g/0" and r.begin(a, 0.0) is None
    b = r.pick("g", 0.1)
    assert b.id == "g/1" and r.begin(b, 0.1) is None
    assert r.pick("g", 0.2).id == "g/2"
    r.end(a, 0.3, Attempt(None, 0.3))
    assert r.pick("g", 0.4).id == "g/0"
    assert r.log == [("pick:g/0", 0.0), ("pick:g/1", 0.1), ("pick:g/2", 0.2), ("pick:g/0", 0.4)]


def test_latency_based_tries_unseen_first_then_the_fastest_per_token():
    r = router("latency-based-routing")
    g0, g1 = r.config.groups["g"]
    call(r, g0, 0.0, 2.0, completion_tokens=100)  # 0.02 s/token
    assert r.pick("g", 2.0).id == "g/1"  # never seen: counts as 0
    call(r, g1, 2.0, 3.0, completion_tokens=10)  # 0.1 s/token
    assert {r.pick("g", 3.0).id for _ in range(50)} == {"g/0"}
    call(r, g0, 3.0, 63.0, "timeout")  # a timeout adds 1000 to the window
    assert r.pick("g", 63.0).id == "g/1"


def test_latency_buffer_spreads_and_window_forgets():
    r = router("latency-based-routing", latency_buffer=0.5, latency_window=2)
    g0, g1 = r.config.groups["g"]
    call(r, g0, 0, 1.0)  # no tokens reported: seconds
    call(r, g1, 0, 1.4)
    assert {r.pick("g", 2.0).id for _ in range(100)} == {"g/0", "g/1"}  # 1.4 <= 1.0 + 50 %
    call(r, g1, 2, 4.0)
    call(r, g1, 4, 6.0)  # window of 2: [2.0, 2.0]
    assert {r.pick("g", 6.0).id for _ in range(50)} == {"g/0"}


def test_latency_and_cost_skip_a_deployment_at_its_minute_rpm():
    for strategy in ("latency-based-routing", "cost-based-routing"):
        r = router(strategy, groups={"g": (dep("g", 0, rpm=2, input_cost_per_token=1e-6), dep("g", 1))})
        g0 = r.config.groups["g"][0]
        call(r, g0, 0.0, 0.5)
        call(r, g0, 1.0, 1.5)  # 2 successes this minute: a third would exceed rpm=2
        assert {r.pick("g", 2.0).id for _ in range(20)} == {"g/1"}, strategy
        assert r.pick("g", 60.0).id == "g/0" or strategy == "latency-based-routing"  # a new minute


def test_cost_based_takes_the_cheapest_and_reads_zero_cost_as_unknown():
    r = router("cost-based-routing", groups={"g": (
        dep("g", 0, input_cost_per_token=1.0, output_cost_per_token=2.0),
        dep("g", 1, input_cost_per_token=0.0, output_cost_per_token=0.0),  # 5 + 5: unknown
        dep("g", 2, input_cost_per_token=0.5, output_cost_per_token=1.0),
    )})
    assert r.pick("g", 0.0).id == "g/2"
    assert r.config.groups["g"][1].cost == 10.0


def test_usage_v2_lowest_tokens_and_its_rpm_check():
    # max_parallel_requests set: else rpm=3 would also cap calls at once at 3
    r = router("usage-based-routing-v2", groups={"g": (dep("g", 0, rpm=3, max_parallel_requests=10), dep("g", 1))})
    g0, g1 = r.config.groups["g"]
    call(r, g1, 0.0, 1.0, total_tokens=50)
    assert r.pick("g", 1.0).id == "g/0"  # 0 tokens this minute
    assert r.begin(g0, 1.0) is None and r.begin(g0, 1.1) is None  # 2 of rpm=3 counted
    assert r.pick("g", 1.2).id == "g/1"  # one call short of its rpm: skipped
    assert r.begin(g0, 1.3) is None  # the third passes the check...
    assert r.begin(g0, 1.4) == "rpm_limit"  # ...the fourth is refused, and cools g/0 (a 429 with alternatives)
    assert r.cooldowns.cooling("g/0", 1.5) and r.cooldowns.until("g/0") == pytest.approx(6.4)
    assert ("rpm_limit:g/0", 1.4) in r.log


def test_max_parallel_requests_refuses_without_waiting_and_rpm_stands_in():
    assert parallel_limit(None, 60, None) == 60 and parallel_limit(None, None, 100) == 1 and parallel_limit(4, 60, None) == 4
    r = router(groups={"g": (dep("g", 0, max_parallel_requests=1),)})
    g0 = r.config.groups["g"][0]
    assert r.begin(g0, 0.0) is None
    assert r.begin(g0, 0.1) == "max_parallel"
    r.end(g0, 0.2, Attempt(None, 0.2))
    assert r.begin(g0, 0.3) is None


# --------------------------------------------------------------------------- one request's walk


def test_retry_goes_to_another_deployment_at_once_after_a_cooldown():
    r = router("least-busy", num_retries=2)
    steps, result = drive(r.route("g", 0.0), {"g/0": [("429", 0.2)], "g/1": [(None, 1.0)]})
    # the 429 cools g/0 (alternatives exist); g/1 is healthy: retry at once, on g/1
    assert steps == [("call", "g/0", 0.0), ("wait", 0.0, 0.2), ("call", "g/1", 0.2)]
    assert result.ok and result.calls == 2 and result.deployment.id == "g/1" and not result.fallback_used


def test_single_deployment_backs_off_with_retry_after_or_doubling_plus_jitter():
    r = router(groups={"g": (dep("g", 0),)}, num_retries=3, retry_after_s=0.0)
    steps, result = drive(r.route("g", 0.0), {"g/0": [("500", 0.1), ("500", 0.1), ("429", 0.1), ("500", 0.1)]})
    waits = [s[1] for s in steps if s[0] == "wait"]
    # 0.5, 1, (Retry-After 1 s), 4 s (after the last retry too), each + up to 0.75 s of jitter
    for wait, base in zip(waits, (0.5, 1.0, 1.0, 4.0)):
        assert base <= wait <= base + 0.75
    assert len(waits) == 4 and not result.ok and result.kind == "500" and result.status == 500 and result.calls == 4


def test_every_deployment_cooling_means_no_deployments_and_no_retry():
    r = router("least-busy", num_retries=2)
    steps, result = drive(r.route("g", 0.0), {"g/0": [("429", 0.1)], "g/1": [(None, 0.1)]})
    assert [s[1] for s in steps] == ["g/0", 0.0, "g/1"] and result.ok  # g/0 cooled by its 429, for 1 s
    steps, result = drive(r.route("g", 0.3), {"g/1": [("429", 0.1)]})
    # this request's first failure: g/1 cools too, nothing healthy is left, so no retry
    assert [s[0] for s in steps] == ["call"] and (result.kind, result.status) == ("429", 429)
    steps, result = drive(r.route("g", 0.5), {})
    assert steps == [] and (result.kind, result.status, result.calls) == ("no_deployments", 429, 0)
    assert r.route("g", 1.2).step == ("call", r.config.groups["g"][0])  # g/0's second of cooldown is over


def test_only_a_requests_first_failure_is_logged():
    # LiteLLM's logging object logs one failure per request: the retry's failure on g/0 neither
    # counts toward a cooldown nor gives back its least-busy count, so g/0 looks busy afterwards
    r = router("least-busy", num_retries=2)
    steps, result = drive(r.route("g", 0.0), {"g/0": [("503", 0.1), ("503", 0.1)], "g/1": [(None, 0.1)]})
    assert [s[1] for s in steps if s[0] == "call"] == ["g/0", "g/0", "g/1"] and result.ok
    assert [e for e in r.cooldowns.log] == [("fail:g/0", 0.1)]
    assert ("unlogged:g/0", 0.2) in r.log
    assert {r.pick("g", 1.0 + i).id for i in range(5)} == {"g/1"}  # g/0 still counts one call in flight


def test_fallback_group_after_retries_and_the_client_gets_the_first_error():
    groups = {"a": (dep("a", 0),), "b": (dep("b", 0, provider="q"),), "c": (dep("c", 0, provider="r"),)}
    r = router(groups=groups, num_retries=0, fallbacks={"a": ("b", "c"), "b": ("a",)})
    steps, result = drive(r.route("a", 0.0), {"a/0": [("503", 0.1)], "b/0": [("500", 0.2)], "c/0": [(None, 1.0)]})
    assert steps == [("call", "a/0", 0.0), ("call", "b/0", 0.1), ("call", "c/0", 0.30000000000000004)]
    assert result.ok and result.fallback_used and result.deployment.id == "c/0"
    assert [e for e in r.log if e[0].startswith("fallback")] == [("fallback:b", 0.1), ("fallback:c", 0.30000000000000004)]
    r = router(groups=groups, num_retries=0, fallbacks={"a": ("b",)})
    _, result = drive(r.route("a", 0.0), {"a/0": [("503", 0.1)], "b/0": [("500", 0.2)]})
    assert (result.ok, result.kind, result.status) == (False, "503", 503)


def test_max_fallbacks_bounds_the_depth():
    groups = {g: (dep(g, 0, provider=g),) for g in "abc"}
    r = router(groups=groups, num_retries=0, fallbacks={"a": ("b",), "b": ("c",)}, max_fallbacks=1)
    steps, result = drive(r.route("a", 0.0), {"a/0": [("500", 0.1)], "b/0": [("500", 0.1)], "c/0": [(None, 0.1)]})
    assert [s[1] for s in steps] == ["a/0", "b/0"] and not result.ok


def test_a_retry_policy_sets_the_count_per_error_and_retries_with_nothing_healthy():
    r = router(groups={"g": (dep("g", 0), dep("g", 1))}, num_retries=5, retry_policy={"service_unavailable": 1},
               cooldown=CooldownConfig(allowed_fails=0))
    steps, result = drive(r.route("g", 0.0), {"g/0": [("503", 0.1), ("503", 0.1)], "g/1": [("503", 0.1), ("503", 0.1)]})
    assert [s[0] for s in steps].count("call") == 2 and result.kind == "503"


def test_route_refuses_a_bad_report():
    r = router()
    route = r.route("g", 0.0)
    with pytest.raises(ValueError, match="expected an Attempt"):
        route.advance(0.1)
    with pytest.raises(ValueError, match="model group"):
        r.route("nope", 0.0)
