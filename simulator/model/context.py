"""What one request carries through the simulated gateway: its identity and its stage clock.

The flows fill a ``RequestContext`` as the request moves; at the end it is frozen into a
``RequestRecord`` (as a plain tuple, in record field order, which is what the DataFrame
is built from).
"""

from __future__ import annotations

import math


class Failure(Exception):
    """A request (or an attempt) ended without an answer; ``kind`` is a record outcome or error kind."""

    __slots__ = ("kind", "status", "retry_after_s")

    def __init__(self, kind: str, status: int, retry_after_s: float | None = None) -> None:
        # All in args: SimPy re-creates an event's exception as type(e)(*e.args) before
        # throwing it into the process waiting on that event (Deadlines fails events).
        super().__init__(kind, status, retry_after_s)
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s  # a 429's Retry-After (seconds), when it carried one

    def __str__(self) -> str:
        return self.kind


class RequestContext:
    __slots__ = (
        "id", "endpoint", "endpoint_cfg", "klass", "class_index", "arrived_at", "started_at", "finished_at",
        "outcome", "status", "provider", "attempts", "fallback_used", "selection_fallback", "cache_hit",
        "prompt_cache_hit", "breaker_state", "new_prompt",
        "client_wait_s", "cpu_wait_s", "cpu_s", "cache_s", "embedding_s", "ai_pool_wait_s", "ai_connect_s",
        "ai_queue_s", "ai_service_s", "provider_pool_wait_s", "provider_connect_s", "provider_queue_s",
        "provider_s", "prompt_cache_s", "store_s", "input_tokens", "output_tokens",
        "stream", "first_token_at", "stream_end_at", "tpot_s", "itl_max_s", "reply_tokens", "stream_error",
        "stream_done", "first_relayed", "client_after", "step_credit",
    )

    def __init__(self, rid: int, endpoint: str, endpoint_cfg, klass, class_index: int, arrived_at: float) -> None:
        self.id = rid
        self.endpoint = endpoint
        self.endpoint_cfg = endpoint_cfg
        self.klass = klass
        self.class_index = class_index
        self.arrived_at = arrived_at
        self.started_at = arrived_at
        self.finished_at = -1.0
        self.outcome = "unfinished"
        self.status = 0
        self.provider = ""
        self.attempts = 0
        self.fallback_used = False
        self.selection_fallback = False
        self.cache_hit = False
        self.prompt_cache_hit = False
        self.breaker_state = ""
        self.new_prompt = True
        self.client_wait_s = self.cpu_wait_s = self.cpu_s = self.cache_s = self.embedding_s = 0.0
        self.ai_pool_wait_s = self.ai_connect_s = self.ai_queue_s = self.ai_service_s = 0.0
        self.provider_pool_wait_s = self.provider_connect_s = self.provider_queue_s = self.provider_s = 0.0
        self.prompt_cache_s = self.store_s = 0.0
        # the request's own token counts (a trace's, or drawn by workload.tokens); -1: the
        # provider draws output tokens from the class (or its default)
        self.input_tokens = -1
        self.output_tokens = -1
        # a streamed reply (simulator.policies.streaming): the instant its first content chunk
        # left the provider (-1: none), when its stream ends, its TPOT and largest chunk gap
        self.stream = endpoint_cfg.stream if klass.stream is None else klass.stream
        self.first_token_at = -1.0
        self.stream_end_at = -1.0
        self.tpot_s = self.itl_max_s = math.nan
        self.reply_tokens = 0  # tokens of the reply that came back (0: none)
        # the machine model moved first_token_at to when the client reads the first chunk
        self.first_relayed = False
        self.stream_error = ""  # the stream broke after its first chunk (a reset): no fallback then
        self.stream_done = None  # an event for a stream whose end is not known when it starts (an llm server's)
        # the machine model's client CPU after the request's clock stopped (a process, or None):
        # a closed-loop user finishes it before its next send, as the load generator does
        self.client_after = None
        # the part of a new request's first step on the machine's shared loop that ran beyond its
        # own parsing: its first upstream call's encoding owes that much less (MachineModel)
        self.step_credit = 0.0

    def as_row(self, replication: int, latency_from_sent: bool) -> tuple:
        start = self.started_at if latency_from_sent else self.arrived_at
        return (
            self.id, replication, self.endpoint, self.klass.name, self.arrived_at, self.started_at,
            self.finished_at, self.finished_at - start, self.outcome, self.status, self.provider, self.attempts,
            self.fallback_used, self.selection_fallback, self.cache_hit, self.prompt_cache_hit, self.breaker_state,
            self.client_wait_s, self.cpu_wait_s, self.cpu_s, self.cache_s, self.embedding_s, self.ai_pool_wait_s,
            self.ai_connect_s, self.ai_queue_s, self.ai_service_s, self.provider_pool_wait_s,
            self.provider_connect_s, self.provider_queue_s, self.provider_s, self.prompt_cache_s, self.store_s,
            # (a stream of one short chunk can end before its first chunk's relay draw says)
            self.stream, min(self.first_token_at, self.finished_at) - start if self.stream and self.first_token_at >= 0 else math.nan,
            self.tpot_s, self.itl_max_s, self.input_tokens if self.input_tokens > 0 else 0,
            self.reply_tokens if self.outcome == "ok" else 0,
        )
