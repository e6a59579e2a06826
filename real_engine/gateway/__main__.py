"""The gateway process: ``python -m real_engine.gateway --scenario PATH [--set k=v]... --upstreams URLS.json
--t0 T --seed S --ready-file F [--host 127.0.0.1] [--port 0] [--redis-url URL]``.

Waits for the upstream URLs file (the emulators' ready file, so both processes can be
started together), starts the gateway (uvloop when installed), writes
``{"url": ..., "port": ..., "pid": ..., "key_prefix": ...}`` to ``F`` atomically once it
listens, serves until SIGTERM or SIGINT, then closes (handlers drained, pools closed,
Redis keys deleted) and writes its stats JSON to ``F.stats.json``.  Exit code 2 with one
line on stderr for a bad scenario or a missing upstreams file, 3 when Redis is down.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from simulator.errors import UsageError
from simulator.scenario import load_scenario
from real_engine.process import run_event_loop, setup_logging
from real_engine.settings import DEFAULT_REDIS_URL

log = logging.getLogger("real_engine.gateway")


def stats_path(ready_file: str | Path) -> Path:
    """Where the CLI writes its stats JSON on exit: ``<ready-file>.stats.json``."""
    p = Path(ready_file)
    return p.with_name(p.name + ".stats.json")


def write_json_atomic(path: str | Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m real_engine.gateway", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", required=True, help="Scenario TOML file.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="Scenario override.")
    p.add_argument("--upstreams", required=True, help="JSON file with the upstream URLs (the emulators' ready file).")
    p.add_argument("--upstreams-wait", type=float, default=60.0, help="Seconds to wait for the upstreams file to appear.")
    p.add_argument("--t0", type=float, required=True, help="Run start on time.monotonic().")
    p.add_argument("--seed", type=int, default=None, help="Root seed (default: the scenario's run.seed).")
    p.add_argument("--ready-file", required=True, help="Where to write the gateway URL once listening.")
    p.add_argument("--stats-file", default=None, help="Where to write stats on exit (default READY-FILE.stats.json).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--redis-url", default=None, help=f"Redis server [default: $REDIS_URL, else {DEFAULT_REDIS_URL}].")
    p.add_argument("--key-prefix", default=None, help="Redis key prefix (default: a fresh random one).")
    return p


async def _read_upstreams(path: str, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    p = Path(path)
    while not p.exists():
        if time.monotonic() > deadline:
            raise UsageError(f"{path}: expected the upstream URLs file, found nothing after {wait_s:g}s")
        await asyncio.sleep(0.02)
    try:
        urls = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: expected upstream URLs JSON, got {exc}") from None
    if not isinstance(urls, dict) or not {"ai_service", "embedding", "providers"} <= set(urls):
        raise UsageError(f"{path}: expected keys ai_service, embedding and providers")
    return urls


async def _serve(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from real_engine.gateway.app import start_gateway

    scenario = load_scenario(args.scenario, args.overrides)
    seed = scenario.run.seed if args.seed is None else args.seed
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    urls = await _read_upstreams(args.upstreams, args.upstreams_wait)
    try:
        handle = await start_gateway(
            scenario, urls, args.t0, seed, args.redis_url, host=args.host, port=args.port, key_prefix=args.key_prefix
        )
    except (RedisError, OSError) as exc:
        print(f"error: gateway could not start: {exc}", file=sys.stderr)
        return 3
    # The run measures the modelled gateway, not CPython's collector: move start-up objects
    # out of the collected generations and collect young objects less often, so a full
    # collection does not land a multi-millisecond pause in the middle of requests.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    try:
        write_json_atomic(args.ready_file, {"url": handle.url, "port": handle.port, "pid": os.getpid(), "key_prefix": handle.key_prefix})
        log.info("gateway ready: %s", handle.url)
        await stop.wait()
    finally:
        await handle.close()
        write_json_atomic(args.stats_file or stats_path(args.ready_file), handle.stats())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging("gateway")
    return run_event_loop(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
