"""Same scenario and seed -> identical results; another seed -> other numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHORT = ["--set", 'run.duration="400s"', "--set", 'run.warmup="50s"', "-n", "3"]


def _json(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "gwsim.cli", "run", "scenarios/validation/mm10.toml", "--json", *SHORT, *args],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\\n") <= 1  # exactly one JSON object
    return proc.stdout


def test_same_seed_gives_byte_identical_json() -> None:
    assert _json("--seed", "11") == _json("--seed", "11", "--workers", "1")


def test_different_seeds_give_different_numbers() -> None:
    assert _json("--seed", "11") != _json("--seed", "12")
