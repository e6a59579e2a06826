"""The simulator's general request flow held to queueing closed forms.

``test_validation.py`` checks Erlang C and Pollaczek-Khinchine on scenarios the gateway
handles by its M/M/c shortcut (``SimGateway._plain``).  Here every request goes through
``SimGateway.handle``, the flow every real scenario runs (admission, the CPU slices, the
selection, the fallback loop, the provider attempt): most scenarios below set the
``SimGateway.shortcuts`` test hook off, one needs the general flow by itself (an attempt
deadline), and every run counts the requests ``handle`` saw against the records.

Tolerances come from each run: a 99 % Student-t interval over independent replications must
hold the closed form, and must be narrow enough for the check to mean something.  (99 %, not
the 95 % the summary prints, because each file makes about a dozen such checks.)
"""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pandas as pd
import pytest

from simulator import queueing, stats
from simulator.engine import Replication
from simulator.model.gateway import SimGateway
from simulator.scenario import Scenario, scenario_from_data

LEVEL = 0.99
#: Replications of each run: more of them narrow the t quantile (3.25 at 9 df, 4.03 at 5).
REPS = 10
MAX_HALF_WIDTH = 0.10


def _scenario(text: str) -> Scenario:
    return scenario_from_data(tomllib.loads(text), "<closed-form test>")


def _stage(name: str, *, duration: str, rate: str, provider: str, gateway: str = "", fallback: str = "",
           replications: int = 1, warmup: str = "100s", workload: str | None = None) -> Scenario:
    """One chat endpoint without model selection calling provider ``servers``."""
    if workload is None:
        workload = f'mode = "open"\narrivals = {{ process = "poisson", rate = "{rate}" }}'
    return _scenario(f"""
[run]
name = "{name}"
duration = "{duration}"
warmup = "{warmup}"
drain = "200s"
replications = {replications}
seed = 2025

[workload]
{workload}
mix = {{ stage = 1.0 }}

[gateway]
{gateway}

[endpoints.stage]
kind = "chat_completions"
model_selection = false
classes = [{{ name = "job", provider = "servers" }}]

[providers.servers]
{provider}

[fallback]
mode = "none"
max_attempts = 1
{fallback}
""")


def _run_general(scenario: Scenario, replications: int, monkeypatch, force: bool = True) -> list[pd.DataFrame]:
    """Each replication's records of the measurement window, every request handled by the
    general flow (asserted: ``handle`` saw exactly as many requests as were recorded)."""
    if force:
        monkeypatch.setattr(SimGateway, "shortcuts", False)
    run = scenario.run
    windows = []
    for r in range(replications):
        rep = Replication(scenario, r, run.seed)
        gw = rep.gateway
        assert not gw._plain_classes and not gw._direct_classes, "a shortcut would handle some requests"
        seen = [0]
        handle = gw.handle

        def counted(ctx, done=None, handle=handle, seen=seen):
            seen[0] += 1
            return handle(ctx, done)

        gw.handle = counted  # start() looks handle up on the instance
        records = rep.run().records
        assert len(records) > 1000 and seen[0] == len(records), (seen[0], len(records))
        windows.append(stats.measurement_window(records, run.warmup, run.duration))
    return windows


def _holds(expected: float, values: list[float]) -> None:
    """``expected`` lies in the 99 % t-interval over per-replication ``values``, and that interval
    is narrow enough to mean something (half-width at most ``MAX_HALF_WIDTH`` of ``expected``;
    the runs below give 1-7 %)."""
    lo, hi = stats.t_interval(values, LEVEL)
    assert lo <= expected <= hi, (lo, expected, hi)
    assert (hi - lo) / 2 <= MAX_HALF_WIDTH * expected, ("interval too wide to test anything", lo, hi)


def _ok(win: pd.DataFrame) -> pd.DataFrame:
    return win[win.outcome == "ok"]


# --------------------------------------------------------------------------- M/M/c


