"""The scenario file: one description of a gateway, its upstreams and its traffic.

Both executors (the SimPy model in ``simulator.model`` and the asyncio gateway in
``real_engine``) answer to this schema.  It is TOML, validated by pydantic; every field
carries its help text, which ``gwsim schema`` exports as JSON Schema for editors.

Durations carry units (``"250ms"``), rates carry units (``"10/s"``), random quantities
are inline tables (see ``simulator.distributions``).
"""

from __future__ import annotations

import ast
import difflib
import math
import re
import tomllib
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from simulator.distributions import ZERO, Distribution
from simulator.errors import ScenarioError
from simulator.executors import only
from simulator.machine_config import MACHINE_REASON, Machine
from simulator.units import UnitError, parse_duration, parse_rate

ERROR_KINDS = ("timeout", "connect", "reset", "429", "500", "503", "rejected", "breaker_open")


# Upper bounds on what a scenario may ask for.  Far above any real capacity question, they
# exist so that a typo ('1e300s', a burst of 2**62) gets one line instead of a run that never
# ends or exhausts memory.
MAX_DURATION_S = 1e8  # about 3 years of simulated time
MAX_RATE_PER_S = 1e6
MAX_REQUESTS_PER_REPLICATION = 1e9
MAX_REPLICATIONS = 100_000
MAX_WINDOWS = 1_000_000  # time-series windows in a run
MAX_COUNT = 10_000_000  # users, burst size


def _dur(v: Any) -> float:
    try:
        seconds = parse_duration(v)
    except UnitError as exc:
        raise ValueError(str(exc)) from None
    if seconds > MAX_DURATION_S:
        raise ValueError(f"expected a duration of at most {MAX_DURATION_S:g}s (about 3 years), got {v!r}")
    return seconds


def _rate(v: Any) -> float:
    try:
        rate = parse_rate(v)
    except UnitError as exc:
        raise ValueError(str(exc)) from None
    if rate > MAX_RATE_PER_S:
        raise ValueError(f"expected a rate of at most {MAX_RATE_PER_S:g}/s, got {v!r}")
    return rate


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        # pydantic's lax mode reads true as 1; in a scenario that is always a mistake.  The
        # bool is swapped for a value no number validator accepts, so the error names the key.
        if isinstance(data, dict) and any(isinstance(v, bool) for v in data.values()):
            numeric = _numeric_fields(cls)
            data = {k: (NotANumber(v) if isinstance(v, bool) and k in numeric else v) for k, v in data.items()}
        return data


class NotANumber:
    """A true/false found where a number belongs (shown as the user wrote it)."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "true" if self.value else "false"


_NUMERIC_FIELDS: dict[type, frozenset[str]] = {}


def _numeric_fields(model: type[BaseModel]) -> frozenset[str]:
    """Names of ``model``'s fields that hold an int or a float (possibly optional)."""
    found = _NUMERIC_FIELDS.get(model)
    if found is None:
        names = set()
        for name, field in model.model_fields.items():
            tp = field.annotation
            members = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
            if bool not in members and any(m in (int, float) for m in members):
                names.add(name)
                if field.alias:
                    names.add(field.alias)
        found = _NUMERIC_FIELDS[model] = frozenset(names)
    return found


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
    size: int = Field(gt=0, le=MAX_COUNT, description="Requests launched together at each tick.")
    every: float = Field(gt=0, description="Time between bursts, e.g. '1s'.")
    _d = _durations("every")

    @property
    def mean_rate(self) -> float:
        return self.size / self.every


class GammaArrivals(_Model):
    """A renewal process with gamma-distributed gaps: burstier (cv > 1) or more regular (cv < 1) than Poisson."""

    process: Literal["gamma"] = Field(default="gamma", description="Renewal arrivals with gamma-distributed gaps (cv = 1 is Poisson).")
    rate: float = Field(description="Mean arrival rate, e.g. '10/s'.")
    cv: float = Field(gt=0, le=100, description="Coefficient of variation of the gaps between arrivals (1 = Poisson, > 1 = bursty).")
    _r = field_validator("rate", mode="before")(classmethod(lambda cls, v: _rate(v)))

    @property
    def mean_rate(self) -> float:
        return self.rate


class MMPPArrivals(_Model):
    """A two-state Markov-modulated Poisson process: bursts and lulls around a mean rate.

    Poisson at a high rate for an exponential while, then at a low rate for another; the mean
    over both states is ``rate``."""

    process: Literal["mmpp"] = Field(default="mmpp", description="Two-state Markov-modulated Poisson arrivals (bursts and lulls).")
    rate: float = Field(description="Mean arrival rate over both states, e.g. '10/s'.")
    low_ratio: float = Field(ge=0, lt=1, description="Rate in the low state as a fraction of the high state's (0 = silent lulls).")
    high_for: float = Field(gt=0, description="Mean time in the high state at the mean rate (exponential; shorter when a rate profile or time_scale speeds traffic up).")
    low_for: float = Field(gt=0, description="Mean time in the low state at the mean rate.")
    _r = field_validator("rate", mode="before")(classmethod(lambda cls, v: _rate(v)))
    _d = _durations("high_for", "low_for")

    @property
    def mean_rate(self) -> float:
        return self.rate

    @property
    def high_rate(self) -> float:
        """Rate in the high state (the low state's is ``low_ratio`` of it)."""
        weight = (self.high_for + self.low_ratio * self.low_for) / (self.high_for + self.low_for)
        return self.rate / weight


Arrivals = Annotated[
    Union[PoissonArrivals, ConstantArrivals, BurstArrivals, GammaArrivals, MMPPArrivals], Field(discriminator="process")
]


class TokenCopula(_Model):
    """Input and output tokens of each request, drawn together from a Gaussian copula.

    Each marginal is a quantile table (linear between quantiles, rounded to whole tokens);
    their dependence is a Gaussian copula of the given correlation."""

    model: Literal["copula"] = Field(default="copula", description="Gaussian copula over two quantile tables (what `gwsim fit workload` writes).")
    levels: tuple[float, ...] = Field(min_length=2, description="Probabilities of the quantiles, increasing from 0 to 1.")
    input: tuple[float, ...] = Field(min_length=2, description="Input (prompt) tokens at each level.")
    output: tuple[float, ...] = Field(min_length=2, description="Output (generated) tokens at each level: the provider's token latency model uses them.")
    correlation: float = Field(default=0.0, ge=-1, le=1, description="Correlation of the normal scores of input and output tokens (the copula's parameter).")

    @model_validator(mode="after")
    def _tables(self) -> "TokenCopula":
        levels = self.levels
        if len(self.input) != len(levels) or len(self.output) != len(levels):
            raise ValueError(f"expected input and output with one value per level ({len(levels)}), got {len(self.input)} and {len(self.output)}")
        if levels[0] != 0 or levels[-1] != 1 or any(b <= a for a, b in zip(levels, levels[1:])):
            raise ValueError("at levels: expected probabilities increasing from 0 to 1, got " + _levels_text(levels))
        for name, values in (("input", self.input), ("output", self.output)):
            if any(v < 0 for v in values) or any(b < a for a, b in zip(values, values[1:])):
                raise ValueError(f"at {name}: expected token counts >= 0 that never decrease, got {_levels_text(values)}")
        return self


def _levels_text(values: tuple[float, ...]) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:4])
    return f"[{shown}{', ...' if len(values) > 4 else ''}]"


class TraceColumns(_Model):
    """Which column of a generic trace (format csv or jsonl) holds what."""

    timestamp: str = Field(description="Arrival time of each request (a number in timestamp_unit, or ISO 8601 date-times).")
    endpoint: str | None = Field(default=None, description="Endpoint or model of each request (a scenario endpoint name, or mapped to one by map).")
    input_tokens: str | None = Field(default=None, description="Input (prompt) tokens.")
    output_tokens: str | None = Field(default=None, description="Output (generated) tokens; the providers' token latency model uses them.")
    status: str | None = Field(default=None, description="HTTP status the request got (read for `gwsim fit workload`'s report; every request is replayed).")
    latency: str | None = Field(default=None, description="Latency the request had (in latency_unit; read for `gwsim fit workload`'s report).")


