"""Error lines name what the user typed: a bad ``--set``/``--param`` names that flag (not the
scenario file), a unit error lists every unit accepted, and the other problems of a scenario are
shown (the first five) instead of counted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gwsim.cli import cli
from simulator.errors import ScenarioError
from simulator.scenario import SHOWN_PROBLEMS, blamed, load_scenario
from simulator.units import DURATION_EXPECTED, DURATION_UNITS_TEXT, RATE_EXPECTED, UnitError, parse_duration, parse_rate

MD1 = str(Path(__file__).resolve().parents[1] / "scenarios" / "validation" / "md1.toml")


def _units(text: str) -> list[str]:
    return [u.strip() for u in re.split(r",| or ", text) if u.strip()]


def test_every_duration_unit_the_error_lists_is_accepted_and_it_lists_them_all() -> None:
    listed = _units(DURATION_UNITS_TEXT)
    assert listed == ["us", "ms", "s", "m", "h"]
    for unit in listed:
        assert parse_duration(f"2{unit}") > 0
    with pytest.raises(UnitError, match=re.escape(f"expected {DURATION_EXPECTED}, got '2 parsecs'")):
        parse_duration("2 parsecs")


def test_every_rate_unit_the_error_lists_is_accepted() -> None:
    listed = _units(RATE_EXPECTED.removeprefix("a rate per ").split(", such as")[0])
    assert listed == ["ms", "s", "m", "h"]
    for unit in listed:
        assert parse_rate(f"2/{unit}") > 0
    with pytest.raises(UnitError, match=re.escape(f"expected {RATE_EXPECTED}, got 5")):
        parse_rate(5)


def test_a_bad_set_is_named_after_the_flag_and_the_other_problems_are_shown() -> None:
    bad = ["run.duration=abc", "run.seed=-1", "providers.server.concurrency=x", "workload.arrivals.rate=5",
           "fallback.max_attempts=0", "run.replications=0", "run.name=3"]
    with pytest.raises(ScenarioError) as info:
        load_scenario(MD1, bad)
    line = str(info.value)
    assert line.startswith("--set run.name=3: run.name: expected a string, got 3 (and 6 more problems: ")
    assert line.count("; ") == SHOWN_PROBLEMS == 5 and line.endswith("; and 1 more)")
    assert "run.duration: expected a duration with a unit of us, ms, s, m or h" in line


def test_blame_matches_the_key_above_below_or_beside() -> None:
    flags = ["--set providers.server.latency={model='plain'}", "--set endpoints.stage.classes.0.provider=ghost", "--set run.duration=9s"]
    assert blamed("f.toml", "providers.server.latency.time", flags) == flags[0]
    assert blamed("f.toml", "endpoints.stage.classes[0].provider", flags) == flags[1]
    assert blamed("f.toml", "run.warmup", flags) == "f.toml with --set run.duration=9s"
    assert blamed("f.toml", "fallback.mode", flags) == "f.toml"


def test_a_bad_sweep_value_is_named_after_param(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["sweep", MD1, "--param", "run.duration=300s,7", "--set", "run.warmup=1s", "-n", "2"], prog_name="gwsim")
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err == ("gwsim: error: --param run.duration=7: run.duration: expected a duration with a unit of us, ms, s, m or h, "
                   "such as '250ms' or '3s', got 7\n")