def test_mmc_behind_a_zero_cost_gateway_stage_matches_erlang_c(monkeypatch) -> None:
    # The request passes admission, a CPU slice of zero length on 2 cores, the selection and
    # the fallback loop before an M/M/4 provider at rho = 0.8.
    lam, mu, c = 3.2, 1.0, 4
    sc = _stage("mmc", duration="6000s", rate="3.2/s", replications=REPS,
                gateway='cpu_workers = 2\ncpu_per_request = { dist = "deterministic", value = "0s" }',
                provider='latency = { model = "plain", time = { dist = "exponential", mean = "1s" } }\n'
                         'concurrency = 4\nover_limit = "queue"')
    wins = _run_general(sc, REPS, monkeypatch)
    assert all((w.outcome == "ok").all() for w in wins)
    _holds(queueing.mmc_mean_sojourn(lam, mu, c), [_ok(w).latency_s.mean() for w in wins])
    _holds(queueing.erlang_c(c, lam / mu), [(_ok(w).provider_queue_s > 0).mean() for w in wins])
    _holds(queueing.mmc_sojourn_quantile(0.9, lam, mu, c), [_ok(w).latency_s.quantile(0.9) for w in wins])
    # the zero-cost stage cost nothing
    assert all(_ok(w).cpu_s.max() == 0.0 and _ok(w).cpu_wait_s.max() == 0.0 for w in wins)


# --------------------------------------------------------------------------- Erlang B


@pytest.mark.parametrize(
    "service, fallback, force",
    [
        # exponential service, general flow forced; the provider's booked servers
        ('{ dist = "exponential", mean = "1s" }', "", True),
        # gamma service with cv 2 (Erlang B is insensitive to the service distribution); an
        # attempt deadline no call reaches makes the flow general by itself and puts the
        # provider's limit on slots a walked-away call would hand back
        ('{ dist = "gamma", mean = "1s", cv = 2.0 }', 'attempt_timeout = "100000s"', False),
    ],
    ids=["exponential-forced", "gamma-deadline"],
)
def test_provider_concurrency_with_reject_is_erlang_b(monkeypatch, service: str, fallback: str, force: bool) -> None:
    # M/G/5/5: 5 concurrent calls at most, a 6th is answered 429 at once (rtt 0).
    lam, c = 4.0, 5
    sc = _stage("erlang_b", duration="5000s", rate="4/s", replications=REPS, fallback=fallback,
                provider=f'latency = {{ model = "plain", time = {service} }}\nconcurrency = 5\nover_limit = "reject"')
    wins = _run_general(sc, REPS, monkeypatch, force=force)
    blocked = [float((w.outcome == "upstream_error").mean()) for w in wins]
    assert all(set(w.outcome) <= {"ok", "upstream_error"} for w in wins)
    _holds(queueing.erlang_b(c, lam * 1.0), blocked)
    # an admitted call is never queued: it is served at once for its own service time
    assert all(_ok(w).provider_queue_s.max() == 0.0 for w in wins)
    _holds(1.0, [_ok(w).latency_s.mean() for w in wins])


# --------------------------------------------------------------------------- Jackson tandem


def test_cpu_then_provider_is_a_jackson_tandem(monkeypatch) -> None:
    # Station 1: the gateway's 2 cores, an exponential CPU slice of mean 0.5 s per request
    # (M/M/2, rho 0.75).  Station 2: the provider, 4 concurrent calls of mean 1 s (M/M/4, rho
    # 0.75).  Departures of an M/M/c are Poisson (Burke), so the mean time in system is the
    # sum of the two M/M/c sojourn times.
    lam = 3.0
    w1 = queueing.mmc_mean_sojourn(lam, 2.0, 2)
    w2 = queueing.mmc_mean_sojourn(lam, 1.0, 4)
    sc = _stage("tandem", duration="6000s", rate="3/s", replications=REPS,
                gateway='cpu_workers = 2\ncpu_per_request = { dist = "exponential", mean = "0.5s" }',
                provider='latency = { model = "plain", time = { dist = "exponential", mean = "1s" } }\n'
                         'concurrency = 4\nover_limit = "queue"')
    wins = _run_general(sc, REPS, monkeypatch)
    oks = [_ok(w) for w in wins]
    _holds(w1, [float((o.cpu_wait_s + o.cpu_s).mean()) for o in oks])
    _holds(w2, [float((o.provider_queue_s + o.provider_s).mean()) for o in oks])
    _holds(w1 + w2, [float(o.latency_s.mean()) for o in oks])


# --------------------------------------------------------------------------- M/M/c/K


