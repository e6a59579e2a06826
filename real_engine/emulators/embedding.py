"""The external embedding API the seed's semantic cache calls on a miss.

``POST /v1/embeddings`` with ``{"input": str, "model": "emb"}`` answers
``{"data": [{"embedding": [...]}]}`` after ``SemanticCache.embedding_time``.  The vector
is a unit vector of dimension ``DIM`` seeded by a hash of the text, so the same text
always gets the same vector and different texts are nearly orthogonal (cosine far below
the 0.9 threshold): only identical prompts count as similar.

Faults (``semantic_cache.embedding_faults``, judged on arrival as the simulator judges
them when the call is made): outage refuses connections (listener closed; a request on a
connection already open is dropped), hang never answers, errors answer ``error_status``
with probability ``error_rate`` after the call's time, reset aborts the connection halfway
through the reply after half of it, slow multiplies the time.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from aiohttp import web

from real_engine.clock import RunClock
from real_engine.emulators.base import EmulatorServer, timing_header
from real_engine.emulators.faults import error_reply, reset_midway
from simulator.scenario import Scenario

DIM = 64


def embed(text: str, dim: int = DIM) -> list[float]:
    """The deterministic unit vector of ``text``."""
    seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
    v = np.random.default_rng(seed).standard_normal(dim)
    v /= np.linalg.norm(v)
    return [round(float(x), 6) for x in v]


class EmbeddingEmulator(EmulatorServer):
    kind = "embedding"

    def __init__(self, scenario: Scenario, clock: RunClock, rng: np.random.Generator, host: str = "127.0.0.1",
                 fault_rng: np.random.Generator | None = None):
        sc = scenario.model_selection.semantic_cache
        super().__init__("embedding", sc.embedding_faults, clock, host)
        self.time = sc.embedding_time
        self._rng = rng
        self._fault_rng = fault_rng if fault_rng is not None else rng

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/embeddings", self.embeddings)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        self.stats.arrived()
        status = 499
        try:
            fault = self.fault_now()
            if fault is not None and fault.kind == "outage":
                status = 0
                return self.drop_connection(request)
            if fault is not None and fault.kind == "hang":
                return await self.hold_until_client_leaves(request)
            body = await request.json(loads=json.loads)
            text = body.get("input", "")
            if isinstance(text, list):  # OpenAI accepts a list of inputs; embed each
                texts = [str(t) for t in text]
            else:
                texts = [str(text)]
            intended = self.time.sample(self._rng)
            if fault is not None and fault.kind == "slow":
                intended *= fault.latency_factor
            elif fault is not None and fault.kind == "reset":
                intended /= 2
            actual = await self.delay(intended)
            timing = timing_header(0.0, actual, intended)
            if fault is not None and fault.kind == "errors" and self._fault_rng.random() < fault.error_rate:
                status = fault.error_status
                return error_reply(fault.error_status, "injected fault", timing)
            out: dict[str, Any] = {
                "object": "list",
                "model": str(body.get("model", "emb")),
                "data": [{"object": "embedding", "index": i, "embedding": embed(t)} for i, t in enumerate(texts)],
            }
            if fault is not None and fault.kind == "reset":
                status = 0
                return await reset_midway(request, json.dumps(out).encode(), {"X-Emulator-Timing": timing})
            status = 200
            return web.json_response(out, headers={"X-Emulator-Timing": timing})
        finally:
            self.stats.left(status)
