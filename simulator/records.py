"""One record per request, the same for the simulator and the real engine.

A record is what a load tester writes down about one request: when it was due, when it
was sent, when its answer (or its failure) came back, what it met on the way.  Instants
are named ``*_at`` (seconds from the start of the run), durations ``*_s`` (seconds).
Records become a DataFrame with ``records_frame(records)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from operator import itemgetter

import numpy as np
import pandas as pd

#: Outcomes.  ``ok`` is the only success; every other value is a failure reason.
OUTCOMES = (
    "ok",
    "client_timeout",  # the client gave up (the seed tool's status 0)
    "timeout",  # a gateway-side deadline fired and nothing could stand in
    "upstream_error",  # a provider or upstream answered with an error status
    "connect_error",  # no connection could be made (outage, refused)
    "reset",  # the connection was reset mid-response
    "rejected",  # refused for capacity: queue limit, provider concurrency (429)
    "rate_limited",  # the gateway's own rate limiter (429)
    "breaker_open",  # a breaker refused and no fallback stood in
    "too_large",  # request body over the gateway's limit (413)
    "bad_request",  # malformed request (400)
    "unfinished",  # still in flight when the run (and its drain) ended
)

#: Stage durations a record carries; 0 where the request did not pass that stage.
STAGES = (
    "client_wait_s",  # waiting for the client's concurrency cap
    "cpu_wait_s",  # waiting for a gateway CPU
    "cpu_s",  # gateway CPU work (parse, hops, client construction)
    "cache_s",  # semantic-cache lookup (GET, and the scan on a miss)
    "embedding_s",  # embedding API calls
    "ai_pool_wait_s",  # waiting for a connection to the AI service
    "ai_connect_s",  # dial + TLS handshake to the AI service
    "ai_queue_s",  # waiting in the AI service for a batch
    "ai_service_s",  # AI-service batch and per-request time
    "provider_pool_wait_s",  # waiting for a connection to a provider
    "provider_connect_s",  # dial + TLS handshake to a provider
    "provider_queue_s",  # waiting at the provider's concurrency limit
    "provider_s",  # provider service (ttft + decode)
    "prompt_cache_s",  # prompt-cache GET/SET
    "store_s",  # selection store after success (embedding + SET)
)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    id: int
    replication: int
    endpoint: str
    request_class: str
    arrived_at: float  # when the request was due to be sent (scheduled time)
    started_at: float  # when it got past the client cap and was sent
    finished_at: float  # when the client had its answer or gave up
    latency_s: float  # from arrived_at or started_at, as workload.latency_from says
    outcome: str
    status_code: int  # HTTP status; 0 for a client timeout or unfinished
    provider: str = ""  # provider that served it ("" when none)
    attempts: int = 0  # provider calls made (chat) or AI-service attempts (select)
    fallback_used: bool = False  # a provider fallback was started
    selection_fallback: bool = False  # the static model choice was returned
    cache_hit: bool = False  # semantic-cache hit
    prompt_cache_hit: bool = False
    breaker_state: str = ""  # AI-service breaker state when the request met it
    client_wait_s: float = 0.0
    cpu_wait_s: float = 0.0
    cpu_s: float = 0.0
    cache_s: float = 0.0
    embedding_s: float = 0.0
    ai_pool_wait_s: float = 0.0
    ai_connect_s: float = 0.0
    ai_queue_s: float = 0.0
    ai_service_s: float = 0.0
    provider_pool_wait_s: float = 0.0
    provider_connect_s: float = 0.0
    provider_queue_s: float = 0.0
    provider_s: float = 0.0
    prompt_cache_s: float = 0.0
    store_s: float = 0.0
    # A streamed reply as its client saw it (simulator.policies.streaming); NaN when not streamed
    stream: bool = False  # the request asked for a streamed reply
    ttft_s: float = math.nan  # from arrived_at or started_at (as latency_s) to the first content chunk
    tpot_s: float = math.nan  # (last token - first token) / (output_tokens - 1); NaN below 2 tokens
    itl_max_s: float = math.nan  # largest gap between two content chunks
    input_tokens: int = 0  # the request's own input tokens (a trace's, workload.tokens', the class's); 0: none
    output_tokens: int = 0  # tokens of the reply (its usage); 0 without a reply

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


RECORD_FIELDS = tuple(f.name for f in fields(RequestRecord))


#: field -> numpy dtype of its column (None: text, pandas' string dtype)
_COLUMN_DTYPES = {f.name: {"int": "int64", "float": "float64", "bool": "bool"}.get(str(f.type)) for f in fields(RequestRecord)}


def rows_frame(rows: list[tuple]) -> pd.DataFrame:
    """Record tuples (values in ``RECORD_FIELDS`` order) as the records DataFrame, in id order.

    Built column by column with each field's dtype: pandas' row-wise type inference costs a
    simulated run about as much as the requests of a light scenario themselves.
    """
    if not rows:
        return pd.DataFrame.from_records(rows, columns=list(RECORD_FIELDS))
    data = {}
    for name, column in zip(RECORD_FIELDS, zip(*sorted(rows, key=itemgetter(0)))):
        dtype = _COLUMN_DTYPES[name]
        data[name] = np.array(column, dtype=dtype) if dtype is not None else pd.array(column, dtype="str")
    return pd.DataFrame(data, copy=False)


def records_frame(records: list[RequestRecord] | tuple[RequestRecord, ...]) -> pd.DataFrame:
    """The records as a DataFrame with one column per field (empty frame keeps the columns)."""
    if not records:
        return pd.DataFrame({name: pd.Series(dtype="float64") for name in RECORD_FIELDS})
    return pd.DataFrame([asdict(r) for r in records], columns=list(RECORD_FIELDS))
