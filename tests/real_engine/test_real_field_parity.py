"""Scenario fields that now mean the same thing in the real engine as in the simulator
(issue 13): a provider's ``hang_probability``, a class's ``similarity_hit`` and
``similar_entry_at``, ``redis.op_time`` and the per-round-trip ``redis.op_timeout``.
Real sockets, real emulators, the session's real Redis (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import aiohttp
import pytest

from real_engine.settings import redis_url

pytestmark = pytest.mark.real

REDIS = redis_url()  # the session's Redis (tests/conftest.py)
DET = lambda v: {"dist": "deterministic", "value": v}  # noqa: E731


def _prefix() -> str:
    return f"gwsim-test:{uuid.uuid4().hex[:10]}:"


# --------------------------------------------------------------------------- hang_probability


def test_provider_hang_probability_leaves_that_share_of_calls_unanswered(run_async, make_scenario, emulator_set):
    """200 calls at once to a provider with hang_probability 0.3: the calls the client gives up
    on are the hung ones, and their share is 0.3 within four standard errors."""
    n, p = 200, 0.3
    scenario = make_scenario({"providers": {"p2": {"hang_probability": p}}})

    async def one(session, url):
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"X-Gwsim-Endpoint": "chat", "X-Gwsim-Class": "c1"}
        try:
            async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
                await r.read()
                return r.status
        except asyncio.TimeoutError:
            return "hung"

    async def go():
        async with emulator_set(scenario) as emu:
            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=1.0)) as s:
                results = await asyncio.gather(*(one(s, emu.urls["providers"]["p2"]) for _ in range(n)))
            await asyncio.sleep(0.1)  # the emulator notices the clients leaving
            return results, emu.stats()["providers"]["p2"]

    results, stats = run_async(go(), timeout=20)
    hung = results.count("hung")
    assert results.count(200) == n - hung  # every other call answered normally
    assert stats["hung"] == hung
    assert abs(hung / n - p) < 4 * math.sqrt(p * (1 - p) / n), hung
    assert stats["in_flight"] == 0  # the hung handlers ended when their clients went away


# --------------------------------------------------------------------------- redis.op_time and op_timeout


async def _select(session, url: str, prompt: str, cls: str, rid: int):
    body = {"model": "auto", "messages": [{"role": "user", "content": prompt}]}
    headers = {"X-Gwsim-Request-Id": str(rid), "X-Gwsim-Class": cls}
    async with session.post(url + "/v1/select-model", json=body, headers=headers) as r:
        await r.read()
        stages = {}
        for part in r.headers.get("Server-Timing", "").split(","):
            key, _, dur = part.strip().partition(";dur=")
            if key:
                stages[key] = float(dur) / 1e3
        return r.status, dict(r.headers), stages


def _gateway_run(make_scenario, emulator_set, run_async, data: dict, requests: list[tuple[str, str]]):
    """Start emulators and the gateway on ``data``; send the (prompt, class) select-model
    requests one after the other; return the replies and the gateway's stats."""
    from real_engine.gateway import start_gateway

    sc = make_scenario(data)

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS, key_prefix=_prefix()) as gw:
                replies = [await _select(s, gw.url, prompt, cls, i + 1) for i, (prompt, cls) in enumerate(requests)]
                return replies, gw.stats(), gw

    replies, stats, gw = run_async(main(), timeout=30)
    return replies, stats, gw


def test_redis_op_time_is_injected_into_each_round_trip(make_scenario, emulator_set, run_async):
    """op_time 8 ms: an exact GET takes 8 ms plus loopback; a miss's scan over 30 entries pays
    it once per round trip (30 GETs and the SCAN calls), so at least 33 x 8 ms."""
    data = {
        "model_selection": {"semantic_cache": {"initial_entries": 30, "scan_batch": 10, "write_on_select": False}},
        "redis": {"op_time": DET("8ms")},
    }
    (hit, miss), stats, gw = _gateway_run(
        make_scenario, emulator_set, run_async, data, [("gwsim:select:s1", "s1"), ("new prompt #2", "s1")]
    )
    assert hit[1]["X-Gwsim-Cache-Hit"] == "1"
    assert 0.008 <= hit[2]["cache"] < 0.008 + 0.02
    trips = 1 + stats["semantic_scan"]["scan_calls"] + stats["semantic_scan"]["keys_read"]
    assert stats["semantic_scan"]["keys_read"] == 30 and trips >= 34
    assert miss[1]["X-Gwsim-Cache-Hit"] == "0"
    assert trips * 0.008 <= miss[2]["cache"] < trips * 0.008 + 0.25  # GET + scan, every round trip held back
    delay = gw.core.caches.op_delay
    assert delay.count == trips + 1 and delay.total_s == pytest.approx((trips + 1) * 0.008)  # and the hit's GET


def test_redis_op_timeout_bounds_each_round_trip_not_the_scan(make_scenario, emulator_set, run_async):
    """Each round trip takes 8 ms against a 40 ms op_timeout: a scan of 30 entries (over
    260 ms in all) completes; at 60 ms a round trip the first one times out at 40 ms."""
    base = {"model_selection": {"semantic_cache": {"initial_entries": 30, "scan_batch": 10, "write_on_select": False}}}
    fine = {**base, "redis": {"op_time": DET("8ms"), "op_timeout": "40ms"}}
    (miss,), stats, _ = _gateway_run(make_scenario, emulator_set, run_async, fine, [("new prompt #1", "s1")])
    assert stats["semantic_scan"]["keys_read"] == 30 and miss[2]["cache"] > 0.26
    assert stats["caches"]["semantic"]["timeout"] == 0 and stats["caches"]["semantic"]["miss"] == 1
    slow = {**base, "redis": {"op_time": DET("60ms"), "op_timeout": "40ms"}}
    (miss,), stats, _ = _gateway_run(make_scenario, emulator_set, run_async, slow, [("new prompt #1", "s1")])
    assert stats["semantic_scan"]["keys_read"] == 0  # the exact GET and the first SCAN call time out
    assert stats["caches"]["semantic"]["timeout"] == 2
    assert 0.08 <= miss[2]["cache"] < 0.08 + 0.05


