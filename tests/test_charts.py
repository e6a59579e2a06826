"""Charts a person reads without the README: what was injected, every line labelled, and
the second metric a decision depends on next to the first."""

from __future__ import annotations

import json

import pandas as pd

from gwsim.whatif import charts


def _points() -> pd.DataFrame:
    rows = []
    for timeout in (1.0, 2.0, 4.0):
        for cap in (0.0, 16.0):
            p95 = 1000 * timeout
            rows.append({"fallback.attempt_timeout": timeout, "providers.alpha.pool.max_conns_per_host": cap,
                         "p95_ms": p95, "p95_ms_lo": p95 - 50, "p95_ms_hi": p95 + 50,
                         "success_rate": 0.6 + 0.1 * timeout, "success_rate_lo": 0.5, "success_rate_hi": 1.0})
    return pd.DataFrame(rows)


def _texts(spec) -> list[str]:
    """Every string a spec would draw: titles, subtitles, mark texts and data values."""
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            found.append(node)

    walk(spec)
    return found


def test_sweep_chart_shows_success_under_latency_with_labelled_slos_and_intervals() -> None:
    params = ["fallback.attempt_timeout", "providers.alpha.pool.max_conns_per_host"]
    chart = charts.sweep_chart(_points(), "p95_ms", params, threshold=4000, companion="success_rate",
                               companion_threshold=0.99, replications=5, subtitle="Injected: alpha 5x slower")
    spec = json.loads(chart.to_json())
    assert len(spec["vconcat"]) == 2  # latency on top, success rate under it
    texts = _texts(spec)
    assert "SLO 4,000 ms" in texts and "SLO 99 %" in texts
    assert "Injected: alpha 5x slower" in texts
    assert any("95 % confidence interval" in t and "5 replications" in t for t in texts)
    # a cap of 0 means no cap, and the legend says so
    assert "none" in texts


def test_sweep_chart_without_companion_is_one_panel() -> None:
    chart = charts.sweep_chart(_points(), "p95_ms", ["fallback.attempt_timeout"], threshold=4000)
    spec = json.loads(chart.to_json())
    assert "vconcat" not in spec and "layer" in spec


def test_capacity_chart_labels_the_slo_and_the_answer() -> None:
    probes = pd.DataFrame({"rate": [5.0, 7.0, 9.0], "p95_ms": [100.0, 190.0, 400.0], "p95_ms_lo": [90.0, 180.0, 350.0],
                           "p95_ms_hi": [110.0, 200.0, 450.0], "replications": [4, 4, 8], "feasible": [True, True, False]})
    spec = json.loads(charts.capacity_chart(probes, "p95_ms", 200.0, "rate", answer=7.0, subtitle="Injected: Poisson").to_json())
    texts = _texts(spec)
    assert "SLO 200 ms" in texts and "answer 7" in texts
    assert any("4-8 replications" in t for t in texts)


def test_utilisation_chart_labels_its_rule() -> None:
    util = pd.DataFrame({"resource": ["gateway_cpu"], "utilisation": [0.9]})
    texts = _texts(json.loads(charts.utilisation_chart(util).to_json()))
    assert "100 % = saturated" in texts


def test_capacity_chart_draws_every_slo_metric_on_the_same_load_axis() -> None:
    probes = pd.DataFrame({"rate": [5.0, 7.0, 9.0], "p95_ms": [100.0, 190.0, 400.0], "p95_ms_lo": [90.0, 180.0, 350.0],
                           "p95_ms_hi": [110.0, 200.0, 450.0], "success_rate": [1.0, 0.995, 0.9],
                           "success_rate_lo": [1.0, 0.99, 0.85], "success_rate_hi": [1.0, 1.0, 0.95],
                           "replications": [4, 4, 4], "feasible": [True, True, False]})
    spec = json.loads(charts.capacity_chart(probes, "p95_ms", 200.0, "rate", answer=7.0,
                                            more=[("success_rate", 0.99)]).to_json())
    assert len(spec["vconcat"]) == 2  # the second SLO's metric under the first
    texts = _texts(spec)
    assert "SLO 200 ms" in texts and "SLO 99 %" in texts and "answer 7" in texts
    for panel in spec["vconcat"]:  # the answer's line in each panel
        assert any(layer["encoding"].get("x", {}).get("field") == "answer" for layer in panel["layer"])


def test_tornado_chart_says_what_its_whiskers_and_zero_line_are() -> None:
    table = pd.DataFrame([{"parameter": "providers.alpha.concurrency", "base_value": "40", "swing": 1800.0,
                           "low_delta": 1765.0, "low_lo": 1121.0, "low_hi": 2409.0, "low_label": "-20 %", "low_value": "32",
                           "high_delta": -33.3, "high_lo": -45.9, "high_hi": -20.7, "high_label": "+20 %", "high_value": "48"}])
    spec = json.loads(charts.tornado_chart(table, "p95_ms", baseline=2519.0, replications=4,
                                           subtitle="Injected: nothing").to_json())
    texts = _texts(spec)
    assert "baseline 2,519" in texts and "Injected: nothing" in texts
    assert any("whiskers: its paired 95 % confidence interval" in t and "4 replications" in t for t in texts)
    # the whiskers reach the CI's ends, so the axis holds them
    domain = next(layer["encoding"]["x"]["scale"]["domain"] for layer in spec["layer"] if "scale" in layer["encoding"].get("x", {}))
    assert domain[0] < -45.9 and domain[1] > 2409.0


def test_conditions_name_the_load_and_every_injected_fault() -> None:
    from pathlib import Path

    from simulator.scenario import load_scenario

    root = Path(__file__).resolve().parents[1]
    sc = load_scenario(root / "scenarios" / "examples" / "my_gateway.toml")
    text = charts.conditions(sc)
    assert text.startswith("Load: 20 req/s Poisson over 110 s after a 10 s warm-up.")
    assert "Injected: provider primary 4x slower from 40 s to 80 s." in text
    assert charts.conditions(sc, "each probe's arrival rate").startswith("Load: each probe's arrival rate over")
    calm = load_scenario(root / "scenarios" / "validation" / "mm10.toml")
    assert charts.conditions(calm).endswith("No fault injected.")
