"""Faults under load on the real engine (issue 7): the project's load generator plays a few
seconds of open-loop traffic through the real gateway (the session's real Redis, tests/conftest.py;
emulated upstreams on loopback), with one fault in force from 1 s to 2 s of the run.

For each fault the test asserts:

1. bounded answers: every request got an HTTP reply, none later than the bound the
   scenario configures (its timeouts on the request's worst path) plus a generous slack
   for a loaded 2-core machine;
2. accounting: sent == ok + failures by reason, one record per request id, the
   gateway's own outcome counts equal to the client's, failure reasons those the fault
   can cause, and no request lost (no reply missing, none unfinished);
3. the behaviour the fault calls for (breaker opens and the fallback serves, the scan is
   skipped, misses after the op timeout, ...), and recovery once the window is over;
4. afterwards no socket, task, session or server is left open (``run_async``'s check), no
   request is still held by an emulator and no pooled connection is still in use.

Assertions are on counts, ordering and bounds, not on tight latencies.  Run with ``-s``
to see the table of the faults, the requests sent and lost, and the worst latency
against its bound.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from real_engine.gateway import start_gateway
from real_engine.settings import redis_url
from real_engine.loadgen import arrival_times, run_load
from simulator.records import RequestRecord
from simulator.scenario import Scenario

pytestmark = pytest.mark.real

REDIS = redis_url()  # the session's Redis (tests/conftest.py)
START, END = 1.0, 2.0  # the fault window, run time
DURATION = 3.0
#: Scheduling slack on top of a configured bound: other processes share the two cores.
SLACK_S = 2.5
#: Requests due this long after the window ends must see the system recovered.
RECOVERY_S = 0.6

#: (fault, sent, ok, failures by reason, lost, max latency, bound) per test, for the table.
ROWS: list[tuple[str, int, int, dict[str, int], int, float, float]] = []


@pytest.fixture(scope="module", autouse=True)
def fault_table():
    yield
    if not ROWS:
        return
    lines = [
        "",
        "| fault | requests sent | ok | failures by reason | lost | max latency vs bound |",
        "|---|---:|---:|---|---:|---|",
    ]
    for name, sent, ok, failures, lost, worst, bound in ROWS:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(failures.items())) or "none"
        lines.append(f"| {name} | {sent} | {ok} | {reasons} | {lost} | {worst * 1e3:.0f} ms / {bound * 1e3:.0f} ms |")
    print("\n".join(lines))


# --------------------------------------------------------------------------- scenarios


def fault(kind: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "start": f"{START}s", "end": f"{END}s", **extra}


def base(**sections: Any) -> dict[str, Any]:
    """30 requests/s for 3 s; chat class c1 is routed to p1 (p2 is its alternative), the
    static selection fallback is p2; every timeout on the way is configured."""
    data: dict[str, Any] = {
        "run": {"duration": f"{DURATION}s", "drain": "8s"},
        "workload": {
            "arrivals": {"process": "constant", "rate": "30/s"},
            "mix": {"select": 0.4, "chat": 0.6},
            "client_timeout": "20s",  # a guard only: any client timeout fails the test
            "latency_from": "sent",
        },
        "endpoints": {
            "select": {"kind": "select_model", "classes": [{"name": "s1"}, {"name": "s2"}]},
            "chat": {
                "kind": "chat_completions",
                "classes": [{"name": "c1", "provider": "p1", "output_tokens": {"dist": "deterministic", "value": 20}}],
            },
        },
        "model_selection": {
            "semantic_cache": {"scan_on_miss": False},
            "fallback_choice": {"provider": "p2", "alternatives": ["p1"]},
            "ai_client": {"request_timeout": "1s"},
        },
        "redis": {"op_timeout": "200ms", "pool_timeout": "200ms"},
        "prompt_cache": {"op_timeout": "200ms"},
        "fallback": {"mode": "sequential", "max_attempts": 2, "attempt_timeout": "1s"},
    }
    for key, value in sections.items():
        data[key] = value
    return data


def bound_of(sc: Scenario) -> float:
    """The longest answer the configuration allows a request (seconds), plus the slack:
    semantic GET (+ embedding and scan), AI-service attempts with their backoff, prompt
    cache GET and SET, provider attempts one after another, selection store."""
    ms = sc.model_selection
    op = sc.redis.op_timeout
    assert op is not None and ms.ai_client.request_timeout is not None and sc.fallback.attempt_timeout is not None
    sel = op
    if ms.semantic_cache.enabled and ms.semantic_cache.scan_on_miss:
        assert ms.semantic_cache.embedding_timeout is not None
        sel += ms.semantic_cache.embedding_timeout + 3 * op  # one SCAN batch (scan_batch covers every entry) and GETs
    retries = ms.ai_client.retries
    sel += ms.ai_client.request_timeout * (1 + retries.count) + sum(retries.backoff[:1] or (0.0,)) * retries.count
    pc = sc.prompt_cache.op_timeout or 0.0
    chat = sel + 2 * pc + sc.fallback.attempt_timeout * sc.fallback.max_attempts
    return max(sel, chat) + SLACK_S


# --------------------------------------------------------------------------- the run


@dataclass
class Outcome:
    records: list[RequestRecord]
    acc: dict[str, Any]
    gw: dict[str, Any]  # gateway stats at the end of the load
    gw_before: dict[str, Any]  # ... and before it
    emu: dict[str, Any]  # emulator stats once the gateway has closed
    link: dict[str, int] | None  # the Redis fault link's counters, when there is one
    bound: float

    def due(self, lo: float, hi: float, endpoint: str | None = None) -> list[RequestRecord]:
        return [r for r in self.records if lo <= r.arrived_at < hi and (endpoint is None or r.endpoint == endpoint)]

    def inside(self, endpoint: str | None = None) -> list[RequestRecord]:
        """Requests sent well inside the window (a margin for requests met by its edges)."""
        return self.due(START + 0.15, END - 0.35, endpoint)

    def before(self, endpoint: str | None = None) -> list[RequestRecord]:
        return self.due(0.0, START - 0.3, endpoint)

    def after(self, endpoint: str | None = None) -> list[RequestRecord]:
        return self.due(END + RECOVERY_S, DURATION, endpoint)


def drive(run_async, emulator_set, sc: Scenario) -> Outcome:
    """Emulators, gateway and load generator in one event loop; the run starts at ``t0``,
    which the fault windows of every part are relative to."""

    async def main() -> Outcome:
        t0 = time.monotonic() + 1.0  # time to start the emulators and seed Redis
        async with emulator_set(sc, t0=t0) as emu:
            gw = await start_gateway(sc, emu.urls, t0, 1, REDIS, key_prefix=f"gwsim-faults:{uuid.uuid4().hex[:10]}:")
            async with gw:
                before = gw.stats()
                records, acc = await run_load(sc, gw.url, t0, 1, spin_s=0.0)
                after = gw.stats()
                link = gw.core.caches.link
                link_counts = None if link is None else {"outages": link.outages, "aborted": link.aborted}
            emu_stats = emu.stats()
        return Outcome(records, acc, after, before, emu_stats, link_counts, bound_of(sc))

    return run_async(main(), timeout=60.0)


def check_books(name: str, out: Outcome, sc: Scenario, allowed: set[str]) -> None:
    """Bounded answers, accounting and nothing left behind (the parts every fault shares)."""
    recs, acc = out.records, out.acc
    expected = len(list(arrival_times(sc.workload, sc.run.duration, np.random.default_rng(0))))
    lost = [r for r in recs if r.status_code == 0 or r.outcome in ("unfinished", "client_timeout")]
    worst = max(r.latency_s for r in recs)
    ROWS.append((name, acc["sent"], acc["ok"], dict(acc["failures"]), len(lost) + acc["sent"] - len(recs), worst, out.bound))
    # every request sent is accounted for exactly once
    assert acc["sent"] == expected, acc
    assert len(recs) == acc["records"] == acc["sent"]
    assert sorted(r.id for r in recs) == list(range(acc["sent"]))
    assert acc["ok"] + sum(acc["failures"].values()) == acc["sent"]
    assert acc["ok"] == sum(r.outcome == "ok" for r in recs)
    # an HTTP answer for each, within the configured bound
    assert lost == [], [(r.id, r.outcome, r.status_code) for r in lost[:5]]
    assert worst <= out.bound, f"{name}: slowest answer {worst:.3f}s, bound {out.bound:.3f}s"
    # failure reasons that this fault can cause, and the gateway's books agree with the client's
    assert set(acc["failures"]) <= allowed, acc["failures"]
    assert out.gw["outcomes"] == dict(Counter(r.outcome for r in recs))
    for r in recs:
        assert (r.outcome == "ok") == (r.status_code == 200), (r.id, r.outcome, r.status_code)
    # nothing left in flight: no request held by an upstream, no pooled connection in use
    for name_, stats in [("ai_service", out.emu["ai_service"]), ("embedding", out.emu["embedding"]), *out.emu["providers"].items()]:
        assert stats["in_flight"] == 0, (name_, stats)
    for pool, stats in out.gw["pools"].items():
        assert stats["active"] == 0 and stats["queued"] == 0, (pool, stats)


def breaker_events(out: Outcome, name: str) -> list[tuple[str, float]]:
    return [(event, at) for event, at in out.gw["breakers"][name]["log"]]


# --------------------------------------------------------------------------- providers


def test_provider_outage_opens_the_breaker_and_the_fallback_serves(make_scenario, emulator_set, run_async):
    sc = make_scenario(
        base(
            providers={
                "p1": {
                    "latency": {"model": "plain", "time": {"dist": "deterministic", "value": "20ms"}},
                    "breaker": {"failure_threshold": 3, "open_for": "300ms"},
                    "faults": [fault("outage")],
                },
            }
        )
    )
    out = drive(run_async, emulator_set, sc)
    check_books("provider outage", out, sc, allowed=set())
    inside = out.inside("chat")
    assert inside and all(r.provider == "p2" and r.fallback_used for r in inside)
    events = breaker_events(out, "p1")
    opened = [at for event, at in events if event == "open"]
    assert opened and START <= opened[0] < END  # the outage opened the breaker ...
    assert out.gw["breakers"]["p1"]["rejections"] > 0  # ... which then spared p1 the calls
    # after the outage a probe closes the breaker and p1 serves again
    assert out.gw["breakers"]["p1"]["state"] == "closed"
    after = out.after("chat")
    assert after and all(r.provider == "p1" and not r.fallback_used for r in after)
    assert all(r.provider == "p1" for r in out.before("chat"))


def test_provider_hang_ends_in_attempt_timeouts_and_the_fallback(make_scenario, emulator_set, run_async):
    sc = make_scenario(
        base(
            providers={"p1": {"faults": [fault("hang")]}},
            fallback={"mode": "sequential", "max_attempts": 2, "attempt_timeout": "300ms"},
        )
    )
    out = drive(run_async, emulator_set, sc)
    check_books("provider hang", out, sc, allowed=set())
    inside = out.inside("chat")
    assert inside
    for r in inside:
        assert r.provider == "p2" and r.attempts == 2 and r.fallback_used
        assert r.latency_s >= 0.3  # the hung attempt was waited for up to its timeout, not less
    # the gateway hung up on every hung call: p1 holds nothing, every hung call ended as 499
    p1 = out.emu["providers"]["p1"]
    assert p1["statuses"].get("499", 0) >= len(inside)
    after = out.after("chat")
    assert after and all(r.provider == "p1" and r.attempts == 1 for r in after)


def test_connection_reset_mid_reply_without_fallback_is_counted_as_reset(make_scenario, emulator_set, run_async):
    sc = make_scenario(base(providers={"p1": {"faults": [fault("reset")]}}, fallback={"mode": "none", "attempt_timeout": "1s"}))
    out = drive(run_async, emulator_set, sc)
    check_books("connection reset", out, sc, allowed={"reset"})
    resets = [r for r in out.records if r.outcome == "reset"]
    assert resets and all(r.status_code == 502 and r.endpoint == "chat" for r in resets)
    assert all(START - 0.2 <= r.arrived_at < END + 0.2 for r in resets)
    assert all(r.outcome == "reset" for r in out.inside("chat"))
    # one provider call per request: each reset the emulator sent is one reset outcome
    assert out.emu["providers"]["p1"]["statuses"].get("0", 0) == len(resets)
    # no broken connection was reused after the window
    assert all(r.outcome == "ok" for r in out.after())


def test_429_storm_falls_back_and_counts_the_rest_as_upstream_errors(make_scenario, emulator_set, run_async):
    sc = make_scenario(
        base(
            providers={
                "p1": {"faults": [fault("errors", error_status=429, error_rate=1.0)]},
                "p2": {
                    "latency": {"model": "plain", "time": {"dist": "deterministic", "value": "10ms"}},
                    "faults": [fault("errors", error_status=429, error_rate=0.5)],
                },
            }
        )
    )
    out = drive(run_async, emulator_set, sc)
    check_books("429 storm", out, sc, allowed={"upstream_error"})
    failed = [r for r in out.records if r.outcome == "upstream_error"]
    assert failed, "p2 at 50 % 429s must have failed some requests"
    assert all(r.status_code == 502 and r.attempts == 2 and r.fallback_used for r in failed)
    inside = out.inside("chat")
    assert inside and all(r.fallback_used for r in inside)
    # the emulators' 429s and the gateway's outcomes tally exactly: every request that fell
    # back met one 429 from p1, every request that failed met a second one from p2
    statuses = {name: p["statuses"] for name, p in out.emu["providers"].items()}
    assert statuses["p1"].get("429", 0) == sum(r.fallback_used for r in out.records)
    assert statuses["p2"].get("429", 0) == len(failed)
    assert all(r.outcome == "ok" and not r.fallback_used for r in out.before() + out.after())


# --------------------------------------------------------------------------- AI service


def test_ai_service_down_fails_fast_to_the_static_choice(make_scenario, emulator_set, run_async):
    sc = make_scenario(
        base(
            model_selection={
                "semantic_cache": {"enabled": False},
                "fallback_choice": {"provider": "p2", "alternatives": ["p1"]},
                "ai_client": {"request_timeout": "2s", "breaker": {"failure_threshold": 3, "open_for": "300ms"}},
            },
            ai_service={"faults": [fault("outage")]},
        )
    )
    out = drive(run_async, emulator_set, sc)
    check_books("AI service down", out, sc, allowed=set())
    inside = out.inside()
    assert inside and all(r.selection_fallback for r in inside)
    assert all(r.provider == "p2" for r in inside)  # the static choice, for both endpoints
    # refused connections fail at once: nobody waited for the 2 s request timeout
    assert statistics.median(r.latency_s for r in inside) < 0.5
    opened = [at for event, at in breaker_events(out, "ai_service") if event == "open"]
    assert opened and START <= opened[0] < END
    assert out.gw["breakers"]["ai_service"]["rejections"] > 0
    assert out.gw["breakers"]["ai_service"]["state"] == "closed"
    after = out.after()
    assert after and not any(r.selection_fallback for r in after)
    assert not any(r.selection_fallback for r in out.before())


def test_ai_service_saturated_rejects_beyond_its_queue_and_the_gateway_falls_back(make_scenario, emulator_set, run_async):
    # capacity 40/s (one worker, 25 ms an item); 15/s outside the window, 75/s inside it
    sc = make_scenario(
        base(
            workload={
                "arrivals": {"process": "constant", "rate": "15/s"},
                "rate_profile": [{"at": f"{START}s", "factor": 5.0}, {"at": f"{END}s", "factor": 1.0}],
                "mix": {"select": 1.0, "chat": None},
                "client_timeout": "20s",
                "latency_from": "sent",
            },
            model_selection={
                "semantic_cache": {"enabled": False},
                "fallback_choice": {"provider": "p2", "alternatives": ["p1"]},
                "ai_client": {"request_timeout": "400ms"},
            },
            ai_service={
                "workers": 1,
                "max_batch_size": 1,
                "per_item": {"dist": "deterministic", "value": "25ms"},
                "queue_limit": 6,
            },
        )
    )
    out = drive(run_async, emulator_set, sc)
    check_books("AI service saturated", out, sc, allowed=set())
    ai = out.emu["ai_service"]
    assert ai["max_queue"] <= 6  # the queue bound held ...
    assert ai["queue_rejected"] > 0  # ... by turning requests away
    fell_back = [r for r in out.records if r.selection_fallback]
    assert fell_back and all(START - 0.1 <= r.arrived_at < END + RECOVERY_S for r in fell_back)
    # every turned-away request was answered with the static choice
    assert ai["statuses"].get("503", 0) == ai["queue_rejected"]
    assert len(fell_back) >= ai["queue_rejected"]
    assert not any(r.selection_fallback for r in out.before() + out.after())


# --------------------------------------------------------------------------- Redis


def cached_classes() -> dict[str, Any]:
    """Every select would hit the semantic cache and every chat the prompt cache."""
    return {
        "select": {"kind": "select_model", "classes": [{"name": "s1", "semantic_cache_hit": 1.0}]},
        "chat": {
            "kind": "chat_completions",
            "classes": [
                {"name": "c1", "provider": "p1", "semantic_cache_hit": 1.0, "prompt_cache_opt_in": True, "prompt_cache_hit": 1.0}
            ],
        },
    }


@pytest.mark.parametrize("kind", ["outage", "stall"])
def test_redis_fault_turns_into_misses_and_every_request_still_succeeds(make_scenario, emulator_set, run_async, kind):
    op_timeout = 0.15
    sc = make_scenario(
        base(
            endpoints=cached_classes(),
            redis={"op_timeout": f"{op_timeout}s", "pool_timeout": f"{op_timeout}s", "faults": [fault(kind)]},
            prompt_cache={"op_timeout": f"{op_timeout}s"},
        )
    )
    out = drive(run_async, emulator_set, sc)
    name = "Redis down" if kind == "outage" else "Redis stalled"
    check_books(name, out, sc, allowed=set())
    inside = out.inside()
    assert inside and not any(r.cache_hit or r.prompt_cache_hit for r in inside)
    assert not any(r.selection_fallback for r in inside)  # the AI service chose instead
    assert all(r.provider == "p1" for r in inside if r.endpoint == "chat")  # the provider was called
    sem = out.gw["caches"]["semantic"]
    if kind == "outage":
        # refused or reset connections: the lookups failed at once, not by timing out
        assert sem["error"] >= len(out.inside("select"))
        assert statistics.median(r.cache_s for r in inside) < op_timeout * 0.6
        assert out.link == {"outages": 1, "aborted": out.link["aborted"]}
    else:
        # held commands: each lookup waited its op timeout, no longer (bar scheduling)
        assert sem["timeout"] >= len(out.inside("select"))
        for r in inside:
            assert op_timeout * 0.9 <= r.cache_s <= op_timeout + SLACK_S
    # before and after the window every lookup hits: the pool reconnected by itself
    for r in out.before() + out.after():
        assert r.cache_hit and (r.endpoint == "select" or r.prompt_cache_hit), r


# --------------------------------------------------------------------------- embedding API


@pytest.mark.parametrize("kind", ["outage", "hang"])
def test_embedding_api_down_skips_the_scan(make_scenario, emulator_set, run_async, kind):
    entries = 20
    timeout = 0.3
    sc = make_scenario(
        base(
            workload={
                "arrivals": {"process": "constant", "rate": "30/s"},
                "mix": {"select": 1.0, "chat": None},
                "client_timeout": "20s",
                "latency_from": "sent",
            },
            model_selection={
                "semantic_cache": {
                    "scan_on_miss": True,
                    "initial_entries": entries,
                    "scan_batch": 1000,
                    "embedding_time": {"dist": "deterministic", "value": "5ms"},
                    "embedding_timeout": f"{timeout}s",
                    "embedding_faults": [fault(kind)],
                },
                "fallback_choice": {"provider": "p2", "alternatives": ["p1"]},
                "ai_client": {"request_timeout": "1s"},
            },
        )
    )
    out = drive(run_async, emulator_set, sc)
    check_books(f"embedding API {'down' if kind == 'outage' else 'hung'}", out, sc, allowed=set())
    calls = {k: out.gw["embedding_calls"][k] - out.gw_before["embedding_calls"][k] for k in ("ok", "failed")}
    assert calls["ok"] + calls["failed"] == out.acc["sent"]  # one embedding call per lookup
    inside = out.inside()
    assert inside and calls["failed"] >= len(inside)
    # a failed call skipped the scan: only the successful ones read the entries
    keys_read = out.gw["semantic_scan"]["keys_read"] - out.gw_before["semantic_scan"]["keys_read"]
    assert calls["ok"] * entries <= keys_read < (calls["ok"] + calls["failed"] / 2) * entries
    assert out.gw["caches"]["semantic"]["miss"] - out.gw_before["caches"]["semantic"]["miss"] == out.acc["sent"]
    assert not any(r.cache_hit or r.selection_fallback for r in out.records)  # the AI service chose
    if kind == "outage":
        assert statistics.median(r.embedding_s for r in inside) < timeout / 2  # refused at once
    else:
        for r in inside:
            assert timeout * 0.9 <= r.embedding_s <= timeout + SLACK_S  # waited for its timeout, no longer
    assert all(r.embedding_s < timeout for r in out.after())
