"""The semantic cache's decisions, written once for both executors: what a scan costs, when
a selection is stored, how entries are counted and which one a full cache evicts."""

from __future__ import annotations

import pytest

from simulator.policies.cache import SemanticEntries, scan_round_trips, similar_found, stores_selection


def test_stores_selection_on_select_only_after_the_ai_service_answered() -> None:
    assert stores_selection("select_model", True, False, True)
    assert not stores_selection("select_model", True, False, False)  # a static fallback choice
    assert not stores_selection("select_model", False, True, True)
    assert stores_selection("chat_completions", False, True, True)
    assert not stores_selection("chat_completions", True, False, True)
    assert not stores_selection("chat_completions", False, True, False)


def test_a_scan_finds_nothing_in_an_empty_cache_and_stops_at_the_first_match() -> None:
    assert not similar_found(0, True) and similar_found(1, True) and not similar_found(5, False)
    assert scan_round_trips(200, 10, 0.25) == 5 + 50  # the keys up to the first match, in SCAN calls of 10
    assert scan_round_trips(200, 10) == 20 + 200


def test_entries_grow_to_the_cap_then_evict_the_oldest_stored_during_the_run() -> None:
    cache = SemanticEntries(seeded=2, max_entries=4, keys=["canon"])
    assert cache.entries == 3
    plans = []
    for t, key in enumerate(["a", "canon", "b", "a", "c"]):
        plan = cache.plan(key, float(t))
        cache.done(plan, float(t) + 0.5, True)
        plans.append((plan.kind, plan.evicted))
    # "a" comes back as a new entry after its eviction; the seeded ones are never evicted
    assert plans == [("add", None), ("overwrite", None), ("evict", "a"), ("evict", "b"), ("evict", "a")]
    assert cache.entries == 4
    assert list(cache.log) == [("add", 0.0), ("overwrite", 1.0), ("evict", 2.0), ("evict", 3.0), ("evict", 4.0)]
    assert (cache.adds, cache.evictions, cache.skips) == (1, 3, 0)


def test_a_cache_full_of_seeded_entries_stores_nothing_new() -> None:
    cache = SemanticEntries(seeded=5, max_entries=5)
    plan = cache.plan("new", 1.0)
    assert not plan.writes and plan.kind == "skip" and cache.entries == 5
    cache.done(plan, 1.1, True)
    assert cache.entries == 5 and list(cache.log) == [("skip", 1.0)]


def test_stores_in_flight_reserve_their_entry_and_a_failed_set_gives_it_back() -> None:
    cache = SemanticEntries(seeded=0, max_entries=2)
    first, second = cache.plan("x", 0.0), cache.plan("y", 0.0)  # both in flight
    third = cache.plan("z", 0.0)  # the cap is reached by the two reserved: z would evict x
    assert (first.kind, second.kind, third.kind, third.evicted) == ("add", "add", "evict", "x")
    cache.done(third, 0.1, False)  # its SET failed: x was never deleted and is oldest again
    cache.done(first, 0.1, True)
    cache.done(second, 0.2, False)  # y's SET failed: its entry given back
    assert cache.entries == 1
    again = cache.plan("w", 0.3)
    assert again.kind == "add"  # room for one more
    cache.done(again, 0.4, True)
    assert cache.plan("v", 0.5).evicted == "x"


def test_a_failed_eviction_leaves_the_evicted_entry_counted() -> None:
    cache = SemanticEntries(seeded=0, max_entries=1)
    cache.done(cache.plan("a", 0.0), 0.0, True)
    plan = cache.plan("b", 1.0)
    cache.done(plan, 1.1, True, del_ok=False)
    assert cache.entries == 2  # "a" is still in Redis


def test_fresh_keys_without_a_cap_are_counted_not_remembered() -> None:
    cache = SemanticEntries(seeded=10)
    for i in range(1000):
        cache.done(cache.plan(i, float(i), fresh=True), float(i), True)
    assert cache.entries == 1010 and not cache._known and not cache._order
    with pytest.raises(ValueError):
        SemanticEntries(seeded=-1)
