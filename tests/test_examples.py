"""The commented example scenarios (scenarios/examples/) load, and the commands each one's
header suggests run, shortened (20 s of simulated traffic, 2 replications), without an error.

The README points newcomers at these files; a field renamed in the schema would otherwise
break one unnoticed (the fuzz test skips a file that does not load)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "scenarios" / "examples").glob("*.toml"))
SHORT = ["--set", "run.duration=20s", "--set", "run.warmup=0s", "--set", "run.drain=5s", "-n", "2"]


def _header_commands(path: Path) -> list[str]:
    """The '#   gwsim ...' lines of a file's opening comment."""
    found = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("gwsim "):
            found.append(text)
    return found


COMMANDS = [c for p in EXAMPLES for c in _header_commands(p)]


def test_there_are_the_examples_the_readme_names() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"my_gateway", "retries", "primary_backup_breaker", "hedged", "multi_tenant_limits", "semantic_cache",
            "brownout", "streaming_llm"} <= names
    readme = (ROOT / "README.md").read_text()
    assert all(f"{name}.toml" in readme for name in names)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_loads_and_says_what_it_asks(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.run.name
    # an example teaches: its opening comment says what it models
    assert path.read_text().startswith("# ")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[6:70])
def test_every_command_an_example_suggests_runs(command: str, tmp_path: Path) -> None:
    args = shlex.split(command)[1:]
    if args[0] == "measure":
        pytest.skip("the real engine: tests/real_engine and the README test measure a scenario")
    args += SHORT
    if args[0] == "sweep":
        args += ["--out", str(tmp_path / "sweep")]
    if args[0] == "capacity":
        args += ["--tolerance", "0.25"]
    done = subprocess.run([sys.executable, "-c", "from gwsim.cli import main; main()", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr
