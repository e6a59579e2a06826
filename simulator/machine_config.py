"""The ``[machine]`` section of a scenario: the machine the real engine runs on.

A measured run puts the load generator, the gateway and the emulated upstreams on one
machine, as three processes that share its cores with whatever else runs there.  Their
own costs (Python CPU per request and per upstream call, loopback and timer wake-up
delays) are not in the scenario: ``gwsim calibrate profile`` measures them and writes a
profile whose ``[machine]`` table ends up here.  With ``cores > 0`` the simulator runs
every piece of that CPU work on a processor-sharing model of the machine's cores, so work
slows down when more threads are runnable than there are cores; without it (the default)
none of this is modelled and a scenario describes the gateway alone.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from simulator.distributions import ZERO, Distribution
from simulator.executors import only

#: Why the real engine ignores every field here: it runs on the machine these fields describe.
MACHINE_REASON = "the real engine runs on the machine itself and pays these costs for real"
_SIMULATOR_ONLY = only("simulator", MACHINE_REASON, warn=False)


class Machine(BaseModel):
    """Costs of the machine that runs the real engine (filled from a calibration profile)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    cores: int = Field(
        default=0, ge=0,
        description="Cores shared by the load generator, the gateway and the emulators (0 = no machine model: "
        "the gateway's own cpu_workers only, and the costs below are plain delays).",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    background: float = Field(
        default=0.0, ge=0, allow_inf_nan=False,
        description="Runnable threads of other work on the machine, on average (they take their share of the cores).",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    background_trace: tuple[tuple[float, float], ...] = Field(
        default=(),
        description="Other work as it varied during a measurement: (run time in seconds, runnable sessions) steps, "
        "each holding until the next; before the first, `background` (set by `gwsim calibrate check`).",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    gil: bool = Field(
        default=True,
        description="The gateway's CPU workers are threads of one Python process: they stall while its event loop "
        "runs Python (holds the GIL).",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    gateway_loop_shared: bool = Field(
        default=False,
        description="The gateway's event loop interleaves the requests it holds (each request's CPU is many short steps "
        "between awaits, taken round-robin): processor sharing among them, rather than each CPU slice in turn "
        "(LiteLLM's proxy; `gwsim calibrate profile --gateway litellm` sets it).",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    gateway_cpu_before_call: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="The share of the gateway's CPU per request (gateway_cpu) and per upstream call (gateway_hop_cpu) spent "
        "before the call leaves (parsing, routing, encoding); the rest is spent on the reply. At a rate where requests "
        "overlap, the split decides how much one request's reply work delays the next request's start "
        "(`gwsim calibrate profile --gateway litellm` measures it from when the provider saw each call).",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    gateway_replies_first: bool = Field(
        default=False,
        description="On a shared event loop (gateway_loop_shared), the work on a reply (the share of the gateway's CPU "
        "after its upstream call) runs ahead of the other requests' work, which waits meanwhile, instead of sharing the "
        "loop with it. LiteLLM's proxy handles a reply in a few long steps and a new request in many short ones: at "
        "22 req/s a reply that came back while the next request was being parsed took 1.5 ms longer, the next request "
        "4.0 ms (`gwsim calibrate profile --gateway litellm` sets it).",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    gateway_first_step: Distribution = Field(
        default=ZERO,
        description="On a shared event loop (gateway_loop_shared), the CPU of a new request's first step: it runs to its "
        "end ahead of all other work on the loop, a reply's included, one request at a time (asyncio runs each ready "
        "callback to its next await; LiteLLM's first step on a new request is long). It is part of the request's work "
        "before its call (its parsing, then its first call's encoding), not added to it. Zero: no such step "
        "(`gwsim calibrate profile --gateway litellm` measures it).",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    speed: float = Field(
        default=1.0, gt=0,
        description="How fast the cores run against the profile's minutes: every CPU cost of this table is divided by it "
        "(1.15: 15 % faster). A VM's speed drifts by that much from minute to minute; `gwsim calibrate check --speed "
        "measured` sets it from the speed probe during each measurement (a diagnostic, not a prediction).",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    client_cpu: Distribution = Field(default=ZERO, description="Load generator CPU per request (send and receive; one thread).", json_schema_extra=_SIMULATOR_ONLY)
    client_send_cpu: Distribution | None = Field(
        default=None,
        description="The part of client_cpu spent sending a request (building and writing it), before it leaves; "
        "the rest of client_cpu's first half is spent reading the whole reply. Unset: half of client_cpu, all before the send.",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    gateway_cpu: Distribution = Field(default=ZERO, description="Gateway event-loop CPU per request (parse, route, reply; one thread).", json_schema_extra=_SIMULATOR_ONLY)
    gateway_hop_cpu: Distribution = Field(default=ZERO, description="Gateway event-loop CPU per upstream call (encode, decode).", json_schema_extra=_SIMULATOR_ONLY)
    upstream_cpu: Distribution = Field(default=ZERO, description="Emulator CPU per upstream call (one thread for all emulators).", json_schema_extra=_SIMULATOR_ONLY)
    request_latency: Distribution = Field(
        default=ZERO, description="Wall time per request beyond that CPU: loopback between client and gateway, wake-ups.",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    timer_lateness: Distribution = Field(
        default=ZERO,
        description="How late an emulator's timer fires (event-loop timers count whole milliseconds): added to the AI "
        "service's batch timeout and batch time and to each provider call.",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    hop_latency: Distribution = Field(
        default=ZERO,
        description="Wall time per upstream call beyond that CPU and the emulated service time: loopback, timer lateness.",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    redis_cpu: Distribution = Field(
        default=ZERO,
        description="Gateway event-loop CPU per Redis round trip (the Python client encoding the command and parsing the "
        "reply); the pooled connection stays held while the reply waits for the loop.",
        json_schema_extra=_SIMULATOR_ONLY,
    )
    scan_entry_cpu: Distribution = Field(
        default=ZERO,
        description="Gateway event-loop CPU per entry a semantic-cache scan compares (decoding its stored vector, the "
        "cosine), beyond the entry's round trip.",
        json_schema_extra=_SIMULATOR_ONLY,
    )

    @property
    def active(self) -> bool:
        """Whether anything here costs time (a default section is skipped entirely)."""
        return self.cores > 0 or any(
            d != ZERO
            for d in (self.client_cpu, self.client_send_cpu or ZERO, self.gateway_cpu, self.gateway_hop_cpu, self.upstream_cpu, self.request_latency,
                      self.hop_latency, self.timer_lateness, self.redis_cpu, self.scan_entry_cpu)
        )
