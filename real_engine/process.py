"""What each real-engine process (emulators, gateway, load generator) does at its entry point."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from simulator.errors import GwsimError


def setup_logging(process: str) -> None:
    logging.basicConfig(level=os.environ.get("GWSIM_LOG", "WARNING"), format=f"%(asctime)s {process} %(levelname)s %(message)s")


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when installed (lower per-request overhead), else asyncio's loop;
    bad input becomes one line on stderr and the error's exit code."""
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(main)
        return uvloop.run(main)
    except GwsimError as exc:
        main.close()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
