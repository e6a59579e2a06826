"""The scenario file: one description of a gateway, its upstreams and its traffic.

Both executors (the SimPy model in ``simulator.model`` and the asyncio gateway in
``real_engine``) answer to this schema.  It is TOML, validated by pydantic; every field
carries its help text, which ``gwsim schema`` exports as JSON Schema for editors.

Durations carry units (``"250ms"``), rates carry units (``"10/s"``), random quantities
are inline tables (see ``simulator.distributions``).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simulator.distributions import ZERO, Distribution
from simulator.errors import ScenarioError
from simulator.units import UnitError, parse_duration, parse_rate

ERROR_KINDS = ("timeout", "connect", "reset", "429", "500", "503", "rejected", "breaker_open")


def _dur(v: Any) -> float:
    try:
        return parse_duration(v)
    except UnitError as exc:
        raise ValueError(str(exc)) from None


def _rate(v: Any) -> float:
    try:
        return parse_rate(v)
    except UnitError as exc:
        raise ValueError(str(exc)) from None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Duration = Annotated[float, Field(ge=0)]


def _durations(*names: str):
    """A before-validator turning the named fields' unit strings into seconds."""

    def convert(cls, v: Any) -> Any:
        return None if v is None else _dur(v)

    return field_validator(*names, mode="before")(classmethod(convert))


# --------------------------------------------------------------------------- faults


class Fault(_Model):
    """A window of trouble on an upstream: from ``start`` to ``end``."""

    start: Duration = Field(description="When the fault begins, from the start of the run.")
    end: Duration = Field(description="When the fault ends.")
    kind: Literal["slow", "errors", "outage", "hang", "reset", "stall"] = Field(
        description="slow: latency x latency_factor; errors: fail with error_status at error_rate; "
        "outage: connections refused; hang: accept and never answer; reset: connection reset "
        "mid-response; stall (Redis): operations block until the stall ends."
    )
    latency_factor: float = Field(default=1.0, gt=0, description="Latency multiplier while kind='slow'.")
    error_rate: float = Field(default=1.0, ge=0, le=1, description="Probability of an error while kind='errors'.")
    error_status: Literal[429, 500, 503] = Field(default=503, description="HTTP status of injected errors.")

    _d = _durations("start", "end")

    @model_validator(mode="after")
    def _ordered(self) -> "Fault":
        if self.end <= self.start:
            raise ValueError(f"expected end after start, got start={self.start}s end={self.end}s")
        return self


def active_fault(faults: tuple[Fault, ...], now: float) -> Fault | None:
    """The fault in force at ``now`` (the first listed wins when windows overlap)."""
    for fault in faults:
        if fault.start <= now < fault.end:
            return fault
    return None


# --------------------------------------------------------------------------- workload


class PoissonArrivals(_Model):
    process: Literal["poisson"] = Field(default="poisson", description="Poisson arrivals (exponential gaps).")
    rate: float = Field(description="Mean arrival rate, e.g. '10/s'.")
    _r = field_validator("rate", mode="before")(classmethod(lambda cls, v: _rate(v)))

    @property
    def mean_rate(self) -> float:
        return self.rate


class ConstantArrivals(_Model):
    process: Literal["constant"] = Field(default="constant", description="Evenly spaced arrivals.")
    rate: float = Field(description="Evenly spaced arrivals at this rate, e.g. '10/s'.")
    _r = field_validator("rate", mode="before")(classmethod(lambda cls, v: _rate(v)))

    @property
    def mean_rate(self) -> float:
        return self.rate


class BurstArrivals(_Model):
    """``size`` requests at once every ``every``: what the seed's web-perf tool did."""

    process: Literal["burst"] = Field(default="burst", description="Bursts of size requests every interval.")
    size: int = Field(gt=0, description="Requests launched together at each tick.")
    every: float = Field(gt=0, description="Time between bursts, e.g. '1s'.")
    _d = _durations("every")

    @property
    def mean_rate(self) -> float:
        return self.size / self.every


Arrivals = Annotated[Union[PoissonArrivals, ConstantArrivals, BurstArrivals], Field(discriminator="process")]


