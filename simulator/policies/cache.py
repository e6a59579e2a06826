"""Cache decisions shared by both executors: what a semantic-cache lookup costs, when a
result is stored, and that a timeout is a miss (never an error the caller sees).
"""

from __future__ import annotations

import math


def scan_round_trips(entries: int, scan_batch: int) -> int:
    """Round trips of a full semantic scan: SCAN calls (``scan_batch`` keys each, at least
    one) plus one GET per entry to fetch its vector, as the seed gateway did."""
    scans = max(1, math.ceil(entries / scan_batch))
    return scans + entries


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
