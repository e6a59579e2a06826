"""The external embedding API the seed's semantic cache calls on a miss.

``POST /v1/embeddings`` with ``{"input": str, "model": "emb"}`` answers
``{"data": [{"embedding": [...]}]}`` after ``SemanticCache.embedding_time``.  The vector
is a unit vector of dimension ``DIM`` seeded by a hash of the text, so the same text
always gets the same vector and different texts are nearly orthogonal (cosine far below
the 0.9 threshold).

Similar prompts, as the scenario asks for them: a call for a request class (headers
``X-Gwsim-Endpoint`` and ``X-Gwsim-Class``, as the providers are told) whose
``similarity_hit`` (or the cache's) is above 0 is, with that probability, a prompt close to
one stored earlier: the class's canonical prompt, whose vector the gateway places in its
cache at the class's ``similar_entry_at`` in the scan order.  Its vector then has cosine
``SIMILAR_COS`` (just above the gateway's 0.9) with that prompt's, in a direction of its own;
two such prompts are about 0.81 apart, so one stored later is rarely similar to the next
(the simulator's first similar entry stays where the scenario puts it).  The draw and the
direction come from a generator of the text's own (a child of the emulator's ``embedding``
stream keyed by the text), so the same text always gets the same vector here too.

Faults (``semantic_cache.embedding_faults``, judged on arrival as the simulator judges
them when the call is made): outage refuses connections (listener closed; a request on a
connection already open is dropped), hang never answers, errors answer ``error_status``
with probability ``error_rate`` after the call's time, reset aborts the connection halfway
through the reply after half of it, slow multiplies the time.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

import numpy as np
from aiohttp import web

from real_engine.clock import RunClock
from real_engine.emulators.base import EmulatorServer, timing_header
from real_engine.emulators.faults import error_reply, reset_midway
from real_engine.loadgen import canonical_prompt
from simulator.policies.cache import similarity_hit_probability
from simulator.scenario import Scenario

DIM = 64
#: A similar prompt's cosine with the entry it is close to: above the gateway's 0.9 after the
#: 6-decimal rounding of both vectors, and low enough that two such prompts are not similar.
SIMILAR_COS = 0.9005


def _text_seed(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def embed(text: str, dim: int = DIM) -> list[float]:
    """The deterministic unit vector of ``text``."""
    v = np.random.default_rng(_text_seed(text)).standard_normal(dim)
    v /= np.linalg.norm(v)
    return [round(float(x), 6) for x in v]


def similar_vector(target: list[float], rng: np.random.Generator) -> list[float]:
    """A unit vector with cosine ``SIMILAR_COS`` with the unit vector ``target``, in a direction drawn from ``rng``."""
    t = np.asarray(target, dtype=float)
    t /= np.linalg.norm(t)
    w = rng.standard_normal(t.size)
    w -= w.dot(t) * t
    w /= np.linalg.norm(w)
    v = SIMILAR_COS * t + np.sqrt(1.0 - SIMILAR_COS**2) * w
    return [round(float(x), 6) for x in v]


class EmbeddingEmulator(EmulatorServer):
    kind = "embedding"

    def __init__(self, scenario: Scenario, clock: RunClock, rng: np.random.Generator, host: str = "127.0.0.1",
                 fault_rng: np.random.Generator | None = None,
                 text_rng: Callable[[str], np.random.Generator] | None = None):
        sc = scenario.model_selection.semantic_cache
        super().__init__("embedding", sc.embedding_faults, clock, host)
        self.time = sc.embedding_time
        self._rng = rng
        self._fault_rng = fault_rng if fault_rng is not None else rng
        #: (endpoint, class) -> (probability of a similar prompt, the canonical prompt it is close to)
        self._similar = {
            (ep_name, c.name): (p, canonical_prompt(ep_name, c.name))
            for ep_name, ep in scenario.endpoints.items()
            for c in ep.classes
            if (p := similarity_hit_probability(c.similarity_hit, sc.similarity_hit)) > 0
        }
        self._text_rng = text_rng if text_rng is not None else (lambda text: np.random.default_rng(_text_seed(text)))
        self.similar = 0  # similar vectors answered

    def vector(self, text: str, endpoint: str = "", class_name: str = "") -> list[float]:
        """The embedding of ``text`` sent for a request of (``endpoint``, ``class_name``)."""
        similar = self._similar.get((endpoint, class_name))
        if similar is not None:
            rng = self._text_rng(text)
            if rng.random() < similar[0]:
                self.similar += 1
                return similar_vector(embed(similar[1]), rng)
        return embed(text)

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/embeddings", self.embeddings)

    def snapshot(self) -> dict[str, Any]:
        out = super().snapshot()
        out["similar"] = self.similar
        return out

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
            endpoint = request.headers.get("X-Gwsim-Endpoint", "")
            class_name = request.headers.get("X-Gwsim-Class", "")
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
                "data": [{"object": "embedding", "index": i, "embedding": self.vector(t, endpoint, class_name)}
                         for i, t in enumerate(texts)],
            }
            if fault is not None and fault.kind == "reset":
                status = 0
                return await reset_midway(request, json.dumps(out).encode(), {"X-Emulator-Timing": timing})
            status = 200
            return web.json_response(out, headers={"X-Emulator-Timing": timing})
        finally:
            self.stats.left(status)
