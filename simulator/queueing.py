"""Closed-form queueing results: Erlang C (M/M/c), Pollaczek-Khinchine (M/G/1), M/M/1.

These are the textbook formulas a capacity planner reaches for before simulating: a gateway's
CPU pool or a provider's concurrency limit with Poisson arrivals is an M/M/c or M/G/1 queue to a
first approximation.  The simulator's tests check it against them, and the capacity tool uses
them for a quick first answer.

Notation: ``lam`` arrival rate (1/s), ``mu`` service rate of one server (1/s), ``c`` servers,
``a = lam/mu`` offered load (Erlangs), ``rho = a/c`` utilisation.  Wait = time in queue (Wq),
sojourn = wait + service (W).  An unstable queue (rho >= 1) has infinite waits: functions
return ``math.inf`` rather than raising, since "infinite" is the right answer to
"how long will requests wait at this load".
"""

from __future__ import annotations

import math

from scipy.optimize import brentq

__all__ = [
    "erlang_b",
    "erlang_c",
    "mm1_mean_number",
    "mm1_mean_sojourn",
    "mm1_mean_wait",
    "mm1_sojourn_quantile",
    "mmc_max_rate_for_mean_sojourn",
    "mmc_max_rate_for_mean_wait",
    "mmc_max_rate_for_sojourn_quantile",
    "mmc_mean_queue_length",
    "mmc_mean_sojourn",
    "mmc_mean_wait",
    "mmc_min_servers",
    "mmc_sojourn_cdf",
    "mmc_sojourn_quantile",
    "mmc_wait_probability",
    "md1_mean_wait",
    "pk_mean_wait",
]

_BISECT_ITERS = 200  # far beyond double precision; bisection halves the bracket each step


def _check_c(c: int) -> int:
    if isinstance(c, bool) or int(c) != c or c < 1:
        raise ValueError(f"expected a whole number of servers >= 1, got {c!r}")
    return int(c)


def _check_rates(lam: float, mu: float) -> None:
    if lam < 0 or not math.isfinite(lam):
        raise ValueError(f"expected a finite arrival rate >= 0, got {lam!r}")
    if mu <= 0 or not math.isfinite(mu):
        raise ValueError(f"expected a finite service rate > 0, got {mu!r}")


# --------------------------------------------------------------------------- Erlang


def erlang_b(c: int, offered_load_a: float) -> float:
    """Erlang B blocking probability of M/M/c/c, by the stable recursion.

    B(0) = 1,  B(k) = a·B(k-1) / (k + a·B(k-1)).  No factorials or powers, so it neither
    overflows nor loses precision for thousands of servers.
    """
    c = _check_c(c)
    a = float(offered_load_a)
    if a < 0:
        raise ValueError(f"expected an offered load >= 0, got {a!r}")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def erlang_c(c: int, offered_load_a: float) -> float:
    """Erlang C: probability that an arrival to M/M/c waits, for offered load a = lam/mu.

    C = c·B / (c - a·(1 - B)) with B = Erlang B(c, a), valid for a < c.  For a >= c the queue is
    unstable and every arrival waits: 1.0.
    """
    c = _check_c(c)
    a = float(offered_load_a)
    if a >= c:
        return 1.0
    b = erlang_b(c, a)
    return c * b / (c - a * (1.0 - b))


def mmc_wait_probability(lam: float, mu: float, c: int) -> float:
    """P(wait > 0) in M/M/c: Erlang C at a = lam/mu."""
    _check_rates(lam, mu)
    return erlang_c(c, lam / mu)


def mmc_mean_wait(lam: float, mu: float, c: int) -> float:
    """Mean wait in queue of M/M/c: Wq = C(c, a) / (c·mu - lam); inf when lam >= c·mu."""
    _check_rates(lam, mu)
    c = _check_c(c)
    if lam >= c * mu:
        return math.inf
    return erlang_c(c, lam / mu) / (c * mu - lam)


def mmc_mean_sojourn(lam: float, mu: float, c: int) -> float:
    """Mean time in system of M/M/c: W = Wq + 1/mu."""
    return mmc_mean_wait(lam, mu, c) + 1.0 / mu


