"""The emulator process: ``python -m real_engine.emulators --scenario PATH [--set k=v]... --t0 T --seed S --ready-file F``.

Starts every emulator of the scenario on free loopback ports, writes their URLs as JSON
to ``F`` (atomically: a reader never sees half a file) once they listen, serves until
SIGTERM or SIGINT, then writes its stats JSON to ``F.stats.json`` and exits 0.
Exit code 2 with one line on stderr for a bad scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from real_engine.emulators import start_emulators, stats_path
from simulator.scenario import load_scenario
from real_engine.process import run_event_loop, setup_logging

log = logging.getLogger("real_engine.emulators")


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to a temporary file next to ``path`` and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m real_engine.emulators", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", required=True, help="Scenario TOML file.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="Scenario override.")
    p.add_argument("--t0", type=float, required=True, help="Run start on time.monotonic().")
    p.add_argument("--seed", type=int, default=None, help="Root seed (default: the scenario's run.seed).")
    p.add_argument("--ready-file", required=True, help="Where to write the URLs JSON once listening.")
    p.add_argument("--stats-file", default=None, help="Where to write stats on exit (default READY-FILE.stats.json).")
    p.add_argument("--host", default="127.0.0.1")
    return p


async def _serve(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario, args.overrides)
    seed = scenario.run.seed if args.seed is None else args.seed
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    emu = await start_emulators(scenario, args.t0, seed, args.host)
    try:
        write_json_atomic(args.ready_file, emu.urls)
        log.info("emulators ready: %s", emu.urls)
        await stop.wait()
    finally:
        await emu.close()
        write_json_atomic(args.stats_file or stats_path(args.ready_file), emu.stats())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging("emulators")
    return run_event_loop(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
