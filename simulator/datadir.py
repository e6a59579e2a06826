"""The data directory: where third-party data that gwsim reads but never ships is kept.

Request traces such as the Azure LLM inference trace 2023 are other people's data (with their
own licences), so they stay outside the project.  A scenario names such a file with the
``{data}/`` prefix (``file = "{data}/azure-llm-2023/AzureLLMInferenceTrace_conv.csv"``), which
is looked up in the first of:

1. the directory named by ``GWSIM_DATA_DIR`` (then the only place looked in, so a typo never
   falls back silently to another copy);
2. ``../shared/data`` next to the project's checkout, then ``../shared/data`` from the
   current directory.

The search order is the one ``gwsim.datafiles`` uses for the seed report's data.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "GWSIM_DATA_DIR"
PREFIX = "{data}/"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def search_dirs() -> list[tuple[Path, str]]:
    """The directories to look in, in order, each with how it was chosen."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [(Path(env), ENV_VAR)]
    dirs = [(PROJECT_ROOT.parent / "shared" / "data", "../shared/data next to the project")]
    here = Path.cwd().parent / "shared" / "data"
    try:
        same = here.resolve() == dirs[0][0].resolve()
    except OSError:
        same = False
    if not same:
        dirs.append((here, "../shared/data from the current directory"))
    return dirs


def find(relative: str) -> tuple[Path | None, str]:
    """(path, '') of a file under the data directory, or (None, where it was looked for)."""
    looked = []
    for directory, how in search_dirs():
        path = directory / relative
        try:
            if path.is_file():
                return path, ""
        except OSError:
            pass
        looked.append(f"{directory} ({how})")
    return None, "; ".join(looked)


def resolve(name: str, base_dir: str | Path = ".") -> tuple[Path, str]:
    """The path a scenario's file name means, and '' or where a ``{data}/`` file was looked for.

    ``{data}/REL`` is REL in the data directory; an absolute path is itself; anything else is
    relative to ``base_dir`` (the scenario file's directory)."""
    if name.startswith(PREFIX):
        rel = name[len(PREFIX):]
        found, looked = find(rel)
        if found is not None:
            return found, ""
        return search_dirs()[0][0] / rel, looked
    path = Path(name)
    return (path if path.is_absolute() else Path(base_dir) / path), ""


def skip_reason(relative: str) -> str:
    """One line for a test, notebook or example that skips because a data file is absent."""
    _, looked = find(relative)
    return f"{relative} not found in {looked} (set {ENV_VAR} to the directory holding it)"
