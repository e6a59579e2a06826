"""Report statistics on hand-made record frames."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from simulator import stats
from simulator.records import RECORD_FIELDS, RequestRecord, records_frame


def rec(i, arrived, latency, *, rep=0, endpoint="chat", outcome="ok", started=None, finished=None):
    started = arrived if started is None else started
    finished = arrived + latency if finished is None else finished
    return RequestRecord(id=i, replication=rep, endpoint=endpoint, request_class="c", arrived_at=arrived,
                         started_at=started, finished_at=finished, latency_s=latency, outcome=outcome,
                         status_code=200 if outcome == "ok" else 500)


def synthetic(reps=5, n=400, mean_s=0.2, seed=3, fail=0.05):
    rng = np.random.default_rng(seed)
    rows, i = [], 0
    for r in range(reps):
        t = 0.0
        for _ in range(n):
            t += rng.exponential(0.1)
            lat = float(rng.exponential(mean_s))
            out = "timeout" if rng.random() < fail else "ok"
            ep = "chat" if rng.random() < 0.7 else "select"
            rows.append(rec(i, t, lat, rep=r, endpoint=ep, outcome=out))
            i += 1
    return records_frame(rows)


def summarize(df, reps, **kw):
    args = dict(scenario="t", engine="sim", replications=reps, seed=1, warmup_s=0.0, end_s=1e9,
                endpoints=["chat", "select"])
    args.update(kw)
    return stats.summarize(df, **args)


def test_window_keeps_warmup_inclusive_end_exclusive():
    df = records_frame([rec(i, t, 0.1) for i, t in enumerate([0.0, 4.999, 5.0, 7.0, 9.999, 10.0])])
    win = stats.measurement_window(df, 5.0, 10.0)
    assert win["arrived_at"].tolist() == [5.0, 7.0, 9.999]
    s = summarize(df, 1, warmup_s=5.0, end_s=10.0)
    assert s["overall"]["count"] == 3
    assert s["window_s"] == 5.0
    assert s["overall"]["throughput_rps"] == pytest.approx(3 / 5.0)


def test_counts_throughput_success_and_linear_percentiles():
    lats = [0.010, 0.020, 0.030, 0.040, 0.100, 0.250, 0.900]
    rows = [rec(i, float(i), lat, rep=i % 2) for i, lat in enumerate(lats)]
    rows += [rec(100, 1.5, 5.0, rep=0, outcome="timeout"), rec(101, 2.5, 30.0, rep=1, outcome="client_timeout")]
    df = records_frame(rows)
    s = summarize(df, 2, end_s=10.0)
    o = s["overall"]
    assert o["count"] == 9
    assert o["success_rate"] == pytest.approx(7 / 9, rel=1e-5)
    assert o["throughput_rps"] == pytest.approx(7 / 10.0 / 2)  # per replication, averaged
    ms = np.array(lats) * 1000
    for key, pct in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert o["latency_ms"][key] == pytest.approx(np.percentile(ms, pct), rel=1e-5)
    # Linear interpolation, not nearest rank: p95 of 7 values lies between the two largest.
    assert 250.0 < o["latency_ms"]["p95"] < 900.0
    assert o["latency_ms"]["max"] == 900.0
    assert o["latency_ms"]["mean"] == pytest.approx(ms.mean(), rel=1e-5)  # failures left out
    assert s["outcomes"]["timeout"] == 1 and s["outcomes"]["client_timeout"] == 1 and s["outcomes"]["ok"] == 7
    assert sum(s["outcomes"].values()) == o["count"]


def test_t_ci_covers_true_mean_about_95_percent():
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(400):
        lo, hi = stats.t_interval(rng.normal(10.0, 2.0, size=5))
        covered += lo <= 10.0 <= hi
    assert 0.91 <= covered / 400 <= 0.99


def test_ci_contains_true_mean_multi_and_single_replication():
    df = synthetic(reps=8, n=2000, mean_s=0.2)
    s = summarize(df, 8)
    lo, hi = s["overall"]["ci95_ms"]["mean"]
    assert lo <= 200.0 <= hi
    assert hi - lo < 20.0  # 8 x ~1900 successes: a few ms, not a degenerate wide interval
    true_p95 = -math.log(0.05) * 200.0
    lo95, hi95 = s["overall"]["ci95_ms"]["p95"]
    assert lo95 <= true_p95 <= hi95
    # One replication: batch means still give an interval around the truth.
    one = summarize(df[df["replication"] == 0], 1)
    lo1, hi1 = one["overall"]["ci95_ms"]["mean"]
    assert lo1 < hi1 and lo1 <= 200.0 <= hi1
    assert all(one["overall"]["ci95_ms"][k] is not None for k in stats.CI_KEYS)


def test_empty_frame_and_missing_endpoints_give_json_without_nan():
    s = summarize(records_frame([]), 3, endpoints=["chat", "select", "embed"])
    text = json.dumps(s, allow_nan=False)
    assert list(s["endpoints"]) == ["chat", "select", "embed"]
    assert s["overall"]["count"] == 0 and s["overall"]["throughput_rps"] == 0.0
    assert s["overall"]["latency_ms"]["p95"] is None and s["overall"]["ci95_ms"]["p95"] is None
    assert "NaN" not in text
    # Only failures on one endpoint, nothing on another.
    df = records_frame([rec(0, 1.0, 1.0, endpoint="chat", outcome="upstream_error"), rec(1, 2.0, 0.1, endpoint="select")])
    s2 = summarize(df, 1, endpoints=["chat", "select", "embed"])
    json.dumps(s2, allow_nan=False)
    assert s2["endpoints"]["chat"]["success_rate"] == 0.0
    assert s2["endpoints"]["chat"]["latency_ms"]["mean"] is None
    assert s2["endpoints"]["embed"]["count"] == 0
    assert "chat" in stats.format_table(s2) and "embed" in stats.format_table(s2)


def test_summary_is_deterministic_and_row_order_free():
    df = synthetic(reps=3, n=300)
    a = json.dumps(summarize(df, 3), sort_keys=False, allow_nan=False)
    b = json.dumps(summarize(df.copy(), 3), sort_keys=False, allow_nan=False)
    shuffled = df.sample(frac=1.0, random_state=5).reset_index(drop=True)
    c = json.dumps(summarize(shuffled, 3), sort_keys=False, allow_nan=False)
    assert a == b == c
    one = df[df["replication"] == 0]
    d1 = json.dumps(summarize(one, 1, end_s=20.0))
    d2 = json.dumps(summarize(one.iloc[::-1], 1, end_s=20.0))
    assert d1 == d2  # batch means sort by arrival, so row order does not move the CI


def test_time_series_rates_p95_and_in_flight():
    # Replication 0: one request per second from t=0, each in flight 0.5 s (started at arrival).
    rows = [rec(i, float(i), 0.5) for i in range(10)]
    rows.append(rec(50, 3.2, 0.1, endpoint="select", outcome="rejected"))
    ts = stats.time_series(records_frame(rows), 5.0)
    assert set(ts["endpoint"]) == {"all", "chat", "select"}
    chat = ts[ts["endpoint"] == "chat"].set_index("window_at")
    allr = ts[ts["endpoint"] == "all"].set_index("window_at")
    assert chat.loc[0.0, "completed_rps"] == pytest.approx(1.0)  # finishes at 0.5..4.5
    assert chat.loc[0.0, "in_flight"] == pytest.approx(0.5)
    assert chat.loc[5.0, "in_flight"] == pytest.approx(0.5)
    assert allr.loc[0.0, "completed_rps"] == pytest.approx(6 / 5.0)
    assert allr.loc[0.0, "success_rate"] == pytest.approx(5 / 6)
    assert allr.loc[0.0, "p95_ms"] == pytest.approx(500.0)
    assert allr.loc[0.0, "in_flight"] == pytest.approx((2.5 + 0.1) / 5.0)


def test_little_law_on_deterministic_schedule():
    # Arrivals every 0.5 s, each in system 1.5 s: exactly 3 in system in steady state.
    rows = [rec(i, 0.5 * i, 1.5) for i in range(40)]
    lc = stats.little_check(records_frame(rows), 5.0, 15.0)
    assert lc["lambda"] == pytest.approx(2.0)
    assert lc["W"] == pytest.approx(1.5)
    assert lc["L"] == pytest.approx(3.0)
    assert lc["rel_error"] == pytest.approx(0.0, abs=1e-9)
    # Random schedule: holds within a few percent over a long window.
    lc2 = stats.little_check(synthetic(reps=2, n=3000), 5.0, 250.0)
    assert lc2["rel_error"] < 0.02


def test_per_replication_and_paired_compare():
    df = synthetic(reps=6, n=500)
    slower = df.copy()
    slower["latency_s"] = slower["latency_s"] * 1.1  # common random numbers: same arrivals, 10 % slower
    kw = dict(end_s=40.0)
    sa, sb = summarize(df, 6, **kw), summarize(slower, 6, **kw)
    win_a, win_b = stats.measurement_window(df, 0.0, 40.0), stats.measurement_window(slower, 0.0, 40.0)
    pa, pb = stats.per_replication(win_a, 40.0), stats.per_replication(win_b, 40.0)
    assert len(pa) == 6 * 3 and set(pa["endpoint"]) == {"all", "chat", "select"}
    r0 = pa[(pa["replication"] == 0) & (pa["endpoint"] == "all")].iloc[0]
    w0 = win_a[win_a["replication"] == 0]
    assert r0["count"] == len(w0)
    assert r0["p95_ms"] == pytest.approx(np.percentile(w0.loc[w0["outcome"] == "ok", "latency_s"] * 1000, 95))
    rows = stats.compare_summaries(sa, sb, pa, pb)
    by = {(r["endpoint"], r["metric"]): r for r in rows}
    assert rows[0]["endpoint"] == "all"
    mean = by[("all", "mean")]
    assert mean["significant"] and mean["delta"] > 0 and mean["ci95"][0] > 0
    assert mean["delta"] == pytest.approx(0.1 * sa["overall"]["latency_ms"]["mean"], rel=1e-4)
    thr = by[("all", "throughput")]
    assert thr["delta"] == 0.0 and not thr["significant"]
    same = stats.compare_summaries(sa, sa, pa, pa)
    assert not any(r["significant"] for r in same)
    text = stats.format_compare(rows)
    assert "paired 95% CI" in text and "*" in text
    json.dumps(rows, allow_nan=False)


def test_format_table_has_units_and_rows():
    s = summarize(synthetic(reps=2, n=100), 2)
    text = stats.format_table(s)
    header = text.splitlines()[1]
    for col in ("count", "req/s", "success %", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "p95 95% CI ms"):
        assert col in header
    body = text.splitlines()[3:6]
    assert [line.split()[0] for line in body] == ["chat", "select", "all"]
    assert f"{s['overall']['latency_ms']['p95']:.1f}" in body[2]


def test_per_replication_fills_absent_combinations():
    # Replication 1 saw nothing: with replications/endpoints given it still gets rows (count 0),
    # so a paired comparison sees its zero throughput instead of silently dropping the pair.
    df = records_frame([rec(0, 1.0, 0.2, rep=0)])
    assert tuple(df.columns) == RECORD_FIELDS
    pr = stats.per_replication(df, 10.0, replications=[0, 1], endpoints=["chat", "embed"])
    assert len(pr) == 2 * 3
    empty = pr[(pr["replication"] == 1) & (pr["endpoint"] == "all")].iloc[0]
    assert empty["count"] == 0 and empty["throughput_rps"] == 0.0 and math.isnan(empty["p95_ms"])
    full = pr[(pr["replication"] == 0) & (pr["endpoint"] == "chat")].iloc[0]
    assert full["throughput_rps"] == pytest.approx(0.1) and full["p50_ms"] == pytest.approx(200.0)
    assert isinstance(stats.per_replication(records_frame([]), 1.0), pd.DataFrame)


# --------------------------------------------------------------------------- intervals that hold

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from scipy import stats as sst  # noqa: E402

from simulator import histograms  # noqa: E402


def _blocks(summary):
    yield "all", summary["overall"]
    yield from summary["endpoints"].items()


def _assert_cis_hold(summary):
    """Every CI contains the point estimate printed next to it; no latency bound is negative."""
    for name, block in _blocks(summary):
        for key in stats.CI_KEYS:
            ci, point = block["ci95_ms"][key], block["latency_ms"][key]
            if ci is None:
                continue
            assert point is not None, (name, key)
            lo, hi = ci
            assert lo is not None and hi is not None, (name, key, ci)
            assert 0.0 <= lo <= point <= hi, (name, key, lo, point, hi)


def test_order_statistic_ranks_have_the_binomial_coverage():
    for n in (5, 6, 20, 71, 72, 120, 366, 367, 1000, 50_000):
        for q in (0.5, 0.95, 0.99):
            ranks = stats.order_statistic_ranks(n, q)
            # a finite upper bound needs P(all n below the quantile) = q^n <= 2.5 %
            assert (ranks is None) == (q**n > 0.025), (n, q)
            if ranks is None:
                continue
            i, j = ranks
            coverage = sst.binom.cdf(j, n, q) - (sst.binom.cdf(i, n, q) if i >= 0 else 0.0)
            assert coverage >= 0.95, (n, q, coverage)
            # equal tails, not wider than needed: one rank less on either side loses coverage
            assert i < 0 or sst.binom.cdf(i + 1, n, q) > 0.025
            assert sst.binom.cdf(j - 1, n, q) < 0.975 or j - 1 < math.ceil((n - 1) * q)
            h = (n - 1) * q
            assert i <= math.floor(h) and j >= math.ceil(h)


def test_order_statistic_interval_covers_the_true_percentile_about_95_percent():
    rng = np.random.default_rng(7)
    true_p95 = -math.log(0.05)
    covered = 0
    for _ in range(400):
        x = np.sort(rng.exponential(1.0, 500))
        lo, hi = stats.order_statistic_interval(x.size, 0.95, x.__getitem__)
        covered += lo <= true_p95 <= hi
    assert 0.93 <= covered / 400 <= 0.995


def _stall_run():
    """redis_stall's shape: 20 req/s for 6 s, fast answers (20 or 100 ms) except that Redis
    stalls from 8 s to 9.5 s and every request arriving then waits until 9.5 s."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(120):
        at = 4.0 + i / 20.0
        lat = 9.5 - at + 0.02 if 8.0 <= at < 9.5 else (0.02 if rng.random() < 0.5 else 0.1)
        rows.append(rec(i, at, lat))
    return records_frame(rows)


