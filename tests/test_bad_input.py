"""The bad-input corpus (tests/bad_inputs/): every file is answered with exactly its expected line.

Library: ``load_scenario`` raises ``ScenarioError`` whose text is the line in expected.json.
CLI: ``gwsim run FILE --out DIR`` exits 2 with exactly ``gwsim: error: <line>`` on stderr, nothing
on stdout, no traceback, and DIR never created -- in-process for every file, as a real
subprocess for one file of each category.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gwsim.cli import cli
from simulator.errors import ScenarioError
from simulator.scenario import MAX_FILE_BYTES, load_scenario

HERE = Path(__file__).resolve().parent / "bad_inputs"
EXPECTED: dict[str, dict[str, str]] = json.loads((HERE / "expected.json").read_text(encoding="utf-8"))
GWSIM = [sys.executable, "-m", "gwsim.cli"]


def _one_per_category() -> list[str]:
    seen: dict[str, str] = {}
    for name, case in EXPECTED.items():
        seen.setdefault(case["category"], name)
    return sorted(seen.values())


def test_corpus_is_complete():
    files = sorted(p.name for p in HERE.iterdir() if p.is_file() and p.suffix in (".toml", ".bin"))
    assert files == sorted(EXPECTED), "every corpus file has an expected line and every expected line a file"
    assert len(files) >= 40
    assert len({case["category"] for case in EXPECTED.values()}) >= 10


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_library_gives_the_expected_line(name, monkeypatch):
    monkeypatch.chdir(HERE)
    with pytest.raises(ScenarioError) as info:
        load_scenario(name)
    line = str(info.value)
    assert line == EXPECTED[name]["error"]
    assert len(line.splitlines()) == 1
    # the format: FILE: [where: ]expected ..., got ...
    assert line.startswith(f"{name}: ")
    assert ": expected " in line and ", got " in line


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_gives_the_expected_line(name, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(HERE)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        cli.main(["run", name, "--out", str(out)], prog_name="gwsim")
    captured = capsys.readouterr()
    assert info.value.code == 2
    assert captured.out == ""
    assert captured.err == f"gwsim: error: {EXPECTED[name]['error']}\n"
    assert not out.exists()


@pytest.mark.parametrize("name", _one_per_category())
def test_cli_subprocess(name, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [*GWSIM, "run", name, "--out", str(out)], cwd=HERE, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [f"gwsim: error: {EXPECTED[name]['error']}"]
    assert not out.exists()


def test_oversize_file(tmp_path):
    big = tmp_path / "big.toml"
    with big.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no 10 MB written
    with pytest.raises(ScenarioError) as info:
        load_scenario(big)
    assert str(info.value) == f"{big}: expected a scenario file of at most {MAX_FILE_BYTES} bytes, got {MAX_FILE_BYTES + 1} bytes"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "scenario.toml"
    os.mkfifo(fifo)
    with pytest.raises(ScenarioError) as info:
        load_scenario(fifo)  # reading would block forever: refused before opening
    assert str(info.value) == f"{fifo}: expected a regular scenario file, got a device, FIFO or socket"


def test_byte_order_mark_is_accepted(tmp_path):
    """A UTF-8 BOM (some Windows editors) is not an error; the scenario loads."""
    text = (Path(__file__).resolve().parents[1] / "scenarios" / "validation" / "md1.toml").read_bytes()
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + text)
    assert load_scenario(path).run.name == "md1"
