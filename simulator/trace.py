"""Request traces: production traffic as a list of requests (when each arrived, where it went,
how many tokens it read and wrote), read from a file to be replayed or fitted.

Formats:

* ``azure2023``: the Azure LLM inference trace 2023 (Patel et al., "Splitwise", ISCA 2024):
  CSV with ``TIMESTAMP`` (``YYYY-MM-DD HH:MM:SS.fffffff``), ``ContextTokens`` (input) and
  ``GeneratedTokens`` (output), one row per request.
* ``csv`` / ``jsonl``: any CSV with a header, or one JSON object per line, with a column
  mapping: ``timestamp`` (required; seconds, ms, us or ns since any origin, or ISO 8601
  date-times), and optionally ``endpoint`` (the endpoint or model of each request),
  ``input_tokens``, ``output_tokens``, ``status`` (HTTP status) and ``latency``.

A trace is read once per process and file version (cached); its times are seconds from its
first request, sorted (a trace logged out of order is put in order, ties kept in file order).
Anything unreadable is a ``TraceError`` naming the file, the line, the column, what was
expected and what was found.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Column roles a generic trace may map, in the order they are documented.
ROLES = ("timestamp", "endpoint", "input_tokens", "output_tokens", "status", "latency")
#: The Azure LLM inference trace 2023's own columns.
AZURE2023 = {"timestamp": "TIMESTAMP", "input_tokens": "ContextTokens", "output_tokens": "GeneratedTokens"}
_AZURE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_UNIT_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
MAX_TRACE_BYTES = 4 * 1024**3


class TraceError(ValueError):
    """A trace that cannot be read: where (file, line, column), what was expected, what was found."""

    def __init__(self, file: str, line: int | None, column: str | None, expected: str, found: str) -> None:
        self.file, self.line, self.column, self.expected, self.found = file, line, column, expected, found
        super().__init__(self.text())

    def where(self) -> str:
        parts = [f"line {self.line}" if self.line is not None else "", f"column {self.column}" if self.column else ""]
        return ", ".join(p for p in parts if p)

    def text(self) -> str:
        """``FILE: line N, column C: expected ..., got ...`` (for a command reading the trace itself)."""
        where = self.where()
        return f"{self.file}: {where + ': ' if where else ''}expected {self.expected}, got {self.found}"

    def in_scenario(self) -> str:
        """``expected ... at FILE line N, column C, got ...`` (under a scenario key)."""
        where = self.where()
        return f"expected {self.expected} at {self.file}{' ' + where if where else ''}, got {self.found}"


@dataclass(frozen=True, eq=False)
class TraceData:
    """A trace in memory: one entry per request, sorted by arrival time."""

    file: str
    at_s: np.ndarray  # seconds from the first request
    endpoint_codes: np.ndarray | None  # index into ``endpoints`` per request
    endpoints: tuple[str, ...]
    input_tokens: np.ndarray | None  # int64
    output_tokens: np.ndarray | None  # int64
    status: np.ndarray | None  # int64 HTTP status
    latency_s: np.ndarray | None
    origin: str  # the first request's timestamp as written in the file

    def __len__(self) -> int:
        return len(self.at_s)

    @property
    def span_s(self) -> float:
        return float(self.at_s[-1]) if len(self.at_s) else 0.0

    def frame(self) -> pd.DataFrame:
        """One row per request: ``at_s`` and whichever of endpoint, tokens, status, latency the trace has."""
        cols: dict[str, Any] = {"at_s": self.at_s}
        if self.endpoint_codes is not None:
            cols["endpoint"] = np.asarray(self.endpoints, dtype=object)[self.endpoint_codes]
        for name in ("input_tokens", "output_tokens", "status", "latency_s"):
            values = getattr(self, name)
            if values is not None:
                cols[name] = values
        return pd.DataFrame(cols)


def _show(value: Any) -> str:
    text = str(value)
    if text == "" or text.lower() == "nan":
        return "an empty field"
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _fail_at(file: str, index: np.ndarray, column: str, expected: str, raw: pd.Series, lines: np.ndarray) -> None:
    i = int(index[0])
    raise TraceError(file, int(lines[i]), column, expected, _show(raw.iloc[i]))


def _numbers(file: str, raw: pd.Series, column: str, lines: np.ndarray, *, expected: str, integer: bool = False) -> np.ndarray:
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values < 0)
    if integer:
        bad |= np.isfinite(values) & (values != np.round(values))
    if bad.any():
        _fail_at(file, np.flatnonzero(bad), column, expected, raw, lines)
    return values


def _times(file: str, raw: pd.Series, column: str, lines: np.ndarray, unit: str, azure: bool) -> tuple[np.ndarray, pd.Series]:
    """Seconds since the epoch (or since the trace's own origin for numbers), and the parsed column."""
    if azure or unit == "datetime":
        try:
            if azure:
                parsed = pd.to_datetime(raw, format=_AZURE_TIME_FORMAT, errors="coerce")
            else:
                parsed = pd.to_datetime(raw, format="ISO8601", errors="coerce", utc=True)
        except (ValueError, TypeError, OverflowError):
            parsed = pd.Series(pd.NaT, index=raw.index)
        bad = parsed.isna().to_numpy()
        if bad.any():
            what = "a date-time YYYY-MM-DD HH:MM:SS.fffffff" if azure else "an ISO 8601 date-time such as 2023-11-16T18:15:46.68Z"
            _fail_at(file, np.flatnonzero(bad), column, what, raw, lines)
        if parsed.dt.tz is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        ns = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        return (ns - ns.min()) / 1e9, raw
    values = _numbers(file, raw, column, lines, expected=f"a time in {unit} (a number >= 0)")
    return values * _UNIT_S[unit], raw


def _read_csv(file: str, path: Path, columns: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        header = pd.read_csv(path, nrows=0, dtype=str)
    except pd.errors.EmptyDataError:
        raise TraceError(file, None, None, "a CSV header line and one row per request", "an empty file") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise TraceError(file, 1, None, "a CSV header line", f"unreadable text ({exc.__class__.__name__})") from None
    missing = [c for c in columns if c not in header.columns]
    if missing:
        shown = ", ".join(map(repr, list(header.columns)[:8])) + (", ..." if len(header.columns) > 8 else "")
        raise TraceError(file, 1, missing[0], f"a column named {missing[0]!r} in the header", f"columns {shown}")
    try:
        # every column is read (not usecols), so that a row with a field too many is an error
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=True)[columns]
    except pd.errors.ParserError as exc:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if m:
            raise TraceError(file, int(m[2]), None, f"{m[1]} comma-separated fields", f"{m[3]}") from None
        raise TraceError(file, None, None, "well-formed CSV", " ".join(str(exc).split())[:120]) from None
    except UnicodeDecodeError as exc:
        raise TraceError(file, None, None, "UTF-8 text", f"byte 0x{exc.object[exc.start]:02x} at offset {exc.start}") from None
    # one line per row (no quoted line breaks in a trace); the header is line 1
    lines = np.arange(2, len(frame) + 2)
    return frame, lines


def _read_jsonl(file: str, path: Path, columns: list[str], required: set[str]) -> tuple[pd.DataFrame, np.ndarray]:
    rows: dict[str, list[Any]] = {c: [] for c in columns}
    lines: list[int] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for n, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except ValueError as exc:
                    raise TraceError(file, n, None, "one JSON object per line", f"invalid JSON ({exc.__class__.__name__})") from None
                if not isinstance(obj, dict):
                    raise TraceError(file, n, None, "one JSON object per line", f"a JSON {type(obj).__name__}")
                for c in columns:
                    if c not in obj:
                        if c in required:
                            raise TraceError(file, n, c, f"a key {c!r}", f"keys {', '.join(map(repr, list(obj)[:6]))}")
                        rows[c].append("")
                    else:
                        value = obj[c]
                        rows[c].append("" if value is None or isinstance(value, (dict, list, bool)) else value)
                lines.append(n)
    except UnicodeDecodeError as exc:
        raise TraceError(file, None, None, "UTF-8 text", f"byte 0x{exc.object[exc.start]:02x} at offset {exc.start}") from None
    frame = pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in rows.items()})
    return frame, np.asarray(lines, dtype=np.int64)