def test_a_stall_in_one_replication_gets_a_percentile_ci_around_its_estimate():
    df = _stall_run()
    s = summarize(df, 1)
    o = s["overall"]
    p95 = o["latency_ms"]["p95"]
    lo, hi = o["ci95_ms"]["p95"]
    assert 1000.0 < p95 < 1500.0
    assert 0.0 <= lo <= p95 <= hi
    # what was printed before: t over the p95 of 10 batches of 12, which excludes the estimate
    lat = df.sort_values("arrived_at")["latency_s"].to_numpy() * 1000.0
    old = stats.t_interval([np.percentile(b, 95) for b in np.array_split(lat, 10)])
    assert old[1] < p95
    _assert_cis_hold(s)


def test_cis_exist_where_the_data_allow_them():
    one = summarize(synthetic(reps=1, n=500, fail=0.0), 1)["overall"]
    assert all(one["ci95_ms"][k] is not None for k in stats.CI_KEYS)  # 500 >= 367 for p99
    small = summarize(synthetic(reps=1, n=60, fail=0.0), 1)["overall"]
    assert small["ci95_ms"]["p50"] is not None and small["ci95_ms"]["mean"] is not None
    assert small["ci95_ms"]["p95"] is None and small["ci95_ms"]["p99"] is None  # 60 < 72: no upper bound
    reps = summarize(synthetic(reps=3, n=30, fail=0.0), 3)["overall"]
    assert all(reps["ci95_ms"][k] is not None for k in stats.CI_KEYS)


