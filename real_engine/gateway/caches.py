"""The gateway's two Redis caches: the model-selection ("semantic") cache and the prompt cache.

Semantic cache, as the seed gateway ran it: an exact ``GET`` keyed by the raw prompt;
on a miss an embedding call (done by the flow) and then a ``SCAN`` over every cache key
with one ``GET`` per key to compare vectors, so a miss costs O(entries) round trips.
Prompt cache: exact key over the messages, the selected provider and the parameters;
GET before the provider call, SET (TTL 1 h) after a success.

Both talk to real Redis through ``redis.asyncio`` with a blocking connection pool of
``redis.pool_size`` connections, a pool-wait timeout (``redis.pool_timeout``) and an
operation timeout; a timeout (or a pool-wait timeout, or a connection error) counts as
a miss, never as an error the caller sees (``simulator.policies.cache.counts_as_hit``).
Keys live under a per-run prefix and are deleted at shutdown.

Redis faults from the scenario are made real on the network path, not on the server
(which others may share): with any scheduled, the pool connects through a
``redis_link.RedisFaultLink`` that refuses and resets connections during an ``outage``
holds commands during a ``stall`` and stretches round trips while ``slow`` (see there).  The key clean-up at shutdown goes
straight to Redis, so it works whatever the link is doing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from real_engine.gateway.redis_link import LINK_FAULTS, DelayedConnection, OpDelay, RedisFaultLink, injects_delay
from simulator.policies.cache import SemanticEntries, Store, counts_as_hit
from simulator.policies.eventlog import RUN_LOG_LIMIT
from simulator.scenario import Scenario

log = logging.getLogger(__name__)

PROMPT_CACHE_TTL_S = 3600
SIMILARITY_THRESHOLD = 0.9  # the seed's cosine threshold


@dataclass(frozen=True)
class CacheResult:
    """``status``: hit, miss, timeout (op or pool wait) or error; ``value`` on a hit."""

    status: str
    value: Any = None
    scanned: int = 0

    @property
    def hit(self) -> bool:
        return self.status == "hit"


class _OpFailed(Exception):
    def __init__(self, status: str) -> None:
        self.status = status


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na = float(np.linalg.norm(a))
    nb = float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


class RedisCaches:
    """Semantic and prompt cache over one Redis connection pool, keys under ``prefix``."""

    def __init__(
        self,
        scenario: Scenario,
        redis_url: str,
        prefix: str,
        *,
        run_clock: Callable[[], float],
        on_result: Callable[[str, str], None] | None = None,
        op_time_rng: np.random.Generator | None = None,
    ) -> None:
        self.scenario = scenario
        self.redis_url = redis_url
        self.prefix = prefix
        self.sem_prefix = f"{prefix}sem:"
        self.pc_prefix = f"{prefix}pc:"
        self._run_clock = run_clock
        self._on_result = on_result
        rcfg = scenario.redis
        self.op_delay: OpDelay | None = None
        delayed: dict[str, Any] = {}
        if injects_delay(rcfg.op_time):
            self.op_delay = OpDelay(rcfg.op_time, op_time_rng if op_time_rng is not None else np.random.default_rng())
            delayed = {"connection_class": DelayedConnection, "op_delay": self.op_delay}
        self.pool = aioredis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=rcfg.pool_size,
            timeout=rcfg.pool_timeout,
            driver_info=None,  # no CLIENT SETINFO round trip on every new connection
            # no hidden limit (redis-py 8 defaults to 5 s): each operation is bounded by its
            # own timeout, in ``_op``
            socket_timeout=None,
            socket_connect_timeout=None,
            **delayed,
        )
        self.link: RedisFaultLink | None = None
        if any(f.kind in LINK_FAULTS for f in rcfg.faults):
            kw = self.pool.connection_kwargs
            self.link = RedisFaultLink(kw.get("host", "127.0.0.1"), int(kw.get("port", 6379)), rcfg.faults)
            kw.update(host=self.link.host, port=self.link.port)
            if self.op_delay is not None:
                self.op_delay.link = self.link
        self.client = aioredis.Redis(connection_pool=self.pool)
        #: the entry count and the store decisions, as the simulator makes them (seeded in ``seed``)
        self.policy = SemanticEntries(0, scenario.model_selection.semantic_cache.max_entries, log_limit=RUN_LOG_LIMIT)
        self.counts: dict[str, dict[str, int]] = {
            "semantic": {"hit": 0, "miss": 0, "timeout": 0, "error": 0},
            "prompt": {"hit": 0, "miss": 0, "timeout": 0, "error": 0},
            "store": {"ok": 0, "timeout": 0, "error": 0, "skipped_full": 0, "evicted": 0},
        }
        #: canonical prompt -> (1-based place in the scan order of its similar entry, entries then)
        self.similar_at: dict[str, tuple[int, int]] = {}
        self.scan_calls = 0  # SCAN round trips made by semantic scans
        self.scanned_keys = 0  # GETs made by semantic scans
        self._closed = False

    @property
    def entries(self) -> int:
        return self.policy.entries

    def __repr__(self) -> str:
        sem = self.counts["semantic"]
        return (
            f"<RedisCaches prefix={self.prefix!r} entries={self.entries} hits={sem['hit']} "
            f"misses={sem['miss']} timeouts={sem['timeout']}>"
        )

    # ------------------------------------------------------------------ one operation

    async def _op(self, timeout: float | None, fn, *args, **kwargs):
        try:
            async with asyncio.timeout(timeout):
                return await fn(*args, **kwargs)
        except TimeoutError:
            raise _OpFailed("timeout") from None
        except RedisConnectionError as exc:
            # redis-py reports a pool-wait timeout as ConnectionError("No connection available.")
            raise _OpFailed("timeout" if "No connection available" in str(exc) else "error") from None
        except (RedisError, OSError):
            raise _OpFailed("error") from None

    def _count(self, cache: str, status: str) -> None:
        self.counts[cache][status] = self.counts[cache].get(status, 0) + 1
        if self._on_result is not None:
            self._on_result(cache, status)

    # ------------------------------------------------------------------ semantic cache

    async def semantic_get(self, prompt: str) -> CacheResult:
        """Exact GET keyed by the raw prompt."""
        timeout = self.scenario.redis.op_timeout
        try:
            raw = await self._op(timeout, self.client.get, self.sem_prefix + prompt)
        except _OpFailed as exc:
            self._count("semantic", exc.status)
            return CacheResult(exc.status)
        if not counts_as_hit(True, raw is not None):
            return CacheResult("miss")
        self._count("semantic", "hit")
        return CacheResult("hit", json.loads(raw))

    async def semantic_scan(self, vector: np.ndarray) -> CacheResult:
        """SCAN the cache keys, GET each and compare vectors until the first similar entry
        (cosine >= 0.9) or the end: the seed's O(entries) miss path."""
        sc = self.scenario.model_selection.semantic_cache
        timeout = self.scenario.redis.op_timeout
        cursor = 0
        scanned = 0
        try:
            while True:
                cursor, keys = await self._op(
                    timeout, self.client.scan, cursor=cursor, match=self.sem_prefix + "*", count=sc.scan_batch
                )
                self.scan_calls += 1
                for key in keys:
                    raw = await self._op(timeout, self.client.get, key)
                    scanned += 1
                    self.scanned_keys += 1
                    if raw is None:
                        continue
                    entry = json.loads(raw)
                    vec = entry.get("embedding")
                    if vec is not None and cosine(vector, np.asarray(vec, dtype=float)) >= SIMILARITY_THRESHOLD:
                        self._count("semantic", "hit")
                        return CacheResult("hit", entry, scanned=scanned)
                if cursor == 0:
                    break
        except _OpFailed as exc:
            self._count("semantic", exc.status)
            return CacheResult(exc.status, scanned=scanned)
        self._count("semantic", "miss")
        return CacheResult("miss", scanned=scanned)

    def semantic_miss_without_scan(self) -> None:
        self._count("semantic", "miss")

    async def semantic_store(self, prompt: str, selection: dict, vector: np.ndarray | None) -> str:
        """SET the selection (with its vector) under the prompt, and DEL the entry a full cache
        evicts for it (``simulator.policies.cache.SemanticEntries`` decides); ``ok``,
        ``timeout``, ``error``, ``skipped_full``."""
        key = self.sem_prefix + prompt
        plan: Store = self.policy.plan(key, self._run_clock())
        if not plan.writes:
            self.counts["store"]["skipped_full"] += 1
            return "skipped_full"
        value = dict(selection)
        if vector is not None:
            value["embedding"] = [round(float(x), 6) for x in vector]
        timeout = self.scenario.redis.op_timeout
        try:
            await self._op(timeout, self.client.set, key, json.dumps(value))
        except _OpFailed as exc:
            self.policy.done(plan, self._run_clock(), False)
            self.counts["store"][exc.status] += 1
            return exc.status
        deleted = True
        if plan.evicted is not None:
            try:
                await self._op(timeout, self.client.delete, plan.evicted)
                self.counts["store"]["evicted"] += 1
            except _OpFailed:
                deleted = False
        self.policy.done(plan, self._run_clock(), True, deleted)
        self.counts["store"]["ok"] += 1
        return "ok"

    # ------------------------------------------------------------------ prompt cache

    async def prompt_get(self, key: str) -> CacheResult:
        try:
            raw = await self._op(self.scenario.prompt_cache.op_timeout, self.client.get, self.pc_prefix + key)
        except _OpFailed as exc:
            self._count("prompt", exc.status)
            return CacheResult(exc.status)
        if raw is None:
            self._count("prompt", "miss")
            return CacheResult("miss")
        self._count("prompt", "hit")
        return CacheResult("hit", raw)

    async def prompt_set(self, key: str, value: bytes) -> str:
        try:
            await self._op(
                self.scenario.prompt_cache.op_timeout, self.client.set, self.pc_prefix + key, value, ex=PROMPT_CACHE_TTL_S
            )
        except _OpFailed as exc:
            return exc.status
        return "ok"

    # ------------------------------------------------------------------ life cycle

    async def seed(
        self,
        canonical: dict[str, dict],
        canonical_vectors: dict[str, np.ndarray | None],
        rng: np.random.Generator,
        prompt_entries: dict[str, bytes],
        dim: int = 64,
        *,
        similar: dict[str, float] | None = None,
    ) -> None:
        """Write the start-up entries: the classes' canonical selections, ``initial_entries``
        filler entries (random unit vectors: similar to nothing) and prompt-cache entries.

        ``similar``: canonical prompt -> fraction of the scan order.  Prompts of that class are
        now and then close to its canonical prompt (the embedding emulator decides which), and
        the first entry close to it must sit that far into the scan, as the scenario's
        ``similar_entry_at`` says: once everything is written, the filler at that place in
        Redis's SCAN order takes the canonical selection and vector, and the canonical entry
        itself keeps no vector (it serves the exact lookup only).  Stores during the run land
        at random places in the order, so the fraction holds as the cache grows.
        """
        if self.link is not None:
            await self.link.start()
        sc = self.scenario.model_selection.semantic_cache
        similar = similar or {}
        items: dict[str, str] = {}
        for prompt, selection in canonical.items():
            value = dict(selection)
            vec = canonical_vectors.get(prompt)
            if vec is not None and prompt not in similar:
                value["embedding"] = [round(float(x), 6) for x in vec]
            items[self.sem_prefix + prompt] = json.dumps(value)
        fillers = max(0, sc.initial_entries - len(items))
        if fillers:
            vecs = rng.standard_normal((fillers, dim))
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            for i in range(fillers):
                items[f"{self.sem_prefix}filler #{i}"] = json.dumps(
                    {"provider": "", "model": "", "alternatives": [], "embedding": [round(float(x), 6) for x in vecs[i]]}
                )
        keys = list(items)
        for start in range(0, len(keys), 500):
            chunk = {k: items[k] for k in keys[start : start + 500]}
            await self.client.mset(chunk)
        if similar:
            await self._place_similar(canonical, canonical_vectors, similar, sc.scan_batch)
        # kept for the whole run: the exact lookups' hits and the fillers stand for the scenario's cache
        self.policy = SemanticEntries(
            0, self.scenario.model_selection.semantic_cache.max_entries, items, log_limit=RUN_LOG_LIMIT
        )
        if prompt_entries:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in prompt_entries.items():
                    pipe.set(self.pc_prefix + key, value, ex=PROMPT_CACHE_TTL_S)
                await pipe.execute()
        log.info("seeded %d semantic entries and %d prompt entries under %s", len(items), len(prompt_entries), self.prefix)

    async def _place_similar(
        self, canonical: dict[str, dict], vectors: dict[str, np.ndarray | None], similar: dict[str, float], batch: int
    ) -> None:
        """Put each similar class's entry at its fraction of the SCAN order (see ``seed``)."""
        order: list[str] = []
        seen: set[str] = set()
        async for raw in self.client.scan_iter(match=self.sem_prefix + "*", count=batch):
            key = raw.decode()
            if key not in seen:  # SCAN may return a key twice
                seen.add(key)
                order.append(key)
        own = {self.sem_prefix + prompt for prompt in canonical}
        free = {i for i, key in enumerate(order) if key not in own}
        writes: dict[str, str] = {}
        for prompt, at in similar.items():
            vec = vectors.get(prompt)
            if vec is None:
                continue  # the embedding call failed at start-up: nothing can be similar to it
            want = max(0, math.ceil(at * len(order)) - 1)
            spot = min(free, key=lambda i: (abs(i - want), -i), default=None)
            if spot is None:
                key = self.sem_prefix + prompt  # no filler to place: its own entry, wherever it sits
                spot = order.index(key) if key in seen else -1
            else:
                free.discard(spot)
                key = order[spot]
            value = dict(canonical[prompt])
            value["embedding"] = [round(float(x), 6) for x in vec]
            writes[key] = json.dumps(value)
            self.similar_at[prompt] = (spot + 1, len(order))
        if writes:
            await self.client.mset(writes)
        log.info("similar entries placed (position, of): %s", self.similar_at)

    def start_faults(self, t0: float) -> None:
        """Play the Redis fault windows (relative to ``t0`` on ``time.monotonic()``) and start
        injecting ``redis.op_time`` into each round trip."""
        if self.op_delay is not None:
            self.op_delay.active = True
        if self.link is not None:
            self.link.start_schedule(t0)

    async def delete_all(self, timeout: float = 5.0) -> int:
        """Delete every key under the prefix (SCAN + UNLINK); bounded in time."""
        deleted = 0
        conn = aioredis.Redis.from_url(self.redis_url, driver_info=None)
        try:
            async with asyncio.timeout(timeout):
                batch: list[bytes] = []
                async for key in conn.scan_iter(match=self.prefix + "*", count=1000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        deleted += await conn.unlink(*batch)
                        batch = []
                if batch:
                    deleted += await conn.unlink(*batch)
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("could not delete keys under %s: %s", self.prefix, exc)
        finally:
            await conn.aclose()
        return deleted

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.delete_all()
        await self.client.aclose()
        await self.pool.disconnect()
        if self.link is not None:
            await self.link.close()
