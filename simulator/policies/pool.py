"""Connection admission and churn of Go's net/http ``Transport`` for one host.

The rules modelled (net/http/transport.go): a request takes the most recently idled
connection (``getIdleConn`` scans from the newest and drops those idle longer than
``IdleConnTimeout``); with none idle it dials, unless ``MaxConnsPerHost`` connections
(dialing, active or idle) already exist, in which case it queues FIFO
(``connsPerHostWait``).  A released connection goes straight to a waiting request if
there is one (``tryPutIdleConn`` delivers to ``idleConnWait``), else into the idle list
unless the host already has ``MaxIdleConnsPerHost`` idle ones, in which case it is
closed: that is the churn the seed gateway suffered above 10 concurrent calls.  When a
connection closes or a dial fails, the freed slot goes to the first waiter, which then
dials (``decConnsPerHost`` -> ``dialConnFor``).

A dial (TCP connect plus any TLS handshake) is bounded by the dialer's timeout
(``net.Dialer.Timeout``; the real engine's ``dial_timeout``): one that would take longer
fails as a connect error once the timeout has passed (``dial_outcome``), and its slot is
freed (``dial_failed``).

Not modelled: Go's dial race (a request that dials may take an idle connection freed
before its dial completes; the dialed one then goes idle) and the transport-wide
``MaxIdleConns``.

This is a pure state machine: the caller does the dialing and waiting.  Connection and
waiter ids are small integers handed out here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from simulator.policies.eventlog import new_log

if TYPE_CHECKING:
    from simulator.scenario import ConnectionPool

__all__ = ["Acquire", "Release", "ConnectionPoolPolicy", "dial_outcome"]


def dial_outcome(connect_s: float, dial_timeout_s: float | None) -> tuple[float, bool]:
    """A new connection that takes ``connect_s`` to dial (and handshake): (seconds until the
    dial is over, whether it connected).  Past ``dial_timeout_s`` the dialer gives up: the
    dial fails (a ``connect`` error) exactly at the timeout."""
    if dial_timeout_s is not None and connect_s > dial_timeout_s:
        return dial_timeout_s, False
    return connect_s, True


@dataclass(frozen=True, slots=True)
class Acquire:
    """``reuse``: use idle ``conn_id`` now; ``dial``: dial ``conn_id`` (slot reserved);
    ``wait``: queued as ``waiter`` until a handoff or a freed slot (see ``waiter_conn``)."""

    kind: Literal["reuse", "dial", "wait"]
    conn_id: int | None
    waiter: int | None


@dataclass(frozen=True, slots=True)
class Release:
    """``handoff``: ``conn_id`` now belongs to ``waiter`` (ready to use); ``idle``: kept;
    ``close``: ``conn_id`` closed, and when ``dial_for`` is set the freed slot went to that
    waiter, which must dial ``waiter_conn(dial_for)`` (a new connection id)."""

    kind: Literal["idle", "close", "handoff"]
    conn_id: int
    waiter: int | None
    dial_for: int | None


class ConnectionPoolPolicy:
    """Pool state for one host.  Counters: ``dials`` (including dials done for waiters),
    ``reuses`` (idle reuse plus handoffs), ``churn_closes`` (reusable connections closed
    because the idle list was full), ``idle_expired``, ``dial_failures``, ``cancels``.

    ``active`` counts connections dialing or in use; ``idle`` those kept idle (some may
    have outlived ``idle_timeout_s`` until the next ``acquire``/``expire``); ``queued``
    the waiters.  ``idle_timeout_s == 0`` means idle connections never expire (Go's
    ``IdleConnTimeout`` zero value); ``max_idle_per_host == 0`` keeps none idle.

    Log events: ``dial``, ``wait``, ``handoff``, ``idle_close`` (churn), ``close``
    (not reusable), ``dial_for``, ``dial_failed``, ``expire``, ``cancel``.  Reuse and
    return-to-idle, the common case, are not logged.
    """

    __slots__ = (
        "max_idle_per_host",
        "max_conns_per_host",
        "idle_timeout_s",
        "log",
        "active",
        "dials",
        "reuses",
        "churn_closes",
        "idle_expired",
        "dial_failures",
        "cancels",
        "_idle",
        "_active_ids",
        "_waiters",
        "_waiting",
        "_assigned",
        "_holder",
        "_next_conn",
        "_next_waiter",
    )

    def __init__(
        self,
        max_idle_per_host: int,
        max_conns_per_host: int = 0,
        idle_timeout_s: float = 90.0,
        *,
        log_limit: int | None = None,
    ) -> None:
        if max_idle_per_host < 0 or max_conns_per_host < 0 or idle_timeout_s < 0:
            raise ValueError(
                f"expected non-negative pool limits, got max_idle_per_host={max_idle_per_host} "
                f"max_conns_per_host={max_conns_per_host} idle_timeout_s={idle_timeout_s}"
            )
        self.max_idle_per_host = max_idle_per_host
        self.max_conns_per_host = max_conns_per_host
        self.idle_timeout_s = idle_timeout_s
        self.log: list[tuple[str, float]] = new_log(log_limit)
        self.active = 0
        self.dials = 0
        self.reuses = 0
        self.churn_closes = 0
        self.idle_expired = 0
        self.dial_failures = 0
        self.cancels = 0
        self._idle: list[tuple[int, float]] = []  # (conn_id, idle since), newest last
        self._active_ids: set[int] = set()
        self._waiters: deque[int] = deque()  # FIFO; cancelled ids are skipped lazily
        self._waiting: set[int] = set()  # waiters still queued
        self._assigned: dict[int, int] = {}  # waiter -> conn id it was given
        self._holder: dict[int, int] = {}  # conn id -> waiter it was given to
        self._next_conn = 0
        self._next_waiter = 0

    @classmethod
    def from_config(cls, cfg: "ConnectionPool", *, log_limit: int | None = None) -> "ConnectionPoolPolicy":
        return cls(cfg.max_idle_per_host, cfg.max_conns_per_host, cfg.idle_timeout, log_limit=log_limit)

    # ------------------------------------------------------------------ views

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def total(self) -> int:
        """Connections counted against ``max_conns_per_host``: dialing, active and idle."""
        return self.active + len(self._idle)

    def waiter_conn(self, waiter: int) -> int | None:
        """The connection a waiter was given (by handoff or to dial), while it holds it."""
        return self._assigned.get(waiter)

    def is_waiting(self, waiter: int) -> bool:
        return waiter in self._waiting

    # ------------------------------------------------------------------ transitions

    def _new_conn(self) -> int:
        cid = self._next_conn
        self._next_conn = cid + 1
        self.active += 1
        self.dials += 1
        self._active_ids.add(cid)
        return cid

    def _pop_waiter(self) -> int | None:
        waiters = self._waiters
        waiting = self._waiting
        while waiters:
            w = waiters.popleft()
            if w in waiting:
                waiting.discard(w)
                return w
        return None

    def _assign(self, waiter: int, cid: int) -> None:
        self._assigned[waiter] = cid
        self._holder[cid] = waiter

    def _drop_expired(self, now: float) -> None:
        idle = self._idle
        # idle is ordered by idle time, oldest first: drop a prefix (Go: idleAt before now-timeout)
        limit = now - self.idle_timeout_s
        n = 0
        for _, since in idle:
            if since < limit:
                n += 1
            else:
                break
        if n:
            del idle[:n]
            self.idle_expired += n
            self.log.append(("expire", now))

    def expire(self, now: float) -> int:
        """Close idle connections older than ``idle_timeout_s`` (Go's per-conn idle timer);
        returns how many were closed."""
        if not self.idle_timeout_s or not self._idle:
            return 0
        before = self.idle_expired
        self._drop_expired(now)
        return self.idle_expired - before

    def reuse(self, now: float) -> int | None:
        """The idle connection ``acquire`` would reuse now, taken; None when there is none."""
        idle = self._idle
        if idle:
            if self.idle_timeout_s:
                self._drop_expired(now)
            if idle:
                cid = idle.pop()[0]
                self.active += 1
                self._active_ids.add(cid)
                self.reuses += 1
                return cid
        return None

    def acquire(self, now: float) -> Acquire:
        cid = self.reuse(now)
        if cid is not None:
            return Acquire("reuse", cid, None)
        if not self.max_conns_per_host or self.active < self.max_conns_per_host:
            cid = self._new_conn()
            self.log.append(("dial", now))
            return Acquire("dial", cid, None)
        w = self._next_waiter
        self._next_waiter = w + 1
        self._waiters.append(w)
        self._waiting.add(w)
        self.log.append(("wait", now))
        return Acquire("wait", None, w)

    def _free(self, cid: int) -> None:
        try:
            self._active_ids.remove(cid)
        except KeyError:
            raise ValueError(f"expected an active connection id, got {cid}") from None
        w = self._holder.pop(cid, None)
        if w is not None:
            del self._assigned[w]

    def release(self, conn_id: int, now: float, reusable: bool = True) -> Release:
        """The caller is done with ``conn_id``; ``reusable=False`` when the response broke it."""
        self._free(conn_id)
        if reusable:
            if self._waiting:
                w = self._pop_waiter()
                self._active_ids.add(conn_id)
                self._assign(w, conn_id)  # type: ignore[arg-type]
                self.reuses += 1
                self.log.append(("handoff", now))
                return Release("handoff", conn_id, w, None)
            if len(self._idle) < self.max_idle_per_host:
                self.active -= 1
                self._idle.append((conn_id, now))
                return Release("idle", conn_id, None, None)
            self.churn_closes += 1
            self.log.append(("idle_close", now))
        else:
            self.log.append(("close", now))
        self.active -= 1
        w = self._pop_waiter() if self._waiting else None
        if w is not None:
            self._assign(w, self._new_conn())
            self.log.append(("dial_for", now))
        return Release("close", conn_id, None, w)

    def dial_failed(self, conn_id: int, now: float) -> int | None:
        """A dial of ``conn_id`` failed: free its slot; returns a waiter that must now dial
        ``waiter_conn(waiter)`` (Go retries the slot for the next waiter), or None."""
        self._free(conn_id)
        self.active -= 1
        self.dial_failures += 1
        self.log.append(("dial_failed", now))
        w = self._pop_waiter() if self._waiting else None
        if w is not None:
            self._assign(w, self._new_conn())
            self.log.append(("dial_for", now))
        return w

    def cancel_wait(self, waiter: int, now: float) -> bool:
        """A queued waiter gave up.  True if it was still queued.  False when it already
        got a connection (``waiter_conn``): the caller then owns it and must ``release``
        it (or finish dialing it), or the slot leaks."""
        if waiter in self._waiting:
            self._waiting.discard(waiter)
            self.cancels += 1
            if len(self._waiters) > 2 * len(self._waiting) + 64:
                # compact the lazily-skipped ids so a storm of give-ups cannot grow the deque
                self._waiters = deque(w for w in self._waiters if w in self._waiting)
            self.log.append(("cancel", now))
            return True
        return False

    def __repr__(self) -> str:
        return (
            f"<ConnectionPoolPolicy active={self.active} idle={len(self._idle)} queued={len(self._waiting)} "
            f"dials={self.dials} churn={self.churn_closes}>"
        )
