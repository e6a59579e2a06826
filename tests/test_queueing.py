"""Closed forms against known values, identities and a tiny FCFS simulation."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from simulator import queueing as q


def test_erlang_c_known_value_mmc_10_servers():
    # M/M/10, lam = 9, mu = 1 (a = 9): C = 0.6687, W = C/(10-9) + 1.
    assert q.erlang_c(10, 9.0) == pytest.approx(0.668731524, abs=1e-9)
    assert q.mmc_mean_wait(9.0, 1.0, 10) == pytest.approx(0.668731524, abs=1e-9)
    assert q.mmc_mean_sojourn(9.0, 1.0, 10) == pytest.approx(1.668731524, abs=1e-9)
    assert q.mmc_mean_queue_length(9.0, 1.0, 10) == pytest.approx(9 * 0.668731524, abs=1e-8)


def test_erlang_b_known_value_and_c1_reduces_to_rho():
    # Erlang B(2, 1) = (1/2) / (1 + 1 + 1/2) = 0.2; for one server C = rho.
    assert q.erlang_b(2, 1.0) == pytest.approx(0.2)
    for rho in (0.1, 0.5, 0.9):
        assert q.erlang_c(1, rho) == pytest.approx(rho)


def test_erlang_c_stable_for_large_c_and_saturates():
    c_big = q.erlang_c(2000, 1950.0)
    assert 0.0 < c_big < 1.0 and math.isfinite(c_big)
    assert q.erlang_c(5, 5.0) == 1.0
    assert q.mmc_mean_wait(5.0, 1.0, 5) == math.inf
    assert q.mmc_sojourn_quantile(0.5, 6.0, 1.0, 5) == math.inf


def test_md1_and_pk():
    # M/D/1 at rho = 0.8 with D = 1: Wq = 0.8 / (2 * 0.2) = 2.0.
    assert q.md1_mean_wait(0.8, 1.0) == pytest.approx(2.0)
    # P-K with exponential service (E[S^2] = 2/mu^2) is the M/M/1 wait.
    assert q.pk_mean_wait(0.7, 1.0, 2.0) == pytest.approx(q.mm1_mean_wait(0.7, 1.0))
    assert q.pk_mean_wait(1.0, 1.0, 1.0) == math.inf


def test_mm1_identities():
    lam, mu = 3.0, 4.0
    rho = lam / mu
    assert q.mm1_mean_sojourn(lam, mu) == pytest.approx(1.0 / (mu - lam))
    assert q.mm1_mean_wait(lam, mu) == pytest.approx(q.mm1_mean_sojourn(lam, mu) - 1.0 / mu)
    assert q.mm1_mean_number(lam, mu) == pytest.approx(lam * q.mm1_mean_sojourn(lam, mu))  # Little
    assert q.mm1_mean_number(lam, mu) == pytest.approx(rho / (1 - rho))
    # M/M/c with one server is M/M/1, including the whole sojourn distribution.
    assert q.mmc_mean_sojourn(lam, mu, 1) == pytest.approx(q.mm1_mean_sojourn(lam, mu))
    for level in (0.5, 0.95, 0.99):
        assert q.mmc_sojourn_quantile(level, lam, mu, 1) == pytest.approx(
            q.mm1_sojourn_quantile(level, lam, mu), rel=1e-8)


def test_sojourn_cdf_continuous_through_theta_equals_mu():
    # c*mu - lam == mu at lam = 1, mu = 1, c = 2: the Erlang-2 branch must match its neighbours.
    at = q.mmc_sojourn_cdf(2.0, 1.0, 1.0, 2)
    assert q.mmc_sojourn_cdf(2.0, 1.0 + 1e-7, 1.0, 2) == pytest.approx(at, abs=1e-6)
    assert q.mmc_sojourn_cdf(2.0, 1.0 - 1e-7, 1.0, 2) == pytest.approx(at, abs=1e-6)
    # Direct: C(2, 1) = 1/3; T = Exp(1) w.p. 2/3, Erlang-2(1) w.p. 1/3.
    expected = 1 - (2 / 3 * math.exp(-2) + 1 / 3 * math.exp(-2) * 3)
    assert at == pytest.approx(expected, abs=1e-12)


def test_sojourn_cdf_mean_matches_mean_sojourn():
    # E[T] = ∫ (1 - F(t)) dt, checked numerically against the closed-form mean.
    lam, mu, c = 9.0, 1.0, 10
    ts = np.linspace(0, 60, 60001)
    surv = np.array([1 - q.mmc_sojourn_cdf(t, lam, mu, c) for t in ts])
    assert np.trapezoid(surv, ts) == pytest.approx(q.mmc_mean_sojourn(lam, mu, c), rel=1e-4)


def _fcfs_mmc(lam, mu, c, n, seed):
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    services = rng.exponential(1 / mu, n)
    free = [0.0] * c
    soj = np.empty(n)
    for i in range(n):
        start = max(arrivals[i], heapq.heappop(free))
        heapq.heappush(free, start + services[i])
        soj[i] = start + services[i] - arrivals[i]
    return soj[n // 10:]


def test_sojourn_quantiles_match_simulated_fcfs_queue():
    lam, mu, c = 3.2, 1.0, 4  # rho = 0.8
    soj = _fcfs_mmc(lam, mu, c, 200_000, seed=7)
    assert np.mean(soj) == pytest.approx(q.mmc_mean_sojourn(lam, mu, c), rel=0.05)
    for level in (0.5, 0.95):
        assert np.quantile(soj, level) == pytest.approx(q.mmc_sojourn_quantile(level, lam, mu, c), rel=0.05)


def test_capacity_bisections_invert_the_forward_formulas():
    mu, c = 1.0, 10
    lam = q.mmc_max_rate_for_mean_wait(mu, c, q.mmc_mean_wait(9.0, mu, c))
    assert lam == pytest.approx(9.0, rel=1e-9)
    lam = q.mmc_max_rate_for_mean_sojourn(mu, c, 1.668731524)
    assert lam == pytest.approx(9.0, rel=1e-6)
    assert q.mmc_mean_sojourn(lam, mu, c) <= 1.668731524 + 1e-12
    assert q.mmc_max_rate_for_mean_sojourn(mu, c, 0.5) == 0.0  # below one service time
    target = q.mmc_sojourn_quantile(0.95, 8.0, mu, c)
    assert q.mmc_max_rate_for_sojourn_quantile(0.95, mu, c, target) == pytest.approx(8.0, rel=1e-6)
    assert q.mmc_min_servers(9.0, 1.0, 0.6687316) == 10
    assert q.mmc_mean_wait(9.0, 1.0, q.mmc_min_servers(9.0, 1.0, 0.05)) <= 0.05


def test_bad_inputs_rejected():
    with pytest.raises(ValueError):
        q.erlang_c(0, 1.0)
    with pytest.raises(ValueError):
        q.mmc_mean_wait(1.0, 0.0, 2)
    with pytest.raises(ValueError):
        q.mmc_sojourn_quantile(1.5, 1.0, 1.0, 2)
