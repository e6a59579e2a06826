"""Provider fallback for one chat request: sequential, race (K at once) or hedged calls.

The seed gateway's "fallback service" (on a failed provider call, a race among the
alternatives that only built clients, then one real call) is modelled by the executors
from ``mode="sequential"`` plus ``race_setup_cpu``; ``race`` and ``hedge`` here are the
designs a what-if compares it with.  A plan is created per request and told what
happened; it answers which providers to start (and which to cancel).  The caller owns
the calls, timers and cancellation.

Modes:
- ``none``: one call, no fallback.
- ``sequential``: on a failure whose kind is in ``trigger_on``, the next untried
  candidate, while fewer than ``max_attempts`` calls were made.
- ``race``: ``min(race_width, max_attempts)`` at once; when every started call has failed
  (the last failure's kind triggering), the next batch of up to ``race_width``.
- ``hedge``: the first; the next untried one after ``hedge_delay_s`` without an answer
  (``next_hedge_at`` / ``on_hedge_timer``), or at once on a triggering failure; the
  hedge clock restarts at each start.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from simulator.policies.eventlog import new_log

if TYPE_CHECKING:
    from simulator.scenario import Fallback

__all__ = ["FallbackPlan", "rank_candidates", "DEFAULT_TRIGGER_ON", "FALLBACK_MODES"]

DEFAULT_TRIGGER_ON: tuple[str, ...] = ("timeout", "connect", "reset", "429", "500", "503", "breaker_open")
FALLBACK_MODES = ("none", "sequential", "race", "hedge")
# A hedge timer scheduled as now + (next_hedge_at() - now) may land a rounding error early.
_TIMER_SLACK = 1e-9


def rank_candidates(order: Sequence[str], primary: str) -> list[str]:
    """``primary`` first, then the others of ``order`` in their order (no duplicates)."""
    out = [primary]
    for p in order:
        if p != primary and p not in out:
            out.append(p)
    return out


def ranked_selection(order: Sequence[str], class_index: int, class_provider: str | None = None) -> list[str]:
    """The model router's answer for a payload class, best first: the class's own provider
    when it names one, else ``order`` rotated by the class index (so each class keeps its
    choice); the other providers follow as alternatives in ``order``."""
    primary = class_provider if class_provider else order[class_index % len(order)]
    return rank_candidates(order, primary)


class FallbackPlan:
    """One request's provider attempts.

    State: ``attempts`` (calls started), ``running`` (started, not yet reported),
    ``failures`` (provider -> error kind), ``done`` (a winner, or nothing left to try and
    nothing running), ``winner``, ``fallback_used`` (a call was started because of a
    failure or the hedge timer, beyond those of ``start``).  ``log`` holds
    ``("start:<provider>", t)``, ``("fail:<provider>", t)``, ``("win:<provider>", t)`` and
    ``("exhausted", t)``.

    Reports about providers that are not running (already reported, or cancelled with
    ``on_cancel``) are ignored and return ``[]``.
    """

    __slots__ = (
        "mode",
        "candidates",
        "max_attempts",
        "race_width",
        "hedge_delay_s",
        "trigger_on",
        "log",
        "attempts",
        "running",
        "failures",
        "done",
        "winner",
        "fallback_used",
        "_limit",
        "_started",
        "_last_start",
    )

    def __init__(
        self,
        mode: str,
        candidates: Sequence[str],
        max_attempts: int,
        race_width: int = 2,
        hedge_delay_s: float = 1.0,
        trigger_on: Iterable[str] = DEFAULT_TRIGGER_ON,
        *,
        log_limit: int | None = None,
    ) -> None:
        if mode not in FALLBACK_MODES:
            raise ValueError(f"expected fallback mode in {FALLBACK_MODES}, got {mode!r}")
        # a plan is made per request: a list of one needs no de-duplication
        cands = candidates[:] if type(candidates) is list and len(candidates) == 1 else list(dict.fromkeys(candidates))
        if not cands:
            raise ValueError("expected at least one candidate provider, got none")
        if max_attempts < 1 or race_width < 1 or hedge_delay_s < 0:
            raise ValueError(
                f"expected max_attempts >= 1, race_width >= 1, hedge_delay_s >= 0, got "
                f"{max_attempts}, {race_width}, {hedge_delay_s}"
            )
        self.mode = mode
        self.candidates = cands
        self.max_attempts = max_attempts
        self.race_width = race_width
        self.hedge_delay_s = hedge_delay_s
        self.trigger_on = trigger_on if isinstance(trigger_on, frozenset) else frozenset(trigger_on)
        self.log: list[tuple[str, float]] = new_log(log_limit)
        self.attempts = 0
        self.running: set[str] = set()
        self.failures: dict[str, str] = {}
        self.done = False
        self.winner: str | None = None
        self.fallback_used = False
        self._limit = 1 if mode == "none" else min(max_attempts, len(cands))
        self._started: list[str] = []
        self._last_start = 0.0

    @classmethod
    def from_config(cls, cfg: "Fallback", candidates: Sequence[str], *, log_limit: int | None = None) -> "FallbackPlan":
        return cls(
            cfg.mode, candidates, cfg.max_attempts, cfg.race_width, cfg.hedge_delay, cfg.trigger_on, log_limit=log_limit
        )

    @property
    def started(self) -> list[str]:
        """Providers started so far, in order."""
        return list(self._started)

    @property
    def remaining(self) -> int:
        """Attempts that may still be started."""
        return self._limit - self.attempts

    def should_trigger(self, error_kind: str) -> bool:
        return error_kind in self.trigger_on

    def _launch(self, n: int, now: float) -> list[str]:
        i = self.attempts
        new = self.candidates[i : i + n]
        self.attempts = i + len(new)
        self.running.update(new)
        self._started.extend(new)
        self._last_start = now
        log = self.log
        for p in new:
            log.append(("start:" + p, now))
        return new

    def start(self, now: float) -> list[str]:
        started = self._started
        if started:
            raise RuntimeError(f"fallback plan already started: {self!r}")
        if self.mode == "race":
            return self._launch(min(self.race_width, self._limit), now)
        # one call: ``_launch(1, now)`` written out (every chat request starts a plan)
        first = self.candidates[0]
        self.attempts = 1
        self.running.add(first)
        started.append(first)
        self._last_start = now
        self.log.append(("start:" + first, now))
        return [first]

    def on_failure(self, provider: str, error_kind: str, now: float) -> list[str]:
        running = self.running
        if provider not in running:
            return []
        running.discard(provider)
        self.failures[provider] = error_kind
        self.log.append(("fail:" + provider, now))
        if self.done:
            return []
        left = self._limit - self.attempts
        if left > 0 and error_kind in self.trigger_on:
            mode = self.mode
            if mode == "race":
                if running:
                    return []  # the rest of this batch may still win
                self.fallback_used = True
                return self._launch(min(self.race_width, left), now)
            if mode != "none":
                self.fallback_used = True
                return self._launch(1, now)
        if not running:
            self.done = True
            self.log.append(("exhausted", now))
        return []

    def on_hedge_timer(self, now: float) -> list[str]:
        """The hedge timer fired; a timer made stale by a later start is ignored."""
        if (
            self.mode != "hedge"
            or self.done
            or self.attempts >= self._limit
            or now + _TIMER_SLACK < self._last_start + self.hedge_delay_s
        ):
            return []
        self.fallback_used = True
        return self._launch(1, now)

    def next_hedge_at(self) -> float | None:
        if self.mode != "hedge" or self.done or self.attempts >= self._limit or not self.running:
            return None
        return self._last_start + self.hedge_delay_s

    def on_success(self, provider: str, now: float) -> list[str]:
        """Returns the other providers still running, in start order (to cancel when the
        caller cancels losers; report each with ``on_cancel`` or its outcome later)."""
        running = self.running
        if provider not in running:
            return []
        running.discard(provider)
        if self.done:
            return []  # a loser that was not cancelled answered after the winner
        self.done = True
        self.winner = provider
        self.log.append(("win:" + provider, now))
        return [p for p in self._started if p in running] if running else []

    def on_cancel(self, provider: str, now: float) -> None:
        """The caller cancelled ``provider``'s call; it no longer counts as running."""
        self.running.discard(provider)

    def __repr__(self) -> str:
        return (
            f"<FallbackPlan mode={self.mode} attempts={self.attempts}/{self._limit} "
            f"running={sorted(self.running)} done={self.done} winner={self.winner}>"
        )
