"""One-at-a-time sensitivity: scaling rules and the ranking on a queue whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gwsim.cli import cli
from gwsim.whatif.runner import LocalExecutor, ScenarioSource
from gwsim.whatif.sensitivity import discover, metric_column, run_sensitivity, scaled
from simulator.errors import UsageError
from stage_scenario import single_stage

MM = single_stage("mm_sens", duration="200s", warmup="20s", replications=3, seed=4, rate="6/s", client_timeout="600s",
                  service='{ dist = "lognormal", median = "800ms", p95 = "2s" }', servers=12, queue=False)


@pytest.fixture()
def mm(tmp_path: Path) -> str:
    path = tmp_path / "mm.toml"
    path.write_text(MM)
    return str(path)


def test_scaling_rules() -> None:
    data = {"a": {"t": "2s", "r": "10/s", "n": 2, "x": 1.5,
                  "d": {"dist": "gamma", "mean": "1s", "cv": 0.5}, "m": {"dist": "lognormal", "mu": 0.0, "sigma": 1.0}}}
    assert scaled(data, "a.t", 1.2, 1)[1] == "2.4s"
    assert scaled(data, "a.r", 0.8, -1)[1] == "8/s"
    assert scaled(data, "a.n", 1.2, 1)[1:] == (3, 1.5)  # an integer moves by at least one
    assert scaled(data, "a.n", 0.8, -1)[1] == 1
    assert scaled(data, "a.x", 1.2, 1)[1] == pytest.approx(1.8)
    assert scaled(data, "a.d", 1.2, 1)[1] == {"dist": "gamma", "mean": "1.2s", "cv": 0.5}
    assert scaled(data, "a.m", 2.0, 1)[1]["mu"] == pytest.approx(0.6931, abs=1e-4)
    assert data["a"]["t"] == "2s"  # the input is left alone
    with pytest.raises(UsageError):
        scaled(data, "a.missing", 1.2, 1)
    assert metric_column("p95") == "p95_ms" and metric_column("chat:success") == "chat:success_rate"


def test_discover_skips_run_mix_and_probabilities(mm: str) -> None:
    found = discover(ScenarioSource(mm).data())
    assert "providers.servers.latency.time" in found
    assert "workload.arrivals.rate" in found
    assert "providers.servers.concurrency" in found
    assert not any(k.startswith("run.") or k.startswith("workload.mix") for k in found)


def test_service_time_outranks_an_irrelevant_timeout(mm: str) -> None:
    with LocalExecutor(2) as ex:
        result = run_sensitivity(ScenarioSource(mm), ["workload.client_timeout", "providers.servers.latency.time",
                                                      "providers.servers.concurrency"], ex, metric="p95", replications=3)
    table = result.table.set_index("parameter")
    assert result.table.iloc[0]["parameter"] == "providers.servers.latency.time"
    assert table.loc["providers.servers.latency.time", "high_delta"] > 0 > table.loc["providers.servers.latency.time", "low_delta"]
    assert table.loc["providers.servers.latency.time", "significant"]
    # the client timeout is never reached: common random numbers make its effect exactly zero
    assert table.loc["workload.client_timeout", "swing"] == 0.0
    assert not table.loc["workload.client_timeout", "significant"]


def test_sensitivity_command_writes_tornado(mm: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["sensitivity", mm, "--param", "providers.servers.latency.time", "--param",
                                   "workload.arrivals.rate", "--delta", "10", "-n", "2", "--workers", "1",
                                   "--out", str(tmp_path / "s"), "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert [p["parameter"] for p in payload["parameters"]][0] == "providers.servers.latency.time"
    assert (tmp_path / "s" / "tornado.png").read_bytes()[:4] == b"\x89PNG"
    assert CliRunner().invoke(cli, ["sensitivity", mm, "--param", "nope.x", "-n", "2"]).exit_code == 2
    assert CliRunner().invoke(cli, ["sensitivity", mm, "--delta", "150", "-n", "2"]).exit_code == 2
