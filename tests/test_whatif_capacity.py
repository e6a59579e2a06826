"""Capacity search: agreement with the M/M/c closed form, the bottleneck it names, and the
closed-loop (users) variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gwsim.cli import cli
from gwsim.whatif.capacity import capacity_search, set_load
from gwsim.whatif.runner import LocalExecutor, ScenarioSource
from simulator import queueing
from simulator.errors import UsageError
from stage_scenario import single_stage

# scenarios/validation/mm10.toml with a shorter run: ten exponential servers of mean 1 s
MM10 = single_stage("mm10_capacity", duration="600s", warmup="100s", drain="100s", replications=4, seed=5,
                    rate="5/s", service='{ dist = "exponential", mean = "1s" }', servers=10)

CPU_BOUND = """
[run]
name = "cpu_bound"
duration = "120s"
warmup = "20s"
drain = "30s"
replications = 3
seed = 9

[workload]
mode = "open"
arrivals = { process = "poisson", rate = "4/s" }
mix = { stage = 1.0 }

[endpoints.stage]
kind = "chat_completions"
model_selection = false
classes = [{ name = "job", provider = "p" }]

[gateway]
cpu_workers = 1
cpu_per_request = { dist = "deterministic", value = "80ms" }

[providers.p]
latency = { model = "plain", time = { dist = "exponential", mean = "200ms" } }
concurrency = 50

[fallback]
mode = "none"
max_attempts = 1
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_capacity_matches_mmc_closed_form_for_a_mean_wait_slo(tmp_path: Path) -> None:
    path = _write(tmp_path, "mm10.toml", MM10)
    max_wait = 0.2
    expected = queueing.mmc_max_rate_for_mean_wait(1.0, 10, max_wait)  # 7.98 req/s
    with LocalExecutor(2) as ex:
        result = capacity_search(ScenarioSource(path), [f"wait<{max_wait}s"], ex, lo=6.0, hi=9.5,
                                 replications=4, max_replications=16)
    assert result.answer == pytest.approx(expected, rel=0.05), result.stopped
    lo, hi = result.bracket
    assert lo < hi
    # the only finite resource is the servers' concurrency: utilisation = lambda / (c mu)
    assert result.bottleneck == "provider:servers"
    util = float(result.utilisation.iloc[0]["utilisation"])
    assert util == pytest.approx(result.answer / 10.0, rel=0.05)
    assert result.waits.iloc[0]["stage"] == "provider"


def test_capacity_names_the_cpu_when_it_saturates_first(tmp_path: Path) -> None:
    path = _write(tmp_path, "cpu.toml", CPU_BOUND)
    res = CliRunner().invoke(cli, ["capacity", path, "--slo", "p95<1s", "--workers", "2", "--tolerance", "0.05",
                                   "--max-replications", "6", "-n", "3", "--out", str(tmp_path / "cap"), "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["bottleneck"] == "cpu"
    # one core of 80 ms per request saturates at 12.5 req/s; a P95 under 1 s needs less
    assert 6.0 < payload["answer"] < 12.5
    assert payload["utilisation"]["cpu"] > payload["utilisation"]["provider:p"]
    for name in ("probes.parquet", "utilisation.parquet", "capacity.png", "capacity.html", "utilisation.png"):
        assert (tmp_path / "cap" / name).stat().st_size > 0


def test_capacity_in_users_for_a_closed_loop(tmp_path: Path) -> None:
    text = CPU_BOUND.replace('arrivals = { process = "poisson", rate = "4/s" }',
                             'mode_unused = 0').replace('mode = "open"', 'mode = "closed"\nusers = 2\nthink_time = { dist = "exponential", mean = "500ms" }')
    text = text.replace("mode_unused = 0\n", "")
    path = _write(tmp_path, "closed.toml", text)
    with LocalExecutor(2) as ex:
        result = capacity_search(ScenarioSource(path), ["p95<1s"], ex, replications=2, max_replications=4)
    assert result.variable == "users"
    assert result.answer == int(result.answer) and result.answer >= 2
    assert result.bracket[1] - result.bracket[0] >= 1


def test_set_load_and_bad_options(tmp_path: Path) -> None:
    data = {"workload": {"arrivals": {"process": "burst", "size": 10, "every": "1s"}}}
    assert set_load(data, "rate", 20.0)["workload"]["arrivals"]["every"] == "500ms"
    path = _write(tmp_path, "mm10.toml", MM10)
    with LocalExecutor(1) as ex:
        with pytest.raises(UsageError):
            capacity_search(ScenarioSource(path), ["p95<2s"], ex, replications=1)
        with pytest.raises(UsageError):
            capacity_search(ScenarioSource(path), ["p95<2s"], ex, lo=5, hi=4, replications=2)