class RatePoint(_Model):
    at: Duration = Field(description="Time from the start of the run.")
    factor: float = Field(ge=0, description="Multiplier on the arrival rate (or user count) from this time.")
    _d = _durations("at")


class Workload(_Model):
    """The traffic: open loop (arrivals regardless of answers) or closed loop (users)."""

    mode: Literal["open", "closed"] = Field(default="open", description="open: an arrival process; closed: N users with think time.")
    arrivals: Arrivals | None = Field(default=None, description="Arrival process (open loop).")
    users: int | None = Field(default=None, gt=0, description="Number of users (closed loop).")
    think_time: Distribution = Field(default=ZERO, description="Think time between a user's answer and its next request (closed loop).")
    rate_profile: tuple[RatePoint, ...] = Field(default=(), description="Rate multipliers over time (steps or a ramp).")
    profile_shape: Literal["steps", "ramp"] = Field(default="steps", description="steps: hold each factor; ramp: interpolate linearly.")
    concurrency_cap: int | None = Field(default=None, gt=0, description="Client-side cap on requests in flight (a semaphore).")
    client_timeout: float | None = Field(default=None, gt=0, description="Client gives up after this long; recorded as outcome 'client_timeout'.")
    latency_from: Literal["scheduled", "sent"] = Field(
        default="scheduled",
        description="scheduled: latency from the intended send time (no coordinated omission); sent: from when the "
        "request got past the concurrency cap (what the seed tool did).",
    )
    mix: dict[str, float] = Field(description="Endpoint name -> share of requests; shares sum to 1.")

    _d = _durations("client_timeout")

    @model_validator(mode="after")
    def _consistent(self) -> "Workload":
        if self.mode == "open" and self.arrivals is None:
            raise ValueError("expected an arrivals table for an open-loop workload")
        if self.mode == "closed" and self.users is None:
            raise ValueError("expected users for a closed-loop workload")
        total = sum(self.mix.values())
        if any(v < 0 for v in self.mix.values()) or not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"expected mix shares >= 0 that sum to 1, got sum {total:g}")
        return self

    def factor_at(self, t: float) -> float:
        if not self.rate_profile:
            return 1.0
        points = sorted(self.rate_profile, key=lambda p: p.at)
        if t < points[0].at:
            return 1.0
        for a, b in zip(points, points[1:]):
            if a.at <= t < b.at:
                if self.profile_shape == "ramp":
                    return a.factor + (b.factor - a.factor) * (t - a.at) / (b.at - a.at)
                return a.factor
        return points[-1].factor


# --------------------------------------------------------------------------- endpoints


class RequestClass(_Model):
    """A payload of an endpoint, with its own properties."""

    name: str = Field(description="Name of the payload class.")
    weight: float = Field(default=1.0, gt=0, description="Relative share within the endpoint.")
    request_bytes: int = Field(default=150, ge=0, description="Request body size in bytes.")
    output_tokens: Distribution | None = Field(default=None, description="Tokens the provider generates (chat).")
    semantic_cache_hit: float = Field(default=0.0, ge=0, le=1, description="Probability that the exact semantic-cache lookup hits.")
    prompt_cache_opt_in: bool = Field(default=False, description="Whether the request opts in to the prompt cache.")
    prompt_cache_hit: float = Field(default=0.0, ge=0, le=1, description="Probability of a prompt-cache hit when opted in.")
    ai_work: float = Field(default=1.0, gt=0, description="AI-service per-item work relative to the base per-item time.")
    ai_extra: Distribution = Field(default=ZERO, description="Per-request AI-service time after its batch (token counting, filtering).")
    provider: str | None = Field(default=None, description="Provider this class is routed to when selection is off or falls back.")


class Endpoint(_Model):
    kind: Literal["select_model", "chat_completions"] = Field(description="Which request flow this endpoint follows.")
    path: str = Field(default="", description="HTTP path in the real engine (defaults by kind).")
    model_selection: bool = Field(default=True, description="Whether this endpoint runs model selection (semantic cache + AI service).")
    classes: tuple[RequestClass, ...] = Field(min_length=1, description="Payload classes of this endpoint.")
    store_selection_on_success: bool = Field(default=False, description="chat: store the selection in the semantic cache (embedding + SET) before replying.")

    @model_validator(mode="after")
    def _names_unique(self) -> "Endpoint":
        names = [c.name for c in self.classes]
        if len(names) != len(set(names)):
            raise ValueError(f"expected unique class names, got {names}")
        return self

    @property
    def http_path(self) -> str:
        return self.path or {"select_model": "/v1/select-model", "chat_completions": "/v1/chat/completions"}[self.kind]


