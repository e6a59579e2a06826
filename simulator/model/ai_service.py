"""The AI service (model router): a queue, one batch collector at a time, N workers.

A free worker takes the first queued request, waits up to ``batch_timeout`` for the batch
to fill to ``max_batch_size`` (the decision is ``simulator.policies.batching``), then runs
the batch: a fixed time plus a per-item time scaled by each request's class, then each
request's own post-processing in turn.  Faults slow the service, fail requests, refuse
connections or hang.
"""

from __future__ import annotations

from collections import deque

import simpy

from simulator.distributions import Sampler
from simulator.model.context import Failure
from simulator.model.flow import Stuck
from simulator.model.slots import Slots
from simulator.policies.batching import BatchPolicy
from simulator.policies.eventlog import RUN_LOG_LIMIT
from simulator.scenario import AIService, active_fault


class _Item:
    __slots__ = ("ctx", "done", "enqueued_at", "work", "extra")

    def __init__(self, ctx, done, enqueued_at, work, extra) -> None:
        self.ctx = ctx
        self.done = done
        self.enqueued_at = enqueued_at
        self.work = work
        self.extra = extra


class SimAIService:
    def __init__(self, env: simpy.Environment, cfg: AIService, rng, classes_extra: dict) -> None:
        self.env = env
        self.cfg = cfg
        self.rng = rng
        self.policy = BatchPolicy(cfg.max_batch_size, cfg.batch_timeout, log_limit=RUN_LOG_LIMIT)
        self.queue: deque[_Item] = deque()
        self.collector = Slots(env, 1)  # one worker collects a batch at a time
        self.base = Sampler(cfg.batch_base, rng)
        self.per_item = Sampler(cfg.per_item, rng)
        self._extra = {key: Sampler(dist, rng) for key, dist in classes_extra.items()}
        self._arrival: simpy.Event = env.event()
        self.stuck = Stuck(env)
        self.busy_workers = 0
        self.batches = 0
        self.batch_sizes: deque[int] = deque(maxlen=RUN_LOG_LIMIT)  # the recent batches' sizes
        self.rejected = 0
        #: machine model: how late the emulator's timer of a given delay fires (``MachineModel.timer_late``), or None
        self.lateness = None
        for _ in range(cfg.workers):
            env.process(self._worker())

    def submit(self, ctx, class_key) -> simpy.Event:
        """Enqueue a request; the returned event fires with None (ok) or a Failure."""
        env = self.env
        fault = active_fault(self.cfg.faults, env.now) if self.cfg.faults else None
        if fault is not None:
            if fault.kind == "outage":
                raise Failure("connect", 0)
            if fault.kind == "hang":
                return self.stuck.wait()  # accepted, never answered
        limit = self.cfg.queue_limit
        if limit is not None and len(self.queue) >= limit:
            self.rejected += 1
            raise Failure("503", 503)
        done = env.event()
        extra = self._extra.get(class_key)
        self.queue.append(_Item(ctx, done, env.now, ctx.klass.ai_work, extra() if extra is not None else 0.0))
        if not self._arrival.triggered:
            self._arrival.succeed()
        return done

    def _next_arrival(self) -> simpy.Event:
        if self._arrival.triggered:
            self._arrival = self.env.event()
        return self._arrival

    def _poke(self, _timer: simpy.Event) -> None:
        """The collecting worker's batch timeout: wake it as an arrival would.  A timer that
        outlived its batch wakes the next wait early; the worker just decides again."""
        if not self._arrival.triggered:
            self._arrival.succeed()

    def _worker(self):
        env = self.env
        policy = self.policy
        queue = self.queue
        collector = self.collector
        while True:
            turn = collector.acquire()
            if turn is not None:
                yield turn
            while not queue:
                yield self._next_arrival()
            collecting_since = env.now
            while True:
                decision = policy.decide(len(queue), collecting_since, env.now)
                if decision.take:
                    break
                arrival = self._next_arrival()
                if decision.wake_at is not None:
                    # not `arrival | timeout`: no condition event per wait
                    late = self.lateness(decision.wake_at - env.now) if self.lateness is not None else 0.0
                    env.timeout(decision.wake_at - env.now + late).callbacks.append(self._poke)
                yield arrival
            batch = [queue.popleft() for _ in range(decision.take)]
            collector.release()
            self.busy_workers += 1
            self.batches += 1
            self.batch_sizes.append(len(batch))
            dispatched = env.now
            service = self.base() + sum(self.per_item() * item.work for item in batch)
            fault = active_fault(self.cfg.faults, dispatched) if self.cfg.faults else None
            factor = fault.latency_factor if fault is not None and fault.kind == "slow" else 1.0
            yield env.timeout(service * factor + (self.lateness(service * factor) if self.lateness is not None else 0.0))
            for item in batch:
                if item.extra:
                    yield env.timeout(item.extra * factor)
                ctx = item.ctx
                ctx.ai_queue_s += dispatched - item.enqueued_at
                ctx.ai_service_s += env.now - dispatched
                result = None
                fault = active_fault(self.cfg.faults, env.now) if self.cfg.faults else None
                if fault is not None:
                    if fault.kind == "errors" and self.rng.random() < fault.error_rate:
                        result = Failure(str(fault.error_status), fault.error_status)
                    elif fault.kind == "reset":
                        result = Failure("reset", 0)
                    elif fault.kind == "hang":
                        continue
                if not item.done.triggered:  # a client deadline may have failed it already
                    item.done.succeed(result)
            self.busy_workers -= 1

    def __repr__(self) -> str:
        return f"<SimAIService busy={self.busy_workers}/{self.cfg.workers} queued={len(self.queue)} batches={self.batches}>"
