"""Where the real engine finds the Redis server its gateway keeps its caches and rate limits in.

One setting for every caller (``gwsim measure``, ``gwsim calibrate``, the gateway process, the
benchmarks and the tests): the ``REDIS_URL`` environment variable when it is set, else a
Redis on loopback at its standard port.  Nothing here imports redis or aiohttp, so the CLI
can name the default in its help without loading the real engine.
"""

from __future__ import annotations

import os

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_URL_ENV = "REDIS_URL"


def redis_url(explicit: str | None = None) -> str:
    """``explicit`` when given, else ``$REDIS_URL``, else ``DEFAULT_REDIS_URL``."""
    if explicit:
        return explicit
    return os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