def mmc_mean_queue_length(lam: float, mu: float, c: int) -> float:
    """Mean number waiting in M/M/c: Lq = lam·Wq (Little's law)."""
    wq = mmc_mean_wait(lam, mu, c)
    return lam * wq if math.isfinite(wq) else math.inf


def _hypoexp_survival(t: float, r1: float, r2: float) -> float:
    """P(X1 + X2 > t) for independent X1 ~ Exp(r1), X2 ~ Exp(r2).

    The usual (r2·e^{-r1 t} - r1·e^{-r2 t}) / (r2 - r1) cancels catastrophically when r1 ≈ r2.
    Rewritten with a = min rate, d = |r1 - r2| >= 0:
        S(t) = e^{-a t} · (1 + a · (1 - e^{-d t}) / d),
    where (1 - e^{-d t}) / d = -expm1(-d t) / d is computed without cancellation and tends to t
    as d -> 0 (the Erlang-2 survival e^{-a t}(1 + a t)).
    """
    a, b = min(r1, r2), max(r1, r2)
    d = b - a
    frac = t if d == 0.0 else -math.expm1(-d * t) / d
    return math.exp(-a * t) * (1.0 + a * frac)


def mmc_sojourn_cdf(t: float, lam: float, mu: float, c: int) -> float:
    """P(sojourn <= t) in M/M/c (FCFS).

    Sojourn = S + Wq with S ~ Exp(mu) and Wq = 0 w.p. 1 - C, Exp(theta) w.p. C, theta = c·mu - lam
    (given that it waits, an arrival waits an exponential time with rate theta).  Hence
        P(T > t) = (1 - C)·e^{-mu t} + C·P(Exp(mu) + Exp(theta) > t),
    the second term a hypoexponential survival (Erlang-2 when theta == mu, handled without
    division by zero).  Unstable queue: 0 for every finite t.
    """
    _check_rates(lam, mu)
    c = _check_c(c)
    if t <= 0:
        return 0.0
    if lam >= c * mu:
        return 0.0 if math.isfinite(t) else 1.0
    if math.isinf(t):
        return 1.0
    C = erlang_c(c, lam / mu)
    theta = c * mu - lam
    surv = (1.0 - C) * math.exp(-mu * t) + C * _hypoexp_survival(t, mu, theta)
    return min(max(1.0 - surv, 0.0), 1.0)


def mmc_sojourn_quantile(q: float, lam: float, mu: float, c: int) -> float:
    """The q-quantile of M/M/c sojourn time: the t with mmc_sojourn_cdf(t) = q (root found by Brent).

    inf for an unstable queue or q == 1; 0 for q == 0.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"expected a quantile level in [0, 1], got {q!r}")
    _check_rates(lam, mu)
    c = _check_c(c)
    if lam >= c * mu or q == 1.0:
        return math.inf
    if q == 0.0:
        return 0.0
    # Both pieces have rates >= min(mu, theta), so the tail is at most (1 + rate·t)·e^{-rate·t};
    # grow the bracket until it holds q instead of guessing a bound.
    hi = 1.0 / min(mu, c * mu - lam)
    while mmc_sojourn_cdf(hi, lam, mu, c) < q:
        hi *= 2.0
    return float(brentq(lambda t: mmc_sojourn_cdf(t, lam, mu, c) - q, 0.0, hi, xtol=1e-12 * hi, rtol=1e-12,
                        maxiter=500))


# --------------------------------------------------------------------------- M/G/1


def pk_mean_wait(lam: float, es: float, es2: float) -> float:
    """Pollaczek-Khinchine mean wait of M/G/1: Wq = lam·E[S²] / (2·(1 - rho)), rho = lam·E[S].

    ``es`` = E[S] and ``es2`` = E[S²] (= Var S + E[S]²) of the service time.  inf when rho >= 1.
    """
    if lam < 0 or es <= 0 or es2 < es * es * (1 - 1e-12):
        raise ValueError(f"expected lam >= 0, E[S] > 0 and E[S^2] >= E[S]^2, got {lam!r}, {es!r}, {es2!r}")
    rho = lam * es
    if rho >= 1.0:
        return math.inf
    return lam * es2 / (2.0 * (1.0 - rho))


def md1_mean_wait(lam: float, d: float) -> float:
    """M/D/1 mean wait (deterministic service d): Wq = rho·d / (2·(1 - rho)), rho = lam·d."""
    return pk_mean_wait(lam, d, d * d)


# --------------------------------------------------------------------------- M/M/1


def mm1_mean_wait(lam: float, mu: float) -> float:
    """M/M/1 mean wait: Wq = rho / (mu - lam), rho = lam/mu; inf when lam >= mu."""
    _check_rates(lam, mu)
    return (lam / mu) / (mu - lam) if lam < mu else math.inf


def mm1_mean_sojourn(lam: float, mu: float) -> float:
    """M/M/1 mean time in system: W = 1 / (mu - lam); inf when lam >= mu."""
    _check_rates(lam, mu)
    return 1.0 / (mu - lam) if lam < mu else math.inf


def mm1_mean_number(lam: float, mu: float) -> float:
    """M/M/1 mean number in system: L = rho / (1 - rho) (= lam·W); inf when rho >= 1."""
    _check_rates(lam, mu)
    rho = lam / mu
    return rho / (1.0 - rho) if rho < 1 else math.inf


def mm1_sojourn_quantile(q: float, lam: float, mu: float) -> float:
    """M/M/1 sojourn is Exp(mu - lam): its q-quantile is -ln(1 - q) / (mu - lam)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"expected a quantile level in [0, 1], got {q!r}")
    _check_rates(lam, mu)
    if lam >= mu or q == 1.0:
        return math.inf
    return -math.log1p(-q) / (mu - lam)


