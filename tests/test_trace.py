"""Request traces (issue 16): reading them (Azure 2023, generic CSV and JSONL), bad traces in
one line, replaying them in the simulator (window, time_scale, loop, tokens, endpoints), the
gamma and MMPP arrival processes, ``gwsim fit workload``, and on the Azure traces themselves
(skipped where the data is absent) the replay-vs-fitted planning check."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gwsim.cli import cli
from gwsim.whatif.workload_fit import fit_workload, format_fit, idc, mmpp_idc, to_toml
from simulator.api import run_scenario
from simulator.arrivals import arrival_times, plan, time_scaled
from simulator.datadir import find, skip_reason
from simulator.errors import ScenarioError
from simulator.scenario import Workload, load_scenario, read_scenario_data, scenario_from_data
from simulator.trace import read_trace

ROOT = Path(__file__).resolve().parents[1]
CONV = "azure-llm-2023/AzureLLMInferenceTrace_conv.csv"
CODE = "azure-llm-2023/AzureLLMInferenceTrace_code.csv"
needs_conv = pytest.mark.skipif(find(CONV)[0] is None, reason=skip_reason(CONV))
needs_both = pytest.mark.skipif(find(CONV)[0] is None or find(CODE)[0] is None, reason=skip_reason(CODE))

AZURE_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def _azure(path: Path, rows: list[tuple[float, int, int]]) -> Path:
    """An Azure-format trace: (seconds after 18:00:00, input tokens, output tokens) per row."""
    lines = []
    for t, inp, out in rows:
        whole = int(t)
        frac = round((t - whole) * 1e7)
        lines.append(f"2023-11-16 18:{whole // 60:02d}:{whole % 60:02d}.{frac:07d},{inp},{out}\n")
    path.write_text(AZURE_HEAD + "".join(lines))
    return path


def _scenario_text(trace_table: str, extra: str = "") -> str:
    return f"""
[run]
name = "t"
duration = "60s"
drain = "30s"
replications = 1
seed = 3

[workload]
mode = "trace"
mix = {{ chat = 1.0 }}
{extra}

[workload.trace]
{trace_table}

[endpoints.chat]
kind = "chat_completions"
model_selection = false
classes = [{{ name = "c", output_tokens = {{ dist = "deterministic", value = 1000 }} }}]

[endpoints.other]
kind = "chat_completions"
model_selection = false
classes = [{{ name = "o" }}]

[model_selection]
candidates = ["p"]