_SHAPES = ("exponential", "lognormal", "pareto", "constant", "two_point", "stall", "tiny")


def _latencies(shape: str, n: int, rng) -> np.ndarray:
    if shape == "exponential":
        return rng.exponential(0.2, n)
    if shape == "lognormal":
        return rng.lognormal(-2.0, 2.0, n)
    if shape == "pareto":
        return (rng.pareto(1.1, n) + 1.0) * 0.01
    if shape == "constant":
        return np.full(n, 0.25)
    if shape == "two_point":
        return np.where(rng.random(n) < 0.93, 0.01, 3.0)
    if shape == "stall":
        lat = rng.exponential(0.02, n)
        k = n // 4
        lat[n // 2: n // 2 + k] = np.linspace(1.5, 0.0, k)  # a block of consecutive slow requests
        return lat
    return rng.uniform(0.0, 1e-6, n)  # sub-microsecond, and zeros after rounding


@st.composite
def _runs(draw):
    reps = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rows, i = [], 0
    for r in range(reps):
        n = draw(st.integers(0, 900))
        shape = draw(st.sampled_from(_SHAPES))
        lat = _latencies(shape, n, rng)
        extra = draw(st.lists(st.floats(0.0, 1e4, allow_nan=False, allow_infinity=False), max_size=5))
        lat = np.concatenate([lat, extra])
        t = 0.0
        for x in lat:
            t += float(rng.exponential(0.05))
            out = "timeout" if rng.random() < 0.05 else "ok"
            ep = "chat" if rng.random() < 0.7 else "select"
            rows.append(rec(i, t, float(x), rep=r, endpoint=ep, outcome=out))
            i += 1
    return records_frame(rows), reps


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_runs())
def test_every_printed_ci_contains_its_estimate_and_no_bound_is_negative(run):
    df, reps = run
    s = summarize(df, reps)
    _assert_cis_hold(s)
    # the same records through the bounded-memory sketches (gwsim run --records none)
    sketches = {}
    for row in df.itertuples():
        group = sketches.setdefault(row.endpoint, [histograms.LatencySketch() for _ in range(reps)])
        group[row.replication].add(row.id % histograms.BATCHES, row.outcome, row.latency_s)
    lean = histograms.summarize(sketches, scenario="t", engine="sim", replications=reps, seed=1, warmup_s=0.0,
                                end_s=1e9, endpoints=["chat", "select"])
    _assert_cis_hold(lean)
    # a comparison's interval holds the difference it prints
    if reps >= 2:
        slower = df.copy()
        slower["latency_s"] = slower["latency_s"] * 1.1
        win_a, win_b = stats.measurement_window(df, 0.0, 1e9), stats.measurement_window(slower, 0.0, 1e9)
        rows = stats.compare_summaries(s, summarize(slower, reps), stats.per_replication(win_a, 1e9),
                                       stats.per_replication(win_b, 1e9))
        for r in rows:
            if r["ci95"] is not None and r["delta"] is not None:
                assert r["ci95"][0] <= r["delta"] <= r["ci95"][1], r


