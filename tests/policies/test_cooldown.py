"""LiteLLM-style deployment cooldowns: hand-computed (event, time) logs for scripted failures."""

from __future__ import annotations

from simulator.policies.cooldown import CooldownConfig, Cooldowns, error_class, retryable_status


def make(config: CooldownConfig | None = None, *, alone: bool = False, fallback: bool = False) -> Cooldowns:
    ids = ["g/0"] if alone else ["g/0", "g/1"]
    return Cooldowns(config or CooldownConfig(), {d: not alone for d in ids}, {d: fallback for d in ids})


def test_default_rule_cools_a_429_at_once_for_its_retry_after():
    c = make()
    assert c.on_failure("g/0", "429", 10.0, retry_after_s=1.0)
    assert c.cooling("g/0", 10.5) and not c.cooling("g/0", 11.0)
    assert c.log == [("fail:g/0", 10.0), ("cooldown:g/0", 10.0)]
    # without a Retry-After: the router's cooldown_time; the deployment's own wins over both
    assert c.on_failure("g/1", "429", 20.0) and c.until("g/1") == 25.0
    c2 = make()
    assert c2.on_failure("g/0", "429", 0.0, retry_after_s=1.0, deployment_cooldown_s=7.0) and c2.until("g/0") == 7.0


def test_default_rule_failure_share_needs_five_calls_in_the_minute():
    c = make()
    for t in (0.0, 1.0):
        c.on_success("g/0", t)
    # 500s: retryable, so only the share rule cools: > 50 % of >= 5 calls
    assert not c.on_failure("g/0", "500", 2.0)  # 1 of 3
    assert not c.on_failure("g/0", "500", 3.0)  # 2 of 4
    assert c.on_failure("g/0", "500", 4.0)  # 3 of 5 = 60 %
    assert c.log == [("fail:g/0", 2.0), ("fail:g/0", 3.0), ("fail:g/0", 4.0), ("cooldown:g/0", 4.0)]
    assert c.until("g/0") == 9.0
    # an active cooldown is not extended by failures of calls still in flight
    assert c.on_failure("g/0", "503", 6.0) and c.until("g/0") == 9.0
    assert c.cooldowns == 1


def test_minute_windows_open_at_their_first_event():
    c = make()
    for t in (0.0, 1.0, 2.0, 3.0):
        c.on_success("g/0", t)
    for t in (61.0, 62.0, 63.0, 64.0):  # the success window (0-60 s) is over: 4 of 4 failures... of only 4
        assert not c.on_failure("g/0", "500", t)
    assert c.on_failure("g/0", "500", 65.0)  # 5 of 5


def test_lone_deployment_is_not_cooled_by_the_default_rule():
    c = make(alone=True)
    assert not c.on_failure("g/0", "429", 0.0, retry_after_s=1.0)
    for t in range(10):
        assert not c.on_failure("g/0", "500", float(t))
    assert c.cooldowns == 0


def test_connection_errors_cool_like_500s():
    # measured on LiteLLM's proxy: refused connections reach the router as InternalServerErrors
    c = make()
    for t in range(4):
        assert not c.on_failure("g/0", "connect", float(t))
    assert c.on_failure("g/0", "reset", 4.0)  # 5 of 5 failed
    d = make(CooldownConfig(allowed_fails=0))
    assert d.on_failure("g/0", "timeout", 0.0)  # 408 may cool: counted, 1 > 0 allowed


def test_allowed_fails_counts_within_the_router_cooldown_time():
    c = make(CooldownConfig(cooldown_s=10.0, allowed_fails=1))
    assert not c.on_failure("g/0", "500", 0.0)
    assert c.on_failure("g/0", "500", 4.0)  # 2 > 1 within 10 s of the first
    assert c.until("g/0") == 14.0
    d = make(CooldownConfig(cooldown_s=10.0, allowed_fails=1))
    assert not d.on_failure("g/0", "500", 0.0)
    assert not d.on_failure("g/0", "500", 11.0)  # the counter's window (0-10 s) expired: 1 again


def test_allowed_fails_of_three_is_litellms_default_so_the_default_rule_applies():
    c = make(CooldownConfig(allowed_fails=3))
    assert c.on_failure("g/0", "429", 0.0)  # the default rule: a 429 with alternatives cools at once


def test_allowed_fails_policy_per_error_and_for_a_lone_deployment():
    policy = CooldownConfig(allowed_fails_policy={"rate_limit": 0, "internal_server_error": 2})
    c = make(policy, alone=True)
    assert c.on_failure("g/0", "429", 0.0, retry_after_s=1.0)  # named in the policy: even alone
    assert not c.on_failure("g/0", "503", 2.0)  # not named, lone deployment: never
    d = make(policy)
    # a shared counter (LiteLLM's key has no suffix at router level), each error its allowance
    assert not d.on_failure("g/0", "500", 0.0)
    assert not d.on_failure("g/0", "500", 1.0)
    assert d.on_failure("g/0", "500", 2.0)  # 3 > 2


def test_disabled_and_zero_cooldowns():
    assert not make(CooldownConfig(disabled=True)).on_failure("g/0", "429", 0.0)
    assert not make(CooldownConfig(cooldown_s=0.0)).on_failure("g/0", "429", 0.0)


def test_error_classes_and_retryable_statuses():
    assert [error_class(k) for k in ("429", "rpm_limit", "timeout", "500", "503", "connect", "no_deployments")] == [
        "rate_limit", "rate_limit", "timeout", "internal_server_error", "service_unavailable", "internal_server_error", "other"]
    assert [retryable_status(s) for s in (400, 404, 408, 409, 429, 500, 503)] == [False, False, True, True, True, True, True]