class Trace(_Model):
    """A request trace replayed as the traffic: each request at its time, with its endpoint and token counts."""

    file: str = Field(description="Trace file, relative to the scenario file; '{data}/...' is in the data directory (GWSIM_DATA_DIR, else ../shared/data).")
    format: Literal["azure2023", "csv", "jsonl"] = Field(
        default="csv",
        description="azure2023: the Azure LLM inference trace 2023 (TIMESTAMP, ContextTokens, GeneratedTokens); csv or "
        "jsonl: any trace, with columns.",
    )
    columns: TraceColumns | None = Field(default=None, description="Column mapping of a csv or jsonl trace.")
    timestamp_unit: Literal["s", "ms", "us", "ns", "datetime"] = Field(default="s", description="Unit of numeric timestamps, or 'datetime' for ISO 8601 date-times (csv, jsonl).")
    latency_unit: Literal["s", "ms", "us"] = Field(default="ms", description="Unit of the latency column.")
    start: float = Field(default=0.0, ge=0, description="Start of the window replayed, from the trace's first request.")
    duration: float | None = Field(default=None, gt=0, description="Length of the window replayed, in the trace's time (None = to the end).")
    loop: bool = Field(default=False, description="Replay the window again and again until run.duration (else arrivals stop at its end).")
    map: dict[str, str] = Field(default_factory=dict, description="Endpoint or model values of the trace -> scenario endpoint names (other values must be endpoint names).")
    _data: Any = PrivateAttr(default=None)
    _d = _durations("start", "duration")

    @model_validator(mode="after")
    def _load(self, info: ValidationInfo) -> "Trace":
        from simulator.trace import load_for_scenario

        self._data = load_for_scenario(self, (info.context or {}).get("base_dir", "."))
        return self

    @property
    def data(self):
        """The trace in memory (``simulator.trace.TraceData``)."""
        return self._data


class RatePoint(_Model):
    at: Duration = Field(description="Time from the start of the run.")
    factor: float = Field(ge=0, description="Multiplier on the arrival rate (or user count) from this time.")
    _d = _durations("at")


class Workload(_Model):
    """The traffic: open loop (arrivals regardless of answers) or closed loop (users)."""

    mode: Literal["open", "closed", "trace"] = Field(
        default="open", description="open: an arrival process; closed: N users with think time; trace: a request trace replayed (trace)."
    )
    arrivals: Arrivals | None = Field(default=None, description="Arrival process (open loop).")
    users: int | None = Field(default=None, gt=0, le=MAX_COUNT, description="Number of users (closed loop).")
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
    replay: tuple[tuple[float, str, str], ...] = Field(
        default=(),
        description="Open loop: these requests (arrival time in seconds, endpoint, class) instead of drawing arrivals, "
        "endpoints and classes; `gwsim calibrate check` replays a measurement's traffic this way.",
        json_schema_extra=only("simulator", "the real load generator draws its own arrivals; replay feeds a measurement's requests back to the simulator"),
    )

    trace: Trace | None = Field(default=None, description="The request trace replayed when mode = 'trace'.")
    time_scale: float = Field(
        default=1.0, gt=0, le=1e6,
        description="Speed-up of open-loop and trace traffic: 2 = twice as fast (trace times and rate-profile times "
        "halved, rates doubled, burst and state times halved).",
    )
    tokens: TokenCopula | None = Field(
        default=None,
        description="Open loop: input and output tokens of each request, drawn together (output tokens replace the "
        "classes' output_tokens); `gwsim fit workload` writes it from a trace.",
    )

    _d = _durations("client_timeout")

    @model_validator(mode="after")
    def _consistent(self) -> "Workload":
        if self.mode == "open" and self.arrivals is None:
            raise ValueError("expected an arrivals table for an open-loop workload")
        if self.mode == "closed" and self.users is None:
            raise ValueError("expected users for a closed-loop workload")
        if self.mode == "trace":
            if self.trace is None:
                raise ValueError("at workload.trace: expected a trace table (file, format, ...) with mode = 'trace', got nothing")
            for key, value in (("arrivals", self.arrivals), ("tokens", self.tokens)):
                if value is not None:
                    raise ValueError(f"at workload.{key}: expected no {key} with mode = 'trace' (the trace gives them), got a table")
            if self.replay:
                raise ValueError("at workload.replay: expected no replay with mode = 'trace', got an array")
        elif self.trace is not None:
            raise ValueError(f"at workload.trace: expected a trace only with mode = 'trace', got one with mode = {self.mode!r}")
        if self.mode == "closed":
            if self.time_scale != 1:
                raise ValueError(f"at workload.time_scale: expected 1 for a closed-loop workload (scale users instead), got {self.time_scale:g}")
            if self.tokens is not None:
                raise ValueError("at workload.tokens: expected tokens only for open-loop traffic, got a table with mode = 'closed'")
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
    input_tokens: Distribution | None = Field(
        default=None,
        description="Input (prompt) tokens of the class's requests, drawn by the client and sent as the request's "
        "own count (a trace's or workload.tokens' counts come first); an llm provider's prefill time grows with them.",
    )
    semantic_cache_hit: float = Field(default=0.0, ge=0, le=1, description="Probability that the exact semantic-cache lookup hits.")
    similarity_hit: float | None = Field(
        default=None, ge=0, le=1,
        description="Probability that the semantic scan finds a similar entry for this class (a prompt close to one "
        "stored earlier); None = model_selection.semantic_cache.similarity_hit.  The real engine's embedding "
        "emulator answers such a prompt with a vector close to the class's entry.",
    )
    similar_entry_at: float = Field(
        default=1.0, gt=0, le=1,
        description="Where the first similar entry sits in the scan order, as a fraction of the entries: a lookup that "
        "returns the first match stops there, so a hit pays only that share of the scan (1 = the whole scan).  The "
        "real engine puts the class's similar entry at that place in Redis's SCAN order at start-up.",
    )
    prompt_cache_opt_in: bool = Field(default=False, description="Whether the request opts in to the prompt cache.")
    prompt_cache_hit: float = Field(default=0.0, ge=0, le=1, description="Probability of a prompt-cache hit when opted in.")
    ai_work: float = Field(default=1.0, gt=0, description="AI-service per-item work relative to the base per-item time.")
    ai_extra: Distribution = Field(default=ZERO, description="Per-request AI-service time after its batch (token counting, filtering).")
    provider: str | None = Field(default=None, description="Provider this class is routed to when selection is off or falls back.")
    model: str | None = Field(
        default=None,
        description="Model name the client sends (the request body's `model`); with a [router], the model group that "
        "serves the class (None: 'auto', or the router's only group).",
    )
    stream: bool | None = Field(
        default=None,
        description="Whether the client asks for a streamed reply (`\"stream\": true`, server-sent events): the gateway "
        "relays the provider's chunks as they come, and records carry ttft_s, tpot_s and itl_max_s (None = the "
        "endpoint's stream).",
    )


class Endpoint(_Model):
    kind: Literal["select_model", "chat_completions"] = Field(description="Which request flow this endpoint follows.")
    path: str = Field(default="", description="HTTP path in the real engine (defaults by kind).")
    model_selection: bool = Field(default=True, description="Whether this endpoint runs model selection (semantic cache + AI service).")
    classes: tuple[RequestClass, ...] = Field(min_length=1, description="Payload classes of this endpoint.")
    store_selection_on_success: bool = Field(default=False, description="chat: store the selection in the semantic cache (embedding + SET) before replying.")
    stream: bool = Field(default=False, description="chat: whether the classes ask for streamed replies (a class's own stream overrides it).")

    @model_validator(mode="after")
    def _names_unique(self) -> "Endpoint":
        names = [c.name for c in self.classes]
        if len(names) != len(set(names)):
            raise ValueError(f"expected unique class names, got {names}")
        if self.kind == "select_model" and (self.stream or any(c.stream for c in self.classes)):
            raise ValueError("expected stream only on a chat_completions endpoint, got stream = true on a select_model one")
        return self

    def streams(self, klass: RequestClass) -> bool:
        """Whether requests of ``klass`` (one of this endpoint's classes) ask for a streamed reply."""
        return klass.stream if klass.stream is not None else self.stream

    @property
    def http_path(self) -> str:
        return self.path or {"select_model": "/v1/select-model", "chat_completions": "/v1/chat/completions"}[self.kind]


