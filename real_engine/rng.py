"""Random streams for the real engine's emulators and gateway: one numpy Generator per source.

Everything random in a run descends from one ``SeedSequence(seed)``, the way a load
tester seeds each of its knobs separately so that changing one (say, the endpoint mix)
does not shift the draws of another (the arrival times).  Each process takes its own
child by a fixed position (``PROCESSES``), then spawns one child per source in a fixed
order (``EMULATOR_SOURCES`` ...).  Sources whose names depend on the scenario (one per
provider) take a child keyed by a hash of the name under a parent source, so adding a
provider never changes another's stream.

The load generator's traffic is not drawn here but from the simulator's streams of the
same seed and replication (``simulator.rng``), so that a measurement sends the traffic the
simulator's replication simulates; its position in ``PROCESSES`` is kept so that the other
processes' streams stay as they were.
"""

from __future__ import annotations

import zlib
from typing import Iterable

import numpy as np

#: Process order: the position of each process's child of ``SeedSequence(seed)``.
PROCESSES = ("loadgen", "emulators", "gateway")

#: The emulator process's sources, in spawn order (never reorder; append only).
#: ``providers`` is a parent: each provider gets a child of it (see ``Streams.child``).
EMULATOR_SOURCES = ("ai_service", "ai_rtt", "ai_faults", "providers", "embedding", "embedding_faults")


class Streams:
    """Named numpy Generators spawned in a fixed order from one SeedSequence.

    >>> s = Streams.for_process(7, "emulators")
    >>> s["ai_service"].random() == Streams.for_process(7, "emulators")["ai_service"].random()
    True
    """

    def __init__(self, seq: np.random.SeedSequence, sources: Iterable[str]):
        self._names = tuple(sources)
        if len(set(self._names)) != len(self._names):
            raise ValueError(f"expected unique source names, got {self._names}")
        self._seqs = dict(zip(self._names, seq.spawn(len(self._names))))
        self._gens = {name: np.random.default_rng(s) for name, s in self._seqs.items()}

    @classmethod
    def for_process(cls, seed: int, process: str, sources: Iterable[str] | None = None) -> "Streams":
        """The streams of one process (``PROCESSES``) of a run seeded with ``seed``."""
        if process not in PROCESSES:
            raise ValueError(f"expected a process from {PROCESSES}, got {process!r}")
        if sources is None:
            sources = {"emulators": EMULATOR_SOURCES}.get(process, ())
        return cls(process_seed_sequence(seed, process), sources)

    def __getitem__(self, name: str) -> np.random.Generator:
        try:
            return self._gens[name]
        except KeyError:
            raise KeyError(f"no random source {name!r}; expected one of {self._names}") from None

    def child(self, parent: str, keys: Iterable[str]) -> dict[str, np.random.Generator]:
        """One Generator per key under source ``parent``, keyed by the key's name.

        The child's spawn key is the parent's plus the CRC-32 of the name, so a key's
        stream does not depend on which other keys exist (adding a provider leaves the
        others' draws alone), and calling this twice gives the same streams.
        """
        base = self._seqs[parent]
        return {
            k: np.random.default_rng(
                np.random.SeedSequence(base.entropy, spawn_key=(*base.spawn_key, zlib.crc32(k.encode())), pool_size=base.pool_size)
            )
            for k in sorted(set(keys))
        }

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def __repr__(self) -> str:
        return f"<Streams sources={list(self._names)}>"


def process_seed_sequence(seed: int, process: str) -> np.random.SeedSequence:
    """The SeedSequence of one process: child ``PROCESSES.index(process)`` of ``SeedSequence(seed)``."""
    return np.random.SeedSequence(int(seed)).spawn(len(PROCESSES))[PROCESSES.index(process)]
