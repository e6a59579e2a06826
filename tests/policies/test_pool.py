"""Go net/http Transport pool semantics for one host: reuse, churn, waiting, handoff, expiry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.policies import Acquire, ConnectionPoolPolicy, Release
from simulator.scenario import ConnectionPool


def test_concurrency_above_idle_limit_churns_then_reuses() -> None:
    pool = ConnectionPoolPolicy(max_idle_per_host=10)
    got = [pool.acquire(0.0) for _ in range(12)]
    assert [a.kind for a in got] == ["dial"] * 12 and pool.dials == 12 and pool.active == 12
    rel = [pool.release(a.conn_id, 1.0) for a in got]
    assert [r.kind for r in rel] == ["idle"] * 10 + ["close"] * 2
    assert pool.churn_closes == 2 and pool.idle == 10 and pool.active == 0
    again = [pool.acquire(2.0) for _ in range(10)]
    assert {a.kind for a in again} == {"reuse"} and pool.dials == 12 and pool.reuses == 10
    for a in again:
        pool.release(a.conn_id, 3.0)
    assert pool.churn_closes == 2
    assert pool.log.count(("idle_close", 1.0)) == 2
    assert repr(pool) == "<ConnectionPoolPolicy active=0 idle=10 queued=0 dials=12 churn=2>"


def test_no_churn_when_concurrency_within_idle_limit() -> None:
    pool = ConnectionPoolPolicy(max_idle_per_host=10)
    for rnd in range(10):
        held = [pool.acquire(float(rnd)) for _ in range(8)]
        for a in held:
            pool.release(a.conn_id, rnd + 0.5)
    assert pool.dials == 8 and pool.reuses == 72 and pool.churn_closes == 0


def test_seed_concurrency_churns_every_round() -> None:
    """Seed: idle limit 10, 14 concurrent calls per round -> 4 closes and 4 dials each round."""
    pool = ConnectionPoolPolicy(max_idle_per_host=10)
    for rnd in range(5):
        held = [pool.acquire(float(rnd)) for _ in range(14)]
        for a in held:
            pool.release(a.conn_id, rnd + 0.5)
    assert pool.churn_closes == 20 and pool.dials == 14 + 4 * 4


def test_most_recently_idled_connection_is_reused() -> None:
    pool = ConnectionPoolPolicy(max_idle_per_host=5)
    a, b = pool.acquire(0), pool.acquire(0)
    pool.release(a.conn_id, 1)
    pool.release(b.conn_id, 2)
    assert pool.acquire(3) == Acquire("reuse", b.conn_id, None)


def test_max_idle_zero_never_keeps_idle() -> None:
    pool = ConnectionPoolPolicy(max_idle_per_host=0)
    a = pool.acquire(0)
    assert pool.release(a.conn_id, 1) == Release("close", a.conn_id, None, None)
    assert pool.idle == 0 and pool.churn_closes == 1
    assert pool.acquire(2).kind == "dial"


def test_max_conns_wait_and_fifo_handoff() -> None:
    pool = ConnectionPoolPolicy(max_idle_per_host=2, max_conns_per_host=2)
    a, b = pool.acquire(0), pool.acquire(0)
    w1, w2, w3 = pool.acquire(1), pool.acquire(2), pool.acquire(3)
    assert [x.kind for x in (w1, w2, w3)] == ["wait"] * 3 and pool.queued == 3
    assert w1.conn_id is None and w1.waiter is not None
    r = pool.release(a.conn_id, 4)  # reusable: straight to the first waiter
    assert r == Release("handoff", a.conn_id, w1.waiter, None)
    assert pool.waiter_conn(w1.waiter) == a.conn_id and pool.active == 2 and pool.reuses == 1
    r = pool.release(b.conn_id, 5, reusable=False)  # broken: the freed slot dials for the next waiter
    assert r.kind == "close" and r.dial_for == w2.waiter
    new = pool.waiter_conn(w2.waiter)
    assert new is not None and new not in (a.conn_id, b.conn_id)
    assert pool.dials == 3 and pool.active == 2 and pool.queued == 1 and pool.churn_closes == 0
    pool.release(a.conn_id, 6)  # w1 done with it -> w3
    assert pool.waiter_conn(w1.waiter) is None and pool.waiter_conn(w3.waiter) == a.conn_id
    pool.release(new, 7)
    pool.release(a.conn_id, 7)
    assert pool.active == 0 and pool.idle == 2 and pool.queued == 0
    assert pool.log == [
        ("dial", 0), ("dial", 0), ("wait", 1), ("wait", 2), ("wait", 3),
        ("handoff", 4), ("close", 5), ("dial_for", 5), ("handoff", 6),
    ]


def test_total_includes_idle_for_max_conns() -> None:
    pool = ConnectionPoolPolicy(max_idle_per_host=2, max_conns_per_host=2)
    a, b = pool.acquire(0), pool.acquire(0)
    pool.release(a.conn_id, 1)
    assert pool.acquire(2).kind == "reuse"  # an idle one is used rather than waiting
    assert pool.acquire(2).kind == "wait"


def test_idle_expiry() -> None:
    pool = ConnectionPoolPolicy(max_idle_per_host=4, idle_timeout_s=90.0)
    a, b = pool.acquire(0), pool.acquire(0)
    pool.release(a.conn_id, 0)
    pool.release(b.conn_id, 10)
    assert pool.acquire(90).kind == "reuse"  # b, idle 80 s
    pool.release(b.conn_id, 90)
    assert pool.acquire(90.0).conn_id == b.conn_id
    pool.release(b.conn_id, 91)
    assert pool.expire(91) == 1 and pool.idle == 1  # a idled at 0 is too old (91 s > 90 s)
    c = pool.acquire(181.5)  # b idled at 91: 90.5 s -> expired too
    assert c.kind == "dial" and pool.idle_expired == 2
    assert ("expire", 91) in pool.log and ("expire", 181.5) in pool.log


def test_idle_exactly_at_timeout_is_kept_and_zero_timeout_never_expires() -> None:
    pool = ConnectionPoolPolicy(max_idle_per_host=1, idle_timeout_s=90.0)
    a = pool.acquire(0)
    pool.release(a.conn_id, 0)
    assert pool.acquire(90).kind == "reuse"
    forever = ConnectionPoolPolicy(max_idle_per_host=1, idle_timeout_s=0.0)
    a = forever.acquire(0)
    forever.release(a.conn_id, 0)
    assert forever.acquire(1e9).kind == "reuse" and forever.idle_expired == 0


def test_cancel_wait() -> None:
    pool = ConnectionPoolPolicy(max_idle_per_host=1, max_conns_per_host=1)
    a = pool.acquire(0)
    w1, w2 = pool.acquire(1), pool.acquire(2)
    assert pool.cancel_wait(w1.waiter, 3) is True and pool.queued == 1
    assert pool.cancel_wait(w1.waiter, 3) is False  # already gone
    r = pool.release(a.conn_id, 4)
    assert r.kind == "handoff" and r.waiter == w2.waiter  # the cancelled waiter is skipped
    assert pool.cancel_wait(w2.waiter, 5) is False  # too late: it holds a connection
    pool.release(pool.waiter_conn(w2.waiter), 6)
    assert pool.active == 0 and pool.idle == 1 and pool.cancels == 1


def test_dial_failed_frees_slot_for_waiter() -> None:
    pool = ConnectionPoolPolicy(max_idle_per_host=1, max_conns_per_host=1)
    a = pool.acquire(0)
    w = pool.acquire(0.5)
    assert pool.dial_failed(a.conn_id, 1) == w.waiter
    cid = pool.waiter_conn(w.waiter)
    assert cid is not None and cid != a.conn_id and pool.dials == 2 and pool.active == 1
    assert pool.dial_failed(cid, 2) is None and pool.active == 0 and pool.dial_failures == 2


def test_release_of_unknown_connection_is_an_error() -> None:
    pool = ConnectionPoolPolicy(max_idle_per_host=1)
    a = pool.acquire(0)
    pool.release(a.conn_id, 1)
    with pytest.raises(ValueError, match="active connection id"):
        pool.release(a.conn_id, 2)


def test_from_config() -> None:
    cfg = ConnectionPool.model_validate({"max_idle_per_host": 10, "max_conns_per_host": 3, "idle_timeout": "90s"})
    pool = ConnectionPoolPolicy.from_config(cfg, log_limit=0)
    assert (pool.max_idle_per_host, pool.max_conns_per_host, pool.idle_timeout_s) == (10, 3, 90.0)
    pool.acquire(0)
    assert len(pool.log) == 0  # log_limit=0 keeps no events


ops = st.lists(st.tuples(st.sampled_from(["acq", "rel", "bad", "fail", "cancel"]), st.integers(0, 50)), max_size=80)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 4), st.integers(0, 4), ops)
def test_invariants_under_random_use(max_idle: int, max_conns: int, script: list) -> None:
    pool = ConnectionPoolPolicy(max_idle, max_conns, idle_timeout_s=5.0)
    held: list[int] = []  # connections callers hold (ready or dialing)
    waiting: list[int] = []
    t = 0.0
    for op, k in script:
        t += 0.5
        if op == "acq":
            a = pool.acquire(t)
            if a.kind == "wait":
                waiting.append(a.waiter)
            else:
                held.append(a.conn_id)
        elif op in ("rel", "bad", "fail") and held:
            cid = held.pop(k % len(held))
            if op == "fail":
                w = pool.dial_failed(cid, t)
                r = None
            else:
                r = pool.release(cid, t, reusable=op == "rel")
                w = r.waiter if r.kind == "handoff" else r.dial_for
            if w is not None:
                assert waiting[0] == w  # FIFO
                waiting.pop(0)
                held.append(pool.waiter_conn(w))
        elif op == "cancel" and waiting:
            assert pool.cancel_wait(waiting.pop(k % len(waiting)), t)
        assert pool.active == len(held) == len(set(held))
        assert pool.idle <= max_idle and pool.queued == len(waiting)
        if max_conns:
            assert pool.total <= max_conns
        else:
            assert not waiting
        if waiting:
            assert pool.idle == 0


def test_dial_outcome_gives_up_at_the_dial_timeout() -> None:
    from simulator.policies.pool import dial_outcome

    assert dial_outcome(0.3, None) == (0.3, True)  # no timeout: the dial takes what it takes
    assert dial_outcome(0.3, 0.5) == (0.3, True)
    assert dial_outcome(0.5, 0.5) == (0.5, True)  # at the limit exactly: still connected
    assert dial_outcome(2.0, 0.5) == (0.5, False)  # given up when the timeout has passed