def read_trace(
    path: str | Path,
    format: str = "azure2023",
    columns: dict[str, str] | None = None,
    timestamp_unit: str = "s",
    latency_unit: str = "ms",
    shown: str | None = None,
) -> TraceData:
    """Read a trace file (cached per file version and settings); ``TraceError`` on anything wrong.

    ``shown`` is how the file is named in errors (default: the path)."""
    path = Path(path)
    file = shown if shown is not None else str(path)
    try:
        stat = path.stat()
        regular = path.is_file()
    except OSError as exc:
        reason = "not found" if isinstance(exc, FileNotFoundError) else (exc.strerror or exc.__class__.__name__).lower()
        raise TraceError(file, None, None, "a readable trace file", reason) from None
    if not regular:
        raise TraceError(file, None, None, "a regular trace file", "a directory" if path.is_dir() else "a device, FIFO or socket")
    if stat.st_size > MAX_TRACE_BYTES:
        raise TraceError(file, None, None, f"a trace of at most {MAX_TRACE_BYTES} bytes", f"{stat.st_size} bytes")
    key = tuple(sorted((columns or {}).items()))
    return _read_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, file, format, key, timestamp_unit, latency_unit)


@functools.lru_cache(maxsize=8)
def _read_cached(path_text: str, _mtime: int, _size: int, file: str, format: str, key: tuple, timestamp_unit: str,
                 latency_unit: str) -> TraceData:
    path = Path(path_text)
    azure = format == "azure2023"
    mapping = dict(AZURE2023) if azure else dict(key)
    if "timestamp" not in mapping:
        raise TraceError(file, None, None, "a timestamp column in the column mapping", "none")
    names = list(dict.fromkeys(mapping.values()))
    try:
        if format == "jsonl":
            frame, lines = _read_jsonl(file, path, names, {mapping["timestamp"]})
        else:
            frame, lines = _read_csv(file, path, names)
    except OSError as exc:
        raise TraceError(file, None, None, "a readable trace file", (exc.strerror or exc.__class__.__name__).lower()) from None
    if len(frame) == 0:
        raise TraceError(file, None, None, "at least one request", "a header and no rows")
    ts_col = mapping["timestamp"]
    at, _ = _times(file, frame[ts_col], ts_col, lines, timestamp_unit, azure)
    origin = str(frame[ts_col].iloc[int(np.argmin(at))])
    order = np.argsort(at, kind="stable")
    at = at[order] - at[order[0]]

    def column(role: str, integer: bool, expected: str) -> np.ndarray | None:
        name = mapping.get(role)
        if name is None:
            return None
        values = _numbers(file, frame[name], name, lines, expected=expected, integer=integer)
        return values[order]

    inputs = column("input_tokens", True, "a token count (an integer >= 0)")
    outputs = column("output_tokens", True, "a token count (an integer >= 0)")
    status = column("status", True, "an HTTP status code (an integer)")
    latency = column("latency", False, f"a latency in {latency_unit} (a number >= 0)")
    codes, endpoints = None, ()
    if "endpoint" in mapping:
        name = mapping["endpoint"]
        raw = frame[name].astype(str).str.strip()
        empty = (raw == "").to_numpy()
        if empty.any():
            _fail_at(file, np.flatnonzero(empty), name, "an endpoint or model name", frame[name], lines)
        cats = pd.Categorical(raw.to_numpy()[order])
        codes, endpoints = cats.codes.astype(np.int32), tuple(str(c) for c in cats.categories)
    return TraceData(
        file=file,
        at_s=np.ascontiguousarray(at, dtype=float),
        endpoint_codes=codes,
        endpoints=endpoints,
        input_tokens=None if inputs is None else inputs.astype(np.int64),
        output_tokens=None if outputs is None else outputs.astype(np.int64),
        status=None if status is None else status.astype(np.int64),
        latency_s=None if latency is None else latency * _UNIT_S[latency_unit],
        origin=origin,
    )


