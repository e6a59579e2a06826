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
