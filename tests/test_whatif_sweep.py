"""Sweeps: value parsing, the grid, common random numbers, identical numbers on a local pool
and on a Dask LocalCluster, and the files a sweep writes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from gwsim.cli import cli
from gwsim.whatif.runner import DaskExecutor, LocalExecutor, ScenarioSource
from gwsim.whatif.sweep import grid, numeric_value, parse_param, run_sweep, split_values
from simulator.errors import UsageError
from stage_scenario import single_stage

MM = single_stage("mm_small", duration="200s", warmup="20s", replications=3, seed=7, rate="6/s",
                  service='{ dist = "exponential", mean = "1s" }', servers=8)


@pytest.fixture()
def mm(tmp_path: Path) -> str:
    path = tmp_path / "mm.toml"
    path.write_text(MM)
    return str(path)


def test_split_values_keeps_inline_tables_whole() -> None:
    assert split_values('1s, 2s,5s') == ["1s", "2s", "5s"]
    assert split_values('{dist = "exponential", mean = "1s"},{dist = "deterministic", value = "1s"}') == [
        '{dist = "exponential", mean = "1s"}', '{dist = "deterministic", value = "1s"}']
    assert split_values('"a,b",c') == ['"a,b"', "c"]


def test_parse_param_and_grid_order() -> None:
    a = parse_param("fallback.attempt_timeout=1s,2s")
    b = parse_param("gateway.cpu_workers=1,2,4")
    points = grid([a, b])
    assert len(points) == 6
    assert points[0] == {"fallback.attempt_timeout": "1s", "gateway.cpu_workers": "1"}
    assert points[-1] == {"fallback.attempt_timeout": "2s", "gateway.cpu_workers": "4"}
    for bad in ("novalue", "a.b=", "a.b=1,1", "=1,2"):
        with pytest.raises(UsageError):
            parse_param(bad)


def test_numeric_values_for_axes() -> None:
    assert numeric_value("250ms") == pytest.approx(0.25)
    assert numeric_value("10/s") == pytest.approx(10.0)
    assert numeric_value("3") == 3.0
    assert numeric_value('"race"') is None


def test_common_random_numbers_make_a_no_op_parameter_change_nothing(mm: str) -> None:
    # the client timeout is far above any latency here: both points must see identical requests
    with LocalExecutor(1) as ex:
        result = run_sweep(ScenarioSource(mm), [parse_param("workload.client_timeout=1000s,2000s")], ex, replications=2)
    a = result.per_replication[result.per_replication["variant"] == 0].drop(columns=["variant", "workload.client_timeout", "point"])
    b = result.per_replication[result.per_replication["variant"] == 1].drop(columns=["variant", "workload.client_timeout", "point"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_more_servers_lower_the_wait(mm: str) -> None:
    with LocalExecutor(2) as ex:
        result = run_sweep(ScenarioSource(mm), [parse_param("providers.servers.concurrency=7,10")], ex, replications=2)
    pts = result.points.set_index("providers.servers.concurrency")
    assert pts.loc[10.0, "wait_ms"] < pts.loc[7.0, "wait_ms"]
    assert pts.loc[7.0, "util:provider:servers"] == pytest.approx(6 / 7, rel=0.1)
    assert (pts["p95_ms_lo"] <= pts["p95_ms"]).all() and (pts["p95_ms"] <= pts["p95_ms_hi"]).all()


def test_dask_local_cluster_gives_identical_numbers(mm: str) -> None:
    params = [parse_param("workload.arrivals.rate=5/s,7/s")]
    with LocalExecutor(2) as ex:
        local = run_sweep(ScenarioSource(mm), params, ex, replications=3, seed=5)
    with DaskExecutor("local", workers=2) as ex:
        dask = run_sweep(ScenarioSource(mm), params, ex, replications=3, seed=5)
    pd.testing.assert_frame_equal(local.per_replication, dask.per_replication, check_exact=True)
    pd.testing.assert_frame_equal(local.points, dask.points, check_exact=True)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_sweep_command_writes_parquet_and_charts(mm: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["sweep", mm, "--param", "providers.servers.concurrency=7,9", "--param",
                                   "workload.arrivals.rate=4/s,6/s", "-n", "2", "--workers", "1", "--out", str(out),
                                   "--slo", "p95<4s", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert len(payload["points"]) == 4
    points = pd.read_parquet(out / "points.parquet")
    assert {"p95_ms", "p95_ms_lo", "p95_ms_hi", "providers.servers.concurrency", "workload.arrivals.rate"} <= set(points.columns)
    assert len(pd.read_parquet(out / "replications.parquet")) == 8
    width, height = _png_size(out / "sweep.png")
    assert width > 400 and height > 300
    html = (out / "sweep.html").read_text()
    assert "vega" in html.lower() and "P95 latency (ms)" in html


def test_sweep_command_svg_and_bad_param(mm: str, tmp_path: Path) -> None:
    out = tmp_path / "svg"
    res = CliRunner().invoke(cli, ["sweep", mm, "--param", "workload.arrivals.rate=4/s,5/s", "-n", "2", "--workers", "1",
                                   "--out", str(out), "--format", "svg", "--metric", "success"])
    assert res.exit_code == 0, res.output
    assert (out / "sweep.svg").read_text().lstrip().startswith("<svg")
    bad = CliRunner().invoke(cli, ["sweep", mm, "--param", "providers.servers.concurrency=0,2", "-n", "2", "--out", str(out)])
    assert bad.exit_code == 2
    assert "concurrency" in bad.output