def window(data: TraceData, start_s: float, duration_s: float | None) -> slice:
    """The requests arriving in [start, start + duration) of the trace's own time."""
    lo = int(np.searchsorted(data.at_s, start_s, side="left"))
    hi = len(data.at_s) if duration_s is None else int(np.searchsorted(data.at_s, start_s + duration_s, side="left"))
    return slice(lo, hi)


def window_length(data: TraceData, start_s: float, duration_s: float | None) -> float:
    """Trace time the window covers: ``duration`` when given, else to just past the last request
    (so that a looped trace does not put its last and first requests at the same instant)."""
    if duration_s is not None:
        return duration_s
    sl = window(data, start_s, None)
    n = sl.stop - sl.start
    if n == 0:
        return 0.0
    span = data.at_s[sl.stop - 1] - start_s
    return float(span + (span / max(n - 1, 1) if n > 1 else 1.0))


def trace_rate(trace: Any) -> float:
    """Requests per second of a scenario trace table's window, at time_scale 1."""
    data: TraceData = trace.data
    sl = window(data, trace.start, trace.duration)
    return (sl.stop - sl.start) / max(window_length(data, trace.start, trace.duration), 1e-9)


# --------------------------------------------------------------------------- in a scenario

#: At most this many requests per replication (as ``simulator.scenario.MAX_REQUESTS_PER_REPLICATION``).
_MAX_REQUESTS = 1e9


