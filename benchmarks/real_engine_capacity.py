"""Real engine capacity: the gateway's highest throughput on one core with instant upstreams,
the gateway-added latency at half of it, and the load generator's highest punctual send rate.

1. Emulators (every service time zero) and the gateway run as their own processes, set up as
   ``benchmarks/engine_overhead.py`` does (its scenario and client are reused).  The gateway
   is pinned to core 0; the emulators and this client to the other cores.  Saturation: a
   closed loop of ``--concurrency`` clients sending back to back for ``--seconds``; the
   completed rate is the throughput, printed with the gateway's CPU use (near 100 % of its
   core means the gateway, not the client or the emulators, is the bottleneck).
2. At half that rate, an open loop (engine_overhead's ``drive``): end-to-end latency minus the
   upstream time the gateway reports in Server-Timing, P50 and P99.
3. The load generator (``real_engine.loadgen.run_load``) against an instant server, as
   ``benchmarks/loadgen_lag.py`` does (its helpers are reused): rising rates until the
   send-lag P99 exceeds 2 ms; the highest rate that stayed within.

    python benchmarks/real_engine_capacity.py [--seconds 5] [--concurrency 64] [--skip-loadgen]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import engine_overhead as eo  # noqa: E402
import loadgen_lag as lg  # noqa: E402

from real_engine.measure import ChildProcess, check_redis, wait_ready  # noqa: E402
from real_engine.settings import redis_url  # noqa: E402


def _run(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def saturate(url: str, concurrency: int, seconds: float) -> tuple[int, int, float]:
    """Closed loop: ``concurrency`` clients, each sending its next request when the last returns."""
    paths = {"select": ("/v1/select-model", "s1"), "chat": ("/v1/chat/completions", "c1")}
    ok = failed = 0
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.monotonic() + seconds

        async def client(k: int) -> None:
            nonlocal ok, failed
            i = k
            while time.monotonic() < stop_at:
                endpoint = "select" if i % 2 else "chat"
                path, cls = paths[endpoint]
                body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": f"q #{i}"}], "max_tokens": 16})
                headers = {"X-Gwsim-Request-Id": str(i), "X-Gwsim-Class": cls, "Content-Type": "application/json"}
                async with session.post(url + path, data=body, headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        ok += 1
                    else:
                        failed += 1
                i += concurrency

        begun = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(client(k) for k in range(concurrency))), timeout=seconds + 30)
        elapsed = time.monotonic() - begun
    return ok, failed, elapsed


def gateway_part(args: argparse.Namespace) -> None:
    check_redis(args.redis_url)
    cores = sorted(os.sched_getaffinity(0))
    gw_core, others = {cores[0]}, set(cores[1:]) or {cores[0]}
    os.sched_setaffinity(0, others)
    with tempfile.TemporaryDirectory(prefix="gwsim-capacity-") as tmp:
        wd = Path(tmp)
        scenario = wd / "capacity.toml"
        scenario.write_text(eo.SCENARIO.format(rate=100, duration=600, semantic_cache="false"))
        t0 = time.monotonic() + 1.0
        common = ["--scenario", str(scenario), "--t0", repr(t0), "--seed", "1"]
        emu_ready, gw_ready = wd / "emulators.json", wd / "gateway.json"
        py = sys.executable
        procs = [ChildProcess("emulators", [py, "-m", "real_engine.emulators", *common, "--ready-file", str(emu_ready)], wd)]
        try:
            wait_ready(emu_ready, procs, time.monotonic() + 30)
            procs.append(ChildProcess(
                "gateway",
                [py, "-m", "real_engine.gateway", *common, "--upstreams", str(emu_ready), "--ready-file", str(gw_ready),
                 "--redis-url", args.redis_url],
                wd,
            ))
            url = wait_ready(gw_ready, procs, time.monotonic() + 30)["url"]
            gw = psutil.Process(procs[1].popen.pid)
            for p in [gw] + gw.children(recursive=True):
                p.cpu_affinity(sorted(gw_core))
            _run(saturate(url, 8, 1.0))  # warm-up: connections on both hops
            cpu0 = gw.cpu_times()
            ok, failed, elapsed = _run(saturate(url, args.concurrency, args.seconds))
            cpu1 = gw.cpu_times()
            busy = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed
            capacity = ok / elapsed
            print(f"gateway on core {sorted(gw_core)[0]}, emulators and client on cores {sorted(others)}; instant upstreams; "
                  f"select and chat alternating, no semantic cache")
            print(f"1. highest throughput (closed loop, {args.concurrency} clients, {args.seconds:g} s): "
                  f"{capacity:8.0f} req/s ok ({failed} failed), gateway CPU {busy * 100:.0f} % of its core")
            if busy > 0:
                # below ~90 % the client or the emulators limited the run: the gateway's own
                # ceiling is its core divided by its CPU time per request
                print(f"   gateway CPU per request {busy / capacity * 1e6:.0f} us -> one-core ceiling "
                      f"{capacity / busy:8.0f} req/s{'' if busy >= 0.9 else '  (gateway not saturated: the client side was the limit)'}")
            half = max(capacity / 2, 1.0)
            results = _run(eo.drive(url, half, args.seconds))
            ok_rows = [r for r in results if r[1] == 200]
            if ok_rows:
                e2e = np.array([r[2] for r in ok_rows])
                upstream = np.array([sum(r[3].get(s, 0.0) for s in eo.UPSTREAM_STAGES) for r in ok_rows])
                added = (e2e - upstream) * 1e3
                p50, p99 = np.percentile(added, [50, 99])
                e50, e99 = np.percentile(e2e * 1e3, [50, 99])
                print(f"2. at half of it ({half:.0f} req/s open loop, {len(results)} requests, {len(ok_rows)} ok): "
                      f"gateway-added P50 {p50:.3f} ms  P99 {p99:.3f} ms  (end-to-end P50 {e50:.3f} ms  P99 {e99:.3f} ms)")
            else:
                print("2. at half of it: no successful request")
        finally:
            for p in reversed(procs):
                p.stop()


def loadgen_part(args: argparse.Namespace) -> None:
    port = lg.free_port()
    srv = subprocess.Popen([sys.executable, "-c", lg.SERVER, str(port)])
    try:
        lg.wait_listening(port)
        url = f"http://127.0.0.1:{port}"

        async def sweep() -> None:
            import gc

            gc.collect()
            gc.freeze()
            best = None
            for rate in args.loadgen_rates:
                acc = await lg.measure(url, rate, args.loadgen_seconds)
                print("   " + lg.line(rate, acc))
                if acc["send_lag_p99_ms"] <= lg.TARGET_P99_MS and acc["sent"] == acc["ok"]:
                    best = rate
                else:
                    break
            print(f"3. load generator: highest send rate with send-lag P99 <= {lg.TARGET_P99_MS} ms: "
                  f"{best if best is not None else 'none'} req/s (rates tried in order: {args.loadgen_rates})")

        _run(sweep())
    finally:
        srv.terminate()
        srv.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--redis-url", default=redis_url(), help="Redis server [default: $REDIS_URL, else the local one].")
    ap.add_argument("--loadgen-seconds", type=float, default=3.0)
    ap.add_argument("--loadgen-rates", default="500,1000,2000,3000,4000,6000,8000")
    ap.add_argument("--skip-loadgen", action="store_true")
    ap.add_argument("--skip-gateway", action="store_true")
    args = ap.parse_args()
    args.loadgen_rates = [float(x) for x in args.loadgen_rates.split(",") if x]
    if not args.skip_gateway:
        gateway_part(args)
    if not args.skip_loadgen:
        loadgen_part(args)


if __name__ == "__main__":
    main()
