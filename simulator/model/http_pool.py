"""The gateway's HTTP connection pool to one upstream host, with Go net/http semantics.

Admission, reuse, churn, waiting and the dial timeout are decided by
``simulator.policies.pool``; this module only spends simulated time: a dial and a TLS
handshake for each new connection (given up at ``dial_timeout``: a ``connect`` error),
and the wait of callers beyond ``max_conns_per_host``.
"""

from __future__ import annotations

import simpy

from simulator.distributions import Sampler
from simulator.model.context import Failure
from simulator.policies.eventlog import RUN_LOG_LIMIT
from simulator.policies.pool import ConnectionPoolPolicy, dial_outcome
from simulator.scenario import ConnectionPool


class Lease:
    __slots__ = ("conn_id", "wait_s", "connect_s")

    def __init__(self, conn_id: int, wait_s: float, connect_s: float) -> None:
        self.conn_id = conn_id
        self.wait_s = wait_s
        self.connect_s = connect_s


#: the lease of an ``instant`` pool
_UNTRACKED = Lease(-1, 0.0, 0.0)


class SimHttpPool:
    __slots__ = ("env", "cfg", "policy", "dial", "tls", "_waiters", "instant")

    def __init__(self, env: simpy.Environment, cfg: ConnectionPool, rng, gauged: bool = False) -> None:
        self.env = env
        self.cfg = cfg
        self.policy = ConnectionPoolPolicy(cfg.max_idle_per_host, cfg.max_conns_per_host, cfg.idle_timeout, log_limit=RUN_LOG_LIMIT)
        self.dial = Sampler(cfg.dial_time, rng)
        self.tls = Sampler(cfg.tls_handshake_time, rng)
        self._waiters: dict[int, simpy.Event] = {}
        #: No cap on connections and a new one costs no time: nobody ever waits here and no
        #: timing depends on which connection a call gets, so connections are not tracked
        #: (unless ``gauged``: the run reports how many are in use).
        self.instant = (
            not gauged and not cfg.max_conns_per_host and self.dial.constant == 0 and self.tls.constant == 0
        )

    def _connect_time(self) -> float:
        return self.dial() + self.tls()

    def _dial(self, conn_id: int, deadline: float | None):
        """Generator: dial ``conn_id`` from now; returns the seconds it took.  A dial past the
        caller's ``deadline`` ends there (``timeout``); one past ``dial_timeout`` fails when that
        has passed (``connect``); one whose caller is interrupted stops; each way its slot is
        given back."""
        env = self.env
        took, connected = dial_outcome(self._connect_time(), self.cfg.dial_timeout)
        if took > 0:
            try:
                if deadline is not None and env.now + took > deadline:
                    yield env.timeout(max(deadline - env.now, 0.0))
                    raise Failure("timeout", 504)
                yield env.timeout(took)
            except BaseException:
                # past the deadline, or the caller walked away mid-dial (a race loser cancelled):
                # the slot goes back, as the real pool's dial gives it back on any exit
                self._give_back_slot(conn_id)
                raise
        if not connected:
            self._give_back_slot(conn_id)
            raise Failure("connect", 0)
        return took

    def take_idle(self) -> Lease | None:
        """``acquire`` when it needs no wait and no dial (an ``instant`` pool, or an idle
        connection to reuse), without a generator; else None and nothing taken."""
        if self.instant:
            return _UNTRACKED
        conn_id = self.policy.reuse(self.env.now)
        return Lease(conn_id, 0.0, 0.0) if conn_id is not None else None

    def acquire(self, deadline: float | None = None):
        """Generator returning a Lease; the caller must ``release`` it on every exit path.

        With a ``deadline`` the wait and the dial are bounded: past it, ``Failure('timeout')``.
        """
        if self.instant:
            return _UNTRACKED
        env = self.env
        start = env.now
        decision = self.policy.acquire(start)
        if decision.kind == "reuse":
            return Lease(decision.conn_id, 0.0, 0.0)
        if decision.kind == "dial":
            connect = yield from self._dial(decision.conn_id, deadline)
            return Lease(decision.conn_id, 0.0, connect)
        # wait for a handoff or a freed slot
        waiter = decision.waiter
        event = self._waiters[waiter] = env.event()
        try:
            if deadline is None:
                dial_needed = yield event
            else:
                fired = yield event | env.timeout(max(deadline - env.now, 0.0))
                if event not in fired:
                    raise Failure("timeout", 504)
                dial_needed = event.value
        except BaseException:
            self._waiters.pop(waiter, None)
            if self.policy.waiter_conn(waiter) is None:
                self.policy.cancel_wait(waiter, env.now)
            else:  # a connection was handed over just as we gave up: give it back
                self.policy.release(self.policy.waiter_conn(waiter), env.now, True)
            raise
        conn_id = self.policy.waiter_conn(waiter)
        waited = env.now - start
        connect = 0.0
        if dial_needed:
            connect = yield from self._dial(conn_id, deadline)
        return Lease(conn_id, waited, connect)

    def _give_back_slot(self, conn_id: int) -> None:
        """A dial that did not finish in time frees its slot, perhaps for a waiter."""
        waiter = self.policy.dial_failed(conn_id, self.env.now)
        if waiter is not None:
            event = self._waiters.pop(waiter, None)
            if event is not None:
                event.succeed(True)

    def release(self, lease: Lease, reusable: bool = True) -> None:
        if lease is _UNTRACKED:
            return
        outcome = self.policy.release(lease.conn_id, self.env.now, reusable)
        if outcome.kind == "handoff" and outcome.waiter is not None:
            event = self._waiters.pop(outcome.waiter, None)
            if event is not None:
                event.succeed(False)
        elif outcome.dial_for is not None:
            event = self._waiters.pop(outcome.dial_for, None)
            if event is not None:
                event.succeed(True)

    @property
    def in_use(self) -> int:
        """Connections in use (0 for an ``instant`` pool, which does not track them; see ``gauged``)."""
        return self.policy.active

    def __repr__(self) -> str:
        return f"<SimHttpPool {self.policy!r}>"