def _mmck(lam: float, mu: float, c: int, k: int) -> tuple[float, float]:
    """M/M/c/K: (blocking probability, mean time in system of an admitted customer).

    p_n ∝ a^n / n! for n <= c and a^c / c! · (a/c)^(n-c) for c < n <= K, a = lam/mu; an
    arrival is refused with p_K (PASTA); W = L / (lam · (1 - p_K)) (Little).
    """
    a = lam / mu
    weights = [a**n / math.factorial(n) if n <= c else a**c / math.factorial(c) * (a / c) ** (n - c)
               for n in range(k + 1)]
    p = np.array(weights) / sum(weights)
    blocked = float(p[k])
    return blocked, float(np.dot(np.arange(k + 1), p)) / (lam * (1.0 - blocked))


def test_admission_limit_makes_an_mmck_queue(monkeypatch) -> None:
    # gateway.max_in_flight = 6 in front of an M/M/3 provider: at most 6 requests inside, a 7th
    # is refused with 503 on arrival.  Offered load 3 Erlangs on 3 servers: only K keeps it finite.
    lam, mu, c, k = 3.0, 1.0, 3, 6
    blocked, sojourn = _mmck(lam, mu, c, k)
    sc = _stage("mmck", duration="5000s", rate="3/s", replications=REPS, gateway=f"max_in_flight = {k}",
                provider='latency = { model = "plain", time = { dist = "exponential", mean = "1s" } }\n'
                         'concurrency = 3\nover_limit = "queue"')
    wins = _run_general(sc, REPS, monkeypatch)
    assert all(set(w.outcome) <= {"ok", "rejected"} for w in wins)
    _holds(blocked, [float((w.outcome == "rejected").mean()) for w in wins])
    _holds(sojourn, [float(_ok(w).latency_s.mean()) for w in wins])


# --------------------------------------------------------------------------- closed loop


def _mva(users: int, think_s: float, mu: float, c: int) -> tuple[float, float]:
    """Exact MVA of N users thinking ``think_s`` on average in front of a c-server station
    (service rate min(j, c)·mu with j present): (throughput, mean response time).

    Load-dependent MVA: R(n) = Σ_j j / rate(j) · P(j-1 | n-1), X(n) = n / (Z + R(n)),
    P(j | n) = X(n) / rate(j) · P(j-1 | n-1), P(0 | n) = 1 - Σ_{j>=1} P(j | n).
    """
    p = np.zeros(users + 1)
    p[0] = 1.0
    x = r = 0.0
    for n in range(1, users + 1):
        rates = np.minimum(np.arange(1, n + 1), c) * mu
        r = float(np.sum(np.arange(1, n + 1) / rates * p[:n]))
        x = n / (think_s + r)
        new = np.zeros(users + 1)
        new[1:n + 1] = x / rates * p[:n]
        new[0] = 1.0 - new[1:].sum()
        p = new
    return x, r


def test_mva_solver_agrees_with_the_finite_source_birth_death_chain() -> None:
    # The machine-repairman chain: j at the station, up (N - j)/Z, down min(j, c)·mu.
    users, think, mu, c = 12, 2.0, 1.0, 3
    w = [1.0]
    for j in range(1, users + 1):
        w.append(w[-1] * (users - j + 1) / think / (min(j, c) * mu))
    p = np.array(w) / sum(w)
    x = float(sum(p[j] * min(j, c) * mu for j in range(users + 1)))
    assert _mva(users, think, mu, c) == pytest.approx((x, users / x - think), rel=1e-12)


def test_closed_loop_users_match_exact_mva(monkeypatch) -> None:
    # 12 users, exponential think time of mean 2 s, an M/M/3 provider of mean 1 s.
    users, think, mu, c = 12, 2.0, 1.0, 3
    x, r = _mva(users, think, mu, c)
    workload = f'mode = "closed"\nusers = {users}\nthink_time = {{ dist = "exponential", mean = "{think}s" }}'
    sc = _stage("mva", duration="6000s", rate="", replications=REPS, workload=workload,
                provider='latency = { model = "plain", time = { dist = "exponential", mean = "1s" } }\n'
                         'concurrency = 3\nover_limit = "queue"')
    wins = _run_general(sc, REPS, monkeypatch)
    span = sc.run.duration - sc.run.warmup
    _holds(x, [len(_ok(w)) / span for w in wins])
    _holds(r, [float(_ok(w).latency_s.mean()) for w in wins])
