"""How punctual is the load generator?  Send lag at 500 req/s, and the highest rate it keeps punctual.

Starts an instant aiohttp server (replies 200 at once) in a child process on loopback,
then runs ``real_engine.loadgen.run_load`` in this process (uvloop when installed) with a
constant open-loop arrival process.  Send lag = when a request's task began - when it was
due.  Prints P50/P99/max send lag at 500 req/s (target P99 <= 2 ms), then tries a few
higher rates and prints the highest whose send-lag P99 stays <= 2 ms.  Prints figures;
asserts nothing.

    /work/venv/bin/python benchmarks/loadgen_lag.py [--seconds 4] [--rates 1000,1500,2000,3000,4000] [--nice -10]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from real_engine.loadgen import renice, run_load  # noqa: E402
from simulator.scenario import scenario_from_data  # noqa: E402

TARGET_P99_MS = 2.0

SERVER = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    async def h(request):
        await request.read()
        return web.Response(body=b'{}', content_type='application/json')
    app = web.Application()
    app.router.add_route('*', '/{t:.*}', h)
    web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None, access_log=None, backlog=4096)
    """
)


def scenario(rate: float, seconds: float):
    return scenario_from_data(
        {
            "run": {"duration": f"{seconds}s", "drain": "5s"},
            "workload": {"arrivals": {"process": "constant", "rate": f"{rate}/s"}, "mix": {"select": 0.8, "chat": 0.2},
                         "client_timeout": "5s"},
            "endpoints": {
                "select": {"kind": "select_model", "classes": [{"name": "a", "request_bytes": 137}, {"name": "b", "request_bytes": 161}]},
                "chat": {"kind": "chat_completions", "classes": [{"name": "c", "request_bytes": 200}]},
            },
            "providers": {"p": {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "1ms"}}}},
        },
        "bench",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"server on port {port} did not start")
            time.sleep(0.05)


async def measure(url: str, rate: float, seconds: float) -> dict:
    records, acc = await run_load(scenario(rate, seconds), url, time.monotonic() + 0.3, 1, seconds)
    lat = sorted(r.latency_s for r in records if r.ok)
    acc["latency_p50_ms"] = lat[len(lat) // 2] * 1e3 if lat else None
    return acc


def line(rate: float, acc: dict) -> str:
    fails = sum(acc["failures"].values())
    return (
        f"{rate:>7.0f} req/s  sent {acc['sent']:>6}  ok {acc['ok']:>6}  failed {fails:>4}  "
        f"send lag P50 {acc['send_lag_p50_ms']:.3f} ms  P99 {acc['send_lag_p99_ms']:.3f} ms  "
        f"max {acc['send_lag_max_ms']:.2f} ms  late(>2ms) {acc['late_sends']:>5}  "
        f"reply P50 {acc['latency_p50_ms']:.2f} ms"
    )


async def main_async(args: argparse.Namespace, url: str) -> None:
    gc.collect()
    gc.freeze()  # as the load generator's CLI does
    print(f"loadgen send lag against an instant local server (child process), {args.seconds:g} s per rate")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"event loop: {type(asyncio.get_running_loop()).__module__}, cores: {os.cpu_count()}, load average: {load}"
          " (other processes on the cores show up as send lag)")
    base = await measure(url, 500, args.seconds)
    print("at 500 req/s:")
    print("  " + line(500, base))
    print(f"  target P99 <= {TARGET_P99_MS} ms: {'met' if base['send_lag_p99_ms'] <= TARGET_P99_MS else 'NOT met'}")
    best = 500 if base["send_lag_p99_ms"] <= TARGET_P99_MS else None
    print("higher rates:")
    for rate in args.rates:
        if rate <= 500:
            continue
        acc = await measure(url, rate, args.seconds)
        print("  " + line(rate, acc))
        if acc["send_lag_p99_ms"] <= TARGET_P99_MS and acc["sent"] == acc["ok"]:
            best = rate if best is None else max(best, rate)
    print(f"highest rate tried with send-lag P99 <= {TARGET_P99_MS} ms: {best if best is not None else 'none'} req/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rates", default="1000,1500,2000,3000,4000")
    p.add_argument("--nice", type=int, default=0, help="Niceness increment for the load generator (the server keeps its own).")
    args = p.parse_args()
    args.rates = [float(x) for x in args.rates.split(",") if x]
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        wait_listening(port)
        renice(args.nice)
        if args.nice:
            print(f"load generator niceness: {os.nice(0)}")
        url = f"http://127.0.0.1:{port}"
        try:
            import uvloop
        except ImportError:
            asyncio.run(main_async(args, url))
        else:
            uvloop.run(main_async(args, url))
    finally:
        srv.terminate()
        srv.wait(timeout=10)


if __name__ == "__main__":
    main()
