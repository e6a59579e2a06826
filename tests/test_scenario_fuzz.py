"""Mutated scenarios never crash the loader: the answer is a Scenario or a one-line ScenarioError.

Hypothesis takes the valid scenario files under scenarios/ and breaks them: deletes keys, swaps
values for other types, huge, negative, non-finite or deeply nested ones, random strings, unknown
keys, ``--set`` overrides with random paths and values, and damaged TOML text.  Anything but a
``Scenario`` or a ``ScenarioError`` whose text is one line naming the file is a failure (a
traceback a user would see).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.errors import ScenarioError
from simulator.scenario import Scenario, apply_overrides, apply_profile, read_scenario_data, scenario_from_data

ROOT = Path(__file__).resolve().parents[1]


def _valid_scenarios() -> list[Path]:
    found = []
    for path in sorted((ROOT / "scenarios").rglob("*.toml")):
        try:
            _validate(read_scenario_data(path), str(path), path.parent)
        except ScenarioError:
            continue  # not a scenario (a profile, a stress list) or someone else's broken file
        found.append(path)
    return found


def _validate(data: Any, source: str, base: Path) -> Scenario:
    """What ``load_scenario`` does after reading and overriding: machine profile, then schema."""
    return scenario_from_data(apply_profile(data, base, source), source, base)


SCENARIOS = _valid_scenarios()
RAW = {path: read_scenario_data(path) for path in SCENARIOS}
SOURCE = "fuzz.toml"

# Derandomized so CI sees the same cases every run; GWSIM_FUZZ_EXAMPLES=5000 GWSIM_FUZZ_RANDOM=1
# explores further by hand.
EXAMPLES = int(os.environ.get("GWSIM_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("GWSIM_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in the raw data (tables and arrays included)."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, prefix + (i,)))
    return out


def _get(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


def _nested(depth: int, leaf: Any, as_table: bool) -> Any:
    for _ in range(depth):
        leaf = {"x": leaf} if as_table else [leaf]
    return leaf


scalars = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 2**70, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, 1e-300]),
    st.booleans(),
    st.text(max_size=20),
    st.builds(lambda x, u: f"{x}{u}", st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**30), 10**30),
              st.sampled_from(["s", "ms", "us", "m", "h", "/s", "/m", " parsecs", "", "e999s"])),
    st.sampled_from(["exponential", "mixture", "poisson", "plain", "tokens", "closed", "none", "race"]),
    st.dates(),
    st.datetimes(),
    st.times(),
    st.none(),
)
# keys the schema knows, so that random tables reach deep into distributions and unions
VOCABULARY = [
    "dist", "mean", "median", "p95", "mu", "sigma", "cv", "shape", "scale", "low", "high", "value", "components",
    "weight", "of", "file", "column", "unit", "values", "process", "rate", "size", "every", "model", "ttft",
    "tokens_per_s", "time", "mode", "users", "mix", "kind", "classes", "name", "provider", "start", "end",
    "latency_factor", "error_rate", "semantics", "window", "limit", "candidates", "fallback_choice", "profile",
]
keys = st.sampled_from(VOCABULARY) | st.text(max_size=8)
values = st.recursive(
    scalars | st.sampled_from(VOCABULARY),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=14,
)


@st.composite
def mutated(draw) -> tuple[Path, dict]:
    path = draw(st.sampled_from(SCENARIOS))
    data = copy.deepcopy(RAW[path])
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(_paths(data)))
        op = draw(st.sampled_from(["delete", "replace", "negate", "huge", "inject", "nest", "string"]))
        if not where:  # the top level: only a key can be added
            op = "inject"
        target = _get(data, where)
        parent = _get(data, where[:-1]) if where else None
        key = where[-1] if where else None
        if op == "delete" and isinstance(parent, dict):
            del parent[key]
        elif op == "delete" and isinstance(parent, list):
            parent.pop(key)
        elif op == "replace":
            parent[key] = draw(values)
        elif op == "negate" and isinstance(target, (int, float)) and not isinstance(target, bool):
            parent[key] = -target
        elif op == "huge":
            parent[key] = draw(st.sampled_from([2**64, 2**70, 10**30, 1e308, float("inf"), float("nan"), "1e309s", "9" * 40 + "h"]))
        elif op == "inject" and isinstance(target, dict):
            target[draw(st.sampled_from(VOCABULARY) | st.text(min_size=1, max_size=12))] = draw(values)
        elif op == "nest":
            parent[key] = _nested(draw(st.integers(1, 80)), target, draw(st.booleans()))
        elif op == "string":
            parent[key] = draw(st.text(max_size=30))
    return path, data


def _assert_one_line(exc: ScenarioError, source: str) -> None:
    text = str(exc)
    assert text.startswith(f"{source}: "), text
    assert len(text.splitlines()) == 1, text
    assert ": expected " in text, text


def _assert_one_line_from(exc: ScenarioError, source: str) -> None:
    """One line naming where the problem is: the file or the override."""
    text = str(exc)
    assert len(text.splitlines()) == 1, text
    assert "expected" in text, text
    assert text.startswith((f"{source}: ", "--set ")), text


def test_there_are_scenarios_to_mutate():
    assert SCENARIOS, "scenarios/ holds at least one valid scenario"
    assert any(p.parent.name == "validation" for p in SCENARIOS)


@FUZZ
@given(mutated())
def test_mutated_data_is_a_scenario_or_one_line(case):
    path, data = case
    try:
        result = _validate(data, SOURCE, path.parent)
    except ScenarioError as exc:
        _assert_one_line_from(exc, SOURCE)
    else:
        assert isinstance(result, Scenario)


set_paths = st.builds(
    lambda parts: ".".join(parts),
    st.lists(st.sampled_from(["run", "workload", "mix", "duration", "replications", "providers", "endpoints", "0", "-1", "99",
                              "classes", "latency", "time", "mean", "dist", "gateway", "cpu_workers", "x", ""]) | st.text(max_size=6),
             min_size=0, max_size=6),
)
set_values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "0x" + "f" * 40, "[[[[1]]]]", "{a = 1}", "true", "'x'", "2**70", "1979-05-27",
                     "1\nb = 2", "\"unterminated", "[1, 'a']", "{", "10/s", "-3s", "=", "a=b"]),
)


@FUZZ
@given(st.sampled_from(SCENARIOS), st.lists(st.builds(lambda p, v, eq: f"{p}{eq}{v}", set_paths, set_values, st.sampled_from(["=", "=", " = ", ""])),
                                            min_size=1, max_size=3))
def test_random_overrides_are_a_scenario_or_one_line(path, overrides):
    try:
        data = apply_overrides(RAW[path], overrides, SOURCE)
        result = _validate(data, SOURCE, path.parent)
    except ScenarioError as exc:
        _assert_one_line_from(exc, SOURCE)
    else:
        assert isinstance(result, Scenario)


@st.composite
def damaged_text(draw) -> tuple[Path, bytes]:
    path = draw(st.sampled_from(SCENARIOS))
    raw = bytearray(path.read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "flip", "duplicate_line", "truncate"]))
        i = draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "delete" and raw:
            del raw[i : i + draw(st.integers(1, 8))]
        elif op == "insert":
            raw[i:i] = draw(st.sampled_from([b"[", b"]", b"{", b"}", b"=", b'"', b"'", b"\n", b"\x00", b"\xff", b"#", b",", b".", b"nan", b"1e999"])
                            | st.binary(max_size=4))
        elif op == "flip" and raw:
            raw[i] = draw(st.integers(0, 255))
        elif op == "duplicate_line":
            lines = bytes(raw).split(b"\n")
            j = draw(st.integers(0, len(lines) - 1))
            lines.insert(j, lines[j])
            raw = bytearray(b"\n".join(lines))
        elif op == "truncate":
            del raw[i:]
    return path, bytes(raw)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 2))
@given(damaged_text())
def test_damaged_files_are_a_scenario_or_one_line(case):
    path, raw = case
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "fuzz.toml"
        target.write_bytes(raw)
        # empirical sample files are named relative to the original scenario
        try:
            data = read_scenario_data(target)
            result = _validate(data, str(target), path.parent)
        except ScenarioError as exc:
            _assert_one_line_from(exc, str(target))
        else:
            assert isinstance(result, Scenario)


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), 1e309, 2**70, 2**64, -(2**64), 10**4000, _nested(5000, 1, True), _nested(5000, 1, False)],
    ids=["nan", "inf", "-inf", "1e309", "2**70", "2**64", "-2**64", "10**4000", "deep-tables", "deep-arrays"],
)
def test_absurd_values_anywhere_in_run(value):
    """Counts, durations and names of [run] given absurd values: one line each, never a traceback."""
    for key in ("replications", "seed", "duration", "name", "window"):
        data = copy.deepcopy(RAW[SCENARIOS[0]])
        data["run"][key] = value
        with pytest.raises(ScenarioError) as info:
            scenario_from_data(data, SOURCE)
        _assert_one_line(info.value, SOURCE)
        assert f"run.{key}" in str(info.value)
