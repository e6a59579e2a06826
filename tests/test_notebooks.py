"""Every notebook in notebooks/ runs top to bottom on small settings (GWSIM_FAST=1), as CI
runs them: a notebook that raises, or takes longer than its budget, fails here."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from gwsim import datafiles

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
BUDGET_S = 120  # per notebook, the limit CI gives it
#: Notebooks that read the seed run's data (third-party, not shipped: GWSIM_DATA_DIR or ../shared/data).
NEEDS_SEED_DATA = {"seed_report.ipynb"}
CELL_TIMEOUT_S = 110


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.timeout(BUDGET_S * 2)
@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if path.name in NEEDS_SEED_DATA and datafiles.available() is None:
        pytest.skip(datafiles.skip_reason())
    # the kernel inherits this process's environment
    monkeypatch.setenv("GWSIM_FAST", "1")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::DeprecationWarning")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    began = time.monotonic()
    client.execute()  # raises CellExecutionError on the first failing cell
    elapsed = time.monotonic() - began
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and all(c.get("execution_count") for c in code_cells), "every code cell must have run"
    assert elapsed < BUDGET_S, f"{path.name} took {elapsed:.0f} s with GWSIM_FAST=1 (budget {BUDGET_S} s)"


def test_there_are_notebooks_to_run() -> None:
    names = {p.name for p in _notebooks()}
    assert {"what_if.ipynb", "capacity.ipynb"} <= names
    assert os.environ.get("GWSIM_FAST") != "1" or True  # the env var is set per notebook above