# --------------------------------------------------------------------------- gateway


class RateLimit(_Model):
    limit: int = Field(gt=0, description="Requests allowed per window and key.")
    window: float = Field(gt=0, description="Sliding window length.")
    key: Literal["api_key", "ip"] = Field(
        default="api_key", description="What the limit is counted per.",
        json_schema_extra=only("real", "the simulator always counts per API key, spread over keys; with 'ip' the real gateway sees one loopback address"),
    )
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
    max_in_flight: int | None = Field(
        default=None, gt=0,
        description="Admission control: requests handled at once; one arriving beyond it is answered at once with 503 "
        "and outcome 'rejected' (error type 'overloaded'), before any CPU or upstream work (None = unbounded, as the "
        "seed gateway ran).",
    )
    body_read_timeout: float | None = Field(
        default=30.0, gt=0,
        description="Real engine: a client that has not sent its whole body within this long gets 408 (outcome "
        "'bad_request', error type 'request_timeout') and its connection closed, so a slow client cannot hold a "
        "handler (None = wait forever).  The simulator's bodies arrive whole, so it never fires there.",
        json_schema_extra=only("real", "the simulator's request bodies arrive whole, so the timeout never fires there"),
    )
    cancel_on_disconnect: bool = Field(
        default=False,
        description="Real engine: when a client disconnects mid-request, cancel the request's work (upstream calls, "
        "pool waits) and count it as 'client_gone'.  False finishes the work regardless, as the seed's server did.  "
        "The simulator always models False (its handlers finish the work of a client that gave up), so with True "
        "and client timeouts under overload its predictions are pessimistic.",
        json_schema_extra=only("real", "the simulator always finishes the work of a client that gave up, as with false"),
    )

    _d = _durations("body_read_timeout")


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
    dial_timeout: float | None = Field(
        default=None, gt=0,
        description="A new connection's dial (dial_time + tls_handshake_time) gives up after this long: the call "
        "fails as a connect error once the timeout has passed (None = no limit).",
    )
    tls: bool = Field(
        default=False, description="Real engine: use TLS to the upstream.",
        json_schema_extra=only("real", "the simulator does no TLS: it charges each new connection tls_handshake_time, which a profile raises when tls = true"),
    )
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
    max_entries: int | None = Field(
        default=None, gt=0,
        description="Cap on entries (None = unbounded, no TTL, as in the seed).  At the cap a selection stored under a "
        "new key evicts the oldest entry stored during the run (a SET and a DEL); the entries present at the start "
        "are kept, so a cache full of them stores nothing new.",
    )
    scan_on_miss: bool = Field(default=True, description="On a miss, embed the prompt and compare with every entry (one GET each).")
    scan_batch: int = Field(default=10, gt=0, description="Keys returned per SCAN call.")
    similarity_hit: float = Field(
        default=0.0, ge=0, le=1, description="Probability that the scan finds a similar entry (a hit), for the classes "
        "that do not set their own similarity_hit.",
    )
    embedding_time: Distribution = Field(default=ZERO, description="Latency of the external embedding API call.")
    embedding_timeout: float | None = Field(
        default=None, gt=0,
        description="Timeout of one embedding call (None = none, as in the seed).  A call that fails or times out "
        "skips the scan (the lookup is a miss) and a selection is stored without its vector.",
    )
    embedding_faults: tuple[Fault, ...] = Field(
        default=(),
        description="Fault schedule of the embedding API: outage (refused at once), hang (no answer: bounded only by "
        "embedding_timeout), errors and reset (fail after the call's time, reset after half of it), slow.",
    )
    write_on_select: bool = Field(default=False, description="Whether select-model stores its selection (the seed never did).")

    _d = _durations("embedding_timeout")


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


class LLMServerLatency(_Model):
    """An LLM inference server (vLLM-class) whose TTFT and TPOT grow with its load.

    Prompts are prefilled one at a time, then the streams in decode share the server's token
    throughput.  A request waits for the prefill (first come, first served), which takes ``prefill_base``
    plus its input tokens at ``prefill_tokens_per_s`` and gives the first token; its output
    tokens are then decoded at ``min(max_stream_tokens_per_s, decode_tokens_per_s / n)`` per
    second with ``n`` streams decoding (``simulator.policies.llm_server``).  The provider's
    ``concurrency`` bounds requests in the server (prefill and decode), the rest queue or are
    refused; an error status comes back at the end of the prefill, and a reset fault resets
    the connection then too."""

    model: Literal["llm"] = Field(default="llm", description="Latency = prefill (FIFO, grows with input tokens) + decode shared by the active streams.")
    prefill_base: Distribution = Field(default=ZERO, description="Time of each prefill besides its tokens (scheduling, the first forward pass).")
    prefill_tokens_per_s: float = Field(gt=0, description="Prefill speed: a prompt of N input tokens takes prefill_base + N / prefill_tokens_per_s, one prompt at a time.")
    decode_tokens_per_s: float = Field(gt=0, description="Decode throughput of the whole server, shared by the streams decoding.")
    max_stream_tokens_per_s: float | None = Field(
        default=None, gt=0,
        description="Fastest decode of one stream (None = decode_tokens_per_s: a stream alone gets the whole server).",
    )
    default_output_tokens: Distribution = Field(default=ZERO, description="Output tokens when neither the request nor its class says.")
    default_input_tokens: Distribution = Field(default=ZERO, description="Input tokens when neither the request nor its class says.")


ProviderLatency = Annotated[Union[TokenLatency, PlainLatency, LLMServerLatency], Field(discriminator="model")]


class Provider(_Model):
    latency: ProviderLatency = Field(description="Latency model: tokens (ttft + tokens at a rate), plain, or llm (prefill, then a decode shared by the streams).")
    errors: dict[str, float] = Field(default_factory=dict, description="Error probability by status: '429', '500', '503'.")
    concurrency: int | None = Field(default=None, gt=0, description="Requests served at once (None = unlimited).")
    hang_probability: float = Field(
        default=0.0, ge=0, le=1,
        description="Probability that a call is accepted and never answered (a stuck response stream); only a "
        "deadline (fallback.attempt_timeout) or the client's timeout ends it.",
    )
    over_limit: Literal["queue", "reject"] = Field(default="queue", description="Beyond concurrency: queue, or reject with 429.")
    rpm: int | None = Field(
        default=None, gt=0,
        description="Requests per minute the provider admits over a sliding 60 s window; beyond it a 429 with a "
        "Retry-After of the whole seconds until a request would fit (simulator.policies.quota).",
    )
    tpm: int | None = Field(
        default=None, gt=0,
        description="Tokens per minute over the same window, counted as providers count them: input tokens plus the "
        "max_tokens asked for at admission, what the request used once it is done.",
    )
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
    retry_after_cap: float | None = Field(
        default=None, gt=0,
        description="none or sequential: on a provider's 429 whose Retry-After is no longer than this, wait that long "
        "and call the same provider again (None: a 429 falls back, or fails, as trigger_on says; so does a longer "
        "Retry-After).",
    )
    retry_after_waits: int = Field(default=1, ge=0, le=100, description="none or sequential: how many times one request waits on a Retry-After.")
    _d = _durations("attempt_timeout", "hedge_delay", "retry_after_cap")

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

    op_time: Distribution = Field(
        default=ZERO,
        description="Latency of one Redis round trip beyond the machine's own loopback one: the real engine holds "
        "each reply back by a draw of it (on top of the loopback round trip it pays), the simulator adds the "
        "profile's measured loopback time (redis_op_time) to it.",
    )
    pool_size: int = Field(default=10, gt=0, description="Client connection-pool size.")
    pool_timeout: float | None = Field(default=None, gt=0, description="How long to wait for a pooled connection (None = forever).")
    op_timeout: float | None = Field(
        default=None, gt=0,
        description="Timeout of each Redis command (one round trip: a GET, a SET, one SCAN call; the wait for a "
        "pooled connection included), as redis-py's socket_timeout: a semantic scan's commands each get the whole "
        "timeout.  A timeout counts as a cache miss (None = none, as the seed's semantic cache).",
    )
    faults: tuple[Fault, ...] = Field(
        default=(),
        description="Fault schedule: outage, reset and errors fail operations at once (refused or reset connections); "
        "stall and hang hold them until the window ends or they time out; slow multiplies each operation's time.",
    )
    _d = _durations("pool_timeout", "op_timeout")


