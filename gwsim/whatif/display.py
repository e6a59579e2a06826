"""A scenario setting as a person reads it in a results table: a duration keeps its unit
(``2 s``, ``250 ms``), a count stays an integer (``1000000``, not ``1e+06``), and a 0 that the
schema defines as "no cap" reads ``none`` (a 0 that means "never" reads ``never``).

The words come from the schema itself: a field whose help says ``(0 = unbounded)`` or
``(0 = never)`` gets that meaning here, so a new field documented the same way needs no code.
"""

from __future__ import annotations

import math
import re
import types
from functools import lru_cache
from typing import Any, Union, get_args, get_origin

from simulator.scenario import parse_set_value

_DURATION = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(us|µs|ms|s|min|m|h)\s*$")
_RATE = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*/\s*(ms|s|min|m|h)\s*$")
_ZERO = re.compile(r"\(0 = (\w+)")
#: What a 0 reads as, by the word the schema's help uses for it.
_ZERO_WORDS = {"unbounded": "none", "unlimited": "none", "no": "none", "none": "none", "never": "never", "off": "off"}


def _unwrap(tp: Any) -> Any:
    """The one non-None type of an Optional / Annotated annotation, else the annotation."""
    while True:
        origin = get_origin(tp)
        if origin is not None and str(origin) == "typing.Annotated":
            tp = get_args(tp)[0]
            continue
        if origin is Union or origin is types.UnionType:
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
            continue
        return tp


@lru_cache(maxsize=256)
def field_help(path: str) -> str | None:
    """The help text of the scenario field at a dotted path (names of providers, endpoints and
    list indices are stepped over), or None when the path leaves the schema."""
    from pydantic import BaseModel

    from simulator.scenario import Scenario

    tp: Any = Scenario
    info = None
    for part in path.split("."):
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(part)
            if info is None:
                return None
            tp = info.annotation
        elif origin is dict:
            tp = get_args(tp)[1]
        elif origin in (list, tuple):
            tp = get_args(tp)[0]
        else:
            return None
    return info.description if info is not None else None


def zero_means(path: str) -> str | None:
    """``none`` (no cap) or ``never`` when the schema says what a 0 at ``path`` means."""
    m = _ZERO.search(field_help(path) or "")
    return _ZERO_WORDS.get(m.group(1).lower(), m.group(1)) if m else None


def format_setting(path: str, raw: str) -> str:
    """A ``--param`` value as written (``2s``, ``20``, ``0``) in the words of a results table."""
    text = raw.strip()
    m = _DURATION.match(text)
    if m:
        return f"{float(m.group(1)):g} {m.group(2)}"
    m = _RATE.match(text)
    if m:
        return f"{float(m.group(1)):g}/{m.group(2)}"
    value = parse_set_value(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return text
    if value == 0:
        word = zero_means(path)
        if word:
            return word
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer() and abs(value) < 1e15 and "." not in text and "e" not in text.lower()):
        return str(int(value))
    return f"{value:g}"
