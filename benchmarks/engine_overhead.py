"""Gateway-added latency of the real engine: end-to-end minus upstream time, at 200 req/s
with instant upstreams.

The emulators (every service time zero) and the gateway run as their own processes, as
in ``gwsim measure``; this script is the client: an open loop at a constant rate over
keep-alive connections.  For every reply it takes the client-measured latency and
subtracts the upstream time the gateway reports in ``Server-Timing`` (the AI-service and
provider exchanges, Redis and embedding calls).  What is left is what the gateway adds:
the aiohttp server, the flow, pool bookkeeping, JSON, plus the loopback hops.  It also
prints the in-gateway share (the ``total`` entry minus upstream time).

Targets: P50 <= 1 ms, P99 <= 5 ms.  Printed, never asserted.

    python benchmarks/engine_overhead.py [--rate 200] [--duration 10] [--semantic-cache]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from real_engine.clock import sleep_until_monotonic
from real_engine.measure import ChildProcess, check_redis, wait_ready
from real_engine.settings import redis_url

UPSTREAM_STAGES = (
    "cache", "embedding", "ai_queue", "ai_service", "provider_queue", "provider", "prompt_cache", "store",
)

SCENARIO = """
[run]
name = "engine-overhead"
duration = "{duration}s"

[workload]
arrivals = {{process = "constant", rate = "{rate}/s"}}
mix = {{select = 0.5, chat = 0.5}}

[endpoints.select]
kind = "select_model"
classes = [{{name = "s1"}}, {{name = "s2"}}]

[endpoints.chat]
kind = "chat_completions"
classes = [{{name = "c1"}}]

[model_selection.semantic_cache]
enabled = {semantic_cache}
scan_on_miss = false

[model_selection.ai_client.pool]
max_idle_per_host = 100

[providers.p1]
latency = {{model = "plain", time = {{dist = "deterministic", value = "0ms"}}}}

[providers.p2]
latency = {{model = "plain", time = {{dist = "deterministic", value = "0ms"}}}}
"""


def parse_timing(value: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in value.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name and dur:
            out[name] = float(dur) / 1e3
    return out


async def drive(url: str, rate: float, duration: float) -> list[tuple[str, int, float, dict[str, float]]]:
    results: list[tuple[str, int, float, dict[str, float]]] = []
    paths = {"select": ("/v1/select-model", "s1"), "chat": ("/v1/chat/completions", "c1")}
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int, endpoint: str) -> None:
            path, cls = paths[endpoint]
            # unique prompt: no semantic-cache hits, every request goes through the AI service
            body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": f"q #{i}"}], "max_tokens": 16})
            headers = {"X-Gwsim-Request-Id": str(i), "X-Gwsim-Class": cls, "Content-Type": "application/json"}
            started = time.perf_counter()
            async with session.post(url + path, data=body, headers=headers) as r:
                await r.read()
                latency = time.perf_counter() - started
                results.append((endpoint, r.status, latency, parse_timing(r.headers.get("Server-Timing", ""))))

        # warm-up: open the keep-alive connections on both hops before measuring
        await asyncio.gather(*(one(-1 - k, "select" if k % 2 else "chat") for k in range(8)))
        results.clear()
        n = int(rate * duration)
        start = time.monotonic() + 0.1
        tasks = []
        for i in range(n):
            await sleep_until_monotonic(start + i / rate)
            tasks.append(asyncio.ensure_future(one(i, "select" if i % 2 else "chat")))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    return results


def report(results, rate: float, duration: float) -> None:
    ok = [r for r in results if r[1] == 200]
    print(f"engine overhead: {len(results)} requests at {rate:g} req/s for {duration:g}s, {len(ok)} ok")
    if not ok:
        return

    def line(label: str, values: np.ndarray) -> None:
        p50, p99 = np.percentile(values * 1e3, [50, 99])
        print(f"  {label:<46} P50 {p50:7.3f} ms   P99 {p99:7.3f} ms   max {values.max() * 1e3:7.3f} ms")

    for scope in ("all", "select", "chat"):
        rows = [r for r in ok if scope == "all" or r[0] == scope]
        e2e = np.array([r[2] for r in rows])
        upstream = np.array([sum(r[3].get(s, 0.0) for s in UPSTREAM_STAGES) for r in rows])
        total = np.array([r[3].get("total", np.nan) for r in rows])
        print(f" {scope}:")
        line("end-to-end (client)", e2e)
        line("upstream time (reported by the gateway)", upstream)
        line("gateway-added = end-to-end - upstream", e2e - upstream)
        if np.isfinite(total).all():
            line("in-gateway = handler total - upstream", total - upstream)
    print("  targets: gateway-added P50 <= 1 ms, P99 <= 5 ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--semantic-cache", action="store_true", help="Keep the semantic cache on (an exact GET per request).")
    ap.add_argument("--redis-url", default=redis_url(), help="Redis server [default: $REDIS_URL, else the local one].")
    args = ap.parse_args(argv)
    check_redis(args.redis_url)
    with tempfile.TemporaryDirectory(prefix="gwsim-overhead-") as tmp:
        wd = Path(tmp)
        scenario = wd / "overhead.toml"
        scenario.write_text(
            SCENARIO.format(rate=args.rate, duration=args.duration, semantic_cache=str(args.semantic_cache).lower())
        )
        t0 = time.monotonic() + 1.0
        common = ["--scenario", str(scenario), "--t0", repr(t0), "--seed", "1"]
        emu_ready, gw_ready = wd / "emulators.json", wd / "gateway.json"
        py = sys.executable
        procs = [
            ChildProcess("emulators", [py, "-m", "real_engine.emulators", *common, "--ready-file", str(emu_ready)], wd),
            ChildProcess(
                "gateway",
                [py, "-m", "real_engine.gateway", *common, "--upstreams", str(emu_ready), "--ready-file", str(gw_ready),
                 "--redis-url", args.redis_url],
                wd,
            ),
        ]
        try:
            url = wait_ready(gw_ready, procs, time.monotonic() + 30)["url"]
            try:
                import uvloop

                results = uvloop.run(drive(url, args.rate, args.duration))
            except ImportError:
                results = asyncio.run(drive(url, args.rate, args.duration))
        finally:
            for p in reversed(procs):
                p.stop()
    report(results, args.rate, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
