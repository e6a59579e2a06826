"""Packaging: a core install (simulator and CLI) that runs without the extras, extras named in one
line when a command needs them, the test extra pulling in every extra, lower bounds on every
dependency, simpy held to the minor release the clock reads, py.typed, and outputs that say
which gwsim, which scenario and which seed produced them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest

from gwsim.extras import EXTRAS
from gwsim.output import parquet_provenance

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MD1 = str(ROOT / "scenarios" / "validation" / "md1.toml")
SHORT = ["--set", "run.duration=300s", "--set", "run.warmup=10s"]
EXTRA_MODULES = [m for mods, _ in EXTRAS.values() for m in mods]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_the_core_leaves_the_extras_out_and_the_test_extra_pulls_them_all_in() -> None:
    project = PYPROJECT["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert {_name(r) for r in extras["real"]} == {"aiohttp", "redis", "cryptography"}
    assert {_name(r) for r in extras["charts"]} == {"altair", "vl-convert-python"}
    assert {_name(r) for r in extras["dask"]} == {"dask"}
    assert not core & {_name(r) for name in ("real", "charts", "dask") for r in extras[name]}
    assert "gwsim[real,charts,dask]" in extras["test"]
    for requirement in project["dependencies"] + [r for name in ("real", "charts", "dask", "test", "bench")
                                                  for r in extras[name] if not r.startswith("gwsim[")]:
        assert ">=" in requirement, f"{requirement}: expected a lower bound"


def test_simpy_is_held_to_the_minor_release_the_clock_reads() -> None:
    (simpy,) = [r for r in PYPROJECT["project"]["dependencies"] if _name(r) == "simpy"]
    assert simpy == "simpy>=4.1,<4.2"
    assert version("simpy").startswith("4.1.")
    clock = (ROOT / "simulator" / "model" / "clock.py").read_text()
    assert "self._queue" in clock and "self._eid" in clock  # the internals the pin is for


def test_every_package_is_typed() -> None:
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for package in ("simulator", "real_engine", "gwsim"):
        assert (ROOT / package / "py.typed").is_file()
        assert "py.typed" in data[package]


def _gwsim_without_extras(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``gwsim ARGS`` in a process where none of the extras' modules can be imported."""
    code = (f"import sys\nfor m in {EXTRA_MODULES!r}:\n    sys.modules[m] = None\n"
            "from gwsim.cli import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_the_core_runs_without_any_extra_and_a_command_that_needs_one_names_it(tmp_path) -> None:
    done = _gwsim_without_extras(["run", MD1, *SHORT, "-n", "1", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["replications"] == 1
    assert "sweep" in _gwsim_without_extras(["--help"], tmp_path).stdout

    done = _gwsim_without_extras(["measure", MD1, "--duration", "1s"], tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("gwsim: error: gwsim measure: expected the 'real' extra (aiohttp, redis, cryptography), found aiohttp, "
                           "redis, cryptography not installed; install it with pip install 'gwsim[real]'\n")

    done = _gwsim_without_extras(["sweep", MD1, *SHORT, "--param", "run.seed=1,2", "--out", str(tmp_path / "sw")], tmp_path)
    assert done.returncode == 2 and "pip install 'gwsim[charts]'" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "sw").exists()

    done = _gwsim_without_extras(["validate", MD1, *SHORT, "--slo", "p95<9s", "--stress", "none", "--dask", "local"], tmp_path)
    assert done.returncode == 2 and "gwsim validate --dask: expected the 'dask' extra" in done.stderr


def test_outputs_say_which_gwsim_scenario_and_seed_made_them(tmp_path) -> None:
    from gwsim.cli import cli

    def run(out: Path, *extra: str) -> dict:
        with pytest.raises(SystemExit) as info:
            cli.main(["run", MD1, *SHORT, "-n", "1", "--seed", "5", *extra, "--out", str(out)], prog_name="gwsim")
        assert info.value.code == 0
        return json.loads((out / "summary.json").read_text())

    summary = run(tmp_path / "a")
    assert summary["gwsim_version"] == version("gwsim") and summary["seed"] == 5
    assert re.fullmatch(r"[0-9a-f]{64}", summary["scenario_sha256"])
    for name in ("records.parquet", "gauges.parquet", "timeseries.parquet"):
        assert parquet_provenance(tmp_path / "a" / name) == {
            "gwsim_version": version("gwsim"), "scenario_sha256": summary["scenario_sha256"], "seed": 5}
    assert len(pd.read_parquet(tmp_path / "a" / "records.parquet")) > 0  # still an ordinary table
    # the same configuration hashes alike however it was written; another one differently
    assert run(tmp_path / "b", "--set", "run.duration=300.0s")["scenario_sha256"] == summary["scenario_sha256"]
    assert run(tmp_path / "c", "--set", "providers.server.concurrency=2")["scenario_sha256"] != summary["scenario_sha256"]
