"""``gwsim calibrate profile``: what this machine adds to every request, measured.

The real engine pays overheads the scenario does not state: the gateway's own Python CPU per
request and per upstream call, the loopback round trip through an aiohttp client and server
(emulator overhead included), a TCP connect, a TLS handshake, a Redis round trip.  Small
benchmarks measure each one (medians, so a busy neighbour process moves them little) and
the result is written as a profile TOML that scenarios name with ``profile = "..."``.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


async def _loopback_benchmarks(n: int, redis_url: str) -> dict[str, float]:
    import aiohttp
    from aiohttp import web

    from real_engine.tls import make_self_signed

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"provider": "p", "model": "m", "alternatives": []})

    app = web.Application()
    app.router.add_post("/predict", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - port 0 chosen by the kernel
    out: dict[str, float] = {}
    try:
        # HTTP round trip over a kept-alive connection: the per-hop cost outside the gateway's CPU.
        body = {"prompt": "x" * 120, "endpoint": "e", "class": "c"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
            for _ in range(20):  # warm the connection and the code paths
                async with s.post(f"http://127.0.0.1:{port}/predict", json=body) as r:
                    await r.read()
            rtts = []
            for _ in range(n):
                t = time.perf_counter()
                async with s.post(f"http://127.0.0.1:{port}/predict", json=body) as r:
                    await r.read()
                rtts.append(time.perf_counter() - t)
        out["hop_rtt"] = statistics.median(rtts)
        # TCP connect on loopback.
        dials = []
        for _ in range(n):
            t = time.perf_counter()
            _, w = await asyncio.open_connection("127.0.0.1", port)
            dials.append(time.perf_counter() - t)
            w.close()
            await w.wait_closed()
        out["dial_time"] = statistics.median(dials)
    finally:
        await runner.cleanup()

    # TLS handshake: a TLS server on loopback, connect + handshake minus a plain connect.
    server_ctx, client_ctx = make_self_signed()

    async def tls_handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(tls_handle, "127.0.0.1", 0, ssl=server_ctx)
    tport = server.sockets[0].getsockname()[1]
    try:
        hs = []
        for _ in range(max(10, n // 4)):
            t = time.perf_counter()
            _, w = await asyncio.open_connection("127.0.0.1", tport, ssl=client_ctx, server_hostname="localhost")
            hs.append(time.perf_counter() - t)
            w.close()
            try:
                await w.wait_closed()
            except (ConnectionError, OSError):
                pass
        out["tls_handshake_time"] = max(statistics.median(hs) - out["dial_time"], 0.0)
    finally:
        server.close()
        await server.wait_closed()

    # Redis GET round trip.
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        await client.set("gwsim:calibrate:probe", "1")
        ops = []
        for _ in range(n):
            t = time.perf_counter()
            await client.get("gwsim:calibrate:probe")
            ops.append(time.perf_counter() - t)
        out["redis_op_time"] = statistics.median(ops)
    finally:
        await client.aclose()
    return out


_NULL_SCENARIO = """
[run]
name = "null-{kind}"
duration = "{duration}s"
warmup = "1s"
drain = "5s"
seed = 3

[workload]
mode = "open"
arrivals = {{ process = "constant", rate = "{rate}/s" }}
mix = {{ ep = 1.0 }}

[endpoints.ep]
kind = "chat_completions"
model_selection = {selection}
classes = [{{ name = "c", provider = "p" }}]

[model_selection]
candidates = ["p"]
semantic_cache = {{ enabled = false }}

[providers.p]
latency = {{ model = "plain", time = {{ dist = "deterministic", value = 0 }} }}

[prompt_cache]
enabled = false

[fallback]
mode = "none"
max_attempts = 1
"""


def _median_latency(kind: str, selection: bool, duration_s: float, rate: float, redis_url: str) -> float:
    from real_engine.measure import measure

    with tempfile.TemporaryDirectory(prefix="gwsim-profile-") as d:
        path = Path(d) / f"null_{kind}.toml"
        path.write_text(_NULL_SCENARIO.format(kind=kind, duration=duration_s, rate=rate, selection=str(selection).lower()))
        result = measure(str(path), [], duration_s=duration_s, redis_url=redis_url)
        df = result.frame()
        ok = df.loc[(df["outcome"] == "ok") & (df["arrived_at"] >= 1.0)]
        if ok.empty:
            raise RuntimeError(f"profile benchmark {kind}: no successful requests")
        return float(ok["latency_s"].median())


def measure_profile(*, n: int = 200, duration_s: float = 8.0, rate: float = 20.0, redis_url: str = "redis://127.0.0.1:6379/0") -> dict[str, float]:
    """All machine parameters, in seconds."""
    out = asyncio.run(_loopback_benchmarks(n, redis_url))
    # Two real-engine runs on zero-time upstreams: one hop (provider only) and two hops (AI
    # service + provider).  Their difference is one hop; the rest is per-request overhead
    # (gateway parse/reply, load generator client, the response's trip back).
    one = _median_latency("one_hop", False, duration_s, rate, redis_url)
    two = _median_latency("two_hops", True, duration_s, rate, redis_url)
    out["gateway_cpu_per_hop"] = max(two - one - out["hop_rtt"], 0.0)
    out["gateway_cpu_per_request"] = max(one - out["gateway_cpu_per_hop"] - out["hop_rtt"], 0.0)
    out["_one_hop_latency"] = one
    out["_two_hop_latency"] = two
    return out


def profile_toml(values: dict[str, float], note: str = "") -> str:
    from simulator.scenario import PROFILE_KEYS

    lines = [
        "# Machine profile written by `gwsim calibrate profile` " + time.strftime("%Y-%m-%d %H:%M:%S"),
        "# Medians of small benchmarks on this machine; scenarios refer to it with profile = \"...\".",
    ]
    if note:
        lines.append(f"# {note}")
    for key in ("_one_hop_latency", "_two_hop_latency"):
        if key in values:
            lines.append(f"# {key.strip('_')}: {values[key] * 1000:.3f} ms (real engine, zero-time upstreams)")
    lines.append("")
    lines.append("[machine]")
    for key in PROFILE_KEYS:
        if key in values:
            lines.append(f'{key} = "{values[key] * 1e6:.0f}us"')
    return "\n".join(lines) + "\n"