[providers.p]
latency = {{ model = "tokens", ttft = {{ dist = "deterministic", value = "100ms" }}, tokens_per_s = 50 }}
"""


def _write(tmp_path: Path, trace_table: str, extra: str = "") -> Path:
    path = tmp_path / "scen.toml"
    path.write_text(_scenario_text(trace_table, extra))
    return path


# --------------------------------------------------------------------------- reading


def test_formats_read_the_same_requests(tmp_path: Path) -> None:
    rows = [(0.5, 10, 20), (0.25, 30, 40), (2.0, 50, 60)]  # out of order on purpose
    azure = read_trace(_azure(tmp_path / "a.csv", rows), "azure2023")
    (tmp_path / "g.csv").write_text("ts_ms,model,in,out,code,lat\n" + "".join(
        f"{1000 + t * 1000:g},m{i},{a},{b},200,{100 + i}\n" for i, (t, a, b) in enumerate(rows)))
    generic = read_trace(tmp_path / "g.csv", "csv", {"timestamp": "ts_ms", "endpoint": "model", "input_tokens": "in",
                                                     "output_tokens": "out", "status": "code", "latency": "lat"}, "ms", "ms")
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(
        {"time": f"2023-11-16T18:00:{t:09.6f}Z", "tokens_in": a, "tokens_out": b}) + "\n" for t, a, b in rows))
    jsonl = read_trace(tmp_path / "g.jsonl", "jsonl", {"timestamp": "time", "input_tokens": "tokens_in",
                                                        "output_tokens": "tokens_out"}, "datetime")
    for data in (azure, generic, jsonl):
        assert data.at_s.tolist() == pytest.approx([0.0, 0.25, 1.75])  # sorted, from the first request
        assert data.input_tokens.tolist() == [30, 10, 50]
        assert data.output_tokens.tolist() == [40, 20, 60]
    assert [generic.endpoints[c] for c in generic.endpoint_codes] == ["m1", "m0", "m2"]
    assert generic.latency_s.tolist() == pytest.approx([0.101, 0.100, 0.102])
    assert generic.status.tolist() == [200, 200, 200]


BAD = {
    # name: (file name, file text, trace table (FILE is the file's path), expected line after "scen.toml: ")
    "bad timestamp": ("a.csv", AZURE_HEAD + "2023-11-16 18:00:00.0000000,1,2\n2023-11-16 25:00:00.0,1,2\n",
                      'file = "FILE"\nformat = "azure2023"',
                      "workload.trace.file: expected a date-time YYYY-MM-DD HH:MM:SS.fffffff at FILE line 3, column "
                      "TIMESTAMP, got '2023-11-16 25:00:00.0'"),
    "negative tokens": ("a.csv", AZURE_HEAD + "2023-11-16 18:00:00.0000000,1,2\n2023-11-16 18:00:01.0000000,5,-3\n",
                        'file = "FILE"\nformat = "azure2023"',
                        "workload.trace.file: expected a token count (an integer >= 0) at FILE line 3, column "
                        "GeneratedTokens, got '-3'"),
    "missing column": ("g.csv", "when,out\n1,2\n", 'file = "FILE"\ncolumns = { timestamp = "ts", output_tokens = "out" }',
                       "workload.trace.file: expected a column named 'ts' in the header at FILE line 1, column ts, "
                       "got columns 'when', 'out'"),
    "ragged row": ("g.csv", "ts,out\n1,2\n2,3,4\n", 'file = "FILE"\ncolumns = { timestamp = "ts", output_tokens = "out" }',
                   "workload.trace.file: expected 2 comma-separated fields at FILE line 3, got 3"),
    "empty file": ("g.csv", "", 'file = "FILE"\ncolumns = { timestamp = "ts" }',
                   "workload.trace.file: expected a CSV header line and one row per request at FILE, got an empty file"),
    "bad json": ("g.jsonl", '{"ts": 1}\n{"ts": 2,\n', 'file = "FILE"\nformat = "jsonl"\ncolumns = { timestamp = "ts" }',
                 "workload.trace.file: expected one JSON object per line at FILE line 2, got invalid JSON (JSONDecodeError)"),
    "no columns": ("g.csv", "ts\n1\n", 'file = "FILE"', "workload.trace.columns: expected a column mapping (timestamp = ..., "
                   "output_tokens = ...) for format 'csv', got nothing"),
    "empty window": ("g.csv", "ts\n1\n2\n", 'file = "FILE"\ncolumns = { timestamp = "ts" }\nstart = "10s"',
                     "workload.trace.start: expected a window holding requests, got none from 10 s to the end of a "
                     "trace spanning 1 s"),
    "unknown endpoint": ("g.csv", "ts,route\n1,chat\n2,gpt-4o\n", 'file = "FILE"\ncolumns = { timestamp = "ts", endpoint = "route" }',
                         "workload.trace.map: expected every endpoint or model in FILE to be an endpoint from "
                         "['chat', 'other'] or mapped to one, got 'gpt-4o' (request 2 of the sorted trace)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_traces_get_one_line(tmp_path: Path, case: str) -> None:
    name, text, table, expected = BAD[case]
    trace = tmp_path / name
    trace.write_text(text)
    scen = _write(tmp_path, table.replace("FILE", str(trace)))
    with pytest.raises(ScenarioError) as info:
        load_scenario(scen)
    assert str(info.value) == f"{scen}: " + expected.replace("FILE", str(trace))


def test_missing_data_file_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GWSIM_DATA_DIR", str(tmp_path / "nowhere"))
    scen = _write(tmp_path, 'file = "{data}/x/trace.csv"\nformat = "azure2023"')
    with pytest.raises(ScenarioError) as info:
        load_scenario(scen)
    assert str(info.value) == (f"{scen}: workload.trace.file: expected a trace file in the data directory, got nothing at "
                               f"'{{data}}/x/trace.csv' (looked in {tmp_path / 'nowhere'} (GWSIM_DATA_DIR); set GWSIM_DATA_DIR)")


def test_cli_answers_a_bad_trace_with_one_line_and_exit_2(tmp_path: Path) -> None:
    name, text, table, expected = BAD["negative tokens"]
    trace = tmp_path / name
    trace.write_text(text)
    scen = _write(tmp_path, table.replace("FILE", str(trace)))
    result = CliRunner().invoke(cli, ["run", str(scen), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip() == f"gwsim: error: {scen}: " + expected.replace("FILE", str(trace))
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(cli, ["fit", "workload", str(trace)])
    assert result.exit_code == 2
    assert result.output.strip() == f"gwsim: error: {trace}: line 3, column GeneratedTokens: expected a token count (an integer >= 0), got '-3'"


# --------------------------------------------------------------------------- replay


def test_replay_sends_exactly_the_window_scaled_and_looped(tmp_path: Path) -> None:
    times = [0.1 * i for i in range(100)]  # 0 .. 9.9 s
    trace = _azure(tmp_path / "t.csv", [(18 * 60 + t, 5, 10) for t in times])
    scen = _write(tmp_path, f'file = "{trace.name}"\nformat = "azure2023"\nstart = "2s"\nduration = "5s"')
    sc = load_scenario(scen)  # the file is found next to the scenario
    recs = run_scenario(sc).records.sort_values("arrived_at")
    assert len(recs) == 50  # 2.0 .. 6.9 s of the trace
    assert recs.arrived_at.tolist() == pytest.approx([0.1 * i for i in range(50)])
    fast = run_scenario(load_scenario(scen, ['workload.time_scale=2.0'])).records.sort_values("arrived_at")
    assert fast.arrived_at.tolist() == pytest.approx([0.05 * i for i in range(50)])
    looped = run_scenario(load_scenario(scen, ["workload.trace.loop=true", 'run.duration="12s"'])).records.sort_values("arrived_at")
    assert len(looped) == 120  # 5 s of trace every 5 s: 50 + 50 + 20
    assert looped.arrived_at.tolist() == pytest.approx([0.1 * i for i in range(120)])


def test_trace_tokens_set_the_providers_time(tmp_path: Path) -> None:
    outputs = [10, 100, 500, 0]
    trace = _azure(tmp_path / "t.csv", [(i * 15.0, 7, n) for i, n in enumerate(outputs)])
    sc = load_scenario(_write(tmp_path, f'file = "{trace}"\nformat = "azure2023"'))
    recs = run_scenario(sc).records.sort_values("arrived_at")
    # ttft 100 ms + the trace's tokens at 50/s (not the class's 1000 tokens)
    assert recs.provider_s.tolist() == pytest.approx([0.1 + n / 50 for n in outputs])
    assert recs.latency_s.tolist() == pytest.approx([0.1 + n / 50 for n in outputs])


def test_trace_endpoints_pick_the_endpoint(tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("ts,route,out\n0,chat,1\n1,other,2\n2,gpt-4o,3\n3,chat,4\n")
    table = f'file = "{tmp_path / "g.csv"}"\ncolumns = {{ timestamp = "ts", endpoint = "route", output_tokens = "out" }}\nmap = {{ "gpt-4o" = "other" }}'
    recs = run_scenario(load_scenario(_write(tmp_path, table))).records.sort_values("arrived_at")
    assert recs.endpoint.tolist() == ["chat", "other", "other", "chat"]
    assert recs.provider_s.tolist() == pytest.approx([0.1 + n / 50 for n in (1, 2, 3, 4)])


# --------------------------------------------------------------------------- arrival processes


def _workload(arrivals: dict, **extra) -> Workload:
    return Workload.model_validate({"mode": "open", "arrivals": arrivals, "mix": {"chat": 1.0}, **extra})


def test_gamma_renewal_keeps_rate_and_gap_cv() -> None:
    wl = _workload({"process": "gamma", "rate": "40/s", "cv": 3.0})
    t = np.fromiter(arrival_times(wl, 2000.0, np.random.default_rng(7)), float)
    gaps = np.diff(t)
    assert t.size / 2000 == pytest.approx(40, rel=0.04)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.06)


def test_mmpp_counts_have_its_index_of_dispersion() -> None:
    wl = _workload({"process": "mmpp", "rate": "20/s", "low_ratio": 0.1, "high_for": "2s", "low_for": "6s"})
    t = np.fromiter(arrival_times(wl, 4000.0, np.random.default_rng(3)), float)
    assert t.size / 4000 == pytest.approx(20, rel=0.04)
    # the same process in fit_workload's units: p = share of time high, c = low ratio, s = switching rates x mean gap
    p, c, s = 2 / 8, 0.1, (1 / 2 + 1 / 6) / 20
    for width in (1.0, 10.0):
        assert idc(t, width, 4000.0) == pytest.approx(float(mmpp_idc(p, c, s, np.array([width * 20]))[0]), rel=0.15)


def test_time_scale_is_a_faster_clock() -> None:
    profile = [{"at": "5s", "factor": 0.0}]
    wl = _workload({"process": "constant", "rate": "10/s"}, rate_profile=profile, time_scale=2.0)
    # the rate doubles and the profile's pause comes at 2.5 s
    scaled = time_scaled(wl)
    assert scaled.arrivals.rate == 20 and scaled.rate_profile[0].at == 2.5 and scaled.time_scale == 1
    gamma = _workload({"process": "gamma", "rate": "10/s", "cv": 1.0}, rate_profile=profile, time_scale=2.0)
    t = np.fromiter(arrival_times(gamma, 10.0, np.random.default_rng(1)), float)
    assert t.max() < 2.5 and t.size == pytest.approx(50, abs=25)


def test_drawn_tokens_follow_the_copula() -> None:
    levels = [0.0, 0.5, 1.0]
    wl = _workload({"process": "poisson", "rate": "100/s"}, tokens={"levels": levels, "input": [0, 100, 200], "output": [0, 10, 20],
                                                                   "correlation": 1.0})
    drawn = list(plan(wl, 50.0, np.random.default_rng(1), np.random.default_rng(2)))
    inputs = np.array([d[3] for d in drawn])
    outputs = np.array([d[4] for d in drawn])
    assert np.median(inputs) == pytest.approx(100, abs=5) and np.median(outputs) == pytest.approx(10, abs=1)
    assert np.all(np.abs(inputs / 10 - outputs) <= 1)  # correlation 1: the same quantile of each


# --------------------------------------------------------------------------- fit


def _trace_from(workload: dict, span: float, seed: int, path: Path, tokens: bool = True) -> Path:
    wl = Workload.model_validate(workload)
    t = np.fromiter(arrival_times(wl, span, np.random.default_rng(seed)), float)
    rng = np.random.default_rng(seed + 1)
    z = rng.standard_normal((2, t.size))
    inp = np.rint(np.exp(6 + 0.8 * z[0])).astype(int)
    out = np.rint(np.exp(4 + 0.6 * (0.6 * z[0] + 0.8 * z[1]))).astype(int)
    models = np.where(rng.random(t.size) < 0.3, "small", "large")
    path.write_text("ts,model,in,out\n" + "".join(f"{a:.6f},{m},{b},{c}\n" for a, m, b, c in zip(t, models, inp, out)))
    return path


COLUMNS = {"timestamp": "ts", "endpoint": "model", "input_tokens": "in", "output_tokens": "out"}


def test_fit_tells_bursts_from_poisson_and_keeps_tokens_and_mix(tmp_path: Path) -> None:
    profile = [{"at": f"{60 * i}s", "factor": f} for i, f in enumerate([0.5, 1.5, 1.0, 0.2, 1.8])]
    bursty = {"mode": "open", "arrivals": {"process": "mmpp", "rate": "8/s", "low_ratio": 0.02, "high_for": "3s", "low_for": "9s"},
              "mix": {"chat": 1.0}, "rate_profile": profile}
    calm = {"mode": "open", "arrivals": {"process": "poisson", "rate": "8/s"}, "mix": {"chat": 1.0}, "rate_profile": profile}
    fits = {}
    for name, wl in (("bursty", bursty), ("calm", calm)):
        data = read_trace(_trace_from(wl, 300.0, 5, tmp_path / f"{name}.csv"), "csv", COLUMNS)
        fits[name] = fit_workload(data, source=name, format="csv")
    b, c = fits["bursty"], fits["calm"]
    assert b.process == "mmpp" and c.process == "gamma"
    assert c.gamma_cv == pytest.approx(1.0, abs=0.1)
    assert b.fitted_figures.idc_10s == pytest.approx(b.trace_figures.idc_10s, rel=0.3)
    assert list(c.factors) == pytest.approx([0.5, 1.5, 1.0, 0.2, 1.8], rel=0.15)
    assert c.mix["small"] == pytest.approx(0.3, abs=0.04) and sum(c.mix.values()) == pytest.approx(1.0, abs=1e-9)
    rows = {name: (trace, fitted) for name, trace, fitted in c.token_rows}
    for q in ("P50", "P90", "P99"):
        for side in ("input", "output"):
            trace, fitted = rows[f"{side} tokens {q}"]
            assert fitted == pytest.approx(trace, rel=0.06)
    trace, fitted = rows["input/output rank correlation"]
    assert trace > 0.4 and fitted == pytest.approx(trace, abs=0.05)
    # what is written loads as a scenario's workload
    text = to_toml(c)
    assert "[workload.tokens]" in text and 'process = "gamma"' in text
    assert "index of dispersion, 10 s counts" in format_fit(b)


def test_fit_cli_writes_a_workload_a_scenario_loads(tmp_path: Path) -> None:
    wl = {"mode": "open", "arrivals": {"process": "poisson", "rate": "5/s"}, "mix": {"chat": 1.0}}
    trace = _trace_from(wl, 120.0, 9, tmp_path / "t.csv")
    out = tmp_path / "workload.toml"
    result = CliRunner().invoke(cli, ["fit", "workload", str(trace), "--columns", "timestamp=ts,endpoint=model,input_tokens=in,output_tokens=out",
                                      "--bin", "30s", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "inter-arrival CV" in result.output and "req/s" in result.output and f"wrote {out}" in result.output
    scen = tmp_path / "s.toml"
    base = _scenario_text('file = "unused"').split("[workload]")[0]
    rest = _scenario_text('file = "unused"').split("[endpoints.chat]")[1]
    scen.write_text(base + out.read_text() + "\n[endpoints.chat]" + rest.replace('"other"', '"large"').replace("[endpoints.other]", "[endpoints.large]")
                    + '\n[endpoints.small]\nkind = "chat_completions"\nmodel_selection = false\nclasses = [{ name = "s" }]\n')
    sc = load_scenario(scen, ['run.duration="120s"'])
    assert sc.workload.arrivals.process == "gamma" and sc.workload.tokens is not None
    recs = run_scenario(sc).records
    assert len(recs) == pytest.approx(600, rel=0.15)
    assert set(recs.endpoint) == {"small", "large"}


# --------------------------------------------------------------------------- the Azure traces


@needs_both
def test_fit_workload_on_both_azure_traces() -> None:
    outputs = {}
    for name in (CONV, CODE):
        result = CliRunner().invoke(cli, ["fit", "workload", "{data}/" + name, "--json"])
        assert result.exit_code == 0, result.output
        outputs[name] = json.loads(result.output)
    conv, code = outputs[CONV], outputs[CODE]
    assert conv["requests"] == 19366 and code["requests"] == 8819
    assert conv["process"] == "gamma"  # within minutes the conversation service is close to Poisson
    assert code["process"] == "mmpp"  # code completion comes in bursts and lulls
    for fit in (conv, code):
        trace, fitted = fit["trace"], fit["fitted"][fit["process"]]
        assert fitted["requests"] == pytest.approx(trace["requests"], rel=0.05)
        for key in ("gap_cv", "idc_1s", "idc_10s"):
            assert fitted[key] == pytest.approx(trace[key], rel=0.25), key
        rows = {r["figure"]: r for r in fit["tokens"]}
        for q in ("P50", "P90", "P99"):
            for side in ("input", "output"):
                row = rows[f"{side} tokens {q}"]
                assert row["fitted"] == pytest.approx(row["trace"], rel=0.05)


@needs_conv
def test_shipped_trace_scenario_counts_every_request() -> None:
    result = CliRunner().invoke(cli, ["run", str(ROOT / "scenarios/traces/azure_conv.toml"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["overall"]["count"] == 19366


@needs_conv
def test_replayed_and_fitted_conversation_traffic_give_the_same_percentiles() -> None:
    """The planning check: a gateway (3 deployments, sequential fallback on 429) on the first
    30 minutes of the conversation trace, replayed and as its fitted workload: P50 within 5 %,
    P95 and P99 within 10 %."""
    path = ROOT / "scenarios/traces/azure_conv.toml"
    data = read_scenario_data(path)
    window = 1800.0
    replay = copy.deepcopy(data)
    replay["run"]["duration"] = f"{window}s"
    replay["workload"]["trace"]["duration"] = f"{window}s"
    replay_sc = scenario_from_data(replay, str(path), path.parent)
    fit = fit_workload(replay_sc.workload.trace.data, source=CONV, format="azure2023", duration_s=window)
    fitted = copy.deepcopy(replay)
    fitted["workload"] = fit.workload
    fitted_sc = scenario_from_data(fitted, str(path), path.parent)
    a = run_scenario(replay_sc, replications=3, seed=5).summary["overall"]["latency_ms"]
    b = run_scenario(fitted_sc, replications=3, seed=5).summary["overall"]["latency_ms"]
    for q, tolerance in (("p50", 0.05), ("p95", 0.10), ("p99", 0.10)):
        assert abs(b[q] / a[q] - 1) < tolerance, (q, a[q], b[q])
    assert math.isfinite(a["p99"])


def test_capacity_and_gate_scale_a_trace_by_its_speed(tmp_path: Path) -> None:
    from gwsim.whatif.capacity import current_load, set_load
    from gwsim.whatif.gate import apply_load_factor

    trace = _azure(tmp_path / "t.csv", [(0.5 * i, 5, 10) for i in range(40)])  # 2 req/s
    scen = _write(tmp_path, f'file = "{trace}"\nformat = "azure2023"', "time_scale = 1.5")
    sc = load_scenario(scen)
    assert current_load(sc) == pytest.approx(2.0 * 1.5)
    data = read_scenario_data(scen)
    apply_load_factor(data, 2.0)
    assert data["workload"]["time_scale"] == 3.0
    assert set_load(read_scenario_data(scen), "rate", 8.0, trace_rate=2.0)["workload"]["time_scale"] == 4.0
