"""gwsim fit latency on Prometheus text exposition, read by prometheus_client's parser: label values
holding '}' , ',' or an escaped quote keep their series, --where LABEL=VALUE selects series, and a
line the parser cannot read is one error line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gwsim.whatif.fit import read_samples
from simulator.errors import UsageError

EDGES = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5]
ROUTES = {'/v1/chat}{x}': 1500, 'a,b': 1000, 'say \\"hi\\"': 500}


def _exposition(tmp_path: Path, extra: str = "") -> Path:
    rng = np.random.default_rng(4)
    lines = ["# HELP req_seconds latency", "# TYPE req_seconds histogram"]
    for route, n in ROUTES.items():
        part = rng.lognormal(np.log(0.3), 0.5, n)
        for e in EDGES:
            lines.append(f'req_seconds_bucket{{route="{route}",le="{e}"}} {(part <= e).sum()}')
        lines.append(f'req_seconds_bucket{{route="{route}",le="+Inf"}} {n}')
        lines.append(f'req_seconds_count{{route="{route}"}} {n}')
        lines.append(f'req_seconds_sum{{route="{route}"}} {part.sum()}')
    path = tmp_path / "metrics.txt"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_label_values_with_braces_commas_and_quotes_keep_their_series(tmp_path) -> None:
    samples = read_samples(_exposition(tmp_path))
    assert samples.binned and samples.column == "req_seconds"
    assert samples.n == sum(ROUTES.values())  # no series dropped


@pytest.mark.parametrize("route", list(ROUTES))
def test_where_selects_the_series_of_one_label_value(tmp_path, route) -> None:
    value = route.replace('\\"', '"')  # the label's value once the exposition's escape is read
    samples = read_samples(_exposition(tmp_path), where=[f"route={value}"])
    assert samples.n == ROUTES[route]
    assert samples.notes == (f"where route = {value}",)


def test_where_on_a_missing_label_or_value_is_one_line(tmp_path) -> None:
    path = _exposition(tmp_path)
    with pytest.raises(UsageError, match=r"^--where endpoint=\.\.\.: expected a label of the histogram series from \['route'\]$"):
        read_samples(path, where=["endpoint=chat"])
    with pytest.raises(UsageError, match="expected histogram series with those labels, found none"):
        read_samples(path, where=["route=/nowhere"])


def test_a_line_the_parser_cannot_read_is_one_error_line(tmp_path) -> None:
    path = _exposition(tmp_path, 'req_seconds_bucket{route="x",le="0.5"} many\n')
    with pytest.raises(UsageError) as info:
        read_samples(path)
    assert str(info.value).startswith(f"{path}: expected Prometheus text exposition, got a line it cannot read (")
    assert len(str(info.value).splitlines()) == 1


def test_fit_latency_command_honours_where_on_prometheus_input(tmp_path, capsys) -> None:
    from gwsim.cli import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["fit", "latency", str(_exposition(tmp_path)), "--where", "route=a,b", "--json"], prog_name="gwsim")
    assert info.value.code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["n"] == ROUTES["a,b"]
