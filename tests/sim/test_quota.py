"""Provider quotas in the simulator: rpm over a sliding minute answered 429 with Retry-After,
tpm charged at admission and corrected at completion, and the gateway honouring Retry-After
(up to its cap) before it calls the same provider again."""

from __future__ import annotations

import tomllib

import pytest

from simulator.engine import run_replication
from simulator.scenario import scenario_from_data


def _scenario(provider: str, fallback: str = 'mode = "none"', rate: str = "2/s", duration: str = "90s"):
    return scenario_from_data(tomllib.loads(f"""
[run]
duration = "{duration}"
drain = "120s"
[workload]
arrivals = {{ process = "constant", rate = "{rate}" }}
mix = {{ chat = 1.0 }}
[endpoints.chat]
kind = "chat_completions"
model_selection = false
classes = [{{ name = "c", provider = "p", output_tokens = {{ dist = "deterministic", value = 50 }} }}]
[providers.p]
latency = {{ model = "tokens", ttft = {{ dist = "deterministic", value = "100ms" }}, tokens_per_s = 500 }}
{provider}
[fallback]
{fallback}
"""), "<quota test>")


def test_rpm_refuses_the_second_half_minute_then_the_window_slides():
    df = run_replication(_scenario("rpm = 60"), 0, 1).records.sort_values("arrived_at")
    refused = df[df.outcome == "upstream_error"]
    # 2/s from t0: the first 60 requests fill the minute, the next 60 (t0 + 30 .. t0 + 59.5 s) are
    # refused until the first leaves the window at t0 + 60 s; from then on one leaves as one arrives
    t0 = df.arrived_at.min()
    assert len(refused) == 60
    assert refused.arrived_at.min() == pytest.approx(t0 + 30.0) and refused.arrived_at.max() == pytest.approx(t0 + 59.5)
    assert (df[df.arrived_at >= t0 + 60].outcome == "ok").all()


def test_tpm_counts_what_was_used_once_done():
    # 5 input + 256 asked = 261 at admission, 5 + 50 = 55 once done (0.2 s later): at 2/s that
    # is 110 a second, 6600 a minute, so 7000 tokens a minute never refuse; charged at the
    # asking price without the correction, they would (120 x 261 = 31,320)
    assert (run_replication(_scenario("tpm = 7000"), 0, 1).records.outcome == "ok").all()
    # a quota below a minute's use refuses some, and the Retry-After brings them back later
    df = run_replication(_scenario("tpm = 3000"), 0, 1).records
    assert 0 < (df.outcome != "ok").sum() < len(df)


def test_gateway_waits_out_retry_after_up_to_its_cap():
    always_429 = 'errors = { "429" = 1.0 }'
    waited = run_replication(_scenario(always_429, 'mode = "none"\nretry_after_cap = "2s"\nretry_after_waits = 2',
                                       rate="1/s", duration="3s"), 0, 1).records
    # each try's 429 comes back at the TTFT (100 ms) with Retry-After 1: try, 1 s, try, 1 s, try
    assert (waited.attempts == 3).all() and (waited.outcome == "upstream_error").all()
    assert waited.latency_s.tolist() == pytest.approx([3 * 0.1 + 2 * 1.0] * len(waited))
    capped = run_replication(_scenario(always_429, 'mode = "none"\nretry_after_cap = "0.5s"', rate="1/s",
                                       duration="3s"), 0, 1).records
    assert (capped.attempts == 1).all()  # Retry-After 1 s is beyond the 0.5 s cap: no wait
