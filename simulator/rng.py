"""Random streams: one numpy Generator per source of randomness, all from one SeedSequence.

Common random numbers: the arrivals of replication 3 are drawn from the same stream
whatever the gateway's settings, so two configurations compared with the same seed see
the same traffic and differ only by what the configuration changes.
"""

from __future__ import annotations

import zlib

import numpy as np

#: Fixed sources; a source's stream depends only on (seed, replication, name).
SOURCES = (
    "arrivals", "mix", "classes", "think", "cache", "redis", "embedding", "cpu", "network",
    "ai_service", "ai_client", "pool", "fallback", "tokens",
)


def replication_seed(seed: int, replication: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy=seed, spawn_key=(replication,))


def stream(seed: int, replication: int, source: str) -> np.random.Generator:
    """The Generator for ``source``; provider streams are named ``provider:<name>``."""
    key = zlib.crc32(source.encode())  # stable across processes and Python runs
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=(replication, key))))


class Streams:
    """Lazily created named streams of one replication."""

    __slots__ = ("seed", "replication", "_cache")

    def __init__(self, seed: int, replication: int) -> None:
        self.seed = seed
        self.replication = replication
        self._cache: dict[str, np.random.Generator] = {}

    def __getitem__(self, source: str) -> np.random.Generator:
        gen = self._cache.get(source)
        if gen is None:
            gen = self._cache[source] = stream(self.seed, self.replication, source)
        return gen
