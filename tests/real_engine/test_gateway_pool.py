"""The gateway's HTTP pool to the AI service, watched from a stub upstream that records the
client port of every request: Go's churn above max_idle_per_host, none below it, waiting
at max_conns_per_host, TLS, and cancellation returning connections to the policy."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from real_engine.gateway import start_gateway
from real_engine.settings import redis_url
from real_engine.gateway.http_pool import HttpPool
from real_engine.tls import make_self_signed
from simulator.scenario import ConnectionPool

pytestmark = pytest.mark.real

REDIS = redis_url()  # the session's Redis (tests/conftest.py)


def recording_handler(ports: list[int], delay_s: float):
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        ports.append(request.transport.get_extra_info("peername")[1])
        await asyncio.sleep(delay_s)
        return web.json_response({"provider": "p1", "model": "p1-model", "alternatives": ["p2"]})

    return handler


def select_scenario(make_scenario, pool: dict):
    return make_scenario(
        {"model_selection": {"semantic_cache": {"enabled": False}, "ai_client": {"pool": pool}}}
    )


async def wave(session, url: str, n: int, start_id: int) -> list[aiohttp.ClientResponse]:
    body = {"model": "auto", "messages": [{"role": "user", "content": "q"}]}

    async def one(i: int):
        async with session.post(url + "/v1/select-model", json=body, headers={"X-Gwsim-Request-Id": str(i), "X-Gwsim-Class": "s1"}) as r:
            await r.read()
            return r.status, r.headers.get("Server-Timing", "")

    return await asyncio.gather(*(one(start_id + i) for i in range(n)))


def test_churn_when_concurrency_exceeds_idle_limit(make_scenario, echo_server, run_async):
    sc = select_scenario(make_scenario, {"max_idle_per_host": 2})

    async def main():
        ports: list[int] = []
        async with echo_server(recording_handler(ports, 0.05)) as up, aiohttp.ClientSession() as s:
            urls = {"ai_service": up, "embedding": up, "providers": {"p1": up, "p2": up}}
            async with await start_gateway(sc, urls, time.monotonic(), 1, REDIS) as gw:
                first = await wave(s, gw.url, 6, 0)
                after_first = dict(gw.stats()["pools"]["ai_service"])
                second = await wave(s, gw.url, 6, 10)
                after_second = dict(gw.stats()["pools"]["ai_service"])
        return first + second, ports, after_first, after_second

    replies, ports, after_first, after_second = run_async(main())
    assert all(status == 200 for status, _ in replies)
    assert after_first["dials"] == 6 and after_first["churn_closes"] == 4 and after_first["idle"] == 2
    # the second wave reuses the 2 kept connections and dials 4 new ones
    assert after_second["dials"] == 10 and after_second["churn_closes"] == 8 and after_second["reuses"] == 2
    assert len(set(ports)) == 10  # really new TCP connections, seen by the upstream
    assert any("ai_connect" in timing for _, timing in replies)


def test_no_churn_within_idle_limit(make_scenario, echo_server, run_async):
    sc = select_scenario(make_scenario, {"max_idle_per_host": 2})

    async def main():
        ports: list[int] = []
        async with echo_server(recording_handler(ports, 0.02)) as up, aiohttp.ClientSession() as s:
            urls = {"ai_service": up, "embedding": up, "providers": {"p1": up, "p2": up}}
            async with await start_gateway(sc, urls, time.monotonic(), 1, REDIS) as gw:
                for k in range(4):
                    await wave(s, gw.url, 2, 10 * k)
                return ports, gw.stats()["pools"]["ai_service"]

    ports, pool = run_async(main())
    assert pool["dials"] == 2 and pool["churn_closes"] == 0 and pool["reuses"] == 6
    assert len(set(ports)) == 2 and len(ports) == 8


def test_max_conns_per_host_makes_callers_wait(make_scenario, echo_server, run_async):
    sc = select_scenario(make_scenario, {"max_idle_per_host": 2, "max_conns_per_host": 2})

    async def main():
        ports: list[int] = []
        async with echo_server(recording_handler(ports, 0.05)) as up, aiohttp.ClientSession() as s:
            urls = {"ai_service": up, "embedding": up, "providers": {"p1": up, "p2": up}}
            async with await start_gateway(sc, urls, time.monotonic(), 1, REDIS) as gw:
                replies = await wave(s, gw.url, 6, 0)
                return replies, ports, gw.stats()["pools"]["ai_service"]

    replies, ports, pool = run_async(main())
    assert all(status == 200 for status, _ in replies)
    assert pool["dials"] == 2 and len(set(ports)) == 2
    assert sum("ai_pool_wait" in timing for _, timing in replies) >= 4  # 4 of 6 queued for a connection


def test_tls_pool_handshakes_once_per_connection(run_async):
    async def main():
        server_ctx, client_ctx = make_self_signed()
        seen: list[tuple[int, bool]] = []

        async def handler(request: web.Request) -> web.StreamResponse:
            await request.read()
            seen.append((request.transport.get_extra_info("peername")[1], request.secure))
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/x", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
            await site.start()
            port = runner.addresses[0][1]
            pool = HttpPool("tls", f"http://127.0.0.1:{port}", ConnectionPool(max_idle_per_host=2, tls=True),
                            np.random.default_rng(0), ssl_context=client_ctx)
            try:
                for _ in range(3):
                    resp = await pool.request("POST", "/x", b"{}")
                    assert resp.status == 200
                stats = pool.stats()
            finally:
                await pool.close()
        finally:
            await runner.cleanup()
        return seen, stats

    seen, stats = run_async(main())
    assert all(secure for _, secure in seen)
    assert len({p for p, _ in seen}) == 1 and stats["dials"] == 1 and stats["reuses"] == 2


def test_cancelled_waiters_and_calls_give_back_their_slots(echo_server, run_async):
    async def main():
        async def slow(request: web.Request) -> web.StreamResponse:
            await request.read()
            await asyncio.sleep(0.3)
            return web.json_response({"ok": True})

        async with echo_server(slow) as up:
            pool = HttpPool("c", up, ConnectionPool(max_idle_per_host=1, max_conns_per_host=1), np.random.default_rng(0))
            try:
                calls = [asyncio.create_task(pool.request("POST", "/x", b"{}")) for _ in range(3)]
                await asyncio.sleep(0.05)  # one call on the wire, two waiting
                assert pool.policy.active == 1 and pool.policy.queued == 2
                for t in calls:
                    t.cancel()
                await asyncio.gather(*calls, return_exceptions=True)
                state = (pool.policy.active, pool.policy.queued)
                ok = await pool.request("POST", "/x", b"{}")  # the slot is usable again
            finally:
                await pool.close()
        return state, ok.status, pool.stats()

    state, status, stats = run_async(main())
    assert state == (0, 0)
    assert status == 200
    # the cancelled call's connection was closed, not reused; the slots it freed went to the
    # (cancelled) waiters, which handed them on: two real dials in all
    assert stats["dials"] - stats["dial_failures"] == 2
    assert stats["reuses"] == 0