# --------------------------------------------------------------------------- gateway


class RateLimit(_Model):
    limit: int = Field(gt=0, description="Requests allowed per window and key.")
    window: float = Field(gt=0, description="Sliding window length.")
    key: Literal["api_key", "ip"] = Field(default="api_key", description="What the limit is counted per.")
    keys: int = Field(default=1, gt=0, description="How many distinct keys the traffic uses (spread evenly).")
    _d = _durations("window")


class ProviderClient(_Model):
    construction_cpu: Distribution = Field(default=ZERO, description="CPU time to build a provider SDK client.")
    pooled: bool = Field(default=False, description="Reuse clients (built once per provider) instead of one per request.")


class Gateway(_Model):
    """The gateway process itself: CPU, middleware, limits."""

    cpu_workers: int = Field(default=2, gt=0, description="CPU capacity: cores (or workers) running gateway code.")
    cpu_per_request: Distribution = Field(default=ZERO, description="CPU time per request (parse, middleware, reply).")
    cpu_per_hop: Distribution = Field(default=ZERO, description="CPU time per upstream call made (encode, decode).")
    body_limit_bytes: int | None = Field(default=None, gt=0, description="Requests above this size get 413.")
    rate_limit: RateLimit | None = Field(default=None, description="Sliding-window rate limiter (429 when exceeded).")
    provider_client: ProviderClient = Field(default_factory=ProviderClient, description="Provider SDK client construction.")


# --------------------------------------------------------------------------- breakers


class Breaker(_Model):
    """A circuit breaker.  Three semantics:

    consecutive -- the seed gateway's: opens after failure_threshold consecutive failures;
    open for open_for after the last recorded failure; half-open closes after
    success_threshold successes; quirks as options.
    gobreaker -- sony/gobreaker: half-open admits half_open_max_calls probes; counts
    cleared every count_interval in closed state; results of an older generation ignored.
    rate -- resilience4j-like: sliding window of calls, opens when failure rate or slow-call
    rate reaches its threshold with at least minimum_calls in the window.
    """

    semantics: Literal["consecutive", "gobreaker", "rate"] = Field(default="consecutive", description="Which state machine.")
    failure_threshold: int = Field(default=5, gt=0, description="Consecutive failures that open the breaker.")
    success_threshold: int = Field(default=1, gt=0, description="Successes in half-open that close it.")
    open_for: float = Field(default=30.0, gt=0, description="How long it stays open before admitting a trial.")
    # consecutive quirks (seed gateway)
    extend_open_on_late_failure: bool = Field(default=False, description="consecutive: failures of calls in flight while open refresh the open timer.")
    half_open_unlimited: bool = Field(default=False, description="consecutive: half-open lets every call through (no probe limit).")
    reset_success_count: bool = Field(default=True, description="consecutive: reset the half-open success counter on each transition (the seed never did).")
    # gobreaker
    half_open_max_calls: int = Field(default=1, gt=0, description="gobreaker/rate: calls admitted while half-open.")
    count_interval: float = Field(default=0.0, ge=0, description="gobreaker: clear counts in closed state every interval (0 = never).")
    # rate
    window: float = Field(default=10.0, gt=0, description="rate: sliding window length.")
    failure_rate_threshold: float = Field(default=0.5, gt=0, le=1, description="rate: failure share that opens it.")
    slow_call_duration: float = Field(default=60.0, gt=0, description="rate: a call at least this long is slow.")
    slow_call_rate_threshold: float = Field(default=1.0, gt=0, le=1, description="rate: slow-call share that opens it.")
    minimum_calls: int = Field(default=10, gt=0, description="rate: calls needed in the window before rates are judged.")

    _d = _durations("open_for", "count_interval", "window", "slow_call_duration")


