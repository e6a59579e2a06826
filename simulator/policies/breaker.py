"""Circuit breakers: the seed gateway's hand-rolled breaker, sony/gobreaker and a
resilience4j-style failure-rate breaker, as pure state machines.

Both executors call these with the current time (``now``, seconds); nothing here sleeps,
schedules or does I/O.  A caller asks ``allow(now)`` before a call and gets a ``Permit``
(or ``None``: rejected, the call must not be made), then reports the outcome with
``record(permit, now, success, duration_s)``.  A call that ends without an outcome
(cancelled by the caller) should be reported with ``cancel(permit, now)`` so that a
half-open probe slot is not leaked.

Every breaker keeps ``log``: ``(event, time)`` pairs for its state changes, with events
``"open"``, ``"half_open"`` and ``"closed"`` (and ``"reject"`` per rejected call when
built with ``log_rejects=True``; rejections are always counted in ``rejections``).

Time-driven transitions (gobreaker and rate: open -> half-open after ``open_for``;
gobreaker: the closed-state count interval) are applied lazily by whichever method is
called first after they fall due, but they are *logged at the moment they fell due*, and
interval boundaries lie on a fixed grid, so the outcome never depends on when (or
whether) someone looked at ``state(now)``.  The seed's breaker has no timer: its open ->
half-open transition is made by the first ``allow()`` after the open period, which is
what ``state()`` reports too (it never mutates that breaker).
"""

from __future__ import annotations

import abc
import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from simulator.policies.eventlog import new_log

if TYPE_CHECKING:  # the config model is only needed for typing; keeps this module pydantic-free
    from simulator.scenario import Breaker

