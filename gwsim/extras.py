"""Which optional packages a command needs, and the one line that says how to get them.

gwsim installs as a core (the simulator and the CLI) with three extras a user adds for what
they use: ``real`` (the real engine: aiohttp, redis, cryptography), ``charts`` (Altair and
vl-convert, for the charts sweep, capacity, sensitivity and fit write) and ``dask`` (running a
what-if on a Dask cluster).  A command that needs one checks before it does any work, so a
missing extra costs one line and no half-written output.
"""

from __future__ import annotations

import importlib.util
import sys

from simulator.errors import UsageError

#: extra -> the modules it provides (import names) and the distributions to name
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "real": (("aiohttp", "redis", "cryptography"), "aiohttp, redis, cryptography"),
    "charts": (("altair", "vl_convert"), "altair, vl-convert-python"),
    "dask": (("dask", "distributed"), "dask[distributed]"),
    # LiteLLM's real proxy, for gwsim measure --gateway litellm (its CLI runs on uvloop)
    "litellm": (("litellm", "fastapi", "uvicorn", "uvloop"), "litellm[proxy]"),
}


def _present(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None  # None: import blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported."""
    return [m for m in EXTRAS[extra][0] if not _present(m)]


def hint(extra: str) -> str:
    return f"pip install 'gwsim[{extra}]'"


def require(extra: str, what: str) -> None:
    """``UsageError`` (exit 2, one line) when ``what`` cannot run for want of ``extra``."""
    gone = missing(extra)
    if gone:
        raise UsageError(f"{what}: expected the '{extra}' extra ({EXTRAS[extra][1]}), found {', '.join(gone)} "
                         f"not installed; install it with {hint(extra)}")


def extra_of(module: str | None) -> str | None:
    """The extra that provides a (possibly dotted) module name, if any."""
    top = (module or "").split(".")[0]
    return next((name for name, (mods, _) in EXTRAS.items() if top in mods), None)