# --------------------------------------------------------------------------- HTTP client


class ConnectionPool(_Model):
    """Go net/http Transport semantics for one upstream host."""

    max_idle_per_host: int = Field(default=2, ge=0, description="Idle connections kept; a released connection beyond this is closed (churn).")
    max_conns_per_host: int = Field(default=0, ge=0, description="Cap on connections (0 = unbounded); callers wait beyond it.")
    idle_timeout: float = Field(default=90.0, ge=0, description="Idle connections older than this are closed.")
    dial_time: Distribution = Field(default=ZERO, description="TCP connect time for a new connection.")
    tls_handshake_time: Distribution = Field(default=ZERO, description="TLS handshake time for a new connection (0 without TLS).")
    dial_timeout: float | None = Field(default=None, gt=0, description="Dial gives up after this long.")
    tls: bool = Field(default=False, description="Real engine: use TLS to the upstream.")
    _d = _durations("idle_timeout", "dial_timeout")


class Retries(_Model):
    count: int = Field(default=0, ge=0, description="Retries after the first attempt.")
    backoff: tuple[float, ...] = Field(default=(), description="Wait before each retry (last one repeats).")
    on: tuple[str, ...] = Field(default=("timeout", "connect", "503", "500"), description="Error kinds that are retried.")

    @field_validator("backoff", mode="before")
    @classmethod
    def _b(cls, v: Any) -> Any:
        return tuple(_dur(x) for x in v) if isinstance(v, (list, tuple)) else v


class AIClient(_Model):
    """The gateway's client for the AI service (the seed's protocol-manager client)."""

    request_timeout: float | None = Field(default=15.0, gt=0, description="Per-attempt timeout.")
    retries: Retries = Field(default_factory=Retries, description="Retry policy.")
    pool: ConnectionPool = Field(default_factory=ConnectionPool, description="HTTP connection pool to the AI service.")
    breaker: Breaker | None = Field(default=None, description="Circuit breaker guarding the AI service.")
    _d = _durations("request_timeout")


class SemanticCache(_Model):
    """Model-selection cache in Redis: exact GET; on a miss an embedding call and a scan of all entries."""

    enabled: bool = Field(default=True, description="Whether selection consults the cache.")
    initial_entries: int = Field(default=0, ge=0, description="Entries present at the start of the run.")
    max_entries: int | None = Field(default=None, gt=0, description="Cap on entries (None = unbounded, no TTL, as in the seed).")
    scan_on_miss: bool = Field(default=True, description="On a miss, embed the prompt and compare with every entry (one GET each).")
    scan_batch: int = Field(default=10, gt=0, description="Keys returned per SCAN call.")
    similarity_hit: float = Field(default=0.0, ge=0, le=1, description="Probability that the scan finds a similar entry (a hit).")
    embedding_time: Distribution = Field(default=ZERO, description="Latency of the external embedding API call.")
    write_on_select: bool = Field(default=False, description="Whether select-model stores its selection (the seed never did).")


class FallbackChoice(_Model):
    provider: str = Field(description="Provider chosen when selection fails (static fallback).")
    alternatives: tuple[str, ...] = Field(default=(), description="Alternatives returned with it.")


class ModelSelection(_Model):
    semantic_cache: SemanticCache = Field(default_factory=SemanticCache, description="The model-selection cache.")
    ai_client: AIClient = Field(default_factory=AIClient, description="Client of the AI service.")
    fallback_choice: FallbackChoice | None = Field(default=None, description="Static choice returned (HTTP 200) on any AI-service failure.")
    candidates: tuple[str, ...] = Field(default=(), description="Providers the AI service ranks (best first); rotated per request when several.")


# --------------------------------------------------------------------------- AI service


class AIService(_Model):
    """The model router: dynamic batching over N workers."""

    workers: int = Field(default=1, gt=0, description="Worker processes, each running one batch at a time.")
    max_batch_size: int = Field(default=1, gt=0, description="Largest batch.")
    batch_timeout: float = Field(default=0.0, ge=0, description="How long a worker waits to fill a batch.")
    batch_base: Distribution = Field(default=ZERO, description="Time per batch independent of its size.")
    per_item: Distribution = Field(default=ZERO, description="Time per item in a batch (scaled by the class's ai_work).")
    queue_limit: int | None = Field(default=None, ge=0, description="Requests waiting beyond this get 503 (None = unbounded).")
    network_rtt: Distribution = Field(default=ZERO, description="Round trip between gateway and AI service.")
    faults: tuple[Fault, ...] = Field(default=(), description="Fault schedule.")
    _d = _durations("batch_timeout")


