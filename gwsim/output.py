"""Writing results so that a reader never sees half a file: temporary file, then rename.

Every file gwsim writes goes to a hidden temporary file in the target directory, is flushed
to disk, and is then renamed over the target (``os.replace``, atomic on POSIX).  On any
failure -- including Ctrl-C in the middle of a write -- the temporary file is removed and the
previous target, if any, is left as it was.  A failure the user can fix (no such directory,
a file where a directory belongs, disk full) is reported as one line (``UsageError``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from simulator.errors import UsageError


def _reason(exc: OSError) -> str:
    return (exc.strerror or exc.__class__.__name__).lower()


def check_dir(path: str | Path) -> Path:
    """Refuse an ``--out`` that cannot become a writable directory, creating nothing.

    Commands call this before their work and ``ensure_dir`` when they write their first file,
    so bad input found on the way (a sweep point, a sensitivity key) leaves no empty directory.
    """
    out = Path(path)
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out}: expected a directory, got a file")
        if not os.access(out, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out}: expected a writable directory, got permission denied")
        return out
    ancestor = out.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"--out {out}: expected a directory, got a file at {ancestor}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: expected a writable directory, got permission denied at {ancestor}")
    return out


def ensure_dir(path: str | Path) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: expected a directory, got a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: expected a writable directory, got {_reason(exc)}") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"--out {out}: expected a writable directory, got permission denied")
    return out


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; best effort (not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: str | Path, write: Callable[[str], None]) -> None:
    """Run ``write(tmp)`` on a temporary file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path}: expected a file path, got a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UsageError(f"{path}: expected a writable location, got {_reason(exc)}") from None
    os.close(fd)
    try:
        # mkstemp makes the file owner-only (0600); results are meant to be shared like any
        # file the user's shell would create, so give it the umask's usual permissions
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        # Ctrl-C or a failed write: the target keeps its old content, the temporary goes
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise UsageError(f"{path}: expected a writable location, got {_reason(exc)}") from None
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()

    _atomic(path, write)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: object) -> None:
    # serialise first: a value JSON cannot hold fails before anything touches the disk
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """A table of JSON-shaped rows: an interval ``[lo, hi]`` under ``key`` becomes the columns
    ``key_lo`` and ``key_hi`` (Parquet readers want scalars); a missing interval gives NaNs."""
    pairs = {k for row in rows for k, v in row.items() if isinstance(v, (list, tuple))}
    flat = []
    for row in rows:
        out = {}
        for key, value in row.items():
            if key in pairs:
                lo, hi = value if isinstance(value, (list, tuple)) and len(value) == 2 else (None, None)
                out[f"{key}_lo"], out[f"{key}_hi"] = lo, hi
            else:
                out[key] = value
        flat.append(out)
    return pd.DataFrame(flat)


def gwsim_version() -> str:
    """The installed gwsim's version (``unknown`` when run from a tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gwsim")
    except PackageNotFoundError:
        return "unknown"


def scenario_sha256(scenario: Any) -> str:
    """SHA-256 of the scenario as the run used it (file, ``--set`` overrides and profile merged,
    defaults filled in), as canonical JSON: two runs of the same configuration share it however
    their files are written."""
    text = json.dumps(scenario.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def provenance(scenario: Any = None, seed: int | None = None) -> dict[str, Any]:
    """What produced an output: gwsim's version, and the scenario's hash and root seed when known.
    Added to summary.json files and to the key ``gwsim`` of every Parquet file's metadata."""
    out: dict[str, Any] = {"gwsim_version": gwsim_version()}
    if scenario is not None:
        out["scenario_sha256"] = scenario_sha256(scenario)
    if seed is not None:
        out["seed"] = int(seed)
    return out


#: The Parquet schema-metadata key holding ``provenance()`` (JSON).
PARQUET_KEY = b"gwsim"


def parquet_provenance(path: str | Path) -> dict[str, Any]:
    """The ``provenance()`` a gwsim Parquet file carries ({} when it has none)."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(PARQUET_KEY)
    return json.loads(raw) if raw else {}


def atomic_write_parquet(path: str | Path, frame: pd.DataFrame, meta: dict[str, Any] | None = None) -> None:
    """``frame`` as Parquet, its schema metadata carrying gwsim's version and ``meta`` (a
    ``provenance()``: the scenario's hash and seed) under the key ``gwsim``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamp = {**provenance(), **(meta or {})}

    def write(tmp: str) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARQUET_KEY: json.dumps(stamp).encode()})
        pq.write_table(table, tmp)

    _atomic(path, write)
