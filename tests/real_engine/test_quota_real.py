"""Provider quotas on real sockets: the emulated provider's rpm answered 429 with the Retry-After
the quota computes, and the gateway honouring a Retry-After (up to its cap) by calling the
same provider again, request for request as the simulator walks it."""

from __future__ import annotations

import time

import aiohttp
import pytest

from real_engine.gateway import start_gateway
from real_engine.settings import redis_url
from simulator.engine import Replication

pytestmark = pytest.mark.real

REDIS = redis_url()


def DET(v):
    return {"dist": "deterministic", "value": v}


def chat_only(providers: dict, fallback: dict, **workload) -> dict:
    return {
        "workload": {"mix": {"select": None, "chat": 1.0}, **workload},
        "endpoints": {"select": None, "chat": {"kind": "chat_completions", "model_selection": False,
                                               "classes": [{"name": "c1", "provider": "p1", "output_tokens": DET(10)}]}},
        "providers": providers,
        "fallback": fallback,
    }


def test_provider_rpm_answers_429_with_the_seconds_until_a_request_fits(make_scenario, emulator_set, run_async):
    sc = make_scenario(chat_only({"p1": {"rpm": 2}}, {"mode": "none"}))

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            out = []
            for i in range(3):
                body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
                async with s.post(emu.urls["providers"]["p1"] + "/v1/chat/completions", json=body,
                                  headers={"X-Gwsim-Endpoint": "chat", "X-Gwsim-Class": "c1"}) as r:
                    await r.read()
                    out.append((r.status, r.headers.get("Retry-After")))
            return out, emu.stats()["providers"]["p1"]

    replies, stats = run_async(main(), timeout=20)
    assert [s for s, _ in replies] == [200, 200, 429]
    assert int(replies[2][1]) in (59, 60)  # the first request leaves the minute's window then
    assert (stats["quota_admitted"], stats["quota_refused"]) == (2, 1)


def test_gateway_waits_out_retry_after_then_calls_the_same_provider(make_scenario, emulator_set, run_async):
    # p1 answers every call 429 with Retry-After: 1 at its TTFT (50 ms): the gateway waits 1 s
    # and tries p1 again (twice at most), then falls back to p2
    p1 = {"latency": {"model": "tokens", "ttft": DET("50ms"), "tokens_per_s": 1000}, "errors": {"429": 1.0}}
    p2 = {"latency": {"model": "plain", "time": DET("10ms")}}
    sc = make_scenario(chat_only({"p1": p1, "p2": p2},
                                 {"mode": "sequential", "max_attempts": 2, "retry_after_cap": "2s", "retry_after_waits": 2},
                                 arrivals={"process": "burst", "size": 1, "every": "10s"}),
                       ["run.duration=1s"])

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:
                started = time.monotonic()
                async with s.post(gw.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                                  headers={"X-Gwsim-Class": "c1", "X-Gwsim-Request-Id": "1"}) as r:
                    await r.read()
                    return r.status, dict(r.headers), time.monotonic() - started

    status, headers, latency = run_async(main(), timeout=30)
    assert (status, headers["X-Gwsim-Provider"], headers["X-Gwsim-Attempts"]) == (200, "p2", "4")
    sim = Replication(sc, 0, 1).run().records
    assert list(zip(sim.outcome, sim.provider, sim.attempts)) == [("ok", "p2", 4)]
    predicted = float(sim.latency_s.iloc[0])  # 3 x 50 ms + 2 x 1 s + 10 ms
    assert predicted == pytest.approx(2.16)
    assert latency == pytest.approx(predicted, abs=0.05)
