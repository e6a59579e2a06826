"""The gateway's upstreams, emulated: AI service, LLM providers and embedding API.

They stand for remote machines, so they run in their own OS process during a
measurement (``python -m real_engine.emulators``), each on its own loopback port, all
sharing the run clock ``t0`` (fault windows are relative to it).  In tests they can run
in the test's own event loop::

    emu = await start_emulators(scenario, t0, seed)
    emu.urls  # {"ai_service": url, "embedding": url, "providers": {name: url}}
    emu.stats()  # per emulator: requests, statuses, timer lag p50/p99, max in flight, ...
    await emu.close()
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from real_engine.clock import RunClock
from real_engine.emulators.ai_service import AIServiceEmulator
from real_engine.emulators.base import EmulatorServer
from real_engine.tls import server_context
from real_engine.emulators.embedding import EmbeddingEmulator
from real_engine.emulators.providers import ProviderEmulator
from real_engine.rng import Streams
from simulator.scenario import Scenario

__all__ = [
    "AIServiceEmulator",
    "EmbeddingEmulator",
    "EmulatorServer",
    "EmulatorSet",
    "ProviderEmulator",
    "start_emulators",
    "stats_path",
]


def stats_path(ready_file: str | Path) -> Path:
    """Where the CLI writes its stats JSON on exit: ``<ready-file>.stats.json``."""
    p = Path(ready_file)
    return p.with_name(p.name + ".stats.json")


@dataclass
class EmulatorSet:
    """The running emulators of one scenario."""

    ai_service: AIServiceEmulator
    embedding: EmbeddingEmulator
    providers: dict[str, ProviderEmulator]

    @property
    def urls(self) -> dict[str, Any]:
        return {
            "ai_service": self.ai_service.url,
            "embedding": self.embedding.url,
            "providers": {name: p.url for name, p in self.providers.items()},
        }

    def all(self) -> list[EmulatorServer]:
        return [self.ai_service, self.embedding, *self.providers.values()]

    def stats(self) -> dict[str, Any]:
        return {
            "ai_service": self.ai_service.snapshot(),
            "embedding": self.embedding.snapshot(),
            "providers": {name: p.snapshot() for name, p in self.providers.items()},
        }

    async def close(self) -> None:
        await asyncio.gather(*(e.close() for e in self.all()))

    async def __aenter__(self) -> "EmulatorSet":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<EmulatorSet ai_service={self.ai_service.port} embedding={self.embedding.port} providers={ {n: p.port for n, p in self.providers.items()} }>"


async def start_emulators(scenario: Scenario, t0: float, seed: int, host: str = "127.0.0.1") -> EmulatorSet:
    """Start every emulator of ``scenario`` on free loopback ports; close them all if one fails."""
    clock = RunClock(t0)
    streams = Streams.for_process(seed, "emulators")
    provider_rngs = streams.child("providers", scenario.providers)
    # each provider's hang draws: a child of its own under the same parent, keyed "<name>#hang"
    hang_rngs = streams.child("providers", [f"{name}#hang" for name in scenario.providers])
    started: list[EmulatorServer] = []
    try:
        ai = AIServiceEmulator(scenario, clock, streams["ai_service"], streams["ai_rtt"], streams["ai_faults"], host)
        started.append(ai)
        if scenario.model_selection.ai_client.pool.tls:
            ai.ssl_context = server_context()
        await ai.start()
        emb = EmbeddingEmulator(
            scenario, clock, streams["embedding"], host, fault_rng=streams["embedding_faults"],
            # a text's similarity draws: a child of the embedding stream keyed by the text
            text_rng=lambda text: streams.child("embedding", ["similar:" + text])["similar:" + text],
        )
        started.append(emb)
        await emb.start()
        providers: dict[str, ProviderEmulator] = {}
        for name, cfg in scenario.providers.items():
            p = ProviderEmulator(name, cfg, scenario, clock, provider_rngs[name], host, hang_rng=hang_rngs[f"{name}#hang"])
            started.append(p)
            if cfg.pool.tls:
                p.ssl_context = server_context()
            await p.start()
            providers[name] = p
    except BaseException:
        await asyncio.gather(*(e.close() for e in started), return_exceptions=True)
        raise
    return EmulatorSet(ai, emb, providers)
