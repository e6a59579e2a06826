"""An LLM server that slows under load (latency model ``llm``): held to processor sharing's
closed form, and TTFT and TPOT growing with load as a vLLM-class server's do.

The closed form: with no prefill and a per-stream cap equal to the server's whole decode rate,
the decode is an M/G/1 processor-sharing server, whose mean response time is the M/M/1 one,
``E[S] / (1 - ρ)``, whatever the distribution of the work (insensitivity); checked with
exponential and with deterministic output tokens.  A 99 % Student-t interval over
independent replications must hold it.
"""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from simulator import stats
from simulator.engine import run_replication
from simulator.policies.llm_server import SharedDecode, mm1_ps_mean_response
from simulator.scenario import scenario_from_data

REPS = 8


def _scenario(tokens: str, rate: float, duration: float = 2000.0, stream: bool = False, inputs: str = "",
              latency: str = 'prefill_tokens_per_s = 1e9, decode_tokens_per_s = 100') -> object:
    return scenario_from_data(tomllib.loads(f"""
[run]
duration = "{duration}s"
warmup = "100s"
drain = "500s"
seed = 11
[workload]
arrivals = {{ process = "poisson", rate = "{rate}/s" }}
mix = {{ chat = 1.0 }}
[endpoints.chat]
kind = "chat_completions"
model_selection = false
stream = {str(stream).lower()}
classes = [{{ name = "c", provider = "gpu", output_tokens = {tokens}{inputs} }}]
[providers.gpu]
latency = {{ model = "llm", {latency} }}
[fallback]
mode = "none"
max_attempts = 1
"""), "<llm test>")


@pytest.mark.parametrize("tokens", ['{ dist = "exponential", mean = 50 }', '{ dist = "deterministic", value = 50 }'])
def test_shared_decode_is_processor_sharing(tokens):
    lam, mean_s = 1.0, 50 / 100  # 50 tokens at 100 tokens/s alone: rho = 0.5
    sc = _scenario(tokens, lam, duration=5000.0)
    means = []
    for r in range(REPS):
        df = run_replication(sc, r, sc.run.seed).records
        win = df[(df.arrived_at >= 100) & (df.arrived_at < 5000)]
        assert (win.outcome == "ok").all()
        means.append(float(win.latency_s.mean()))
    expected = mm1_ps_mean_response(lam, mean_s)  # 1 s
    lo, hi = stats.t_interval(means, 0.99)
    assert lo <= expected <= hi, (expected, lo, hi)
    assert (hi - lo) / 2 < 0.10 * expected  # narrow enough to mean something


def test_ttft_and_tpot_grow_with_load():
    # 500-token prompts prefilled at 20k tokens/s one at a time (25 ms each); 100 tokens out at up
    # to 50 tokens/s a stream, 500 tokens/s for the server: TPOT 20 ms until 10 streams share it
    latency = "prefill_tokens_per_s = 20000, decode_tokens_per_s = 500, max_stream_tokens_per_s = 50"
    rows = {}
    for rate in (0.5, 4.5):
        sc = _scenario('{ dist = "deterministic", value = 100 }', rate, duration=300.0, stream=True, latency=latency,
                       inputs=', input_tokens = { dist = "deterministic", value = 500 }')
        df = run_replication(sc, 0, 1).records
        ok = df[(df.outcome == "ok") & (df.arrived_at >= 100)]
        rows[rate] = (float(ok.ttft_s.mean()), float(ok.tpot_s.median()), float(ok.tpot_s.quantile(0.95)))
    light, heavy = rows[0.5], rows[4.5]
    assert light[1] == pytest.approx(100 / 50 / 99, rel=0.02)  # alone: the per-stream maximum
    assert heavy[1] > 1.3 * light[1]  # the server's throughput is shared (rho = 0.9)
    assert heavy[2] > heavy[1]
    assert heavy[0] > light[0] >= 0.025  # prompts queue for the prefill


def test_prefill_queues_and_ttft_grows_with_input_tokens():
    latency = "prefill_base = { dist = 'deterministic', value = '10ms' }, prefill_tokens_per_s = 10000, decode_tokens_per_s = 1000"
    ttft = {}
    for inp in (100, 2000):
        sc = _scenario('{ dist = "deterministic", value = 10 }', 1.0, duration=200.0, stream=True, latency=latency,
                       inputs=f', input_tokens = {{ dist = "deterministic", value = {inp} }}')
        df = run_replication(sc, 0, 1).records
        ok = df[df.outcome == "ok"]
        assert (ok.input_tokens == inp).all()
        ttft[inp] = float(ok.ttft_s.min())
    assert ttft[100] == pytest.approx(0.010 + 100 / 10000)
    assert ttft[2000] == pytest.approx(0.010 + 2000 / 10000)


def test_shared_decode_policy_rates_and_order():
    d = SharedDecode(1000, 100)
    a = d.join(0.0, 100)  # alone: 100 tokens/s, done at 1 s
    assert d.next_done(0.0) == (pytest.approx(1.0), a)
    for _ in range(19):
        d.join(0.5, 1000)  # 20 streams: 50 tokens/s each
    assert d.rate() == pytest.approx(50)
    at, first = d.next_done(0.5)
    assert first is a and at == pytest.approx(0.5 + 50 / 50)
    assert d.progress(0.5, a) == pytest.approx(50)
    d.leave(1.5, a)
    assert d.rate() == pytest.approx(1000 / 19)
    assert np.isclose(a.min_rate, 50)