# --------------------------------------------------------------------------- providers


class TokenLatency(_Model):
    model: Literal["tokens"] = Field(default="tokens", description="Latency = time to first token + tokens / tokens_per_s.")
    ttft: Distribution = Field(description="Time to first token.")
    tokens_per_s: float = Field(gt=0, description="Decode speed after the first token.")
    default_output_tokens: Distribution = Field(default=ZERO, description="Output tokens when the class does not say.")


class PlainLatency(_Model):
    model: Literal["plain"] = Field(default="plain", description="Latency = one distribution for the whole response.")
    time: Distribution = Field(description="Whole-response latency.")


ProviderLatency = Annotated[Union[TokenLatency, PlainLatency], Field(discriminator="model")]


class Provider(_Model):
    latency: ProviderLatency = Field(description="Latency model: tokens (ttft + tokens at a rate) or plain.")
    errors: dict[str, float] = Field(default_factory=dict, description="Error probability by status: '429', '500', '503'.")
    concurrency: int | None = Field(default=None, gt=0, description="Requests served at once (None = unlimited).")
    over_limit: Literal["queue", "reject"] = Field(default="queue", description="Beyond concurrency: queue, or reject with 429.")
    network_rtt: Distribution = Field(default=ZERO, description="Round trip between gateway and provider.")
    pool: ConnectionPool = Field(default_factory=lambda: ConnectionPool(max_idle_per_host=100), description="Gateway's HTTP pool to this provider.")
    breaker: Breaker | None = Field(default=None, description="Optional breaker guarding this provider.")
    faults: tuple[Fault, ...] = Field(default=(), description="Fault schedule.")

    @field_validator("errors")
    @classmethod
    def _errors(cls, v: dict[str, float]) -> dict[str, float]:
        for status, p in v.items():
            if status not in ("429", "500", "503"):
                raise ValueError(f"expected error statuses '429', '500' or '503', got {status!r}")
            if not 0 <= p <= 1:
                raise ValueError(f"expected a probability in [0, 1] for status {status}, got {p}")
        if sum(v.values()) > 1:
            raise ValueError(f"expected error probabilities summing to at most 1, got {sum(v.values()):g}")
        return v


# --------------------------------------------------------------------------- fallback


class Fallback(_Model):
    """What the chat endpoint does when a provider call fails."""

    mode: Literal["none", "sequential", "race", "hedge"] = Field(default="sequential", description="none, sequential, race (K at once) or hedge (next after a delay).")
    max_attempts: int = Field(default=2, gt=0, description="Provider calls at most, first included.")
    attempt_timeout: float | None = Field(default=None, gt=0, description="Per-attempt timeout (None = no deadline, as in the seed).")
    race_width: int = Field(default=2, gt=0, description="race: alternatives started at once.")
    cancel_losers: bool = Field(default=True, description="race/hedge: cancel calls still running once one succeeds.")
    hedge_delay: float = Field(default=1.0, ge=0, description="hedge: start the next alternative after this long without an answer.")
    trigger_on: tuple[str, ...] = Field(default=("timeout", "connect", "reset", "429", "500", "503", "breaker_open"), description="Error kinds that trigger a fallback.")
    race_setup_cpu: Distribution = Field(default=ZERO, description="Seed quirk: CPU for the race that only constructs clients, before one real call.")
    _d = _durations("attempt_timeout", "hedge_delay")

    @field_validator("trigger_on")
    @classmethod
    def _kinds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for kind in v:
            if kind not in ERROR_KINDS:
                raise ValueError(f"expected error kinds from {list(ERROR_KINDS)}, got {kind!r}")
        return v


# --------------------------------------------------------------------------- Redis


