"""An LLM provider as the gateway sees it: time to first token, then tokens at a rate;
error statuses with their probabilities; now and then a call that never answers; a
concurrency limit that queues or rejects; and a fault schedule (brownout, error storm,
outage, hang, connection reset).
"""

from __future__ import annotations

import simpy

from simulator.distributions import Sampler
from simulator.model.context import Failure
from simulator.model.slots import Slots
from simulator.scenario import PlainLatency, Provider, active_fault


class SimProvider:
    def __init__(self, env: simpy.Environment, name: str, cfg: Provider, rng, output_tokens: dict) -> None:
        self.env = env
        self.name = name
        self.cfg = cfg
        self.rng = rng
        # not simpy.Resource: a free slot costs no heap events
        self.slots = Slots(env, cfg.concurrency) if cfg.concurrency else None
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
        self.in_flight = 0
        self.calls = 0
        self.rejected = 0

    def _service_time(self, class_key) -> float:
        if self._plain is not None:
            return self._plain()
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

    def call(self, ctx, class_key):
        """Generator: one completion call; returns None or raises Failure."""
        env = self.env
        self.calls += 1
        fault = active_fault(self.cfg.faults, env.now) if self.cfg.faults else None
        rtt = self.rtt()
        if fault is not None:
            if fault.kind == "outage":
                raise Failure("connect", 0)
        slot = None
        if self.slots is not None:
            if self.slots.count >= self.slots.capacity and self.cfg.over_limit == "reject":
                self.rejected += 1
                if rtt:
                    yield env.timeout(rtt)
                raise Failure("429", 429)
            asked = env.now
            waiting = self.slots.acquire()
            if waiting is not None:
                try:
                    yield waiting
                except BaseException:
                    self.slots.cancel(waiting)  # also gives back a slot handed over just now
                    raise
            slot = True
            ctx.provider_queue_s += env.now - asked
        self.in_flight += 1
        started = env.now
        try:
            if fault is None:
                fault = active_fault(self.cfg.faults, env.now) if self.cfg.faults else None
            if fault is not None and fault.kind == "hang":
                yield env.event()  # never answers; only a deadline ends this call
            if self._hang_p and self.rng.random() < self._hang_p:
                yield env.event()  # a stuck stream: as a hang, but for this one call
            service = self._service_time(class_key)
            status = self._draw_error()
            if fault is not None:
                if fault.kind == "slow":
                    service *= fault.latency_factor
                elif fault.kind == "errors" and self.rng.random() < fault.error_rate:
                    status = fault.error_status
                elif fault.kind == "reset":
                    yield env.timeout(rtt + service / 2)
                    raise Failure("reset", 0)
            if status:
                # errors come back about when the first token would have
                service = min(service, self._ttft() if self._ttft is not None else service)
            yield env.timeout(rtt + service)
            if status:
                raise Failure(str(status), status)
        finally:
            self.in_flight -= 1
            ctx.provider_s += env.now - started
            if slot is not None:
                self.slots.release()

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
