"""Distribution fitting: the right family wins on data drawn from it, Prometheus buckets give
back the parameters, and the printed snippet is a valid scenario distribution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gwsim import datafiles
from gwsim.cli import cli
from gwsim.whatif.fit import best_snippet, fit_latency, read_samples
from simulator.errors import UsageError
from simulator.scenario import PlainLatency

# third-party data, not shipped: GWSIM_DATA_DIR or ../shared/data (the test using it skips without)
SEED_DATA = datafiles.available()


def _csv(tmp_path: Path, values: np.ndarray, column: str = "latency_ms") -> Path:
    path = tmp_path / "lat.csv"
    path.write_text(column + ",endpoint\n" + "".join(f"{v:.6f},{'a' if i % 2 else 'b'}\n" for i, v in enumerate(values)))
    return path


@pytest.mark.parametrize(
    ("family", "draw"),
    [
        ("lognormal", lambda rng: rng.lognormal(np.log(300.0), 0.6, 3000)),
        ("gamma", lambda rng: rng.gamma(6.0, 50.0, 3000)),
        ("exponential", lambda rng: rng.exponential(200.0, 3000)),
        ("weibull", lambda rng: 400.0 * rng.weibull(3.0, 3000)),
    ],
)
def test_the_true_family_ranks_first(tmp_path: Path, family: str, draw) -> None:  # noqa: ANN001
    values = draw(np.random.default_rng(42))
    samples = read_samples(_csv(tmp_path, values))
    assert samples.unit == "ms"
    fits = fit_latency(samples)
    ranked = [f.name for f in fits if f.name != "empirical"]
    if family == "exponential":
        # gamma and Weibull contain the exponential: it must win on AIC or tie within 2
        assert fits[[f.name for f in fits].index("exponential")].aic - fits[0].aic < 2.0
    else:
        assert ranked[0] == family
    assert fits[-1].name == "empirical"
    assert fits[0].ks < 0.03


def test_lognormal_parameters_and_snippet_parse(tmp_path: Path) -> None:
    values = np.random.default_rng(1).lognormal(np.log(0.3), 0.5, 4000)
    path = tmp_path / "lat.txt"
    path.write_text("\n".join(f"{v:.6f}" for v in values))
    fits = fit_latency(read_samples(path))
    best, snippet = best_snippet(fits)
    assert best.name == "lognormal"
    assert best.params["sigma"] == pytest.approx(0.5, rel=0.05)
    import tomllib

    table = tomllib.loads(f"time = {snippet}")["time"]
    latency = PlainLatency.model_validate({"model": "plain", "time": table})
    assert latency.time.mean == pytest.approx(float(np.mean(values)), rel=0.05)


def test_weibull_snippet_parses_and_samples_like_the_data(tmp_path: Path) -> None:
    values = 0.4 * np.random.default_rng(5).weibull(2.5, 4000)
    path = tmp_path / "lat.txt"
    path.write_text("\n".join(f"{v:.6f}" for v in values))
    best, snippet = best_snippet(fit_latency(read_samples(path)))
    assert best.name == "weibull"
    assert best.params["shape"] == pytest.approx(2.5, rel=0.05)
    import tomllib

    time = PlainLatency.model_validate({"model": "plain", "time": tomllib.loads(f"time = {snippet}")["time"]}).time
    assert time.mean == pytest.approx(float(np.mean(values)), rel=0.03)
    drawn = time.sample_many(np.random.default_rng(6), 20000)
    assert np.quantile(drawn, 0.95) == pytest.approx(np.quantile(values, 0.95), rel=0.05)


def test_prometheus_buckets(tmp_path: Path) -> None:
    x = np.random.default_rng(3).lognormal(np.log(0.3), 0.5, 5000)
    edges = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5]
    lines = ["# HELP req_seconds latency", "# TYPE req_seconds histogram"]
    for route, part in (("a", x[:2500]), ("b", x[2500:])):
        for e in edges:
            lines.append(f'req_seconds_bucket{{route="{route}",le="{e}"}} {(part <= e).sum()}')
        lines.append(f'req_seconds_bucket{{route="{route}",le="+Inf"}} {part.size}')
        lines.append(f'req_seconds_count{{route="{route}"}} {part.size}')
    path = tmp_path / "metrics.txt"
    path.write_text("\n".join(lines) + "\n")
    samples = read_samples(path)
    assert samples.binned and samples.n == 5000
    fits = fit_latency(samples)
    assert fits[0].name == "lognormal"
    assert fits[0].params["sigma"] == pytest.approx(0.5, rel=0.05)
    assert np.exp(fits[0].params["mu"]) == pytest.approx(0.3, rel=0.03)
    # the empirical reference is a mixture of uniforms, one per bucket
    assert fits[-1].snippet.startswith('{ dist = "mixture"')


def test_fit_command_on_the_seed_data_filters_and_prints_a_snippet(tmp_path: Path) -> None:
    if SEED_DATA is None:
        pytest.skip(datafiles.skip_reason())
    res = CliRunner().invoke(cli, ["fit", "latency", str(SEED_DATA), "--column", "latency_ms", "--where",
                                   "endpoint=select_model", "--out", str(tmp_path / "fit"), "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["n"] == 4717  # the seed report's select_model count (all succeeded)
    assert [f["distribution"] for f in payload["fits"]][-1] == "empirical"
    aics = [f["aic"] for f in payload["fits"][:-1]]
    assert aics == sorted(aics)
    assert payload["snippet"].startswith("{ dist = ")
    assert (tmp_path / "fit" / "fit.png").stat().st_size > 0
    text = CliRunner().invoke(cli, ["fit", "latency", str(SEED_DATA), "--column", "latency_ms"]).output
    assert "scenario snippet" in text and "time = {" in text and "AIC" in text


@pytest.mark.parametrize(
    "content,args",
    [
        ("latency_ms\n1\n2\n", []),  # too few values
        ("a,b\n1,2\n", ["--column", "c"]),
        ("", []),
        ("x_bucket{le=\"1\"} 5\nx_bucket{le=\"2\"} 3\n", []),  # decreasing cumulative counts
    ],
)
def test_bad_input_exits_2(tmp_path: Path, content: str, args: list[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    res = CliRunner().invoke(cli, ["fit", "latency", str(path), *args])
    assert res.exit_code == 2, res.output
    with pytest.raises(UsageError):
        read_samples(tmp_path / "missing.csv")