class PromptCache(_Model):
    enabled: bool = Field(default=True, description="Whether opted-in chat requests use the prompt cache.")
    op_timeout: float | None = Field(default=2.0, gt=0, description="GET/SET timeout; a timeout counts as a miss.")
    _d = _durations("op_timeout")


# --------------------------------------------------------------------------- router (LiteLLM)

#: Error families a LiteLLM router's per-error policies name (``error_class`` in simulator.policies.cooldown).
ROUTER_ERROR_CLASSES = ("rate_limit", "timeout", "internal_server_error", "service_unavailable")
ROUTING_STRATEGIES = ("simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2", "cost-based-routing")


class Deployment(_Model):
    """One deployment of a model group: a provider endpoint (an entry of LiteLLM's model_list)."""

    provider: str = Field(description="Provider this deployment calls (a [providers] entry: its latency model, errors, concurrency and faults).")
    model: str | None = Field(
        default=None,
        description="The deployment's model as LiteLLM writes it (litellm_params.model, e.g. 'openai/gpt-4o'); "
        "`gwsim export litellm` writes 'openai/<provider>' when unset.",
    )
    weight: float | None = Field(default=None, gt=0, description="simple-shuffle: relative share of the group's calls (before rpm, then tpm, stand in).")
    rpm: int | None = Field(
        default=None, gt=0,
        description="Requests per minute: latency-, usage- and cost-based routing skip the deployment once a minute's "
        "calls reach it; simple-shuffle weighs by it without weights; also its max_parallel_requests when that is unset.",
    )
    tpm: int | None = Field(default=None, gt=0, description="Tokens per minute, as rpm (max_parallel_requests = tpm/1000*6 when neither it nor rpm is set).")
    max_parallel_requests: int | None = Field(
        default=None, gt=0,
        description="Calls at once; the router answers one more with a 429 at once, without waiting (None: rpm, else "
        "tpm/1000*6, else unbounded).",
    )
    input_cost_per_token: float | None = Field(default=None, ge=0, description="cost-based-routing: cost of an input token (unset or 0: LiteLLM's 5.0).")
    output_cost_per_token: float | None = Field(default=None, ge=0, description="cost-based-routing: cost of an output token (unset or 0: LiteLLM's 5.0).")
    cooldown_time: float | None = Field(
        default=None, ge=0,
        description="This deployment's cooldown, instead of the error's Retry-After and the router's cooldown_time.",
    )
    _d = _durations("cooldown_time")


class ModelGroup(_Model):
    """A model name clients ask for, served by several deployments."""

    deployments: tuple[Deployment, ...] = Field(min_length=1, description="The deployments serving this model group, in model_list order.")


def _error_class_keys(v: dict[str, int], extra: tuple[str, ...] = ()) -> dict[str, int]:
    for key in v:
        if key not in ROUTER_ERROR_CLASSES + extra:
            raise ValueError(f"expected error classes from {list(ROUTER_ERROR_CLASSES + extra)}, got {key!r}")
    return v


class Router(_Model):
    """A LiteLLM router in front of the providers, as simulator.policies.routing models it.

    Chat requests name a model group; the router picks one of its deployments (the routing
    strategy), cools failing ones down, retries, and falls back to other groups."""

    strategy: Literal["simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2", "cost-based-routing"] = Field(
        default="simple-shuffle", description="Routing strategy (LiteLLM's routing_strategy).",
    )
    groups: dict[str, ModelGroup] = Field(min_length=1, description="Model group name -> its deployments.")
    num_retries: int = Field(default=2, ge=0, le=100, description="Retries of a failed call within its group (while a deployment is not cooling down).")
    retry_after: Duration = Field(
        default=0.0, description="Shortest wait before a retry that backs off (a lone deployment, or none healthy: 0.5 s doubling, at most 8 s, plus up to 0.75 s jitter).",
    )
    retry_policy: dict[str, int] = Field(
        default_factory=dict,
        description="Retries per error class (rate_limit, timeout, internal_server_error, service_unavailable, default), "
        "instead of num_retries, decided on a request's first error; retries even when no deployment is healthy.",
    )
    timeout: float | None = Field(
        default=None, gt=0,
        description="Timeout of each call to a deployment (LiteLLM's timeout); the call fails with 408 (None: none).",
    )
    allowed_fails: int | None = Field(
        default=None, ge=0,
        description="Failures a deployment may have within cooldown_time before it cools down (None, or LiteLLM's "
        "default 3: its default rule, a 429 or more than half of 5+ calls in a minute failing).",
    )
    allowed_fails_policy: dict[str, int] = Field(
        default_factory=dict, description="Allowed failures per error class (rate_limit, timeout, internal_server_error, service_unavailable).",
    )
    cooldown_time: Duration = Field(default=5.0, description="How long a deployment cools down (unless it sets its own, or the error carries a Retry-After).")
    disable_cooldowns: bool = Field(default=False, description="Never cool a deployment down.")
    fallbacks: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Model group -> groups tried in turn when it fails after its retries.",
    )
    max_fallbacks: int = Field(default=5, ge=0, le=100, description="Deepest chain of fallback groups.")
    latency_buffer: float = Field(
        default=0.0, ge=0, description="latency-based-routing: deployments within this share of the fastest are drawn among (lowest_latency_buffer).",
    )
    latency_window: int = Field(
        default=10, gt=0, le=10_000, description="latency-based-routing: successes averaged per deployment (max_latency_list_size).",
    )

    _d = _durations("retry_after", "timeout", "cooldown_time")
    _p = field_validator("retry_policy")(classmethod(lambda cls, v: _error_class_keys(v, ("default",))))
    _a = field_validator("allowed_fails_policy")(classmethod(lambda cls, v: _error_class_keys(v)))

    @model_validator(mode="after")
    def _fallback_groups(self) -> "Router":
        for group, targets in self.fallbacks.items():
            for i, target in enumerate((group, *targets)):
                if target not in self.groups:
                    where = _join_loc(["router", "fallbacks"] + ([group] if i == 0 else [group, i - 1]))
                    raise ValueError(f"at {where}: expected a model group from {sorted(self.groups)}, got {target!r}")
        return self


# --------------------------------------------------------------------------- run settings


class Run(_Model):
    name: str = Field(default="scenario", description="Short name of the scenario.")
    description: str = Field(default="", description="What the scenario models and why.")
    duration: float = Field(gt=0, description="Simulated (or measured) time of arrivals.")
    warmup: float = Field(default=0.0, ge=0, description="Requests arriving before this are left out of statistics.")
    drain: float = Field(default=120.0, ge=0, description="Time after the last arrival for requests in flight to finish.")
    replications: int = Field(
        default=5, gt=0, le=MAX_REPLICATIONS, description="Independent replications (simulator).",
        json_schema_extra=only("simulator", "the real engine measures one run", warn=False),
    )
    seed: int = Field(default=1, ge=0, description="Root of the SeedSequence all random streams spawn from.")
    window: float = Field(
        default=10.0, gt=0, description="Width of time-series windows.",
        json_schema_extra=only("simulator", "`gwsim measure` writes no time series", warn=False),
    )
    _d = _durations("duration", "warmup", "drain", "window")

    @model_validator(mode="after")
    def _warmup(self) -> "Run":
        if self.warmup >= self.duration:
            raise ValueError(f"expected warmup shorter than duration, got warmup={self.warmup}s duration={self.duration}s")
        windows = (self.duration + self.drain) / self.window
        if windows > MAX_WINDOWS:
            raise ValueError(
                f"at run.window: expected at most {MAX_WINDOWS:,} time-series windows in run.duration + run.drain, "
                f"got {windows:.3g} (window={self.window:g}s)"
            )
        return self


