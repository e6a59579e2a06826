"""Calibration: the check math on synthetic frames, the fit recovering a known parameter,
the profile merge, and one tiny end-to-end check against the real engine."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gwsim.calibration.metrics import compare_frames, ks_statistic, pct_error, tost_quantile


def _frame(lat_s: np.ndarray, endpoint: str = "ep", ok_share: float = 1.0, span: float = 10.0) -> pd.DataFrame:
    n = len(lat_s)
    outcome = np.where(np.arange(n) < int(round(ok_share * n)), "ok", "timeout")
    return pd.DataFrame({
        "endpoint": endpoint, "request_class": "c", "arrived_at": np.linspace(0, span, n, endpoint=False),
        "latency_s": lat_s, "outcome": outcome,
    })


def test_pct_error_and_ks():
    assert pct_error(110.0, 100.0) == pytest.approx(10.0)
    assert pct_error(90.0, 100.0) == pytest.approx(-10.0)
    assert pct_error(1.0, 0.0) is None
    a = np.arange(100.0)
    assert ks_statistic(a, a) == 0.0
    assert ks_statistic(a, a + 1000) == 1.0


def test_tost_equivalent_for_same_distribution_not_for_shifted():
    rng = np.random.default_rng(1)
    a, b = rng.gamma(4, 25, 4000), rng.gamma(4, 25, 4000)
    assert tost_quantile(a, b, 50)["equivalent"]
    assert not tost_quantile(a * 1.3, b, 50)["equivalent"]
    # Small samples: the interval is too wide to claim equivalence even with no real difference.
    assert not tost_quantile(a[:15], b[:15], 95)["equivalent"]


def test_compare_frames_errors_and_misses():
    rng = np.random.default_rng(2)
    lat = rng.uniform(0.1, 0.2, 2000)
    measured = _frame(lat, ok_share=0.99)
    predicted = _frame(lat * 1.08, ok_share=1.0)  # 8 % slow everywhere, 1 pp more success
    comps = {c.endpoint: c for c in compare_frames(predicted, measured, window=(0, 10))}
    ep = comps["ep"]
    assert ep.errors["p50"] == pytest.approx(8.0, abs=0.5)
    assert ep.errors["success_pp"] == pytest.approx(1.0, abs=0.01)
    assert "p50" in ep.misses and "success_pp" in ep.misses and "p95" not in ep.misses
    assert not ep.passed
    same = compare_frames(measured, measured, window=(0, 10))
    assert all(c.passed for c in same) and same[0].ks == 0.0


SCENARIO = textwrap.dedent("""
    profile = "{profile}"
    [run]
    name = "fitme"
    duration = "300s"
    warmup = "10s"
    replications = 1
    seed = 5
    [workload]
    mode = "open"
    arrivals = {{ process = "poisson", rate = "8/s" }}
    mix = {{ ep = 1.0 }}
    [endpoints.ep]
    kind = "chat_completions"
    model_selection = false
    classes = [{{ name = "c", provider = "p" }}]
    [providers.p]
    latency = {{ model = "plain", time = {{ dist = "uniform", low = "{low}", high = "{high}" }} }}
    concurrency = 1
    [fallback]
    mode = "none"
    max_attempts = 1
    [calibration]
    free = {{ "providers.p.latency.time.high" = [0.05, 0.2] }}
""")


def _write(tmp_path: Path, high: str, profile: str = "none") -> Path:
    p = tmp_path / f"s_{high}.toml"
    p.write_text(SCENARIO.format(low="20ms", high=high, profile=profile))
    return p


def test_fit_recovers_a_known_parameter(tmp_path):
    from gwsim.calibration.fit import fit_scenario
    from simulator.api import run_scenario
    from simulator.scenario import load_scenario

    truth = load_scenario(_write(tmp_path, "120ms"))
    measured = run_scenario(truth, replications=1, seed=99).records  # another seed: a "measurement"
    result = fit_scenario(_write(tmp_path, "60ms"), measured, replications=1, max_evals=20)
    assert result.best["providers.p.latency.time.high"] == pytest.approx(0.120, rel=0.06)
    assert result.best_distance < result.start_distance


def test_profile_adds_machine_overheads(tmp_path):
    from simulator.scenario import load_scenario

    (tmp_path / "prof.toml").write_text('[machine]\nhop_rtt = "1ms"\ngateway_cpu_per_request = "2ms"\nredis_op_time = "0.5ms"\n')
    sc = load_scenario(_write(tmp_path, "100ms", profile="prof.toml"))
    assert sc.providers["p"].network_rtt.mean == pytest.approx(0.001)
    assert sc.gateway.cpu_per_request.mean == pytest.approx(0.002)
    assert sc.redis.op_time.mean == pytest.approx(0.0005)
    assert sc.providers["p"].pool.max_idle_per_host == 100  # the provider pool's default survives the merge
    off = load_scenario(_write(tmp_path, "100ms", profile="prof.toml"), ['profile="none"'])
    assert off.gateway.cpu_per_request.mean == 0.0


def test_read_measured_seed_csv():
    from gwsim.calibration.fit import read_measured

    # the copy the project ships, so the test never depends on anything outside the repo
    path = Path(__file__).resolve().parents[1] / "gwsim" / "data" / "heavy_load_2025-08-14.csv"
    df = read_measured(path)
    assert len(df) == 6000
    assert (df["outcome"] != "ok").sum() == 4
    assert df["latency_s"].median() == pytest.approx(4.508, abs=0.01)


@pytest.mark.timeout(120)
def test_end_to_end_check_on_a_5s_real_scenario():
    from gwsim.calibration.check import check_scenario

    path = Path(__file__).resolve().parents[1] / "scenarios" / "calibration" / "light_load.toml"
    c = check_scenario(path, duration_s=5.0, replications=1)
    assert c.accounting["sent"] > 50
    ep = {e.endpoint: e for e in c.endpoints}
    assert set(ep) == {"select", "chat", "all"}
    # Loose: the tiny run must land in the right range (the strict thresholds are the suite's job).
    assert abs(ep["all"].errors["p50"]) < 50
    assert ep["all"].errors["success_pp"] == pytest.approx(0.0, abs=2.0)
