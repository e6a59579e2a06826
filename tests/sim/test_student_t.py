"""The plain-Python Student's t quantile that confidence intervals use, against SciPy's."""

from __future__ import annotations

import pytest
from scipy import stats as sst

from simulator import student_t


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 10, 29, 30, 99, 250, 1001])
@pytest.mark.parametrize("p", [0.025, 0.6, 0.9, 0.95, 0.975, 0.995, 0.9995])
def test_quantile_matches_scipy(df: int, p: float) -> None:
    expected = float(sst.t.ppf(p, df))
    assert student_t.ppf(p, df) == pytest.approx(expected, rel=1e-12, abs=1e-13)


@pytest.mark.parametrize("df", [1, 2, 7, 40])
def test_cdf_inverts_the_quantile_and_matches_scipy(df: int) -> None:
    for t in (-3.0, -0.5, 0.0, 0.7, 2.0, 12.0):
        assert student_t.cdf(t, df) == pytest.approx(float(sst.t.cdf(t, df)), rel=1e-12, abs=1e-15)
    assert student_t.cdf(student_t.ppf(0.975, df), df) == pytest.approx(0.975, abs=1e-14)


@pytest.mark.parametrize("bad", [(0.0, 3), (1.0, 3), (0.5, 0), (0.9, 2.5)])
def test_bad_arguments_are_refused(bad: tuple) -> None:
    with pytest.raises(ValueError):
        student_t.ppf(*bad)