def load_for_scenario(trace: Any, base_dir: str | Path) -> TraceData:
    """The data of a scenario's ``workload.trace`` table; ``ValueError`` lines written for the
    scenario's error report (``at workload.trace.KEY: expected ..., got ...``)."""
    from simulator.datadir import ENV_VAR, resolve

    if trace.format == "azure2023":
        if trace.columns is not None:
            raise ValueError("at workload.trace.columns: expected no columns with format 'azure2023' (its columns are fixed), got a table")
        columns = None
    else:
        if trace.columns is None:
            raise ValueError(
                f"at workload.trace.columns: expected a column mapping (timestamp = ..., output_tokens = ...) for format "
                f"{trace.format!r}, got nothing"
            )
        columns = {role: name for role, name in trace.columns.model_dump().items() if name is not None}
    path, looked = resolve(trace.file, base_dir)
    if looked:
        raise ValueError(f"at workload.trace.file: expected a trace file in the data directory, got nothing at {trace.file!r} "
                         f"(looked in {looked}; set {ENV_VAR})")
    try:
        data = read_trace(path, trace.format, columns, trace.timestamp_unit, trace.latency_unit)
    except TraceError as exc:
        raise ValueError("at workload.trace.file: " + exc.in_scenario()) from None
    sl = window(data, trace.start, trace.duration)
    if sl.stop <= sl.start:
        end = "the end" if trace.duration is None else f"{trace.start + trace.duration:g} s"
        raise ValueError(
            f"at workload.trace.start: expected a window holding requests, got none from {trace.start:g} s to {end} "
            f"of a trace spanning {data.span_s:.6g} s"
        )
    return data


def check_scenario(scenario: Any) -> None:
    """The trace's endpoints name the scenario's endpoints, and the replay stays within the
    run-size bound; ``ValueError`` (``at workload.trace...: expected ..., got ...``) otherwise."""
    wl = scenario.workload
    trace = wl.trace
    data: TraceData = trace.data
    known = sorted(scenario.endpoints)
    for value, name in trace.map.items():
        if name not in scenario.endpoints:
            raise ValueError(f"at workload.trace.map: expected endpoint names from {known}, got {value!r} = {name!r}")
    sl = window(data, trace.start, trace.duration)
    if data.endpoint_codes is not None:
        used = np.unique(data.endpoint_codes[sl])
        for code in used.tolist():
            value = data.endpoints[code]
            if trace.map.get(value, value) not in scenario.endpoints:
                first = sl.start + int(np.argmax(data.endpoint_codes[sl] == code))
                raise ValueError(
                    f"at workload.trace.map: expected every endpoint or model in {data.file} to be an endpoint from "
                    f"{known} or mapped to one, got {value!r} (request {first + 1} of the sorted trace)"
                )
    n = sl.stop - sl.start
    if trace.loop:
        length = window_length(data, trace.start, trace.duration)
        n *= max(1.0, math.ceil(scenario.run.duration * wl.time_scale / max(length, 1e-9)))
    if n > _MAX_REQUESTS:
        raise ValueError(f"at workload.trace.loop: expected at most {_MAX_REQUESTS:g} requests per replication, got {n:.3g}")
