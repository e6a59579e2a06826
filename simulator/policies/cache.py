"""Cache decisions shared by both executors: what a semantic-cache lookup costs, when a
result is stored, how the entries are counted and which one a full cache evicts, and that
a timeout is a miss (never an error the caller sees).

The semantic cache's entries (``SemanticEntries``): the ones present at the start (the
classes' canonical selections, which the exact-lookup hit rates stand for, and fillers up
to ``initial_entries``) are kept for the whole run; a selection stored under a key not
there yet adds an entry; once ``max_entries`` are there, a new key evicts the oldest entry
stored during the run (a SET plus a DEL, as a bounded cache does), or, when every entry is
one kept from the start, is not stored at all.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Hashable, Iterable

from simulator.policies.eventlog import new_log


def scan_round_trips(entries: int, scan_batch: int, found_at: float = 1.0) -> int:
    """Round trips of a semantic scan: SCAN calls (``scan_batch`` keys each, at least one)
    plus one GET per entry to fetch its vector, as the seed gateway did.

    ``found_at`` < 1 is a lookup that stops at its first similar entry, which sits that far
    (a fraction of the entries) into the scan order: only the keys up to it are paid for.
    """
    scanned = entries if found_at >= 1.0 else min(entries, math.ceil(found_at * entries))
    scans = max(1, math.ceil(scanned / scan_batch))
    return scans + scanned


def similarity_hit_probability(class_value: float | None, cache_value: float) -> float:
    """A request class's own chance of a similar entry when it has one, else the cache's."""
    return cache_value if class_value is None else class_value


def counts_as_hit(operation_ok: bool, found: bool) -> bool:
    """A cache answers only when the operation finished in time and found the key; a
    timeout, a pool timeout or a connection error is a miss."""
    return operation_ok and found


def similar_found(entries: int, similar: bool) -> bool:
    """A scan finds a similar entry when the prompt has one and there is any entry at all."""
    return similar and entries > 0


def stores_selection(endpoint_kind: str, write_on_select: bool, store_on_success: bool, succeeded: bool) -> bool:
    """Whether a request writes its model selection to the semantic cache: on the select-model
    endpoint when ``write_on_select`` and the AI service answered (``succeeded``; a static
    fallback choice is not stored), on chat when ``store_on_success`` and the call succeeded."""
    if endpoint_kind == "select_model":
        return write_on_select and succeeded
    return store_on_success and succeeded


@dataclass(frozen=True, slots=True)
class Store:
    """A planned SET of ``key``: ``kind`` is ``add`` (a new entry), ``overwrite`` (a key already
    there), ``evict`` (a new entry in place of ``evicted``: the SET, then a DEL of it) or
    ``skip`` (full of entries kept from the start: no SET at all)."""

    kind: str
    key: Hashable
    evicted: Hashable | None = None

    @property
    def writes(self) -> bool:
        return self.kind != "skip"


class SemanticEntries:
    """The semantic cache's entry count and its stores (see the module docstring).

    ``plan(key, now)`` before a SET decides what it does and reserves its entry (so stores
    in flight at once cannot overfill the cache); ``done(plan, now, set_ok, del_ok)`` after it
    settles the count: a failed SET gives the reservation back, a failed DEL leaves the
    evicted entry in place.  ``fresh=True`` says the key is new for sure (a prompt seen once):
    it is then remembered only when eviction may need it.

    Kept from the start: ``seeded`` anonymous entries plus the ``keys`` named ones.  Log
    events: ``add``, ``overwrite``, ``evict``, ``skip``, ``failed``.
    """

    __slots__ = ("max_entries", "entries", "log", "adds", "evictions", "skips", "_kept", "_known", "_order")

    def __init__(
        self, seeded: int = 0, max_entries: int | None = None, keys: Iterable[Hashable] = (), *,
        log_limit: int | None = None,
    ) -> None:
        if seeded < 0 or (max_entries is not None and max_entries <= 0):
            raise ValueError(f"expected seeded >= 0 and max_entries > 0 or None, got {seeded} and {max_entries}")
        self.max_entries = max_entries
        self._kept: set[Hashable] = set(keys)
        self.entries = seeded + len(self._kept)
        self._known: set[Hashable] = set()  # keys stored during the run, still there
        self._order: deque[Hashable] = deque()  # the same, oldest first (only with a cap)
        self.log: list[tuple[str, float]] = new_log(log_limit)
        self.adds = 0
        self.evictions = 0
        self.skips = 0

    def plan(self, key: Hashable, now: float, fresh: bool = False) -> Store:
        if not fresh and (key in self._kept or key in self._known):
            self.log.append(("overwrite", now))
            return Store("overwrite", key)
        cap = self.max_entries
        if cap is None or self.entries < cap:
            self.entries += 1  # reserved; given back if the SET fails
            self._remember(key, fresh)
            self.log.append(("add", now))
            return Store("add", key)
        if not self._order:
            self.skips += 1
            self.log.append(("skip", now))
            return Store("skip", key)
        evicted = self._order.popleft()
        self._known.discard(evicted)
        self._remember(key, fresh)
        self.log.append(("evict", now))
        return Store("evict", key, evicted)

    def _remember(self, key: Hashable, fresh: bool) -> None:
        if self.max_entries is not None:
            self._order.append(key)
        if not fresh:
            self._known.add(key)

    def _forget(self, key: Hashable) -> None:
        self._known.discard(key)
        if self.max_entries is not None:
            try:
                self._order.remove(key)  # the newest, as a rule: removed from the right end
            except ValueError:
                pass

    def done(self, plan: Store, now: float, set_ok: bool, del_ok: bool = True) -> None:
        """The planned SET (and DEL) are over: ``set_ok`` whether the SET succeeded, ``del_ok``
        whether the eviction's DEL did (not asked when the SET failed)."""
        if plan.kind in ("overwrite", "skip"):
            return
        if not set_ok:
            self.log.append(("failed", now))
            self._forget(plan.key)
            if plan.kind == "add":
                self.entries -= 1
            elif plan.evicted is not None:  # never deleted: still there, oldest again
                self._order.appendleft(plan.evicted)
                self._known.add(plan.evicted)
            return
        if plan.kind == "add":
            self.adds += 1
            return
        self.evictions += 1
        if not del_ok:
            self.entries += 1  # the evicted entry stayed: one more than planned

    def __repr__(self) -> str:
        return f"<SemanticEntries entries={self.entries} cap={self.max_entries} adds={self.adds} evictions={self.evictions}>"