class Calibration(_Model):
    """What ``gwsim calibrate fit`` may change: dotted parameter paths with their bounds."""

    free: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Free parameters: dotted path (as for --set, e.g. 'ai_service.per_item.value') -> [lo, hi] in the "
        "parameter's base unit (seconds for durations).",
        json_schema_extra=only("simulator", "read only by `gwsim calibrate fit`, which fits the simulator", warn=False),
    )

    @field_validator("free")
    @classmethod
    def _bounds(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for path, (lo, hi) in v.items():
            if not lo < hi:
                raise ValueError(f"expected lo < hi for free parameter {path!r}, got [{lo}, {hi}]")
        return v


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
    router: Router | None = Field(
        default=None,
        description="A LiteLLM router: chat classes name a model group (their model) served by its deployments; "
        "it replaces model selection and [fallback] on the chat endpoint.",
    )
    profile: str | None = Field(
        default=None,
        description="Machine profile TOML (relative to the scenario file; written by `gwsim calibrate profile`) whose "
        "measured overheads (gateway CPU, loopback round trip, dial/TLS, Redis op time) are added to this scenario's "
        "values when it is loaded for the simulator; 'none' disables it (the real engine pays them for real).",
        json_schema_extra=only("simulator", "the real engine pays the profiled overheads for real; `gwsim measure` loads the scenario without its profile", warn=False),
    )
    calibration: Calibration | None = Field(
        default=None, description="Parameters `gwsim calibrate fit` may adjust.",
        json_schema_extra=only("simulator", "read only by `gwsim calibrate fit`, which fits the simulator", warn=False),
    )
    machine: Machine = Field(
        default_factory=Machine,
        description="The machine a measured run shares with the load generator and emulators (usually filled from the "
        "profile): its cores, and those processes' CPU and wake-up costs.",
        json_schema_extra=only("simulator", MACHINE_REASON, warn=False),
    )

    @model_validator(mode="after")
    def _size(self) -> "Scenario":
        wl = self.workload
        if wl.mode == "open" and wl.arrivals is not None:
            peak = max([1.0, *(p.factor for p in wl.rate_profile)])
            requests = wl.arrivals.mean_rate * peak * self.run.duration
            if requests > MAX_REQUESTS_PER_REPLICATION:
                raise ValueError(
                    f"at workload.arrivals: expected at most {MAX_REQUESTS_PER_REPLICATION:g} requests per replication "
                    f"(rate x peak rate_profile factor x run.duration), got {requests:.3g}"
                )
        return self

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
            if ep.model_selection is False and ep.kind == "chat_completions" and self.router is None:
                if not (ms.candidates or any(c.provider for c in ep.classes)):
                    raise ValueError(f"endpoints.{ep_name}: without model selection a class provider or model_selection.candidates is needed")
        return self

    @model_validator(mode="after")
    def _trace_endpoints(self) -> "Scenario":
        if self.workload.trace is not None:
            from simulator.trace import check_scenario

            check_scenario(self)
        return self

    @model_validator(mode="after")
    def _router_references(self) -> "Scenario":
        router = self.router
        if router is None:
            return self
        for name, group in router.groups.items():
            for i, d in enumerate(group.deployments):
                if d.provider not in self.providers:
                    where = _join_loc(["router", "groups", name, "deployments", i, "provider"])
                    raise ValueError(f"at {where}: expected a provider from {sorted(self.providers)}, got {d.provider!r}")
                if self.providers[d.provider].breaker is not None:
                    where = _join_loc(["providers", d.provider, "breaker"])
                    raise ValueError(f"at {where}: expected no breaker on a provider a router deployment calls (its cooldowns stand in), got one")
        if "fallback" in self.model_fields_set:
            raise ValueError("at fallback: expected no [fallback] table with a [router] (its retries and fallbacks replace it), got one")
        for ep_name, ep in self.endpoints.items():
            if ep.kind != "chat_completions":
                continue
            if ep.model_selection:
                where = _join_loc(["endpoints", ep_name, "model_selection"])
                raise ValueError(f"at {where}: expected false with a [router] (the router picks the deployment), got true")
            for i, cls_ in enumerate(ep.classes):
                where = ["endpoints", ep_name, "classes", i]
                if cls_.model is None and len(router.groups) > 1:
                    raise ValueError(f"at {_join_loc(where + ['model'])}: expected a model group from {sorted(router.groups)} (the router has several), got nothing")
                if cls_.model is not None and cls_.model not in router.groups:
                    raise ValueError(f"at {_join_loc(where + ['model'])}: expected a model group from {sorted(router.groups)}, got {cls_.model!r}")
                if cls_.prompt_cache_opt_in and self.prompt_cache.enabled:
                    raise ValueError(f"at {_join_loc(where + ['prompt_cache_opt_in'])}: expected false with a [router] (gwsim models no prompt cache in front of it), got true")
        return self

    def router_group(self, klass: RequestClass) -> str:
        """The model group a chat class asks the router for."""
        assert self.router is not None
        return klass.model if klass.model is not None else next(iter(self.router.groups))

    def provider_order(self) -> list[str]:
        return list(self.model_selection.candidates) or list(self.providers)


# --------------------------------------------------------------------------- loading


# Limits on what a scenario file may hold.  They sit far above anything a real scenario
# needs; they exist so that junk gets one line instead of a crash deep inside the TOML
# parser, pydantic or numpy (recursion limit, int-to-str limit, C integer overflow).
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 32
_INT_BOUND = 2**63  # integers beyond 64 bits overflow numpy and SimPy downstream

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

# Type errors pydantic reports, as the thing a user should have written.
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "int_parsing_size": "an integer that fits in 64 bits",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "string_type": "a string",
    "string_unicode": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "list_type": "an array",
    "tuple_type": "an array",
    "iterable_type": "an array",
    "greater_than": "a number > {gt}",
    "greater_than_equal": "a number >= {ge}",
    "less_than": "a number < {lt}",
    "less_than_equal": "a number <= {le}",
    "literal_error": "{expected}",
    "none_required": "nothing",
}

# Model-level checks report on the table; these name the key they are really about.
_MODEL_MESSAGE_KEYS = (
    ("expected mix shares", "mix"),
    ("expected an arrivals table", "arrivals"),
    ("expected users", "users"),
    ("expected end after start", "end"),
    ("expected warmup shorter", "warmup"),
    ("expected unique class names", "classes"),
)
_NAMES_RE = re.compile(
    r"^(?P<path>[\w.]+) names (?P<what>endpoint|provider) (?P<name>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"), "
    r"expected one of (?P<options>\[.*\])$"
)
_CLASS_PROVIDER_RE = re.compile(
    r"^endpoints\.(?P<ep>.+?) class (?P<cls>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\") names provider "
    r"(?P<name>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"), expected one of (?P<options>\[.*\])$"
)
_NO_PROVIDER_RE = re.compile(r"^endpoints\.(?P<ep>.+?): without model selection a class provider or model_selection\.candidates is needed$")
_AT_PATH_RE = re.compile(r"^at (?P<path>(?:[\w.\[\]-]|\"(?:[^\"\\]|\\.)*\")+): (?P<msg>expected .*)$")
_TOML_WHERE_RE = re.compile(r"^(?P<msg>.*?) \(at (?P<where>line \d+, column \d+|end of document)\)$", re.S)


def _quote_key(key: str) -> str:
    """A key as TOML writes it in a dotted path: bare when it can be, else quoted and escaped."""
    if _BARE_KEY.match(key):
        return key
    out = []
    for ch in key:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _join_loc(parts: list[Any] | tuple[Any, ...]) -> str:
    text = ""
    for item in parts:
        if isinstance(item, int):
            text += f"[{item}]"
        else:
            text += ("." if text else "") + _quote_key(str(item))
    return text or "(top level)"


def _show(value: Any) -> str:
    """What was found, short and on one line (never the repr of a whole nested structure)."""
    if value is None:
        return "nothing"
    if isinstance(value, NotANumber):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 256 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        if not value:
            return "an empty table"
        keys = [_quote_key(str(k))[:30] for k in list(value)[:6]]
        more = ", ..." if len(value) > 6 else ""
        return f"a table with keys {', '.join(keys[:6])}{more}"
    if isinstance(value, (list, tuple)):
        n = len(value)
        return "an empty array" if n == 0 else f"an array of {n} item{'s' if n != 1 else ''}"
    return f"a {type(value).__name__}"


