"""The simulator held to closed forms on scenarios where they apply."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulator import queueing, stats
from simulator.api import run_scenario
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]


def _gwsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gwsim.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def mm10_summary() -> dict:
    # exactly what a user runs: the scenario's own run length and replications
    proc = _gwsim("run", "scenarios/validation/mm10.toml", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_mm10_mean_time_in_system_matches_erlang_c(mm10_summary: dict) -> None:
    # W = 1/mu + C(c, a) / (c mu - lambda), Erlang C with c = 10, a = lambda/mu = 9
    lam, mu, c = 9.0, 1.0, 10
    expected_ms = 1000 * (1 / mu + queueing.erlang_c(c, lam / mu) / (c * mu - lam))
    assert expected_ms == pytest.approx(1668.7, abs=0.1)
    lo, hi = mm10_summary["overall"]["ci95_ms"]["mean"]
    mean = mm10_summary["overall"]["latency_ms"]["mean"]
    assert lo <= expected_ms <= hi, (lo, mean, hi)
    assert (hi - lo) / 2 <= 0.02 * mean, "95 % CI must be within +-2 %"


def test_mm10_median_time_in_system_matches_closed_form(mm10_summary: dict) -> None:
    # sojourn = Exp(mu) + (0 w.p. 1-C, Exp(c mu - lambda) w.p. C); its median solved numerically
    expected_ms = 1000 * queueing.mmc_sojourn_quantile(0.5, 9.0, 1.0, 10)
    lo, hi = mm10_summary["overall"]["ci95_ms"]["p50"]
    assert lo <= expected_ms <= hi, (lo, expected_ms, hi)
    assert (hi - lo) / 2 <= 0.03 * expected_ms


def test_mm10_throughput_equals_arrival_rate(mm10_summary: dict) -> None:
    assert mm10_summary["overall"]["success_rate"] == 1.0
    assert mm10_summary["overall"]["throughput_rps"] == pytest.approx(9.0, rel=0.01)


def test_md1_mean_wait_matches_pollaczek_khinchine() -> None:
    scenario = load_scenario(ROOT / "scenarios/validation/md1.toml")
    result = run_scenario(scenario, workers=2)
    win = stats.measurement_window(result.records, scenario.run.warmup, scenario.run.duration)
    ok = win[win.outcome == "ok"]
    mean_wait = float(ok.provider_queue_s.mean())
    # Wq = lambda E[S^2] / (2 (1 - rho)) = 0.8 * 1 / (2 * 0.2) = 2.0 s
    expected = queueing.pk_mean_wait(0.8, 1.0, 1.0)
    assert expected == pytest.approx(2.0)
    assert mean_wait == pytest.approx(expected, rel=0.03)
    # time in system = wait + the deterministic 1 s of service
    assert float(ok.latency_s.mean()) == pytest.approx(expected + 1.0, rel=0.03)


def test_littles_law_on_the_seed_scenario() -> None:
    # L: the simulator's own count of requests in the system, sampled every second;
    # lambda and W: from the per-request records.  L = lambda W.
    scenario = load_scenario(ROOT / "scenarios/seed/heavy_load.toml", ['run.window="1s"'])
    result = run_scenario(scenario, replications=1, workers=1)
    run = scenario.run
    start, end = run.warmup + 30.0, run.duration
    gauges = result.gauges[(result.gauges["at"] >= start) & (result.gauges["at"] < end)]
    L = float(gauges["in_flight"].mean())
    rec = result.records
    inside = rec[(rec.arrived_at >= start) & (rec.arrived_at < end)]
    lam = len(inside) / (end - start)
    W = float((inside.finished_at - inside.arrived_at).mean())
    assert L > 1.0
    assert L == pytest.approx(lam * W, rel=0.05), (L, lam, W)
