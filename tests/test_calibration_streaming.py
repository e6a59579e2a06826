"""Calibration check of streamed endpoints (issue 15): TTFT P50/P95 and TPOT P50 compared and
decided as the latency percentiles are, on synthetic records; the streaming suite's scenarios
load with the main suite's profile."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gwsim.calibration.check import ScenarioCheck, format_checks, suite_document
from gwsim.calibration.metrics import STREAM_FIGURES, THRESHOLDS, compare_frames, stream_halfwidths


def _streamed(n: int, *, span: float = 100.0, seed: int = 3, ttft_scale: float = 1.0, tpot_scale: float = 1.0,
              stream: bool = True, endpoint: str = "chat") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ttft = rng.gamma(4, 0.05, n) * ttft_scale  # about 200 ms
    tpot = rng.uniform(0.015, 0.03, n) * tpot_scale
    tokens = rng.integers(1, 200, n)  # some one-token replies: no TPOT
    tpot = np.where(tokens >= 2, tpot, np.nan)
    return pd.DataFrame({
        "endpoint": endpoint, "request_class": "c", "arrived_at": np.linspace(0, span, n, endpoint=False),
        "latency_s": ttft + np.nan_to_num(tpot) * (tokens - 1), "outcome": "ok", "stream": stream,
        "ttft_s": ttft if stream else np.nan, "tpot_s": tpot if stream else np.nan,
    })


def test_stream_figures_are_compared_and_judged_against_their_thresholds():
    measured = _streamed(20000)
    perfect = compare_frames(measured, measured, window=(0, 100), counts="fixed")[0]
    assert perfect.passed and perfect.streamed == 20000
    assert set(STREAM_FIGURES) <= set(perfect.errors) and all(perfect.errors[k] == 0.0 for k in STREAM_FIGURES)
    # TPOT over the replies of two tokens or more only (NaN otherwise)
    tpot = measured["tpot_s"].dropna().to_numpy() * 1000
    assert perfect.measured["tpot_p50"] == pytest.approx(np.percentile(tpot, 50))
    assert perfect.measured["ttft_p95"] == pytest.approx(np.percentile(measured["ttft_s"] * 1000, 95))

    # TTFT 8 % slow: beyond P50's 5 %, within P95's 10 %; TPOT 7 % fast: beyond its 5 %
    slow = _streamed(20000, seed=4, ttft_scale=1.08, tpot_scale=0.93)
    ep = compare_frames(slow, measured, window=(0, 100), counts="fixed")[0]
    assert ep.errors["ttft_p50"] == pytest.approx(8.0, abs=1.5)
    assert ep.errors["tpot_p50"] == pytest.approx(-7.0, abs=1.5)
    assert not ep.inconclusive, ep.ci_halfwidth
    assert {"ttft_p50", "tpot_p50"} <= set(ep.misses) and "ttft_p95" not in ep.misses and not ep.passed
    figures = ep.to_dict()["figures"]
    assert figures["ttft_p50"]["status"] == "miss" and figures["ttft_p95"]["status"] == "ok"
    assert figures["tpot_p50"]["threshold"] == THRESHOLDS["tpot_p50"] == 5.0 and figures["ttft_p95"]["threshold"] == 10.0


def test_a_short_streamed_measurement_leaves_ttft_and_tpot_undecided():
    measured = _streamed(120, span=10.0)
    ep = compare_frames(measured, measured, window=(0, 10))[0]
    assert not ep.misses
    assert {"ttft_p50", "ttft_p95", "tpot_p50"} <= set(ep.inconclusive) and not ep.passed
    half = stream_halfwidths(measured, start=0, span=10.0)
    assert half["ttft_p95"] > THRESHOLDS["ttft_p95"]


def test_stream_intervals_widen_when_streams_of_a_second_share_a_slow_server():
    n, span = 6000, 60.0
    calm = _streamed(n, span=span, seed=9)
    together = calm.copy()
    second = together["arrived_at"].to_numpy().astype(int)
    slow = np.random.default_rng(10).lognormal(0.0, 0.3, int(span))[second]  # a shared decode that slows per second
    together["tpot_s"] = together["tpot_s"] * slow
    a = stream_halfwidths(calm, start=0, span=span)
    b = stream_halfwidths(together, start=0, span=span)
    assert b["tpot_p50"] > 2 * a["tpot_p50"]


def test_unstreamed_endpoints_have_no_stream_figures_and_a_missing_side_misses():
    plain = _streamed(5000, stream=False)
    ep = compare_frames(plain, plain, window=(0, 100), counts="fixed")[0]
    assert not set(STREAM_FIGURES) & (set(ep.errors) | set(ep.to_dict()["figures"])) and ep.streamed == 0
    # measured streams the simulator did not predict: every stream figure misses
    ep = compare_frames(plain, _streamed(5000), window=(0, 100), counts="fixed")[0]
    assert set(STREAM_FIGURES) <= set(ep.misses) and not ep.passed


def test_the_table_and_json_carry_the_stream_figures():
    measured = _streamed(20000)
    stream = compare_frames(_streamed(20000, seed=4, ttft_scale=1.08), measured, window=(0, 100), counts="fixed")
    plain = compare_frames(_streamed(5000, stream=False), _streamed(5000, stream=False), window=(0, 100), counts="fixed")
    checks = [
        ScenarioCheck("queued_ttft", "a.toml", 100.0, (0, 100), 1, stream, background=0.05),
        ScenarioCheck("plain", "b.toml", 100.0, (0, 100), 1, plain, background=0.05),
    ]
    table = format_checks(checks)
    head = next(line for line in table.splitlines() if line.startswith("scenario") and "TTFT P50" in line)
    assert "TPOT P50 ms m/p" in head
    rows = [line for line in table.splitlines() if line.startswith("queued_ttft")]
    assert len(rows) == 2  # the main row and the stream row; the plain scenario has no stream row
    assert "MISS ttft_p50" in rows[0] and re.search(r"\s\+[78]\.\d±0\.\d\s", rows[1]), table
    assert sum(line.startswith("plain") for line in table.splitlines()) == 1, table
    assert "TTFT P50/P95 <= 5/10 %, TPOT P50 <= 5 %" in table.splitlines()[-1]
    doc = suite_document("s", checks, traffic="own", background="profile")
    figures = doc["scenarios"][0]["endpoints"][0]["figures"]
    assert figures["ttft_p50"]["status"] == "miss" and figures["ttft_p50"]["ci_halfwidth"] < 5.0
    assert "ttft_p50" not in doc["scenarios"][1]["endpoints"][0]["figures"]
    assert doc["thresholds"]["ttft_p95"] == 10.0 and not doc["passed"]


STREAM_SUITE = Path(__file__).resolve().parents[1] / "scenarios" / "calibration_streaming"


def test_the_streaming_suite_streams_on_the_main_suites_profile():
    from gwsim.calibration.check import suite_files
    from simulator.scenario import load_scenario

    files = suite_files(STREAM_SUITE)
    assert len(files) >= 4
    main_profile = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "calibration" / "admission_cpu.toml").machine
    for path in files:
        sc = load_scenario(path)
        assert all(ep.stream for ep in sc.endpoints.values()), path.name
        assert sc.machine == main_profile, path.name  # the same machine profile as the main suite
        # the check's window: the scenario's own warm-up (not cut to half the run)
        assert sc.run.warmup <= sc.run.duration / 2, path.name


def test_a_late_prefill_timer_keeps_the_llm_servers_prefill_busy(tmp_path):
    """The emulated LLM server ends each prefill on an event-loop timer, which fires late by the
    profile's ``timer_lateness``; the next prompt waits for it, so the simulator holds the
    one-at-a-time prefill that much longer (calibration_streaming's queued_ttft: the prefill
    queue was predicted 5.6 ms against 8.4 measured without it)."""
    from simulator.api import run_scenario
    from simulator.scenario import load_scenario

    path = tmp_path / "prefill.toml"
    path.write_text(textwrap.dedent("""
        [run]
        duration = "5s"
        replications = 1
        [workload]
        mode = "open"
        arrivals = { process = "burst", size = 2, every = "250ms" }
        mix = { chat = 1.0 }
        [endpoints.chat]
        kind = "chat_completions"
        model_selection = false
        stream = true
        classes = [{ name = "c", provider = "gpu", input_tokens = { dist = "deterministic", value = 0 }, output_tokens = { dist = "deterministic", value = 5 } }]
        [providers.gpu]
        latency = { model = "llm", prefill_base = { dist = "deterministic", value = "10ms" }, prefill_tokens_per_s = 1000, decode_tokens_per_s = 1000 }
        [fallback]
        mode = "none"
        max_attempts = 1
        [machine]
        timer_lateness = { dist = "deterministic", value = "3ms" }
    """))
    late = run_scenario(load_scenario(path), replications=1).records
    on_time = run_scenario(load_scenario(path, ['machine.timer_lateness={dist="deterministic", value=0}']), replications=1).records
    # two prompts at once: the second waits for the first's prefill, and for its late timer
    assert on_time["provider_queue_s"].max() == pytest.approx(0.010, abs=1e-6)
    assert late["provider_queue_s"].max() == pytest.approx(0.013, abs=1e-6)
    assert (late["ttft_s"].median() - on_time["ttft_s"].median()) >= 0.003 - 1e-9


def test_the_client_reads_the_first_chunk_after_its_way_back_through_the_gateway(tmp_path):
    """TTFT is what the load generator measures: the first chunk leaves the provider, comes back
    over the upstream hop, the gateway relays it (the reply half of its per-request CPU) and the
    client reads it after the wall time per request beyond CPU.  With a machine model the
    simulator's TTFT pays that way back; the provider's own first token is earlier by it."""
    from simulator.api import run_scenario
    from simulator.scenario import load_scenario

    path = tmp_path / "relay.toml"
    path.write_text(textwrap.dedent("""
        [run]
        duration = "5s"
        replications = 1
        [workload]
        mode = "open"
        arrivals = { process = "constant", rate = "2/s" }
        mix = { chat = 1.0 }
        [endpoints.chat]
        kind = "chat_completions"
        model_selection = false
        stream = true
        classes = [{ name = "c", provider = "p", output_tokens = { dist = "deterministic", value = 20 } }]
        [providers.p]
        latency = { model = "tokens", ttft = { dist = "deterministic", value = "50ms" }, tokens_per_s = 100 }
        [fallback]
        mode = "none"
        max_attempts = 1
        [machine]
        gateway_cpu = { dist = "deterministic", value = "2ms" }
        request_latency = { dist = "deterministic", value = "3ms" }
        hop_latency = { dist = "deterministic", value = "1ms" }
    """))
    rec = run_scenario(load_scenario(path), replications=1).records
    # the parse (1 ms of the gateway's 2) on the way in; the hop back, the reply half, the wall on the way out
    assert rec["ttft_s"].to_numpy() == pytest.approx(0.001 + 0.050 + 0.001 + 0.001 + 0.003, abs=1e-9)
    # the whole reply: its 20 tokens at 100/s, then the reply half and the wall after its last
    # (the hop back was paid with the first chunk, while the rest streamed)
    assert rec["latency_s"].to_numpy() == pytest.approx(0.001 + 0.050 + 0.200 + 0.001 + 0.003, abs=1e-9)
    assert (rec["ttft_s"] < rec["latency_s"]).all()