# ---- walking the schema along an error location


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional: the type a present value must have."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _union_members(tp: Any) -> list[Any] | None:
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [_unwrap(a) for a in get_args(tp) if a is not type(None)]
    return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tag_of(model: Any) -> tuple[str, str] | None:
    """(discriminator key, tag) of a union member: its Literal field with a default."""
    if not _is_model(model):
        return None
    for name, f in model.model_fields.items():
        if get_origin(f.annotation) is Literal and f.default in get_args(f.annotation):
            return (f.alias or name), f.default
    return None


def _field_type(model: Any, key: str) -> Any:
    for name, f in model.model_fields.items():
        if key == name or key == f.alias:
            return f.annotation
    return None


def _all_tags() -> set[str]:
    tags: set[str] = set()
    for union in (Distribution, Arrivals, ProviderLatency):
        for member in _union_members(union) or []:
            tag = _tag_of(member)
            if tag is not None:
                tags.add(tag[1])
    return tags


def _walk(loc: tuple[Any, ...], start: Any = None) -> tuple[list[Any], Any]:
    """The user-visible key path of a pydantic location, and the schema type it ends at.

    pydantic puts union tags ('exponential', 'poisson') and validator names into locations;
    they are not keys of the file and are left out.  The type is None when the walk loses
    track (the location leaves the schema, as for an unknown key).
    """
    tp: Any = Scenario if start is None else start
    parts: list[Any] = []
    tags = None
    for item in loc:
        if isinstance(item, str) and item.startswith(("function-", "tagged-union[")):
            continue
        if tp is not None:
            members = _union_members(tp)
            if members is not None:
                chosen = next((m for m in members if (_tag_of(m) or (None, None))[1] == item), None)
                if chosen is not None:
                    tp = chosen
                    continue  # the tag names the branch, it is not a key
                tp = None
            else:
                tp = _unwrap(tp)
        else:
            tags = _all_tags() if tags is None else tags
            if item in tags:
                continue
        parts.append(item)
        if tp is None:
            continue
        origin = get_origin(tp)
        if isinstance(item, int) and origin in (tuple, list):
            tp = get_args(tp)[0]
        elif origin is dict and isinstance(item, str):
            tp = get_args(tp)[1]
        elif _is_model(tp) and isinstance(item, str):
            tp = _field_type(tp, item)
        else:
            tp = None
    return parts, tp


def _format_loc(loc: tuple[Any, ...]) -> str:
    return _join_loc(_walk(tuple(loc))[0])


def _model_keys(tp: Any) -> list[str]:
    tp = _unwrap(tp) if tp is not None else None
    if not _is_model(tp):
        return []
    return [f.alias or name for name, f in tp.model_fields.items()]


def _is_distribution(tp: Any) -> bool:
    members = _union_members(tp) if tp is not None else None
    return bool(members) and all((_tag_of(m) or ("", ""))[0] == "dist" for m in members)


def _class_index(data: Any, ep: str, cls_repr: str) -> str:
    """``classes[i]`` for a class named in a model-level message (the index when it can be found)."""
    try:
        name = ast.literal_eval(cls_repr)
        for i, c in enumerate(data["endpoints"][ep]["classes"]):
            if c.get("name") == name:
                return f"classes[{i}]"
    except Exception:  # the raw data may be any shape; the plain key is good enough then
        pass
    return "classes"


def _explain_value_error(msg: str, parts: list[Any], found: Any) -> tuple[str, str]:
    """(key path, 'expected ..., got ...') for a message written by one of our validators."""
    path = _join_loc(parts)
    m = _NAMES_RE.match(msg)
    if m:
        article = "an" if m["what"][0] in "aeiou" else "a"
        return m["path"], f"expected {article} {m['what']} from {m['options']}, got unknown {m['what']} {m['name']}"
    m = _CLASS_PROVIDER_RE.match(msg)
    if m:
        where = f"endpoints.{m['ep']}.{_class_index(found, m['ep'], m['cls'])}.provider"
        return where, f"expected a provider from {m['options']}, got unknown provider {m['name']}"
    m = _NO_PROVIDER_RE.match(msg)
    if m:
        return (
            f"endpoints.{m['ep']}.classes",
            "expected a provider on each class or model_selection.candidates when model_selection = false, got neither",
        )
    m = _AT_PATH_RE.match(msg)
    if m:  # a model-level check that names the key it is about
        return m["path"], m["msg"]
    for prefix, key in _MODEL_MESSAGE_KEYS:
        if msg.startswith(prefix):
            path = _join_loc([*parts, key])
            found = found.get(key) if isinstance(found, dict) else None
            break
    if msg.startswith("expected mix shares") and isinstance(found, dict):
        negative = [(k, v) for k, v in found.items() if isinstance(v, (int, float)) and v < 0]
        if negative:  # the sum may well be 1; the negative share is the thing to fix
            k, v = negative[0]
            return _join_loc([*parts, "mix", k]), f"expected a share >= 0, got {_show(v)}"
    if msg.startswith("expected") and ", got" in msg:
        return path, msg
    if msg.startswith("expected"):
        return path, f"{msg}, got {_show(found)}"
    return path, f"expected a valid value ({msg}), got {_show(found)}"


#: Problems named after the first in an error line ("and 7 more problems: a: ...; b: ...; ...").
SHOWN_PROBLEMS = 5


def validation_error_line(source: str, exc: ValidationError, blame: tuple[str, ...] | list[str] = ()) -> str:
    """One line: file (or the ``--set`` that caused it), key path, what was expected, what was
    found; then the other problems, the first ``SHOWN_PROBLEMS`` of them by path and text.

    ``blame``: command-line items such as ``--set run.duration=abc``; a problem at (or under, or
    above) the key one of them sets is named after it instead of the file."""
    errors = exc.errors(include_url=False)
    # pydantic adds "too short" for an array whose only items failed: noise, not a problem
    locs = [tuple(e.get("loc", ())) for e in errors]
    errors = [
        e
        for e, loc in zip(errors, locs)
        if not (e.get("type") == "too_short" and any(len(o) > len(loc) and o[: len(loc)] == loc for o in locs))
    ] or errors
    problems: list[tuple[str, str]] = []
    for err in errors:
        try:
            problem = _explain_error(err)
        except Exception:  # noqa: BLE001 - a secondary problem is shown as pydantic says it
            problem = (_join_loc(tuple(err.get("loc", ()))), " ".join(str(err.get("msg", "")).split()))
        if problem[0] not in (p for p, _ in problems):  # a union reports each of its members
            problems.append(problem)
    (path, text), rest = problems[0], problems[1:]
    suffix = ""
    if rest:
        shown = "; ".join(f"{p}: {t}" for p, t in rest[:SHOWN_PROBLEMS])
        left = len(rest) - SHOWN_PROBLEMS
        suffix = (f" (and {len(rest)} more problem{'s' if len(rest) > 1 else ''}: {shown}"
                  f"{f'; and {left} more' if left > 0 else ''})")
    return f"{blamed(source, path, blame)}: {path}: {text}{suffix}"


def blamed(source: str, path: str, blame: tuple[str, ...] | list[str]) -> str:
    """``source``, or the last ``--set KEY=VALUE`` (of ``blame``) whose key is ``path``, lies
    under it or above it: the command line put the bad value there, not the file.  A problem
    beside a key the command line set (warmup against a --set duration) names both."""
    keyed = []
    for item in blame:
        keys = [k.strip() for k in item.partition(" ")[2].partition("=")[0].strip().split(".")]
        # written as the error paths are: classes.0.provider is classes[0].provider
        keyed.append((_join_loc([int(k) if k.isdigit() else k for k in keys]) if all(keys) else "", item))
    for key, item in reversed(keyed):
        if key and (path == key or path.startswith((key + ".", key + "[")) or key.startswith(path + ".")):
            return item
    parent = path.rpartition(".")[0]
    beside = [item for key, item in keyed if parent and key.rpartition(".")[0] == parent]
    return f"{source} with {beside[-1]}" if beside else source