# --------------------------------------------------------------------------- the cache's entries


def test_a_full_semantic_cache_evicts_the_oldest_stored_entry(make_scenario, emulator_set, run_async):
    """The simulator's test of the same shape (tests/sim/test_sim_field_parity.py): 3 entries at the
    start (two canonical, one filler), a cap of 5, six new prompts stored: two added, four
    evicting the oldest stored one with a real DEL; Redis holds 5 entries, the last two prompts'."""
    import redis.asyncio as aioredis

    from real_engine.gateway import start_gateway

    sc = make_scenario({
        "model_selection": {"semantic_cache": {"initial_entries": 3, "max_entries": 5, "scan_on_miss": False,
                                               "write_on_select": True}},
    })
    p = _prefix()

    async def main():
        admin = aioredis.Redis.from_url(REDIS)
        try:
            async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
                async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS, key_prefix=p) as gw:
                    for i in range(6):
                        await _select(s, gw.url, f"new prompt #{i}", "s1", i + 1)
                    keys = sorted([k.decode() async for k in admin.scan_iter(match=p + "sem:*", count=1000)])
                    return keys, gw.stats(), gw.core.caches.policy
        finally:
            await admin.aclose()

    keys, stats, policy = run_async(main(), timeout=20)
    stored = [k.removeprefix(p + "sem:") for k in keys if "new prompt" in k]
    assert len(keys) == 5 and stored == ["new prompt #4", "new prompt #5"]
    assert stats["cache_entries"] == 5 and stats["caches"]["store"]["evicted"] == 4
    assert (policy.adds, policy.evictions) == (2, 4)


# --------------------------------------------------------------------------- similarity_hit, similar_entry_at


def test_similarity_hits_at_the_class_rate_and_the_scan_stops_at_the_first_match(make_scenario, emulator_set, run_async):
    """100 entries, class s1 with similarity_hit 0.5 and similar_entry_at 0.3: about half of
    80 new prompts find a similar entry, each after reading about 30 keys (ceil(0.3 x 100)) as
    the simulator's scan_round_trips counts them; the others read all 100.  Class s2 (no
    similarity) never hits."""
    from real_engine.gateway import start_gateway

    n, p, at, entries = 80, 0.5, 0.3, 100
    sc = make_scenario({
        "endpoints": {"select": {"kind": "select_model", "classes": [
            {"name": "s1", "similarity_hit": p, "similar_entry_at": at}, {"name": "s2"}]}},
        "model_selection": {"semantic_cache": {"initial_entries": entries, "scan_batch": 10, "write_on_select": False}},
    })

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS, key_prefix=_prefix()) as gw:
                sem = asyncio.Semaphore(4)

                async def one(i: int, cls: str):
                    async with sem:
                        return await _select(s, gw.url, f"gwsim:select:{cls} #{i}", cls, i)

                s1 = await asyncio.gather(*(one(i, "s1") for i in range(1, n + 1)))
                read_s1 = gw.core.caches.scanned_keys
                s2 = await asyncio.gather(*(one(i, "s2") for i in range(n + 1, n + 6)))
                return s1, s2, read_s1, gw.stats(), gw.core.caches.similar_at, emu.stats()["embedding"]

    s1, s2, read_s1, stats, placed, emb = run_async(main(), timeout=40)
    hits = sum(r[1]["X-Gwsim-Cache-Hit"] == "1" for r in s1)
    assert abs(hits / n - p) < 4 * math.sqrt(p * (1 - p) / n), hits
    assert emb["similar"] == hits  # every similar prompt found its entry, no other did
    # The wanted spot may hold a class's own (exact-match) entry, which cannot move: the similar
    # entry then takes the nearest free spot, one or two keys away (2 own keys in 100).
    ((prompt, (position, of)),) = placed.items()
    assert (prompt, of) == ("gwsim:select:s1", entries)
    assert abs(position - math.ceil(at * entries)) <= 2, position
    assert read_s1 == hits * position + (n - hits) * entries
    assert all(r[1]["X-Gwsim-Cache-Hit"] == "0" for r in s2)
    assert stats["semantic_scan"]["keys_read"] == read_s1 + 5 * entries


def test_similar_prompts_are_close_to_their_entry_and_rarely_to_each_other():
    """The embedding emulator's similar vectors: each above the gateway's 0.9 with the entry
    it is close to; with each other about 0.81, at or above 0.9 in under 1 pair in 10,000
    (so prompts stored during a run seldom move the first match forward)."""
    import numpy as np

    from real_engine.emulators.embedding import embed, similar_vector
    from real_engine.gateway.caches import SIMILARITY_THRESHOLD

    target = embed("gwsim:select:s1")
    rng = np.random.default_rng(7)
    vecs = np.array([similar_vector(target, rng) for _ in range(1000)])
    assert (vecs @ np.array(target) >= SIMILARITY_THRESHOLD).all()
    pairs = (vecs @ vecs.T)[np.triu_indices(len(vecs), 1)]
    assert abs(pairs.mean() - 0.81) < 0.005
    assert (pairs >= SIMILARITY_THRESHOLD).mean() < 1e-4
