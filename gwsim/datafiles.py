"""Where gwsim finds data it does not ship: measured runs that came from other projects.

The seed report's load test (``heavy_load_2025-08-14.csv``, 6,000 requests measured by the seed
gateway's team) is third-party data, so it is not part of the package.  It is looked up in one
data directory, the first of:

1. the ``--data`` option of the command that reads it (a directory, or the file itself);
2. the directory named by ``GWSIM_DATA_DIR``;
3. ``../shared/data`` next to the project's checkout, then ``../shared/data`` from the current
   directory (where the project's shared reference data sits beside a clone).

An explicit choice (1 or 2) is the only place looked in, so a typo never falls back silently to
another copy.  Steps 2 and 3 are ``simulator.datadir``'s, which scenario files' ``{data}/``
paths use.  When the file is not found the error says where it looked and how to point at it.
"""

from __future__ import annotations

from pathlib import Path

from simulator import datadir
from simulator.errors import UsageError

ENV_VAR = datadir.ENV_VAR
#: The seed report's published run (one row per request).
SEED_RUN = "heavy_load_2025-08-14.csv"
#: Files gwsim knows by name, and what they are (for the error message).
KNOWN = {SEED_RUN: "the seed report's load test of 2025-08-14, not shipped with gwsim"}


class DataMissing(UsageError):
    """A data file gwsim needs is not where it was looked for."""


def search_dirs(data: str | Path | None = None) -> list[tuple[Path, str]]:
    """The directories to look in, in order, each with how it was chosen: ``--data`` alone when
    given, else the data directory's search (``simulator.datadir``, shared with scenario files)."""
    if data is not None:
        return [(Path(data), "--data")]
    return datadir.search_dirs()


def find(name: str = SEED_RUN, data: str | Path | None = None) -> Path:
    """The path of data file ``name``; ``data`` is a ``--data`` value (directory or file)."""
    if data is not None and Path(data).is_file():
        return Path(data)
    looked = []
    for directory, how in search_dirs(data):
        path = directory / name
        if path.is_file():
            return path
        looked.append(f"{directory} ({how})")
    what = KNOWN.get(name, "a data file")
    raise DataMissing(
        f"{name} ({what}) not found in {'; '.join(looked)}: "
        f"set {ENV_VAR}=DIR or pass --data DIR (or --data FILE) to point at your copy"
    )


def available(name: str = SEED_RUN) -> Path | None:
    """``find`` without the error: the path, or None (tests skip on None)."""
    try:
        return find(name)
    except DataMissing:
        return None


def skip_reason(name: str = SEED_RUN) -> str:
    """One line for a test that skips because the file is absent."""
    looked = "; ".join(str(d) for d, _ in search_dirs())
    return f"{name} (third-party data, not shipped) not found in {looked}: set {ENV_VAR} to the directory holding it"


def resolve_user_path(path: str | Path) -> Path:
    """A file named on the command line: as given when it exists; a bare name of a file that
    is not in the current directory is looked up in the data directory."""
    p = Path(path)
    if p.exists() or p.parent != Path("."):
        return p
    found = available(p.name)
    return found if found is not None else p


def missing_hint(path: str | Path) -> str:
    """For a file that was not found: where a known data file comes from, else ''."""
    name = Path(path).name
    if name not in KNOWN:
        return ""
    return f" ({KNOWN[name]}: point at your copy, or name it bare with {ENV_VAR}=DIR set)"