def _explain_error(err: Any) -> tuple[str, str]:
    """(key path, 'expected ..., got ...') for one pydantic error."""
    loc = tuple(err.get("loc", ()))
    parts, tp = _walk(loc)
    kind = err.get("type", "")
    ctx = {k: (f"{v:g}" if isinstance(v, float) else v) for k, v in (err.get("ctx") or {}).items()}
    found = err.get("input")
    msg = " ".join(str(err.get("msg", "")).split()).removeprefix("Value error, ")
    path = _join_loc(parts)
    if kind == "extra_forbidden":
        key = str(parts[-1]) if parts else "?"
        keys = _model_keys(_walk(loc[:-1])[1])
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        if close:
            expected = f"a known key (did you mean {close[0]!r}?)"
        elif keys:
            expected = f"one of the keys {', '.join(keys)}"
        else:
            expected = "a key documented in `gwsim schema`"
        shown = repr(key) if _BARE_KEY.match(key) else _quote_key(key)  # quoted and escaped either way
        text = f"expected {expected}, got unknown key {shown}"
    elif kind == "missing":
        text = "expected a value (the key is required), got nothing"
    elif kind == "union_tag_invalid":
        disc = str(ctx.get("discriminator", "")).strip("'")
        path = _join_loc([*parts, disc]) if disc else path
        text = f"expected one of {ctx.get('expected_tags', '?')}, got {_show(ctx.get('tag'))}"
    elif kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "")).strip("'")
        tags = [t[1] for t in map(_tag_of, _union_members(tp) or []) if t is not None]
        choices = f" ({', '.join(repr(t) for t in tags)})" if tags else ""
        text = f"expected a table with a {disc!r} key{choices}, got {_show(found)}"
    elif kind == "value_error" or kind == "assertion_error":
        path, text = _explain_value_error(msg, parts, found)
    elif kind in ("model_attributes_type", "model_type", "dict_type") and _is_distribution(tp):
        text = f"expected a distribution table such as {{dist = \"exponential\", mean = \"1s\"}}, got {_show(found)}"
    elif kind in ("too_short", "too_long"):
        n = ctx.get("min_length" if kind == "too_short" else "max_length", "?")
        bound = "at least" if kind == "too_short" else "at most"
        text = f"expected {bound} {n} item{'' if n == 1 else 's'}, got {_show(found)}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and _unwrap(tp) is int:
        bound = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}", "less_than": "< {lt}", "less_than_equal": "<= {le}"}[kind]
        text = f"expected an integer {bound.format(**ctx)}, got {_show(found)}"
    elif kind in _EXPECTED:
        try:
            expected = _EXPECTED[kind].format(**ctx)
        except (KeyError, IndexError, ValueError):
            expected = _EXPECTED[kind].split(" {")[0]
        text = f"expected {expected}, got {_show(found)}"
    elif msg.startswith("Input should be "):
        text = f"expected {msg.removeprefix('Input should be ')}, got {_show(found)}"
    else:
        text = f"expected a valid value ({msg}), got {_show(found)}"
    return path, text


