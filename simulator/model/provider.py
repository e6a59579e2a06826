"""An LLM provider as the gateway sees it: time to first token, then tokens at a rate;
error statuses with their probabilities; now and then a call that never answers; a
concurrency limit that queues or rejects; and a fault schedule (brownout, error storm,
outage, hang, connection reset).
"""

from __future__ import annotations

import math

import simpy

from simulator.distributions import Sampler
from simulator.model.context import Failure
from simulator.model.flow import Stuck
from simulator.model.servers import Servers
from simulator.model.slots import Slots
from simulator.scenario import PlainLatency, Provider, active_fault


class SimProvider:
    def __init__(
        self, env: simpy.Environment, name: str, cfg: Provider, rng, output_tokens: dict, abandonable: bool = True
    ) -> None:
        self.env = env
        self.name = name
        self.cfg = cfg
        self.rng = rng
        # A concurrency limit: booked FCFS servers (no events for the queue) unless a call can
        # be abandoned part way (a deadline, a cancelled race loser), which hands its slot back.
        self.servers = Servers(cfg.concurrency) if cfg.concurrency and not abandonable else None
        self.slots = Slots(env, cfg.concurrency) if cfg.concurrency and abandonable else None
        lat = cfg.latency
        if isinstance(lat, PlainLatency):
            self._plain = Sampler(lat.time, rng)
            self._ttft = None
        else:
            self._plain = None
            self._ttft = Sampler(lat.ttft, rng)
            self._tokens_per_s = lat.tokens_per_s
            self._default_tokens = Sampler(lat.default_output_tokens, rng)
        self._tokens = {key: Sampler(dist, rng) for key, dist in output_tokens.items()}
        self.rtt = Sampler(cfg.network_rtt, rng)
        self._hang_p = cfg.hang_probability
        self._error_table = [(float(p), int(status)) for status, p in sorted(cfg.errors.items())]
        self._rejects = cfg.over_limit == "reject" and bool(cfg.concurrency)
        self.stuck = Stuck(env)
        self.in_flight = 0
        self.calls = 0
        self.rejected = 0
        #: every call is the same: a round trip and a service time, nothing refused, failed,
        #: hung or abandoned (``place`` then stands in for ``call_at``)
        self.uniform = (
            not cfg.faults and not self._error_table and not self._hang_p and not self._rejects
            and self._plain is not None and self.slots is None
        )

    def _service_time(self, class_key, tokens: float = -1) -> float:
        """``tokens``: the request's own output tokens (a trace's), or -1 to draw them."""
        if self._plain is not None:
            return self._plain()
        if tokens < 0:
            tokens_sampler = self._tokens.get(class_key)
            tokens = tokens_sampler() if tokens_sampler is not None else self._default_tokens()
        return self._ttft() + max(tokens, 0.0) / self._tokens_per_s

    def _draw_error(self) -> int:
        if not self._error_table:
            return 0
        u = self.rng.random()
        acc = 0.0
        for p, status in self._error_table:
            acc += p
            if u < acc:
                return status
        return 0

    def _full(self, now: float) -> bool:
        if self.servers is not None:
            return self.servers.next_start(now) > now
        return self.slots is not None and self.slots.count >= self.slots.capacity

    def _refused(self, at: float, fault, rtt: float) -> tuple[float, Failure] | None:
        """A call refused outright: an outage (at once) or the limit full with ``reject`` (a 429
        after the round trip); when it comes back and the failure, else None."""
        if fault is not None and fault.kind == "outage":
            return at, Failure("connect", 0)
        if self.cfg.over_limit == "reject" and self._full(at):
            self.rejected += 1
            return at + rtt, Failure("429", 429)
        return None

    def _serve(self, ctx, class_key, at: float, start: float, fault, rtt: float) -> tuple[float, Failure | None]:
        """The call asked for at ``at`` is served from ``start``: when its answer is back (inf:
        never) and the failure it brings.  Books the limit's server when there is one."""
        if fault is None and self.cfg.faults:
            fault = active_fault(self.cfg.faults, start)
        servers = self.servers
        if (fault is not None and fault.kind == "hang") or (self._hang_p and self.rng.random() < self._hang_p):
            # never answers (a hung provider, or one stuck stream): only a deadline ends it
            if servers is not None:
                servers.book(at, start, math.inf)
            return math.inf, None
        service = self._service_time(class_key, ctx.output_tokens)
        status = self._draw_error()
        failure = None
        if fault is not None:
            if fault.kind == "slow":
                service *= fault.latency_factor
            elif fault.kind == "errors" and self.rng.random() < fault.error_rate:
                status = fault.error_status
            elif fault.kind == "reset":
                service /= 2
                failure = Failure("reset", 0)
        if status and failure is None:
            # errors come back about when the first token would have
            service = min(service, self._ttft() if self._ttft is not None else service)
            failure = Failure(str(status), status)
        held = rtt + service
        return (servers.book(at, start, held) if servers is not None else start + held), failure

    def call_at(self, ctx, class_key, at: float) -> tuple[float, float, Failure | None]:
        """Place a call going out at ``at``: now, or later when nothing here can observe the
        gap (no concurrency limit).  Only for a provider without ``slots`` (its calls are never
        abandoned).  Returns (start, end, failure): served from ``start``, answered at ``end``
        (inf: never).  The call is in flight until the caller calls ``answered``."""
        self.calls += 1
        self.in_flight += 1
        faults = self.cfg.faults
        fault = active_fault(faults, at) if faults else None
        rtt = self.rtt()
        if fault is not None or self._rejects:
            refused = self._refused(at, fault, rtt)
            if refused is not None:
                return refused[0], refused[0], refused[1]
        start = self.servers.next_start(at) if self.servers is not None else at
        ctx.provider_queue_s += start - at
        end, failure = self._serve(ctx, class_key, at, start, fault, rtt)
        return start, end, failure

    def place(self, ctx, at: float) -> tuple[float, float]:
        """``call_at`` for a ``uniform`` provider: (start, end) of a call going out at ``at``
        (the same draws in the same order, so the same numbers)."""
        self.calls += 1
        self.in_flight += 1
        held = self.rtt() + self._plain()
        servers = self.servers
        if servers is None:
            return at, at + held
        start, end = servers.take(at, held)
        ctx.provider_queue_s += start - at
        return start, end

    def answered(self, ctx, start: float, end: float) -> None:
        self.in_flight -= 1
        ctx.provider_s += end - start

    def in_service(self, now: float) -> int:
        """Calls being served now (``in_flight`` also counts those queued at a booked limit)."""
        return self.in_flight - (self.servers.queued(now) if self.servers is not None else 0)

    def call(self, ctx, class_key, lead: float = 0.0):
        """Generator: one completion call; returns None or raises Failure.

        ``lead``: seconds of the caller's own work before the call goes out (its CPU slice).
        Without a concurrency limit nothing here can observe that instant, so the lead and the
        call are one timeout; with a limit the call must join the line at its own instant."""
        env = self.env
        if self.slots is None:
            if lead > 0 and self.servers is not None:
                yield env.timeout(lead)
                lead = 0.0
            start, end, failure = self.call_at(ctx, class_key, env.now + lead)
            try:
                if end == math.inf:
                    yield self.stuck.wait()  # never answers: only a deadline ends it
                yield env.timeout(end - env.now)
            finally:
                self.answered(ctx, start, max(env.now, start))  # the end, or when the caller walked away
            if failure is not None:
                raise failure
            return
        # a limit whose calls may be abandoned part way: wait for a slot, give it back on any exit
        if lead > 0:
            yield env.timeout(lead)
        now = env.now
        self.calls += 1
        faults = self.cfg.faults
        fault = active_fault(faults, now) if faults else None
        rtt = self.rtt()
        refused = self._refused(now, fault, rtt)
        if refused is not None:
            if refused[0] > now:
                yield env.timeout(refused[0] - now)
            raise refused[1]
        slots = self.slots
        waiting = slots.acquire()
        if waiting is not None:
            try:
                yield waiting
            except BaseException:
                slots.cancel(waiting)  # also gives back a slot handed over just now
                raise
        start = env.now
        ctx.provider_queue_s += start - now
        self.in_flight += 1
        try:
            end, failure = self._serve(ctx, class_key, now, start, fault, rtt)
            if end == math.inf:
                yield self.stuck.wait()
            yield env.timeout(end - env.now)
            if failure is not None:
                raise failure
        finally:
            self.in_flight -= 1
            ctx.provider_s += env.now - start
            slots.release()

    def guarded_call(self, ctx, class_key):
        """``call`` as a process body: returns the Failure instead of raising it, and ends
        quietly when interrupted (the caller's deadline fired and it walked away)."""
        try:
            yield from self.call(ctx, class_key)
        except Failure as failure:
            return failure
        except simpy.Interrupt:
            return None
        return None

    def __repr__(self) -> str:
        limit = self.cfg.concurrency or "inf"
        return f"<SimProvider {self.name} in_flight={self.in_flight}/{limit} calls={self.calls}>"
