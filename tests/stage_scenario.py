"""One queueing stage as a scenario file: Poisson arrivals, c servers, nothing else on the path.

The what-if tests all need such a stage with their own numbers; the closed forms in
``simulator.queueing`` apply to it when service is exponential.
"""

from __future__ import annotations


def single_stage(
    name: str,
    *,
    duration: str,
    warmup: str,
    replications: int,
    seed: int,
    rate: str,
    service: str,
    servers: int,
    drain: str = "50s",
    queue: bool = True,
    client_timeout: str | None = None,
) -> str:
    workload_extra = f'client_timeout = "{client_timeout}"\n' if client_timeout else ""
    over_limit = 'over_limit = "queue"\n' if queue else ""
    return f"""
[run]
name = "{name}"
duration = "{duration}"
warmup = "{warmup}"
drain = "{drain}"
replications = {replications}
seed = {seed}

[workload]
mode = "open"
arrivals = {{ process = "poisson", rate = "{rate}" }}
mix = {{ stage = 1.0 }}
{workload_extra}
[endpoints.stage]
kind = "chat_completions"
model_selection = false
classes = [{{ name = "job", provider = "servers" }}]

[providers.servers]
latency = {{ model = "plain", time = {service} }}
concurrency = {servers}
{over_limit}
[fallback]
mode = "none"
max_attempts = 1
"""