def _check_sane(data: Any, source: str, base: tuple[Any, ...] = ()) -> None:
    """Reject what would crash code below the schema: deep nesting, non-finite or >64-bit numbers.

    Iterative, so that a file nesting tables 100,000 deep costs nothing and finds its answer.
    NaN and infinity have no meaning anywhere in a scenario (durations and rates are strings;
    unbounded is written by leaving a key out), so they are refused wherever they appear.
    """
    stack: list[tuple[tuple[Any, ...], Any]] = [(base, data)]
    while stack:
        loc, value = stack.pop()
        if len(loc) - len(base) > MAX_DEPTH:
            shown = _join_loc(loc[: len(base) + 6]) + "..."  # the top of the path is what locates it
            raise ScenarioError(f"{source}: {shown}: expected tables and arrays nested at most {MAX_DEPTH} deep, got deeper nesting")
        if isinstance(value, dict):
            stack.extend((loc + (k,), v) for k, v in reversed(list(value.items())))
        elif isinstance(value, (list, tuple)):
            stack.extend((loc + (i,), v) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if not -_INT_BOUND <= value < _INT_BOUND:
                raise ScenarioError(f"{source}: {_join_loc(loc)}: expected an integer that fits in 64 bits, got {_show(value)}")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ScenarioError(f"{source}: {_join_loc(loc)}: expected a finite number, got {value!r}")


def parse_set_value(text: str) -> Any:
    """A ``--set`` value: TOML literal when it parses as one, else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides to raw scenario data (a deep copy is returned).

    A bad override is answered as ``--set ITEM: key.path: expected ..., got ...``.
    """
    import copy

    _check_sane(data, source)  # deepcopy recurses: refuse absurd nesting before it
    out = copy.deepcopy(data)
    for item in overrides:
        where = f"--set {' '.join(str(item).split())}"
        if "=" not in item:
            raise ScenarioError(f"{where}: expected key.path=value, got no '='")
        path, _, raw = item.partition("=")
        if "\n" in raw or "\r" in raw:
            raise ScenarioError(f"{where}: expected a value on one line, got a line break")
        keys = [k.strip() for k in path.strip().split(".")]
        if not all(keys):
            raise ScenarioError(f"{where}: expected a dotted key path such as gateway.cpu_workers, got {path!r}")
        value = parse_set_value(raw)
        _check_sane(value, where, tuple(keys))
        node: Any = out
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            if isinstance(node, list):
                try:
                    index = int(key)
                    if not -len(node) <= index < len(node):
                        raise IndexError
                except (ValueError, IndexError):
                    raise ScenarioError(
                        f"{where}: {_join_loc(keys[: i + 1])}: expected an index from 0 to {len(node) - 1}, got {key!r}"
                    ) from None
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[key] = value
                else:
                    node = node.setdefault(key, {})
            else:
                raise ScenarioError(f"{where}: {_join_loc(keys[:i])}: expected a table, got {_show(node)}")
    return out


def read_scenario_data(path: str | Path) -> dict[str, Any]:
    """The raw TOML of a scenario file, or a ``ScenarioError`` with one line saying what is wrong."""
    path = Path(path)
    source = str(path)
    try:
        if not path.exists():
            raise ScenarioError(f"{source}: expected a scenario file, got nothing at that path")
        if path.is_dir():
            raise ScenarioError(f"{source}: expected a scenario file, got a directory")
        if not path.is_file():
            # a FIFO or /dev/zero would block or never end
            raise ScenarioError(f"{source}: expected a regular scenario file, got a device, FIFO or socket")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScenarioError(f"{source}: expected a scenario file of at most {MAX_FILE_BYTES} bytes, got {size} bytes")
        raw = path.read_bytes()
    except OSError as exc:
        reason = (exc.strerror or exc.__class__.__name__).lower()
        raise ScenarioError(f"{source}: expected a readable scenario file, got {reason}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark, as some Windows editors write
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ScenarioError(
            f"{source}: line {line}: expected UTF-8 TOML text, got byte 0x{raw[exc.start]:02x} at offset {exc.start}"
        ) from None
    if not text.strip():
        raise ScenarioError(f"{source}: expected a TOML scenario, got an empty file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = " ".join(str(exc).split())
        m = _TOML_WHERE_RE.match(message)
        if m:
            where = "end of file" if m["where"] == "end of document" else m["where"]
            raise ScenarioError(f"{source}: {where}: expected valid TOML, got a syntax error ({m['msg']})") from None
        raise ScenarioError(f"{source}: expected valid TOML, got a syntax error ({message})") from None
    except RecursionError:
        raise ScenarioError(f"{source}: expected tables and arrays nested at most {MAX_DEPTH} deep, got nesting too deep to parse") from None
    except ValueError:
        # int() refuses to read integers of more than 4300 digits
        long_int = re.search(r"\d{4301,}", text)
        where = f"line {text.count(chr(10), 0, long_int.start()) + 1}: " if long_int else ""
        raise ScenarioError(f"{source}: {where}expected an integer that fits in 64 bits, got one of more than 4300 digits") from None
    if not data:
        raise ScenarioError(f"{source}: expected tables such as [run] and [workload], got only comments")
    _check_sane(data, source)
    return data


def scenario_from_data(data: dict[str, Any], source: str, base_dir: str | Path = ".", blame: tuple[str, ...] | list[str] = ()) -> Scenario:
    """Validate raw scenario data; a ``ScenarioError`` with one line on anything wrong (named
    after the ``blame`` item, e.g. ``--set run.duration=abc``, that set the bad key)."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: (top level): expected a table, got {_show(data)}")
    _check_sane(data, source)
    try:
        return Scenario.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        raise ScenarioError(validation_error_line(source, exc, blame)) from None
    except (OverflowError, RecursionError, MemoryError) as exc:
        raise ScenarioError(f"{source}: expected values of sane size, got {exc.__class__.__name__} while validating") from None


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read, override and validate a scenario; raise ``ScenarioError`` with one line on bad input.

    A top-level ``profile`` (machine profile TOML) is merged into the raw data after the
    overrides, so ``--set profile=none`` switches it off.
    """
    path = Path(path)
    data = read_scenario_data(path)
    data = apply_overrides(data, overrides, str(path))
    data = apply_profile(data, path.parent, str(path))
    return scenario_from_data(data, str(path), path.parent, [f"--set {' '.join(str(o).split())}" for o in overrides])


# --------------------------------------------------------------------------- machine profile

#: Machine-profile keys (``[machine]`` table, durations) and what they add to.  The real
#: engine pays these overheads for real (Python CPU, loopback, real Redis); the simulator
#: only sees them through the profile.
PROFILE_KEYS = (
    "gateway_cpu_per_request",  # gateway Python CPU per request beyond the scenario's cpu_per_request
    "gateway_cpu_per_hop",  # per upstream call (aiohttp client encode/decode)
    "hop_rtt",  # loopback round trip + emulator overhead, per upstream call
    "redis_op_time",  # one real Redis round trip
    "dial_time",  # loopback TCP connect
    "tls_handshake_time",  # TLS handshake on loopback (self-signed, real crypto)
)
#: Profile keys that are not added to a scenario value but become its ``[machine]`` table
#: (cores, background load, per-process CPU costs, wall-time overhead distributions).
MACHINE_KEYS = tuple(Machine.model_fields)


def _shift_dist(raw: Any, add: float, source: str, where: str) -> Any:
    """Raw distribution table ``raw`` (or None) plus a constant ``add`` seconds."""
    from simulator.units import parse_quantity

    if add == 0:
        return raw
    if raw is None:
        return {"dist": "deterministic", "value": add}
    if not isinstance(raw, dict):
        return raw  # let validation report it
    kind = raw.get("dist")
    out = dict(raw)
    try:
        if kind == "deterministic":
            out["value"] = parse_quantity(raw["value"]) + add
            return out
        if kind == "uniform":
            out["low"] = parse_quantity(raw["low"]) + add
            out["high"] = parse_quantity(raw["high"]) + add
            return out
        if kind == "mixture":
            out["components"] = [dict(c, of=_shift_dist(c.get("of"), add, source, where)) for c in raw.get("components", [])]
            return out
    except (KeyError, UnitError, TypeError, ValueError, AttributeError):
        return raw  # malformed: left for validation to report in one line
    # The other families have no shift parameter; the value is left alone (and said so)
    # rather than reshaped, so the gap stays visible in `gwsim calibrate check`.
    import logging

    logging.getLogger(__name__).warning("%s: profile overhead not added to %s (%s distribution)", source, where, kind)
    return raw


def read_profile(path: str | Path) -> dict[str, float]:
    """The ``[machine]`` table of a profile TOML, in seconds."""
    path = Path(path)
    try:
        found = path.is_file()
    except OSError:  # e.g. a name too long for the file system
        found = False
    if not found:
        raise ScenarioError(f"{path}: expected a machine profile TOML, found nothing at that path")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError, RecursionError) as exc:
        raise ScenarioError(f"{path}: malformed profile TOML: {exc}") from None
    machine = data.get("machine")
    if not isinstance(machine, dict):
        raise ScenarioError(f"{path}: expected a [machine] table, found none")
    out: dict[str, Any] = {}
    for key, value in machine.items():
        if key in MACHINE_KEYS:
            out[key] = _profile_files(value, path.parent)
            continue
        if key not in PROFILE_KEYS:
            raise ScenarioError(f"{path}: machine.{key}: unknown key (expected one of {list(PROFILE_KEYS + MACHINE_KEYS)})")
        try:
            out[key] = _dur(value)
        except ValueError as exc:
            raise ScenarioError(f"{path}: machine.{key}: {exc}") from None
    return out


def _profile_files(value: Any, base: Path) -> Any:
    """A machine value with its empirical sample files made relative to the profile, not the scenario."""
    if isinstance(value, dict):
        out = {k: _profile_files(v, base) for k, v in value.items()}
        if value.get("dist") == "empirical" and isinstance(value.get("file"), str) and not Path(value["file"]).is_absolute():
            out["file"] = str((base / value["file"]).resolve())
        return out
    if isinstance(value, list):
        return [_profile_files(v, base) for v in value]
    return value


def apply_profile(data: dict[str, Any], base_dir: str | Path, source: str) -> dict[str, Any]:
    """Raw scenario data with the machine profile's overheads added (a copy; unchanged without a profile)."""
    import copy

    name = data.get("profile")
    if not isinstance(name, str) or not name or name.lower() == "none":
        return data  # absent, or a wrong type that validation reports in one line
    if not name.isprintable():  # a line break or control character cannot be shown on one line
        raise ScenarioError(f"{source}: profile: expected a file name, got {name[:60]!r}")
    ref = Path(name)
    try:
        machine = read_profile(ref if ref.is_absolute() else Path(base_dir) / ref)
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: profile: {exc}") from None
    out = copy.deepcopy(data)

    def table(*keys: str) -> dict[str, Any]:
        node = out
        for k in keys:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                return {}  # a wrong type here: nothing to shift, validation reports it in one line
        return node

    own = out.get("machine")
    given = {k: v for k, v in machine.items() if k in MACHINE_KEYS}
    if given:
        # the scenario's own [machine] values (and --set machine.x=...) win over the profile's
        out["machine"] = {**given, **own} if isinstance(own, dict) else given if own is None else own

    def shift(node: dict[str, Any], field: str, key: str, where: str) -> None:
        node[field] = _shift_dist(node.get(field), machine.get(key, 0.0), source, where)
        if node[field] is None:
            del node[field]

    gw = table("gateway")
    shift(gw, "cpu_per_request", "gateway_cpu_per_request", "gateway.cpu_per_request")
    shift(gw, "cpu_per_hop", "gateway_cpu_per_hop", "gateway.cpu_per_hop")
    rd = table("redis")
    shift(rd, "op_time", "redis_op_time", "redis.op_time")
    shift(table("ai_service"), "network_rtt", "hop_rtt", "ai_service.network_rtt")
    sem = table("model_selection", "semantic_cache")
    if "embedding_time" in sem:  # only where the scenario calls an embedding API
        shift(sem, "embedding_time", "hop_rtt", "model_selection.semantic_cache.embedding_time")

    def pool(node: dict[str, Any], where: str) -> None:
        shift(node, "dial_time", "dial_time", where + ".dial_time")
        if node.get("tls"):
            shift(node, "tls_handshake_time", "tls_handshake_time", where + ".tls_handshake_time")

    pool(table("model_selection", "ai_client", "pool"), "model_selection.ai_client.pool")
    providers = out.get("providers")
    for pname, prov in (providers if isinstance(providers, dict) else {}).items():
        if isinstance(prov, dict):
            shift(prov, "network_rtt", "hop_rtt", f"providers.{pname}.network_rtt")
            if "pool" not in prov:  # keep the provider pool's own default (100 idle), not ConnectionPool's
                prov["pool"] = {"max_idle_per_host": 100}
            if isinstance(prov["pool"], dict):
                pool(prov["pool"], f"providers.{pname}.pool")
    return out


def json_schema() -> dict[str, Any]:
    return Scenario.model_json_schema(by_alias=True)
