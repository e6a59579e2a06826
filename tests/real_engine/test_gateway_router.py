"""The real gateway's chat endpoint behind a [router], against the real emulators: the same walk
through deployments, retries and cooldowns as the simulator's (tests/sim/test_router.py), seen
through HTTP, request by request."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from real_engine.gateway import start_gateway
from real_engine.settings import redis_url
from simulator.engine import Replication

pytestmark = pytest.mark.real

REDIS = redis_url()
FAST = {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "10ms"}}}


def routed(router: dict, providers: dict) -> dict:
    return {
        "run": {"duration": "3s", "drain": "5s", "replications": 1},
        "workload": {"arrivals": {"process": "burst", "size": 1, "every": "1s"}, "mix": {"chat": 1.0, "select": 0.0}},
        "endpoints": {"chat": {"kind": "chat_completions", "model_selection": False,
                               "classes": [{"name": "c1", "model": "main"}]}},
        "providers": providers,
        "router": router,
    }


async def ask(session, url: str, rid: int) -> tuple[int, dict[str, str]]:
    body = {"model": "main", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    async with session.post(url + "/v1/chat/completions", json=body, headers={"X-Gwsim-Request-Id": str(rid), "X-Gwsim-Class": "c1"}) as r:
        await r.read()
        return r.status, dict(r.headers)


def test_least_busy_after_a_failing_deployment_as_litellm_logs_it(make_scenario, emulator_set, run_async):
    # least-busy takes the first of equals: p1, which always answers 503
    sc = make_scenario(routed(
        {"strategy": "least-busy", "num_retries": 2,
         "groups": {"main": {"deployments": [{"provider": "p1"}, {"provider": "p2"}]}}},
        {"p1": {"latency": FAST["latency"], "errors": {"503": 1.0}}, "p2": FAST},
    ))

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:
                replies = []
                for rid in range(3):
                    replies.append(await ask(s, gw.url, rid))
                return replies

    replies = run_async(main(), timeout=30)
    seen = [(status, h["X-Gwsim-Outcome"], h["X-Gwsim-Provider"], h["X-Gwsim-Attempts"]) for status, h in replies]
    # request 0: p1 fails (the request's logged failure: its least-busy count comes back), the
    # retry (0 s: p1 is healthy, the group has two) takes p1 again and fails unlogged (its count
    # stays), the second retry goes to p2; from then on p1 looks busy and p2 takes every request.
    # The real LiteLLM proxy answers this scenario the same way (docs/litellm.md).
    assert seen == [(200, "ok", "p2", "3"), (200, "ok", "p2", "1"), (200, "ok", "p2", "1")]
    # the simulator, given the same requests, walks the same way
    sim = Replication(sc, 0, 1).run().records.sort_values("id")
    assert list(zip(sim.status_code, sim.outcome, sim.provider, sim.attempts)) == [
        (200, "ok", "p2", 3), (200, "ok", "p2", 1), (200, "ok", "p2", 1)]


def test_router_timeout_answers_408(make_scenario, emulator_set, run_async):
    slow = {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "2s"}}}
    sc = make_scenario(routed(
        {"num_retries": 0, "timeout": "300ms", "groups": {"main": {"deployments": [{"provider": "p1"}]}}},
        {"p1": slow, "p2": FAST},
    ))

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:
                started = time.perf_counter()
                status, headers = await ask(s, gw.url, 1)
                return status, headers, time.perf_counter() - started

    status, headers, took = run_async(main(), timeout=30)
    assert (status, headers["X-Gwsim-Outcome"]) == (408, "timeout")
    assert 0.3 <= took < 1.5
