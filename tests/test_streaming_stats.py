"""TTFT and TPOT in the stats layer and the SLO language: summary blocks and table for streamed
requests, the runner's stream columns, goodput over per-request targets, and `gwsim validate
--slo 'ttft_p95<...'` exiting 0 or 1 as the objective holds."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from gwsim.cli import cli
from gwsim.whatif.runner import metrics_row
from gwsim.whatif.slo import goodput_share, parse_goodput, parse_slo
from simulator import stats
from simulator.errors import UsageError
from simulator.records import RequestRecord, records_frame
from simulator.scenario import scenario_from_data


def rec(i: int, ttft: float, tpot: float, *, stream: bool = True, outcome: str = "ok", latency: float = 2.0,
        endpoint: str = "chat") -> RequestRecord:
    return RequestRecord(id=i, replication=0, endpoint=endpoint, request_class="c", arrived_at=float(i) / 100,
                         started_at=float(i) / 100, finished_at=float(i) / 100 + latency, latency_s=latency,
                         outcome=outcome, status_code=200, stream=stream, ttft_s=ttft, tpot_s=tpot,
                         output_tokens=10 if outcome == "ok" else 0)


def frame():
    rows = [rec(i, 0.1 + i / 1000, 0.02) for i in range(100)]  # TTFT 100..199 ms, TPOT 20 ms
    rows.append(rec(100, math.nan, math.nan, outcome="timeout"))
    rows += [rec(101 + i, math.nan, math.nan, stream=False, latency=0.5, endpoint="select") for i in range(10)]
    return records_frame(rows)


def test_summary_has_ttft_and_tpot_blocks_for_streamed_requests_only():
    s = stats.summarize(frame(), scenario="t", engine="sim", replications=1, seed=1, warmup_s=0, end_s=10,
                        endpoints=["chat", "select"])
    chat = s["endpoints"]["chat"]
    assert chat["streamed"] == 101  # the failed one was streamed too
    assert chat["ttft_ms"]["p50"] == pytest.approx(149.5)
    assert chat["ttft_ms"]["p99"] == pytest.approx(np.percentile(np.arange(100) + 100.0, 99))
    assert chat["tpot_ms"] == {k: pytest.approx(20.0) for k in stats.STREAM_KEYS}
    assert "ttft_ms" not in s["endpoints"]["select"]  # nothing streamed there
    text = stats.format_table(s)
    assert "TTFT" in text and "TPOT" in text and "p95 ms" in text


def test_runner_row_has_stream_columns_and_goodput():
    sc = scenario_from_data({
        "run": {"duration": "10s"},
        "workload": {"arrivals": {"process": "poisson", "rate": "1/s"}, "mix": {"chat": 1.0}},
        "endpoints": {"chat": {"kind": "chat_completions", "model_selection": False, "stream": True,
                               "classes": [{"name": "c", "provider": "p"}]}},
        "providers": {"p": {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "1s"}}}},
    }, "test")
    df = frame()
    df = df[df["endpoint"] == "chat"]
    row = metrics_row(sc, df.assign(**{s: 0.0 for s in ("client_wait_s",)}), df.iloc[0:0])
    assert row["ttft_p50_ms"] == pytest.approx(149.5)
    assert row["tpot_p95_ms"] == pytest.approx(20.0)
    targets = parse_goodput("ttft<150ms, tpot<=20ms")
    assert goodput_share(df, targets) == pytest.approx(50 / 101)  # 100..149 ms meet it; the timeout never does
    assert metrics_row(sc, df, df.iloc[0:0], targets)["goodput"] == pytest.approx(50 / 101)


def test_goodput_reads_a_plain_replys_latency_as_its_ttft():
    df = records_frame([rec(i, math.nan, math.nan, stream=False, latency=0.5 + i) for i in range(4)])
    assert goodput_share(df, parse_goodput("ttft<1s,tpot<1ms")) == pytest.approx(0.25)


@pytest.mark.parametrize("text", ["ttft<1", "foo<1s", "ttft>1s", "ttft<1s,"])
def test_bad_goodput_targets_are_one_line_usage_errors(text):
    with pytest.raises(UsageError, match="--goodput"):
        parse_goodput(text)


def test_slo_language_knows_ttft_tpot_and_goodput():
    slo = parse_slo("chat:ttft_p95<800ms", ["chat"])
    assert (slo.column, slo.threshold, slo.kind) == ("chat:ttft_p95_ms", 800.0, "latency")
    assert parse_slo("tpot_p50<=40ms").column == "tpot_p50_ms"
    assert parse_slo("goodput>=0.95").threshold == 0.95


def test_validate_exits_0_or_1_as_a_ttft_slo_holds(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent("""
        [run]
        duration = "5s"
        [workload]
        arrivals = { process = "poisson", rate = "5/s" }
        mix = { chat = 1.0 }
        [endpoints.chat]
        kind = "chat_completions"
        model_selection = false
        stream = true
        classes = [{ name = "c", provider = "p", output_tokens = { dist = "deterministic", value = 20 } }]
        [providers.p]
        latency = { model = "tokens", ttft = { dist = "deterministic", value = "300ms" }, tokens_per_s = 50 }
    """))
    codes = {}
    for slo in ("ttft_p95<1s", "ttft_p95<200ms"):
        result = CliRunner().invoke(cli, ["validate", str(path), "--slo", slo, "--stress", "none", "-n", "2", "--workers", "1"])
        codes[slo] = result.exit_code
    assert codes == {"ttft_p95<1s": 0, "ttft_p95<200ms": 1}
