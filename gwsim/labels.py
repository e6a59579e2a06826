"""Axis labels for charts: one mapping from the column names the tools write to words a
reader understands without reading code (the legend of a capacity-planning report).

Every chart in gwsim (sweeps, tornado, capacity, notebooks) asks ``label(column)``; a column
not listed falls back to its last dotted part with underscores turned into spaces and its
unit suffix (``_ms``, ``_s``, ``_rps``) spelled out.
"""

from __future__ import annotations

#: Result columns (per replication or per sweep point).
METRICS: dict[str, str] = {
    "count": "Requests in window",
    "throughput_rps": "Throughput (successful req/s)",
    "success_rate": "Success rate",
    "error_rate": "Failure rate",
    "mean_ms": "Mean latency (ms)",
    "p50_ms": "P50 latency (ms)",
    "p90_ms": "P90 latency (ms)",
    "p95_ms": "P95 latency (ms)",
    "p99_ms": "P99 latency (ms)",
    "max_ms": "Max latency (ms)",
    "wait_ms": "Mean queueing wait (ms)",
    "offered_rps": "Offered load (req/s)",
    "rate": "Arrival rate (req/s)",
    "users": "Users (closed loop)",
    "utilisation": "Utilisation (busy share of capacity)",
    "resource": "Resource",
    "delta": "Change from baseline",
    "delta_pct": "Change from baseline (%)",
    "parameter": "Parameter",
    "variation": "Variation",
    "stress": "Stress scenario",
    "margin": "Margin to SLO",
    "latency_s": "Latency (s)",
    "latency_ms": "Latency (ms)",
    "probability_density": "Probability density",
    "cdf": "Cumulative share of requests",
}

#: Scenario parameters people sweep, by their dotted path.  ``*`` stands for any name.
PARAMETERS: dict[str, str] = {
    "workload.arrivals.rate": "Arrival rate (req/s)",
    "workload.time_scale": "Traffic speed-up (x the trace's rate)",
    "workload.users": "Users (closed loop)",
    "workload.concurrency_cap": "Client concurrency cap",
    "workload.client_timeout": "Client timeout (s)",
    "gateway.cpu_workers": "Gateway CPU cores",
    "fallback.attempt_timeout": "Per-attempt provider timeout (s)",
    "fallback.mode": "Fallback mode",
    "fallback.max_attempts": "Provider attempts (max)",
    "fallback.hedge_delay": "Hedge delay (s)",
    "fallback.race_width": "Race width",
    "model_selection.ai_client.request_timeout": "AI-service request timeout (s)",
    "model_selection.ai_client.breaker.failure_threshold": "AI-service breaker: failures to open",
    "model_selection.ai_client.breaker.open_for": "AI-service breaker: open for (s)",
    "model_selection.ai_client.pool.max_conns_per_host": "AI-service pool: max connections",
    "model_selection.ai_client.pool.max_idle_per_host": "AI-service pool: idle connections kept",
    "providers.*.breaker.failure_threshold": "Provider breaker: failures to open",
    "providers.*.breaker.open_for": "Provider breaker: open for (s)",
    "providers.*.breaker.failure_rate_threshold": "Provider breaker: failure-rate threshold",
    "providers.*.pool.max_conns_per_host": "Provider pool: max connections",
    "providers.*.pool.max_idle_per_host": "Provider pool: idle connections kept",
    "providers.*.concurrency": "Provider concurrency limit",
    "providers.*.latency.ttft": "Provider time to first token",
    "providers.*.latency.tokens_per_s": "Provider decode speed (tokens/s)",
    "providers.*.latency.time": "Provider response time",
    "ai_service.workers": "AI-service workers",
    "ai_service.max_batch_size": "AI-service max batch size",
    "ai_service.batch_timeout": "AI-service batch timeout (s)",
    "redis.pool_size": "Redis pool size",
    "redis.op_time": "Redis operation time",
    "gateway.cpu_per_request": "Gateway CPU per request",
    "gateway.cpu_per_hop": "Gateway CPU per upstream call",
    "ai_service.per_item": "AI-service time per item",
    "ai_service.batch_base": "AI-service time per batch",
    "model_selection.semantic_cache.embedding_time": "Embedding API time",
    "model_selection.semantic_cache.initial_entries": "Semantic-cache entries at start",
    "redis.op_timeout": "Redis operation timeout (s)",
}

#: Resources whose utilisation ``capacity`` and sweeps report (column ``util:<name>``).
RESOURCES: dict[str, str] = {
    "cpu": "Gateway CPU",
    "ai_service": "AI-service workers",
    "ai_pool": "AI-service connection pool",
    "redis_pool": "Redis connection pool",
    "client_cap": "Client concurrency cap",
}

_SUFFIXES = {"_ms": " (ms)", "_s": " (s)", "_rps": " (req/s)", "_pct": " (%)"}


def _pattern_match(pattern: str, name: str) -> bool:
    a, b = pattern.split("."), name.split(".")
    return len(a) == len(b) and all(p == "*" or p == q for p, q in zip(a, b))


def resource_label(name: str) -> str:
    """``cpu`` -> "Gateway CPU"; ``provider:openai`` -> "Provider openai (concurrency slots)"."""
    if name.startswith("provider:"):
        return f"Provider {name.split(':', 1)[1]} (concurrency slots)"
    if name.startswith("provider_pool:"):
        return f"Provider {name.split(':', 1)[1]} connection pool"
    if name.startswith("decode:"):
        return f"Provider {name.split(':', 1)[1]} decode (tokens/s)"
    if name.startswith("prefill:"):
        return f"Provider {name.split(':', 1)[1]} prefill"
    return RESOURCES.get(name, name)


def parameter_label(path: str) -> str:
    """A scenario parameter's label when one is known, else its dotted path (which a reader
    can find in the scenario file)."""
    if path in PARAMETERS:
        return PARAMETERS[path]
    for pattern, text in PARAMETERS.items():
        if "*" in pattern and _pattern_match(pattern, path):
            return text.replace("Provider", f"Provider {path.split('.')[1]}", 1)
    return path


def label(column: str) -> str:
    """The axis label for a column name or a dotted scenario parameter."""
    if column in METRICS:
        return METRICS[column]
    if column in PARAMETERS:
        return PARAMETERS[column]
    if column.startswith("util:"):
        return f"Utilisation: {resource_label(column[5:])}"
    if column.startswith("stage:"):
        return f"Time in stage {column[6:].removesuffix('_ms')} (ms)"
    if ":" in column:  # a per-endpoint metric such as chat_completions:p95_ms
        endpoint, _, metric = column.partition(":")
        if metric in METRICS:
            return f"{endpoint}: {METRICS[metric]}"
    for pattern, text in PARAMETERS.items():
        if "*" in pattern and _pattern_match(pattern, column):
            name = column.split(".")[1]
            return text.replace("Provider", f"Provider {name}", 1)
    base = column.rsplit(".", 1)[-1]
    for suffix, unit in _SUFFIXES.items():
        if base.endswith(suffix):
            return base[: -len(suffix)].replace("_", " ").capitalize() + unit
    return base.replace("_", " ").capitalize()
