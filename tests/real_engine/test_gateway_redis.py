"""The gateway's Redis caches against the session's real Redis (tests/conftest.py): a server stall
(``CLIENT PAUSE`` from the test) becomes cache timeouts counted as misses with latency
bounded by the op timeout; a miss really SCANs and GETs every entry; stores and the
prompt cache round-trip; every key lives under the run's prefix and is gone at shutdown."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest
import redis.asyncio as aioredis

from real_engine.gateway import start_gateway
from real_engine.settings import redis_url

pytestmark = pytest.mark.real

REDIS = redis_url()  # the session's Redis (tests/conftest.py)


async def post(session, url: str, path: str, prompt: str, cls: str, rid: int, nonce: str | None = None):
    body = {"model": "auto", "messages": [{"role": "user", "content": prompt}]}
    headers = {"X-Gwsim-Request-Id": str(rid), "X-Gwsim-Class": cls}
    if nonce is not None:
        headers["X-Gwsim-Prompt-Nonce"] = nonce
    started = time.perf_counter()
    async with session.post(url + path, json=body, headers=headers) as r:
        await r.read()
        stages = {}
        for part in r.headers.get("Server-Timing", "").split(","):
            key, _, dur = part.strip().partition(";dur=")
            if key:
                stages[key] = float(dur) / 1e3
        return r.status, dict(r.headers), stages, time.perf_counter() - started


def prefix() -> str:
    return f"gwsim-test:{uuid.uuid4().hex[:10]}:"


async def keys_under(p: str) -> int:
    r = aioredis.Redis.from_url(REDIS)
    try:
        return len([k async for k in r.scan_iter(match=p + "*", count=1000)])
    finally:
        await r.aclose()


def test_redis_stall_turns_into_bounded_cache_timeouts(make_scenario, emulator_set, run_async):
    sc = make_scenario(
        {
            "model_selection": {"semantic_cache": {"scan_on_miss": False}, "fallback_choice": {"provider": "p1"}},
            "redis": {"op_timeout": "100ms", "pool_size": 4},
        }
    )
    p = prefix()

    async def main():
        admin = aioredis.Redis.from_url(REDIS)
        try:
            async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
                async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS, key_prefix=p) as gw:
                    warm = await post(s, gw.url, "/v1/select-model", "gwsim:select:s1", "s1", 1)
                    await admin.execute_command("CLIENT", "PAUSE", 800, "ALL")
                    try:
                        stalled = await post(s, gw.url, "/v1/select-model", "gwsim:select:s1", "s1", 2)
                    finally:
                        await admin.execute_command("CLIENT", "UNPAUSE")
                    recovered = await post(s, gw.url, "/v1/select-model", "gwsim:select:s1", "s1", 3)
                    counts = gw.stats()["caches"]["semantic"]
                    during = await keys_under(p)
            after = await keys_under(p)
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
            await admin.aclose()
        return warm, stalled, recovered, counts, during, after

    warm, stalled, recovered, counts, during, after = run_async(main())
    assert warm[1]["X-Gwsim-Cache-Hit"] == "1"
    status, headers, stages, latency = stalled
    assert status == 200 and headers["X-Gwsim-Outcome"] == "ok"
    assert headers["X-Gwsim-Cache-Hit"] == "0"  # the timeout counted as a miss ...
    assert headers["X-Gwsim-Provider"] == "p1"  # ... and the AI service answered instead
    assert 0.09 <= stages["cache"] < 0.25  # bounded by the 100 ms op timeout, not the 800 ms pause
    assert latency < 0.5
    assert recovered[1]["X-Gwsim-Cache-Hit"] == "1"
    assert counts["timeout"] == 1 and counts["hit"] == 2
    assert during >= 2 and after == 0  # canonical entries under the prefix, deleted at shutdown


def test_miss_scans_every_entry(make_scenario, emulator_set, run_async):
    sc = make_scenario({"model_selection": {"semantic_cache": {"initial_entries": 30, "scan_batch": 10}}})
    p = prefix()

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS, key_prefix=p) as gw:
                miss = await post(s, gw.url, "/v1/select-model", "something new #7", "s1", 7)
                return miss, gw.stats()

    miss, stats = run_async(main())
    status, headers, stages, _ = miss
    assert status == 200 and headers["X-Gwsim-Cache-Hit"] == "0"
    assert stats["cache_entries"] == 30
    assert stats["semantic_scan"]["keys_read"] == 30  # one GET per entry
    assert stats["semantic_scan"]["scan_calls"] >= 3  # SCAN COUNT 10 over 30 keys
    assert stages["embedding"] > 0 and stages["cache"] > 0
    assert stats["caches"]["semantic"]["miss"] == 1


def test_store_on_success_and_prompt_cache(make_scenario, emulator_set, run_async):
    sc = make_scenario(
        {
            "endpoints": {
                "chat": {
                    "kind": "chat_completions",
                    "store_selection_on_success": True,
                    "classes": [{"name": "c1", "prompt_cache_opt_in": True}],
                }
            },
            "model_selection": {"semantic_cache": {"scan_on_miss": False}},
        }
    )

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS, key_prefix=prefix()) as gw:
                first = await post(s, gw.url, "/v1/chat/completions", "fresh question #1", "c1", 1, nonce="n1")
                again = await post(s, gw.url, "/v1/chat/completions", "fresh question #1", "c1", 1, nonce="n1")
                other_nonce = await post(s, gw.url, "/v1/chat/completions", "fresh question #1", "c1", 1, nonce="n2")
                canonical = await post(s, gw.url, "/v1/chat/completions", "gwsim:chat:c1", "c1", 4, nonce="")
                return first, again, other_nonce, canonical, emu.providers["p1"].stats.requests + emu.providers["p2"].stats.requests

    first, again, other_nonce, canonical, provider_calls = run_async(main())
    assert first[1]["X-Gwsim-Cache-Hit"] == "0" and first[1]["X-Gwsim-Prompt-Cache-Hit"] == "0"
    assert first[2]["store"] > 0  # embedding + SET before replying
    assert again[1]["X-Gwsim-Cache-Hit"] == "1"  # the stored selection
    assert again[1]["X-Gwsim-Prompt-Cache-Hit"] == "1"  # the stored completion
    assert other_nonce[1]["X-Gwsim-Prompt-Cache-Hit"] == "0"
    assert canonical[1]["X-Gwsim-Prompt-Cache-Hit"] == "1"  # seeded at start-up
    assert provider_calls == 2  # first and other_nonce only


def test_scenario_stall_fault_pauses_redis_on_schedule(make_scenario, emulator_set, run_async):
    sc = make_scenario(
        {
            "model_selection": {"semantic_cache": {"scan_on_miss": False}, "fallback_choice": {"provider": "p1"}},
            "redis": {"op_timeout": "80ms", "faults": [{"kind": "stall", "start": "300ms", "end": "700ms"}]},
        }
    )

    async def main():
        t0 = time.monotonic()
        async with emulator_set(sc, t0=t0) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, t0, 1, REDIS, key_prefix=prefix()) as gw:
                before = await post(s, gw.url, "/v1/select-model", "gwsim:select:s1", "s1", 1)
                await asyncio.sleep(max(0.0, t0 + 0.4 - time.monotonic()))
                during = await post(s, gw.url, "/v1/select-model", "gwsim:select:s1", "s1", 2)
                await asyncio.sleep(max(0.0, t0 + 0.8 - time.monotonic()))
                after = await post(s, gw.url, "/v1/select-model", "gwsim:select:s1", "s1", 3)
                return before, during, after

    before, during, after = run_async(main())
    assert before[1]["X-Gwsim-Cache-Hit"] == "1"
    assert during[1]["X-Gwsim-Cache-Hit"] == "0" and 0.07 <= during[2]["cache"] < 0.2
    assert after[1]["X-Gwsim-Cache-Hit"] == "1"


def test_scenario_slow_fault_stretches_redis_round_trips_on_schedule(make_scenario, emulator_set, run_async):
    """A 'slow' window with latency_factor 40: a cache GET's round trip through the link takes
    40 times what Redis took, only inside the window."""
    sc = make_scenario(
        {
            "model_selection": {"semantic_cache": {"scan_on_miss": False}, "fallback_choice": {"provider": "p1"}},
            "redis": {"faults": [{"kind": "slow", "start": "1.5s", "end": "3s", "latency_factor": 40}]},
        }
    )

    async def burst(s, url: str, first: int):
        return [await post(s, url, "/v1/select-model", "gwsim:select:s1", "s1", first + i) for i in range(5)]

    async def main():
        t0 = time.monotonic()
        async with emulator_set(sc, t0=t0) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, t0, 1, REDIS, key_prefix=prefix()) as gw:
                await post(s, gw.url, "/v1/select-model", "gwsim:select:s1", "s1", 1)  # connections made
                await asyncio.sleep(max(0.0, t0 + 1.6 - time.monotonic()))
                during = await burst(s, gw.url, 10)
                await asyncio.sleep(max(0.0, t0 + 3.1 - time.monotonic()))
                after = await burst(s, gw.url, 20)
                return during, after

    during, after = run_async(main())
    assert all(r[1]["X-Gwsim-Cache-Hit"] == "1" for r in during + after)
    slowed = sorted(r[2]["cache"] for r in during)
    normal = sorted(r[2]["cache"] for r in after)
    # The cache stage is Redis's round trip plus ~0.2 ms of the gateway's own Python, which the
    # fault does not stretch: with a fast Redis (50 us) 40x the trip is ~9-10x the stage.  Without
    # the fault the medians are alike, so 5x still fails a fault that is not applied.
    assert slowed[2] > 5 * normal[2], (slowed, normal)  # medians
    assert slowed[0] > 2e-3, slowed  # even the quickest slowed GET