# --------------------------------------------------------------------------- capacity


def _max_rate(mu: float, c: int, ok) -> float:  # noqa: ANN001 - a predicate on lam
    """Highest lam in [0, c·mu) with ok(lam), for a predicate true at 0 that turns false once.

    Bisection keeps lo feasible and hi infeasible (c·mu, where waits are infinite).
    """
    lo, hi = 0.0, c * mu
    if not ok(lo):
        return 0.0
    for _ in range(_BISECT_ITERS):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def mmc_max_rate_for_mean_wait(mu: float, c: int, max_wait: float) -> float:
    """Highest arrival rate lam with M/M/c mean wait Wq(lam) <= max_wait (bisection; Wq rises with lam).

    Wq(0) = 0, so the answer is always >= 0 and < c·mu.
    """
    _check_rates(0.0, mu)
    c = _check_c(c)
    if max_wait < 0:
        raise ValueError(f"expected max_wait >= 0, got {max_wait!r}")
    return _max_rate(mu, c, lambda lam: mmc_mean_wait(lam, mu, c) <= max_wait)


def mmc_max_rate_for_mean_sojourn(mu: float, c: int, max_sojourn: float) -> float:
    """Highest lam with M/M/c mean sojourn W(lam) = Wq + 1/mu <= max_sojourn; 0 if max_sojourn < 1/mu."""
    _check_rates(0.0, mu)
    c = _check_c(c)
    if max_sojourn < 1.0 / mu:
        return 0.0
    return _max_rate(mu, c, lambda lam: mmc_mean_sojourn(lam, mu, c) <= max_sojourn)


def mmc_max_rate_for_sojourn_quantile(q: float, mu: float, c: int, max_t: float) -> float:
    """Highest lam with the M/M/c sojourn q-quantile <= max_t, e.g. "p95 under 2 s".

    Equivalent to mmc_sojourn_cdf(max_t, lam) >= q; 0 when even an idle system (service alone,
    quantile -ln(1-q)/mu) misses the target.
    """
    _check_rates(0.0, mu)
    c = _check_c(c)
    return _max_rate(mu, c, lambda lam: mmc_sojourn_cdf(max_t, lam, mu, c) >= q)


def mmc_min_servers(lam: float, mu: float, max_wait: float, c_max: int = 100_000) -> int:
    """Fewest servers c with M/M/c mean wait <= max_wait at arrival rate lam (linear search from
    the stability bound floor(a) + 1; Wq falls as c grows)."""
    _check_rates(lam, mu)
    c = max(1, math.floor(lam / mu) + 1)
    while c <= c_max:
        if mmc_mean_wait(lam, mu, c) <= max_wait:
            return c
        c += 1
    raise ValueError(f"no c <= {c_max} gives a mean wait <= {max_wait} at lam={lam}, mu={mu}")