class Redis(_Model):
    """Redis as the gateway sees it: operation latency, a client pool and timeouts."""

    op_time: Distribution = Field(default=ZERO, description="Latency of one Redis operation (round trip).")
    pool_size: int = Field(default=10, gt=0, description="Client connection-pool size.")
    pool_timeout: float | None = Field(default=None, gt=0, description="How long to wait for a pooled connection (None = forever).")
    op_timeout: float | None = Field(default=None, gt=0, description="Operation timeout; a timeout counts as a cache miss (None = none, as the seed's semantic cache).")
    faults: tuple[Fault, ...] = Field(default=(), description="Stall or outage schedule.")
    _d = _durations("pool_timeout", "op_timeout")


class PromptCache(_Model):
    enabled: bool = Field(default=True, description="Whether opted-in chat requests use the prompt cache.")
    op_timeout: float | None = Field(default=2.0, gt=0, description="GET/SET timeout; a timeout counts as a miss.")
    _d = _durations("op_timeout")


# --------------------------------------------------------------------------- run settings


class Run(_Model):
    name: str = Field(default="scenario", description="Short name of the scenario.")
    description: str = Field(default="", description="What the scenario models and why.")
    duration: float = Field(gt=0, description="Simulated (or measured) time of arrivals.")
    warmup: float = Field(default=0.0, ge=0, description="Requests arriving before this are left out of statistics.")
    drain: float = Field(default=120.0, ge=0, description="Time after the last arrival for requests in flight to finish.")
    replications: int = Field(default=5, gt=0, description="Independent replications (simulator).")
    seed: int = Field(default=1, ge=0, description="Root of the SeedSequence all random streams spawn from.")
    window: float = Field(default=10.0, gt=0, description="Width of time-series windows.")
    _d = _durations("duration", "warmup", "drain", "window")

    @model_validator(mode="after")
    def _warmup(self) -> "Run":
        if self.warmup >= self.duration:
            raise ValueError(f"expected warmup shorter than duration, got warmup={self.warmup}s duration={self.duration}s")
        return self


class Scenario(_Model):
    """A whole scenario file."""

    run: Run = Field(description="Run length, warm-up, replications, seed.")
    workload: Workload = Field(description="The traffic.")
    endpoints: dict[str, Endpoint] = Field(min_length=1, description="Endpoint name -> endpoint.")
    gateway: Gateway = Field(default_factory=Gateway, description="The gateway process.")
    model_selection: ModelSelection = Field(default_factory=ModelSelection, description="Semantic cache, AI-service client, static fallback.")
    ai_service: AIService = Field(default_factory=AIService, description="The model router.")
    providers: dict[str, Provider] = Field(min_length=1, description="Provider name -> provider.")
    fallback: Fallback = Field(default_factory=Fallback, description="Provider fallback on the chat endpoint.")
    redis: Redis = Field(default_factory=Redis, description="Redis as seen by the gateway.")
    prompt_cache: PromptCache = Field(default_factory=PromptCache, description="Prompt cache on chat requests.")

    @model_validator(mode="after")
    def _references(self) -> "Scenario":
        for name in self.workload.mix:
            if name not in self.endpoints:
                raise ValueError(f"workload.mix names endpoint {name!r}, expected one of {sorted(self.endpoints)}")
        known = set(self.providers)
        ms = self.model_selection
        for provider in ms.candidates:
            if provider not in known:
                raise ValueError(f"model_selection.candidates names provider {provider!r}, expected one of {sorted(known)}")
        if ms.fallback_choice is not None:
            for provider in (ms.fallback_choice.provider, *ms.fallback_choice.alternatives):
                if provider not in known:
                    raise ValueError(f"model_selection.fallback_choice names provider {provider!r}, expected one of {sorted(known)}")
        for ep_name, ep in self.endpoints.items():
            for cls_ in ep.classes:
                if cls_.provider is not None and cls_.provider not in known:
                    raise ValueError(f"endpoints.{ep_name} class {cls_.name!r} names provider {cls_.provider!r}, expected one of {sorted(known)}")
            if ep.model_selection is False and ep.kind == "chat_completions":
                if not (ms.candidates or any(c.provider for c in ep.classes)):
                    raise ValueError(f"endpoints.{ep_name}: without model selection a class provider or model_selection.candidates is needed")
        return self

    def provider_order(self) -> list[str]:
        return list(self.model_selection.candidates) or list(self.providers)


