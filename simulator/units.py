"""Quantities with units, as people write them in scenario files.

A scenario says ``"250ms"`` or ``"10/s"`` rather than ``0.25`` or ``10.0`` so that a
reader never has to guess whether a number is seconds or milliseconds.  Internally every
duration is a float in seconds and every rate a float in events per second.
"""

from __future__ import annotations

import math
import re

_DURATION_UNITS = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}
#: What a duration or rate must look like, with every unit accepted: the error lines quote these
# (µs and min are accepted too, as spellings of us and m)
DURATION_UNITS_TEXT = "us, ms, s, m or h"
DURATION_EXPECTED = f"a duration with a unit of {DURATION_UNITS_TEXT}, such as '250ms' or '3s'"
RATE_EXPECTED = "a rate per ms, s, m or h, such as '10/s'"
_DURATION_RE = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(us|µs|ms|s|min|m|h)\s*$")
_RATE_RE = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*/\s*(ms|s|min|m|h)\s*$")


class UnitError(ValueError):
    """A quantity could not be read; the message says what was expected."""


def parse_duration(value: object) -> float:
    """Seconds from ``"250ms"``, ``"3s"``, ``"2m"``, ``"1h"``; bare 0 is allowed."""
    if isinstance(value, bool):
        raise UnitError(f"expected {DURATION_EXPECTED}, got {value!r}")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0.0
        raise UnitError(f"expected {DURATION_EXPECTED}, got {value!r}")
    if not isinstance(value, str):
        raise UnitError(f"expected {DURATION_EXPECTED}, got {value!r}")
    match = _DURATION_RE.match(value)
    if not match:
        raise UnitError(f"expected {DURATION_EXPECTED}, got {value!r}")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise UnitError(f"expected a finite duration, got {value!r}")
    if seconds < 0:
        raise UnitError(f"expected a non-negative duration, got {value!r}")
    return seconds


def parse_rate(value: object) -> float:
    """Events per second from ``"10/s"``, ``"600/m"``, ``"36000/h"``."""
    if not isinstance(value, str) or isinstance(value, bool):
        raise UnitError(f"expected {RATE_EXPECTED}, got {value!r}")
    match = _RATE_RE.match(value)
    if not match:
        raise UnitError(f"expected {RATE_EXPECTED}, got {value!r}")
    per = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}[match.group(2)]
    rate = float(match.group(1)) / per
    if not math.isfinite(rate):
        raise UnitError(f"expected a finite rate, got {value!r}")
    if rate < 0:
        raise UnitError(f"expected a non-negative rate, got {value!r}")
    return rate


def parse_quantity(value: object) -> float:
    """A duration string in seconds, or a plain number (token counts, factors) as is."""
    if isinstance(value, bool):
        raise UnitError(f"expected a number or {DURATION_EXPECTED}, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(float(value)):
            raise UnitError(f"expected a finite number, got {value!r}")
        return float(value)
    return parse_duration(value)


def format_duration(seconds: float) -> str:
    """Readable duration: ``0.25 -> '250ms'``, ``90 -> '90s'``."""
    if seconds == 0:
        return "0s"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.4g}us"
    if seconds < 1:
        return f"{seconds * 1e3:.4g}ms"
    return f"{seconds:.4g}s"
