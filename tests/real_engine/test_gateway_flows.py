"""The gateway's chat flow against the real emulators: fallback modes, per-attempt timeout on a
hung provider, and the AI-service breaker tripping and recovering, all seen through HTTP."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import pytest

from real_engine.gateway import start_gateway
from real_engine.settings import redis_url

pytestmark = pytest.mark.real

REDIS = redis_url()  # the session's Redis (tests/conftest.py)
CHAT = "/v1/chat/completions"
SELECT = "/v1/select-model"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    latency_s: float

    def stage(self, name: str) -> float:
        for part in self.headers.get("Server-Timing", "").split(","):
            key, _, dur = part.strip().partition(";dur=")
            if key == name:
                return float(dur) / 1e3
        return 0.0


async def post(session: aiohttp.ClientSession, url: str, path: str, prompt: str, cls: str, rid: int) -> Reply:
    body = {"model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 16}
    headers = {"X-Gwsim-Request-Id": str(rid), "X-Gwsim-Class": cls}
    started = time.perf_counter()
    async with session.post(url + path, json=body, headers=headers) as r:
        payload = await r.read()
        return Reply(r.status, dict(r.headers), payload, time.perf_counter() - started)


def chat_only(fallback: dict, providers: dict) -> dict:
    """A chat endpoint routed to p1 without model selection (no AI service in the path)."""
    return {
        "endpoints": {
            "chat": {
                "kind": "chat_completions",
                "model_selection": False,
                "classes": [{"name": "c1", "provider": "p1"}, {"name": "c2", "provider": "p2"}],
            }
        },
        "providers": providers,
        "fallback": fallback,
    }


SLOW = {"latency": {"model": "tokens", "ttft": {"dist": "deterministic", "value": "600ms"}, "tokens_per_s": 1000}}
FAST = {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "10ms"}}}


def test_sequential_fallback_after_error(make_scenario, emulator_set, run_async):
    sc = make_scenario(chat_only({"mode": "sequential", "max_attempts": 2}, {"p1": {"errors": {"503": 1.0}}, "p2": FAST}))
    sc_none = make_scenario(chat_only({"mode": "none"}, {"p1": {"errors": {"503": 1.0}}, "p2": FAST}))

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:
                r = await post(s, gw.url, CHAT, "hello", "c1", 1)
            async with await start_gateway(sc_none, emu.urls, time.monotonic(), 1, REDIS) as gw:
                r_none = await post(s, gw.url, CHAT, "hello", "c1", 2)
        return r, r_none

    r, r_none = run_async(main())
    assert r.status == 200, r.body
    assert r.headers["X-Gwsim-Provider"] == "p2"
    assert r.headers["X-Gwsim-Attempts"] == "2"
    assert r.headers["X-Gwsim-Fallback"] == "1"
    assert r.headers["X-Gwsim-Outcome"] == "ok"
    assert r_none.status == 502
    assert r_none.headers["X-Gwsim-Outcome"] == "upstream_error"
    assert r_none.headers["X-Gwsim-Attempts"] == "1"


@pytest.mark.parametrize("cancel_losers", [True, False])
def test_race_takes_the_fastest_and_cancels_the_loser(make_scenario, emulator_set, run_async, cancel_losers):
    sc = make_scenario(
        chat_only({"mode": "race", "race_width": 2, "max_attempts": 2, "cancel_losers": cancel_losers}, {"p1": SLOW, "p2": FAST})
    )

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:
                r = await post(s, gw.url, CHAT, "hello", "c1", 1)
                # the loser's fate, seen from the provider: cancelled (client went away) or served
                deadline = time.monotonic() + 2.0
                p1 = emu.providers["p1"].stats
                while p1.in_flight and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                losers = gw.stats()["losers"]
            return r, dict(p1.statuses), losers

    r, p1_statuses, losers = run_async(main())
    assert r.status == 200
    assert r.headers["X-Gwsim-Provider"] == "p2"
    assert r.headers["X-Gwsim-Attempts"] == "2"
    assert r.latency_s < 0.4  # did not wait for the 600 ms provider
    if cancel_losers:
        assert losers["cancelled"] == 1
        assert 200 not in p1_statuses  # p1's handler was cut off, not allowed to finish
    else:
        assert losers["left_running"] == 1
        assert p1_statuses.get(200) == 1


def test_hedge_starts_the_next_after_the_delay(make_scenario, emulator_set, run_async):
    sc = make_scenario(chat_only({"mode": "hedge", "hedge_delay": "80ms", "max_attempts": 2}, {"p1": SLOW, "p2": FAST}))

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:
                slow_primary = await post(s, gw.url, CHAT, "hello", "c1", 1)
                fast_primary = await post(s, gw.url, CHAT, "hello", "c2", 2)
        return slow_primary, fast_primary

    slow_primary, fast_primary = run_async(main())
    assert slow_primary.status == 200
    assert slow_primary.headers["X-Gwsim-Provider"] == "p2"
    assert slow_primary.headers["X-Gwsim-Attempts"] == "2"
    assert slow_primary.headers["X-Gwsim-Fallback"] == "1"
    assert 0.08 <= slow_primary.latency_s < 0.4
    # an answer before the hedge delay: no second call
    assert fast_primary.headers["X-Gwsim-Provider"] == "p2"
    assert fast_primary.headers["X-Gwsim-Attempts"] == "1"
    assert fast_primary.headers["X-Gwsim-Fallback"] == "0"


def test_hung_provider_ends_in_attempt_timeout_then_fallback(make_scenario, emulator_set, run_async):
    hang = {"faults": [{"kind": "hang", "start": "0s", "end": "60s"}]}
    sc = make_scenario(
        chat_only({"mode": "sequential", "max_attempts": 2, "attempt_timeout": "150ms"}, {"p1": hang, "p2": FAST})
    )

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:
                r = await post(s, gw.url, CHAT, "hello", "c1", 1)
                deadline = time.monotonic() + 2.0
                while emu.providers["p1"].stats.in_flight and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                return r, emu.providers["p1"].stats.in_flight, gw.stats()["pools"]["p1"]

    r, p1_in_flight, p1_pool = run_async(main())
    assert r.status == 200
    assert r.headers["X-Gwsim-Provider"] == "p2"
    assert r.headers["X-Gwsim-Attempts"] == "2"
    assert r.headers["X-Gwsim-Fallback"] == "1"
    assert 0.15 <= r.latency_s < 0.6
    assert r.stage("provider") >= 0.14  # the hung attempt's 150 ms is on the critical path
    assert p1_in_flight == 0  # the gateway closed the hung connection
    assert p1_pool["active"] == 0 and p1_pool["idle"] == 0


def test_ai_breaker_trips_and_recovers(make_scenario, emulator_set, run_async):
    sc = make_scenario(
        {
            "model_selection": {
                "semantic_cache": {"enabled": False},
                "fallback_choice": {"provider": "p2", "alternatives": ["p1"]},
                "ai_client": {"breaker": {"failure_threshold": 2, "open_for": "300ms"}},
            },
            "ai_service": {"faults": [{"kind": "errors", "start": "0s", "end": "500ms", "error_status": 503}]},
        }
    )

    async def main():
        t0 = time.monotonic()
        async with emulator_set(sc, t0=t0) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, t0, 1, REDIS) as gw:
                failing = [await post(s, gw.url, SELECT, "q", "s1", i) for i in range(2)]
                rejected = await post(s, gw.url, SELECT, "q", "s1", 3)
                ai_calls_while_open = emu.ai_service.stats.requests
                await asyncio.sleep(max(0.0, t0 + 0.85 - time.monotonic()))  # fault over, open_for elapsed
                probe = await post(s, gw.url, SELECT, "q", "s1", 4)
                after = await post(s, gw.url, SELECT, "q", "s1", 5)
                async with s.get(gw.url + "/metrics") as m:
                    metrics = await m.text()
                return failing, rejected, ai_calls_while_open, probe, after, metrics

    failing, rejected, ai_calls_while_open, probe, after, metrics = run_async(main())
    for r in failing:
        assert r.status == 200 and r.headers["X-Gwsim-Selection-Fallback"] == "1"
        assert r.headers["X-Gwsim-Breaker"] == "closed"
    assert rejected.status == 200
    assert rejected.headers["X-Gwsim-Breaker"] == "open"
    assert rejected.headers["X-Gwsim-Selection-Fallback"] == "1"
    assert rejected.headers["X-Gwsim-Attempts"] == "0"
    assert ai_calls_while_open == 2  # the open breaker kept the call from the AI service
    assert probe.headers["X-Gwsim-Breaker"] == "half_open"
    assert probe.headers["X-Gwsim-Selection-Fallback"] == "0"
    assert after.headers["X-Gwsim-Breaker"] == "closed"
    assert 'gwsim_breaker_state{breaker="ai_service",state="closed"} 1.0' in metrics