# --------------------------------------------------------------------------- loading


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(item, str) and item in {
            "Exponential", "Deterministic", "Uniform", "LogNormal", "Gamma", "Empirical", "Mixture",
            "exponential", "deterministic", "uniform", "lognormal", "gamma", "empirical", "mixture",
            "poisson", "constant", "burst", "tokens", "plain",
        }:
            continue  # discriminator tags add noise, not location
        elif isinstance(item, str) and item.startswith("function-"):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def validation_error_line(source: str, exc: ValidationError) -> str:
    """One line: file, key path, what was expected, what was found."""
    err = exc.errors(include_url=False)[0]
    loc = _format_loc(tuple(err.get("loc", ())))
    msg = err.get("msg", "invalid value")
    msg = msg.removeprefix("Value error, ")
    kind = err.get("type", "")
    found = err.get("input")
    if kind == "extra_forbidden":
        return f"{source}: {loc}: unknown key (expected one of the documented keys, see `gwsim schema`)"
    if kind == "missing":
        return f"{source}: {loc}: expected a value, found nothing (key is required)"
    if msg.startswith("expected") and "got" in msg:
        return f"{source}: {loc}: {msg}"
    shown = repr(found)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    if msg.startswith("expected"):
        return f"{source}: {loc}: {msg}, got {shown}"
    return f"{source}: {loc}: expected {msg[0].lower() + msg[1:] if msg else 'a valid value'}, got {shown}"


def parse_set_value(text: str) -> Any:
    """A ``--set`` value: TOML literal when it parses as one, else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides to raw scenario data (a deep copy is returned)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ScenarioError(f"--set {item}: expected key.path=value, got no '='")
        path, _, raw = item.partition("=")
        keys = [k for k in path.strip().split(".")]
        if not all(keys):
            raise ScenarioError(f"--set {item}: expected a dotted key path such as gateway.cpu_workers, got {path!r}")
        node: Any = out
        for i, key in enumerate(keys[:-1]):
            if isinstance(node, list):
                try:
                    node = node[int(key)]
                    continue
                except (ValueError, IndexError):
                    raise ScenarioError(f"--set {item}: {'.'.join(keys[: i + 1])}: expected a list index, got {key!r}") from None
            if not isinstance(node, dict):
                raise ScenarioError(f"--set {item}: {'.'.join(keys[:i])} is not a table")
            node = node.setdefault(key, {})
        if isinstance(node, list):
            try:
                node[int(keys[-1])] = parse_set_value(raw)
            except (ValueError, IndexError):
                raise ScenarioError(f"--set {item}: expected a list index, got {keys[-1]!r}") from None
        elif isinstance(node, dict):
            node[keys[-1]] = parse_set_value(raw)
        else:
            raise ScenarioError(f"--set {item}: {'.'.join(keys[:-1])} is not a table")
    return out


def read_scenario_data(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise ScenarioError(f"{source}: expected a scenario file, found nothing at that path")
    if path.is_dir():
        raise ScenarioError(f"{source}: expected a scenario file, found a directory")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{source}: expected a readable file, got {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{source}: expected UTF-8 TOML text, got undecodable byte at offset {exc.start}") from None
    if not text.strip():
        raise ScenarioError(f"{source}: expected a TOML scenario, found an empty file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: malformed TOML: {exc}") from None


def scenario_from_data(data: dict[str, Any], source: str, base_dir: str | Path = ".") -> Scenario:
    try:
        return Scenario.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        raise ScenarioError(validation_error_line(source, exc)) from None
    except (OverflowError, RecursionError) as exc:
        raise ScenarioError(f"{source}: expected values of sane size, got {exc.__class__.__name__}") from None


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read, override and validate a scenario; raise ``ScenarioError`` with one line on bad input."""
    path = Path(path)
    data = read_scenario_data(path)
    data = apply_overrides(data, overrides, str(path))
    return scenario_from_data(data, str(path), path.parent)


def json_schema() -> dict[str, Any]:
    return Scenario.model_json_schema(by_alias=True)
