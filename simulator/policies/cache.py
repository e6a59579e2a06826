"""Cache decisions shared by both executors: what a semantic-cache lookup costs, when a
result is stored, and that a timeout is a miss (never an error the caller sees).
"""

from __future__ import annotations

import math


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


def stores_selection(endpoint_kind: str, write_on_select: bool, store_on_success: bool, succeeded: bool) -> bool:
    """Whether a request writes its model selection to the semantic cache."""
    if endpoint_kind == "select_model":
        return write_on_select
    return store_on_success and succeeded


def entries_after_store(entries: int, new_key: bool, max_entries: int | None) -> int:
    """Entry count after a SET: grows only for a key not seen before, up to the cap."""
    if not new_key:
        return entries
    if max_entries is not None and entries >= max_entries:
        return entries
    return entries + 1