__all__ = [
    "BreakerState",
    "Permit",
    "CircuitBreaker",
    "ConsecutiveBreaker",
    "GoBreaker",
    "RateBreaker",
    "make_breaker",
]


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call: which generation and state admitted it, and when."""

    generation: int
    state: BreakerState
    admitted_at: float


class CircuitBreaker(abc.ABC):
    """Common base: ``allow`` / ``record`` / ``cancel`` / ``state`` and the event log.

    ``generation`` increases on every state change (and, for gobreaker, on every count
    interval); permits carry the generation that admitted them.
    """

    __slots__ = ("log", "rejections", "_state", "_gen", "_log_rejects")
    semantics: ClassVar[str] = ""

    def __init__(self, *, log_rejects: bool = False, log_limit: int | None = None) -> None:
        self.log: list[tuple[str, float]] = new_log(log_limit)
        self.rejections = 0
        self._state = _CLOSED
        self._gen = 0
        self._log_rejects = log_rejects

    @abc.abstractmethod
    def allow(self, now: float) -> Permit | None:
        """A permit to make a call now, or ``None`` when the breaker rejects it."""

    @abc.abstractmethod
    def record(self, permit: Permit, now: float, success: bool, duration_s: float = 0.0) -> None:
        """Report the outcome of a call made under ``permit``."""

    @abc.abstractmethod
    def state(self, now: float) -> BreakerState:
        """The state at ``now`` (see the module docstring for lazily-due transitions)."""

    def cancel(self, permit: Permit, now: float) -> None:
        """The call made under ``permit`` ended without an outcome: free its probe slot."""

    @property
    def generation(self) -> int:
        return self._gen

    def _reject(self, now: float) -> None:
        self.rejections += 1
        if self._log_rejects:
            self.log.append(("reject", now))
        return None

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} state={self._state.value} gen={self._gen} "
            f"{self._extra_repr()}rejections={self.rejections}>"
        )


# --------------------------------------------------------------------------- seed


class ConsecutiveBreaker(CircuitBreaker):
    """The seed gateway's breaker (Go, hand-rolled), quirks selectable.

    Closed: counts consecutive failures (a success resets the count); opens at
    ``failure_threshold``.  Open: rejects until the first ``allow()`` more than
    ``open_for`` after the last recorded failure, which moves it to half-open and is
    admitted.  With ``extend_open_on_late_failure`` failures of calls still in flight
    refresh that time.  Half-open: every call admitted when ``half_open_unlimited``, else
    at most ``half_open_max_calls`` in flight; any failure reopens; ``success_threshold``
    successes close it.  With ``reset_success_count=False`` the success counter is never
    reset, so after the first recovery a single half-open success closes it.

    As in the seed, outcomes carry no generation check: a late result of a call admitted
    while closed counts in whatever state the breaker is in now.
    """

    __slots__ = (
        "failure_threshold",
        "success_threshold",
        "open_for",
        "extend_open_on_late_failure",
        "half_open_unlimited",
        "half_open_max_calls",
        "reset_success_count",
        "_failures",
        "_successes",
        "_last_failure_at",
        "_probes",
    )
    semantics = "consecutive"

    def __init__(
        self,
        failure_threshold: int = 5,
        success_threshold: int = 1,
        open_for: float = 30.0,
        *,
        extend_open_on_late_failure: bool = False,
        half_open_unlimited: bool = False,
        half_open_max_calls: int = 1,
        reset_success_count: bool = True,
        log_rejects: bool = False,
        log_limit: int | None = None,
    ) -> None:
        super().__init__(log_rejects=log_rejects, log_limit=log_limit)
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.open_for = open_for
        self.extend_open_on_late_failure = extend_open_on_late_failure
        self.half_open_unlimited = half_open_unlimited
        self.half_open_max_calls = half_open_max_calls
        self.reset_success_count = reset_success_count
        self._failures = 0
        self._successes = 0
        self._last_failure_at = -math.inf
        self._probes = 0  # calls admitted in the current half-open period still in flight

    @property
    def failures(self) -> int:
        return self._failures

    @property
    def successes(self) -> int:
        return self._successes

    @property
    def last_failure_at(self) -> float:
        return self._last_failure_at

    def allow(self, now: float) -> Permit | None:
        st = self._state
        if st is _CLOSED:
            return Permit(self._gen, _CLOSED, now)
        if st is _OPEN:
            if now - self._last_failure_at > self.open_for:
                self._state = _HALF_OPEN
                self._gen += 1
                if self.reset_success_count:
                    self._successes = 0
                self._probes = 1
                self.log.append(("half_open", now))
                return Permit(self._gen, _HALF_OPEN, now)
            return self._reject(now)
        if self.half_open_unlimited or self._probes < self.half_open_max_calls:
            self._probes += 1
            return Permit(self._gen, _HALF_OPEN, now)
        return self._reject(now)

    def record(self, permit: Permit, now: float, success: bool, duration_s: float = 0.0) -> None:
        if permit.state is _HALF_OPEN and permit.generation == self._gen:
            self._probes -= 1
        st = self._state
        if success:
            if st is _CLOSED:
                self._failures = 0
            elif st is _HALF_OPEN:
                self._successes += 1
                if self._successes >= self.success_threshold:
                    self._state = _CLOSED
                    self._gen += 1
                    self._failures = 0
                    self.log.append(("closed", now))
            # open: a success of a call still in flight changes nothing (as in the seed)
        elif st is _CLOSED:
            self._failures += 1
            self._last_failure_at = now
            if self._failures >= self.failure_threshold:
                self._open(now)
        elif st is _HALF_OPEN:
            self._last_failure_at = now
            self._open(now)
        elif self.extend_open_on_late_failure:
            self._last_failure_at = now

    def cancel(self, permit: Permit, now: float) -> None:
        if permit.state is _HALF_OPEN and permit.generation == self._gen:
            self._probes -= 1

    def _open(self, now: float) -> None:
        self._state = _OPEN
        self._gen += 1
        self._probes = 0
        self.log.append(("open", now))

    def state(self, now: float) -> BreakerState:
        # Pure: the seed moves to half-open only inside allow(), so an overdue open
        # breaker still reads "open" until a call arrives.
        return self._state

    def _extra_repr(self) -> str:
        return f"failures={self._failures} successes={self._successes} "


# --------------------------------------------------------------------------- gobreaker


class GoBreaker(CircuitBreaker):
    """sony/gobreaker: generations, a half-open probe limit, a closed-state count interval.

    Closed: trips when consecutive failures reach ``failure_threshold``; when
    ``count_interval > 0`` counts are cleared (a new generation) every interval.  Open for
    ``open_for`` from the moment it opened, then half-open (new generation).  Half-open:
    at most ``half_open_max_calls`` requests admitted in the generation; that many
    consecutive successes close it; any failure reopens.  Results of older generations
    are ignored (including calls that straddle a count-interval boundary, as in gobreaker).

    Differences from gobreaker kept deliberately: the transition to half-open is logged at
    the moment the open period ended (gobreaker stamps the first observation after it), and
    interval boundaries lie on the grid ``start + k * count_interval`` (gobreaker restarts
    the interval at the first observation after expiry), so looking at ``state()`` never
    changes the outcome.  ``start`` defaults to the first call's time.
    """

    __slots__ = (
        "failure_threshold",
        "half_open_max_calls",
        "open_for",
        "count_interval",
        "requests",
        "total_successes",
        "total_failures",
        "consecutive_successes",
        "consecutive_failures",
        "_expiry",
        "_started",
    )
    semantics = "gobreaker"

    def __init__(
        self,
        failure_threshold: int = 5,
        open_for: float = 60.0,
        half_open_max_calls: int = 1,
        count_interval: float = 0.0,
        *,
        start: float | None = None,
        log_rejects: bool = False,
        log_limit: int | None = None,
    ) -> None:
        super().__init__(log_rejects=log_rejects, log_limit=log_limit)
        self.failure_threshold = failure_threshold
        self.half_open_max_calls = half_open_max_calls
        self.open_for = open_for
        self.count_interval = count_interval
        # gobreaker's Counts, cleared on every new generation
        self.requests = 0
        self.total_successes = 0
        self.total_failures = 0
        self.consecutive_successes = 0
        self.consecutive_failures = 0
        self._expiry: float | None = None
        self._started = start is not None
        if start is not None and count_interval > 0:
            self._expiry = start + count_interval

    def _new_generation(self, at: float) -> None:
        self._gen += 1
        self.requests = self.total_successes = self.total_failures = 0
        self.consecutive_successes = self.consecutive_failures = 0
        st = self._state
        if st is _CLOSED:
            self._expiry = at + self.count_interval if self.count_interval > 0 else None
        elif st is _OPEN:
            self._expiry = at + self.open_for
        else:
            self._expiry = None

    def _set_state(self, st: BreakerState, at: float) -> None:
        self._state = st
        self._new_generation(at)
        self.log.append((st.value, at))

    def _current(self, now: float) -> BreakerState:
        st = self._state
        exp = self._expiry
        if st is _CLOSED:
            if exp is None:
                if not self._started:
                    self._started = True
                    if self.count_interval > 0:
                        self._expiry = now + self.count_interval
            elif now > exp:
                iv = self.count_interval
                # next boundary on the grid at or after now (gobreaker: expiry.Before(now))
                self._gen += 1
                self.requests = self.total_successes = self.total_failures = 0
                self.consecutive_successes = self.consecutive_failures = 0
                self._expiry = exp + math.ceil((now - exp) / iv) * iv
        elif st is _OPEN and now > exp:  # type: ignore[operator]
            self._set_state(_HALF_OPEN, exp)  # type: ignore[arg-type]
            return _HALF_OPEN
        return st

    def allow(self, now: float) -> Permit | None:
        st = self._current(now)
        if st is _OPEN or (st is _HALF_OPEN and self.requests >= self.half_open_max_calls):
            return self._reject(now)
        self.requests += 1
        return Permit(self._gen, st, now)

    def record(self, permit: Permit, now: float, success: bool, duration_s: float = 0.0) -> None:
        st = self._current(now)
        if permit.generation != self._gen:
            return
        if success:
            self.total_successes += 1
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            if st is _HALF_OPEN and self.consecutive_successes >= self.half_open_max_calls:
                self._set_state(_CLOSED, now)
        else:
            self.total_failures += 1
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            if st is _HALF_OPEN or self.consecutive_failures >= self.failure_threshold:
                self._set_state(_OPEN, now)

    def cancel(self, permit: Permit, now: float) -> None:
        self._current(now)
        if permit.generation == self._gen and self.requests > 0:
            self.requests -= 1

    def state(self, now: float) -> BreakerState:
        """Applies due transitions (logged at their due time) and returns the state."""
        return self._current(now)

    def _extra_repr(self) -> str:
        return f"requests={self.requests} consecutive_failures={self.consecutive_failures} "


# --------------------------------------------------------------------------- rate


class RateBreaker(CircuitBreaker):
    """resilience4j-like: failure-rate and slow-call-rate over a time-based sliding window.

    Closed: every outcome is recorded as (time, failed, slow), slow meaning
    ``duration_s >= slow_call_duration``; entries older than ``window`` are dropped (an
    entry at exactly ``now - window`` is out).  With at least ``minimum_calls`` in the
    window, a failure rate >= ``failure_rate_threshold`` or a slow rate >=
    ``slow_call_rate_threshold`` opens it.  After ``open_for`` it is half-open and admits
    ``half_open_max_calls`` calls; when all have reported, either rate at or above its
    threshold reopens it, otherwise it closes with an empty window.  Results of older
    generations are ignored.
    """

    __slots__ = (
        "window",
        "failure_rate_threshold",
        "slow_call_duration",
        "slow_call_rate_threshold",
        "minimum_calls",
        "half_open_max_calls",
        "open_for",
        "_calls",
        "_failed",
        "_slow",
        "_expiry",
        "_permits",
        "_done",
    )
    semantics = "rate"

    def __init__(
        self,
        window: float = 10.0,
        failure_rate_threshold: float = 0.5,
        minimum_calls: int = 10,
        open_for: float = 30.0,
        half_open_max_calls: int = 1,
        slow_call_duration: float = 60.0,
        slow_call_rate_threshold: float = 1.0,
        *,
        log_rejects: bool = False,
        log_limit: int | None = None,
    ) -> None:
        super().__init__(log_rejects=log_rejects, log_limit=log_limit)
        self.window = window
        self.failure_rate_threshold = failure_rate_threshold
        self.slow_call_duration = slow_call_duration
        self.slow_call_rate_threshold = slow_call_rate_threshold
        self.minimum_calls = minimum_calls
        self.half_open_max_calls = half_open_max_calls
        self.open_for = open_for
        self._calls: deque[tuple[float, bool, bool]] = deque()
        self._failed = 0  # failed calls in _calls (closed) or among half-open results
        self._slow = 0
        self._expiry = math.inf
        self._permits = 0  # half-open: calls admitted
        self._done = 0  # half-open: calls reported

    def _set_state(self, st: BreakerState, at: float) -> None:
        self._state = st
        self._gen += 1
        self._calls.clear()
        self._failed = self._slow = self._permits = self._done = 0
        if st is _OPEN:
            self._expiry = at + self.open_for
        self.log.append((st.value, at))

    def _current(self, now: float) -> BreakerState:
        st = self._state
        if st is _OPEN and now > self._expiry:
            self._set_state(_HALF_OPEN, self._expiry)
            return _HALF_OPEN
        return st

    @property
    def calls_in_window(self) -> int:
        return len(self._calls)

    def allow(self, now: float) -> Permit | None:
        st = self._current(now)
        if st is _CLOSED:
            return Permit(self._gen, _CLOSED, now)
        if st is _HALF_OPEN and self._permits < self.half_open_max_calls:
            self._permits += 1
            return Permit(self._gen, _HALF_OPEN, now)
        return self._reject(now)

    def record(self, permit: Permit, now: float, success: bool, duration_s: float = 0.0) -> None:
        st = self._current(now)
        if permit.generation != self._gen:
            return
        failed = not success
        slow = duration_s >= self.slow_call_duration
        if st is _CLOSED:
            calls = self._calls
            horizon = now - self.window
            while calls and calls[0][0] <= horizon:
                _, f, s = calls.popleft()
                self._failed -= f
                self._slow -= s
            calls.append((now, failed, slow))
            self._failed += failed
            self._slow += slow
            n = len(calls)
            # division, not multiplication: 3 / 10 == 0.3 exactly, 0.3 * 10 > 3
            if n >= self.minimum_calls and (
                self._failed / n >= self.failure_rate_threshold or self._slow / n >= self.slow_call_rate_threshold
            ):
                self._set_state(_OPEN, now)
        elif st is _HALF_OPEN:
            self._done += 1
            self._failed += failed
            self._slow += slow
            n = self._done
            if n >= self.half_open_max_calls:
                if self._failed / n >= self.failure_rate_threshold or self._slow / n >= self.slow_call_rate_threshold:
                    self._set_state(_OPEN, now)
                else:
                    self._set_state(_CLOSED, now)

    def cancel(self, permit: Permit, now: float) -> None:
        if self._current(now) is _HALF_OPEN and permit.generation == self._gen and self._permits > self._done:
            self._permits -= 1

    def state(self, now: float) -> BreakerState:
        """Applies a due open -> half-open transition (logged at its due time)."""
        return self._current(now)

    def _extra_repr(self) -> str:
        return f"calls={len(self._calls) if self._state is _CLOSED else self._done} failed={self._failed} slow={self._slow} "


# --------------------------------------------------------------------------- factory


def make_breaker(cfg: "Breaker", *, log_rejects: bool = False, log_limit: int | None = None) -> CircuitBreaker:
    """The breaker a scenario's ``Breaker`` table describes (dispatch on ``cfg.semantics``)."""
    sem = cfg.semantics
    if sem == "consecutive":
        return ConsecutiveBreaker(
            cfg.failure_threshold,
            cfg.success_threshold,
            cfg.open_for,
            extend_open_on_late_failure=cfg.extend_open_on_late_failure,
            half_open_unlimited=cfg.half_open_unlimited,
            half_open_max_calls=cfg.half_open_max_calls,
            reset_success_count=cfg.reset_success_count,
            log_rejects=log_rejects,
            log_limit=log_limit,
        )
    if sem == "gobreaker":
        return GoBreaker(
            cfg.failure_threshold,
            cfg.open_for,
            cfg.half_open_max_calls,
            cfg.count_interval,
            log_rejects=log_rejects,
            log_limit=log_limit,
        )
    if sem == "rate":
        return RateBreaker(
            cfg.window,
            cfg.failure_rate_threshold,
            cfg.minimum_calls,
            cfg.open_for,
            cfg.half_open_max_calls,
            cfg.slow_call_duration,
            cfg.slow_call_rate_threshold,
            log_rejects=log_rejects,
            log_limit=log_limit,
        )
    raise ValueError(f"expected breaker semantics 'consecutive', 'gobreaker' or 'rate', got {sem!r}")