# --------------------------------------------------------------------------- the what-if commands' intervals

from gwsim.whatif.runner import _block, aggregate, metric_range  # noqa: E402
from gwsim.whatif.slo import judge, parse_slo  # noqa: E402


def _assert_replication_cis_hold(points: pd.DataFrame) -> None:
    """Each metric's mean over replications lies in its interval, which stays in the range
    the metric can take (no latency, rate or count below 0, no share above 1)."""
    for row in points.to_dict("records"):
        for col, point in row.items():
            if f"{col}_lo" not in row or not math.isfinite(point):
                continue
            lo, hi = row[f"{col}_lo"], row[f"{col}_hi"]
            if not (math.isfinite(lo) and math.isfinite(hi)):
                continue
            floor, ceiling = metric_range(col)
            assert floor <= lo <= point <= hi, (col, lo, point, hi)
            assert ceiling is None or hi <= ceiling, (col, hi)


def test_two_replications_far_apart_give_a_p95_interval_from_0_not_below():
    # validate -n 2 printed a negative P95 lower bound: t(0.975, 1) = 12.7 times half the gap
    per_rep = pd.DataFrame({"variant": [0, 0], "replication": [0, 1], "p95_ms": [100.0, 2000.0],
                            "success_rate": [0.2, 1.0]})
    row = aggregate(per_rep, []).iloc[0]
    assert row["p95_ms_lo"] == 0.0 and row["p95_ms_hi"] > 2000.0
    assert row["success_rate_lo"] == 0.0 and row["success_rate_hi"] == 1.0
    v = judge(parse_slo("p95<4s"), [100.0, 2000.0])
    assert v.ci[0] == 0.0 and v.ci[0] <= v.value <= v.ci[1] and not v.decided
    assert stats.t_interval([100.0, 2000.0])[0] < 0  # the bare interval, which nothing prints any more


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_runs())
def test_every_ci_the_what_if_commands_print_contains_its_estimate_and_none_leaves_the_metric_range(run):
    """validate, sweep, capacity and sensitivity print the mean over replications of each
    replication's metrics (``_block``) with ``aggregate``'s or ``judge``'s interval."""
    df, reps = run
    span = float(df["arrived_at"].max()) + 1.0 if len(df) else 1.0
    rows = []
    for r in range(reps):
        row = _block(df.loc[df["replication"] == r], span)
        rows.append({"variant": 0, "replication": r, **row})
    per_rep = pd.DataFrame(rows)
    _assert_replication_cis_hold(aggregate(per_rep, []))
    for text in ("p95<1s", "p99<=300ms", "mean<100ms", "success>=0.99", "errors<0.05", "throughput>=5/s"):
        slo = parse_slo(text)
        v = judge(slo, per_rep[slo.column].to_numpy(dtype="float64"))
        if v.ci is None:
            continue
        lo, hi = v.ci
        assert 0.0 <= lo <= v.value <= hi, (text, v.ci, v.value)
        assert slo.kind != "fraction" or hi <= 1.0, (text, v.ci)
