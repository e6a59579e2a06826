"""SLO parsing and judging: the gate's and the capacity search's verdicts rest on these."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gwsim.whatif.slo import judge, parse_slo, parse_slos, slo_values
from simulator.errors import UsageError


@pytest.mark.parametrize(
    ("text", "column", "op", "threshold"),
    [
        ("p95<2s", "p95_ms", "<", 2000.0),
        ("p99 <= 1500ms", "p99_ms", "<=", 1500.0),
        ("success>=0.995", "success_rate", ">=", 0.995),
        ("success>=99.5%", "success_rate", ">=", 0.995),
        ("throughput>=20/s", "throughput_rps", ">=", 20.0),
        ("chat:p95<3s", "chat:p95_ms", "<", 3000.0),
        ("wait<200ms", "wait_ms", "<", 200.0),
        ("errors<1%", "error_rate", "<", 0.01),
    ],
)
def test_parse_slo(text: str, column: str, op: str, threshold: float) -> None:
    slo = parse_slo(text)
    assert slo.column == column
    assert slo.op == op
    assert slo.threshold == pytest.approx(threshold)


@pytest.mark.parametrize("text", ["p95", "p95<2", "p42<2s", "success>=1.5", "success>=abc", "p95<2s extra", "chat:p95<2s"])
def test_parse_slo_rejects_bad_input(text: str) -> None:
    with pytest.raises(UsageError):
        parse_slo(text, endpoints=["select"])


def test_parse_slos_needs_one() -> None:
    with pytest.raises(UsageError):
        parse_slos([])


def test_judge_margin_and_interval_for_an_upper_bound() -> None:
    slo = parse_slo("p95<2s")
    v = judge(slo, [1500.0, 1600.0, 1700.0])
    assert v.passed and v.decided
    assert v.value == pytest.approx(1600.0)
    assert v.margin == pytest.approx(400.0)
    lo, hi = v.margin_ci
    assert lo < 400.0 < hi and lo > 0


def test_judge_within_noise_when_the_interval_straddles() -> None:
    slo = parse_slo("p95<2s")
    v = judge(slo, [1500.0, 2500.0, 1900.0])
    assert v.passed  # mean 1966.7 < 2000
    assert not v.decided


def test_judge_lower_bound_fails_and_clips_share_interval() -> None:
    slo = parse_slo("success>=0.995")
    v = judge(slo, [0.99, 0.98, 1.0])
    assert not v.passed
    assert v.margin == pytest.approx(0.99 - 0.995)
    assert v.ci[1] <= 1.0


def test_judge_replication_without_success_fails_latency_slo() -> None:
    v = judge(parse_slo("p95<2s"), [100.0, math.nan])
    assert not v.passed
    assert v.value is None


def test_slo_values_falls_back_to_overall_for_a_single_endpoint() -> None:
    import pandas as pd

    frame = pd.DataFrame({"p95_ms": [1.0, 2.0]})
    assert np.array_equal(slo_values(frame, parse_slo("stage:p95<2s")), [1.0, 2.0])
