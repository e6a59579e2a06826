"""Running a scenario in simulated time: the load tester's side (arrivals, users, the
client's concurrency cap and timeout) around the simulated gateway, one replication at a
time, and the replications side by side in worker processes.

A replication's randomness depends only on (seed, replication, source), so the same
scenario and seed give identical records, and two configurations run with the same seed
see the same traffic (common random numbers).
"""

from __future__ import annotations

import gc
import math
import os
import pickle
import signal
import tempfile
from collections import deque
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import simpy

from simulator.errors import PartialResults
from simulator.histograms import BATCHES, LatencySketch
from simulator.model.clock import Clock
from simulator.model.context import RequestContext
from simulator.model.flow import Flow
from simulator.model.gateway import SimGateway
from simulator.model.slots import Slots
from simulator.records import RECORD_FIELDS, rows_frame
from simulator.arrivals import plan, time_scaled, uses_plan
from simulator.rng import Streams
from simulator.scenario import BurstArrivals, ConstantArrivals, PoissonArrivals, Scenario


@dataclass(frozen=True)
class ReplicationResult:
    replication: int
    records: pd.DataFrame
    gauges: pd.DataFrame
    events: int  # simulated requests
    #: with records="none": endpoint -> LatencySketch of the measurement window (records and gauges empty)
    sketches: dict | None = None


class _Choice:
    """Weighted choice by block-drawn uniforms (endpoint mix, payload class); a choice of
    one draws nothing."""

    __slots__ = ("_cum", "_rng", "_buf", "_i", "single")

    def __init__(self, weights: list[float], rng: np.random.Generator) -> None:
        w = np.asarray(weights, dtype=float)
        self._cum = (np.cumsum(w) / w.sum()).tolist()
        self._cum[-1] = 1.0
        self._rng = rng
        self._buf: list[float] = []
        self._i = 4096  # the first call draws a block of 4096
        self.single = len(self._cum) == 1

    def __call__(self) -> int:
        if self.single:
            return 0
        i = self._i
        if i >= 4096:
            self._buf = self._rng.random(4096).tolist()
            i = 0
        self._i = i + 1
        u = self._buf[i]
        for k, c in enumerate(self._cum):
            if u < c:
                return k
        return len(self._cum) - 1


class Replication:
    """One replication: the environment, the gateway and the client around it."""

    def __init__(self, scenario: Scenario, replication: int, seed: int, keep_records: bool = True) -> None:
        self.scenario = scenario
        self.replication = replication
        self.env = Clock()
        self.streams = Streams(seed, replication)
        self.gateway = SimGateway(self.env, scenario, self.streams)
        wl = scenario.workload
        self.endpoint_names = list(wl.mix)
        self.endpoint_choice = _Choice([wl.mix[n] for n in self.endpoint_names], self.streams["mix"])
        self.class_choice = {
            name: _Choice([c.weight for c in scenario.endpoints[name].classes], self.streams["classes"])
            for name in self.endpoint_names
        }
        # not simpy.Resource: a free slot costs no heap events
        self.cap = Slots(self.env, wl.concurrency_cap) if wl.concurrency_cap else None
        self._deadlines: deque[tuple[float, RequestContext]] = deque()
        self._deadline_wake = self.env.event()
        self.latency_from_sent = wl.latency_from == "sent"
        self.client_timeout = wl.client_timeout
        self.rows: list[tuple] = []
        self.in_flight: dict[int, RequestContext] = {}
        self.next_id = 0
        self.gauges: list[tuple] = []
        self.keep_records = keep_records
        # records="none": outcome counts and latency histograms only, so memory does not grow
        # with the number of requests (simulator.histograms)
        self.sketches: dict[str, LatencySketch] | None = None if keep_records else {}
        self.done = 0
        self._batch_per_s = BATCHES / max(scenario.run.duration - scenario.run.warmup, 1e-12)

    # ---------------------------------------------------------------- requests

    def _new_context(self, replayed: tuple[str, int] | None = None) -> RequestContext:
        if replayed is None:
            ep_name = self.endpoint_names[self.endpoint_choice()]
            k = self.class_choice[ep_name]()
        else:
            ep_name, k = replayed
        endpoint = self.scenario.endpoints[ep_name]
        rid = self.next_id
        self.next_id += 1
        ctx = RequestContext(rid, ep_name, endpoint, endpoint.classes[k], k, self.env.now)
        self.in_flight[rid] = ctx
        return ctx

    def _finish(self, ctx: RequestContext) -> None:
        timeout = self.client_timeout
        if timeout is not None and ctx.finished_at - ctx.started_at > timeout:
            ctx.finished_at = ctx.started_at + timeout
            ctx.outcome = "client_timeout"
            ctx.status = 0
        del self.in_flight[ctx.id]
        self._record(ctx)

    def _record(self, ctx: RequestContext) -> None:
        if self.sketches is None:
            self.rows.append(ctx.as_row(self.replication, self.latency_from_sent))
            return
        self.done += 1
        run = self.scenario.run
        arrived = ctx.arrived_at
        if run.warmup <= arrived < run.duration:
            sketch = self.sketches.get(ctx.endpoint)
            if sketch is None:
                sketch = self.sketches[ctx.endpoint] = LatencySketch()
            batch = min(int((arrived - run.warmup) * self._batch_per_s), BATCHES - 1)
            start = ctx.started_at if self.latency_from_sent else arrived
            sketch.add(batch, ctx.outcome, ctx.finished_at - start)

    def _send(self, ctx: RequestContext, done=None) -> None:
        """The client sends ``ctx`` now, or when the concurrency cap frees a slot; ``done(ctx)``
        (default ``_answered``) when the gateway's reply is out."""
        cap = self.cap
        if cap is None:
            self.gateway.start(ctx, done or self._answered)  # sent on arrival: nothing to note
            return
        waiting = cap.acquire()
        if waiting is not None:
            waiting.callbacks.append(lambda _: self._sent(ctx, done))
            return
        self._sent(ctx, done)

    def _sent(self, ctx: RequestContext, done) -> None:
        if self.cap is not None:
            now = self.env.now
            ctx.started_at = now
            ctx.client_wait_s = now - ctx.arrived_at
            if self.client_timeout is not None:
                # the client's timer: one FIFO for all (see _client_deadlines), not a process,
                # a timeout and a condition per request
                self._deadlines.append((now + self.client_timeout, ctx))
                if not self._deadline_wake.triggered:
                    self._deadline_wake.succeed()
        self.gateway.start(ctx, done or self._answered)

    def _answered(self, ctx: RequestContext) -> None:
        in_flight = self.in_flight
        if ctx.id not in in_flight:
            return  # the client gave up meanwhile (recorded then); the gateway went on working
        ctx.finished_at = self.env.now
        if self.cap is not None:
            self.cap.release()
        if self.sketches is not None:
            self._finish(ctx)
            return
        # _finish and _record for records kept, in one call
        timeout = self.client_timeout
        if timeout is not None and ctx.finished_at - ctx.started_at > timeout:
            ctx.finished_at = ctx.started_at + timeout
            ctx.outcome = "client_timeout"
            ctx.status = 0
        del in_flight[ctx.id]
        self.rows.append(ctx.as_row(self.replication, self.latency_from_sent))

    def _client_deadlines(self):
        """Every client timeout of the run.  All requests share one timeout and are sent in
        time order, so their deadlines come in order: the earliest is the FIFO's head.  A
        request that finished is dropped when it reaches the head; one that has not is given up
        at its deadline: recorded as a client timeout, its cap slot freed."""
        env = self.env
        pending = self._deadlines
        in_flight = self.in_flight
        while True:
            while pending and pending[0][1].id not in in_flight:
                pending.popleft()
            if not pending:
                self._deadline_wake = env.event()
                yield self._deadline_wake
                continue
            deadline, ctx = pending[0]
            if deadline > env.now:
                yield env.timeout(deadline - env.now)
                continue
            pending.popleft()
            ctx.finished_at = deadline
            ctx.outcome = "client_timeout"
            ctx.status = 0
            del in_flight[ctx.id]
            self._record(ctx)
            self.cap.release()

    # ---------------------------------------------------------------- traffic

    def _open_loop(self):
        env = self.env
        wl = self.scenario.workload
        end = self.scenario.run.duration
        if uses_plan(wl):  # a trace, replayed traffic, gamma or MMPP arrivals, drawn tokens
            yield from self._replay(plan(wl, end, self.streams["arrivals"], self.streams["tokens"]), end)
            return
        wl = time_scaled(wl)
        arrivals = wl.arrivals
        rng = self.streams["arrivals"]
        factor_at = wl.factor_at
        if isinstance(arrivals, BurstArrivals):
            t = 0.0
            while t < end:
                size = int(round(arrivals.size * factor_at(t)))
                for _ in range(size):
                    self._send(self._new_context())
                t += arrivals.every
                yield env.timeout(arrivals.every)
            return
        poisson = isinstance(arrivals, PoissonArrivals)
        assert poisson or isinstance(arrivals, ConstantArrivals)
        base = arrivals.rate
        gaps = rng.exponential(1.0, 8192).tolist() if poisson else None
        gi = 0
        profiled = bool(wl.rate_profile)
        while True:
            rate = base * factor_at(env.now) if profiled else base
            if rate <= 0:
                # idle until the next profile point
                later = [p.at for p in wl.rate_profile if p.at > env.now]
                if not later:
                    return
                yield env.timeout(min(later) - env.now)
                continue
            if poisson:
                if gi >= len(gaps):
                    gaps = rng.exponential(1.0, 8192).tolist()
                    gi = 0
                gap = gaps[gi] / rate
                gi += 1
            else:
                gap = 1.0 / rate
            if env.now + gap >= end:
                return
            yield env.timeout(gap)
            self._send(self._new_context())

    def _replay(self, requests, end: float):
        """Planned traffic (``simulator.arrivals.plan``: a trace, a measurement's requests, ...):
        each request at its time, to its endpoint and class when given (else drawn), with its
        token counts when given."""
        env = self.env
        classes = {
            (name, c.name): (name, k) for name, ep in self.scenario.endpoints.items() for k, c in enumerate(ep.classes)
        }
        for at, endpoint, class_name, input_tokens, output_tokens in requests:
            if at >= end:
                return
            if endpoint is None:
                replayed = None
            elif class_name is None:
                replayed = (endpoint, self._class_choice(endpoint)())
            else:
                replayed = classes.get((endpoint, class_name))
                if replayed is None:
                    continue  # not this scenario's endpoint or class: nothing to send it to
            if at > env.now:
                yield env.timeout(at - env.now)
            ctx = self._new_context(replayed)
            ctx.input_tokens = input_tokens
            ctx.output_tokens = output_tokens
            self._send(ctx)

    def _class_choice(self, endpoint: str) -> _Choice:
        choice = self.class_choice.get(endpoint)
        if choice is None:  # an endpoint the trace names that is not in the mix
            classes = self.scenario.endpoints[endpoint].classes
            choice = self.class_choice[endpoint] = _Choice([c.weight for c in classes], self.streams["classes"])
        return choice

    def _user(self, think):
        env = self.env
        end = self.scenario.run.duration
        machine = self.gateway.machine
        while env.now < end:
            late = 0.0
            if think.constant != 0:
                yield env.timeout(think())
                if env.now >= end:
                    return
                if machine is not None:
                    # The load generator's user sleeps on the event loop's timer, which ends on a
                    # whole millisecond and wakes late (MachineModel.timer_late); the request was
                    # due when the think time ended, so its latency counts the lateness.
                    late = machine.timer_late(think.constant)
            reply = env.event()
            ctx = self._new_context()
            if late > 0:
                yield env.timeout(late)
            self._send(ctx, lambda ctx, reply=reply: (self._answered(ctx), reply.succeed(ctx)))
            ctx = yield reply
            if ctx.client_after is not None and ctx.client_after.is_alive:
                # the load generator builds the reply's record before its user thinks or sends again
                yield ctx.client_after

    def _closed_loop(self):
        from simulator.distributions import Sampler

        wl = self.scenario.workload
        think = Sampler(wl.think_time, self.streams["think"])
        users = wl.users or 0
        for i in range(users):
            self.env.process(self._user(think))
        yield self.env.timeout(0)

    def _monitor(self):
        env = self.env
        gw = self.gateway
        every = self.scenario.run.window / 10  # ten samples a window, averaged in time series
        while True:
            breaker = gw.breaker.state(env.now).value if gw.breaker is not None else ""
            self.gauges.append(
                (
                    self.replication, env.now, len(self.in_flight), gw.in_system, breaker, gw.ai_pool.in_use,
                    len(gw.ai.queue), gw.cpu.queued(env.now), sum(p.in_service(env.now) for p in gw.providers.values()),
                    gw.semantic_entries,
                )
            )
            yield env.timeout(every)

    # ---------------------------------------------------------------- run

    def run(self) -> ReplicationResult:
        run = self.scenario.run
        env = self.env
        if self.scenario.workload.mode != "closed":  # open loop or a trace
            Flow(self._open_loop())  # lighter than a process: one wake-up per arrival
        else:
            env.process(self._closed_loop())
        if self.keep_records:
            env.process(self._monitor())  # gauges grow with simulated time: not kept with records="none"
        horizon = run.duration + run.drain
        if self.cap is not None and self.client_timeout is not None:
            env.process(self._client_deadlines())
        with run_gc():
            env.run_until(horizon)
        for ctx in list(self.in_flight.values()):
            timeout = self.client_timeout
            if timeout is not None and ctx.started_at + timeout <= horizon:
                ctx.finished_at = ctx.started_at + timeout
                ctx.outcome = "client_timeout"
            else:
                ctx.finished_at = horizon
                ctx.outcome = "unfinished"
            ctx.status = 0
            self._record(ctx)
        self.in_flight.clear()
        if self.sketches is not None:
            return ReplicationResult(self.replication, pd.DataFrame(columns=list(RECORD_FIELDS)), pd.DataFrame(), self.done, self.sketches)
        records = rows_frame(self.rows)
        gauges = pd.DataFrame.from_records(
            self.gauges,
            columns=[
                "replication", "at", "in_flight", "in_gateway", "breaker_state", "ai_pool_in_use", "ai_queue",
                "cpu_queue", "provider_in_flight", "semantic_entries",
            ],
        )
        return ReplicationResult(self.replication, records, gauges, len(self.rows))


@contextmanager
def run_gc():
    """Python's garbage collector as a run wants it.  A run allocates millions of short-lived
    objects, so the collector runs often; a full collection would walk every object the
    process holds (pandas, pydantic, a notebook's data) rather than the run's own.  Those are
    set aside for the run's duration (``gc.freeze``).  Most of the run's objects die young, so
    the youngest generation is collected every 20,000 allocations instead of 700: by then fewer
    are still alive to be walked.  ``benchmarks/vs_ciw.py`` runs Ciw under the same settings."""
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], 20_000), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if freeze:
            gc.unfreeze()


def run_replication(scenario: Scenario, replication: int, seed: int, keep_records: bool = True) -> ReplicationResult:
    return Replication(scenario, replication, seed, keep_records).run()


def _run_one(args: tuple) -> str:
    """Worker: one replication, its result pickled into the hand-over folder; returns the file.

    The result goes through a file, not the pool's result pipe: a worker stopped by Ctrl-C
    while writing a large result to that pipe would leave half a message in it, and the pool's
    reader thread would wait for the rest forever (the parent holds the pipe's other end, so it
    never sees an end of file).  A file name fits in one atomic pipe write."""
    scenario, replication, seed, keep_records, folder = args
    result = run_replication(scenario, replication, seed, keep_records)
    path = os.path.join(folder, f"replication-{replication}.pickle")
    with open(path + ".part", "wb") as handle:
        pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".part", path)
    return path


def _collect(path: str) -> ReplicationResult:
    with open(path, "rb") as handle:
        result = pickle.load(handle)
    os.unlink(path)
    return result


def ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is the parent's to handle (it stops the workers); a worker
    that took it too would print its own traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_workers(replications: int) -> int:
    return max(1, min(replications, os.cpu_count() or 1))


def simulate(
    scenario: Scenario,
    *,
    replications: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run all replications; returns (records, gauges) with a ``replication`` column.

    Results do not depend on ``workers``: each replication is computed alone from its own streams.
    """
    try:
        results = _run_all(scenario, replications, seed, workers, progress, True)
    except PartialResults as stop:
        # Ctrl-C: ``finished`` becomes (records, gauges, replication numbers) of what finished
        raise PartialResults(_frames(stop.finished), stop.total) from None
    return _frames(results)[:2]


def _frames(results: list[ReplicationResult]) -> tuple[pd.DataFrame, pd.DataFrame, list[int]]:
    if not results:
        return pd.DataFrame(columns=list(RECORD_FIELDS)), pd.DataFrame(), []
    records = pd.concat([r.records for r in results], ignore_index=True)
    gauges = pd.concat([r.gauges for r in results], ignore_index=True)
    return records, gauges, [r.replication for r in results]


def _run_all(scenario: Scenario, replications, seed, workers, progress, keep_records: bool) -> list[ReplicationResult]:
    """Every replication's result, in replication order.  Ctrl-C raises ``PartialResults``
    whose ``finished`` is the list of replications that had completed."""
    n = replications if replications is not None else scenario.run.replications
    s = seed if seed is not None else scenario.run.seed
    workers = default_workers(n) if workers is None else max(1, workers)
    results: list[ReplicationResult] = []
    try:
        if workers == 1 or n == 1:
            for r in range(n):
                results.append(run_replication(scenario, r, s, keep_records))
                if progress is not None:
                    progress(r + 1, n)
        else:
            _run_in_pool(scenario, n, s, workers, progress, keep_records, results)
    except KeyboardInterrupt:
        results.sort(key=lambda r: r.replication)
        raise PartialResults(results, n) from None
    results.sort(key=lambda r: r.replication)
    return results


def _run_in_pool(scenario: Scenario, n: int, seed: int, workers: int, progress, keep_records: bool,
                 results: list[ReplicationResult]) -> None:
    """Replications on worker processes, appended to ``results`` as they finish."""
    with tempfile.TemporaryDirectory(prefix="gwsim-replications-") as folder, \
            ProcessPoolExecutor(max_workers=workers, initializer=ignore_sigint) as pool:
        try:
            futures = [pool.submit(_run_one, (scenario, r, seed, keep_records, folder)) for r in range(n)]
            for fut in as_completed(futures):
                results.append(_collect(fut.result()))
                if progress is not None:
                    progress(len(results), n)
        except BaseException:
            # Ctrl-C (or a failed replication): stop the workers now rather than let the
            # pool's exit wait for every queued replication; no worker outlives the run.
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def simulate_sketches(
    scenario: Scenario,
    *,
    replications: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, list[LatencySketch]], int]:
    """``simulate`` with records="none": endpoint -> one LatencySketch per replication, and the
    number of simulated requests.  Memory stays bounded whatever the number of requests."""
    try:
        results = _run_all(scenario, replications, seed, workers, progress, False)
    except PartialResults as stop:
        # Ctrl-C: ``finished`` becomes (sketches, requests, replication numbers) of what finished
        raise PartialResults(_sketches(scenario, stop.finished), stop.total) from None
    return _sketches(scenario, results)[:2]


def _sketches(scenario: Scenario, results: list[ReplicationResult]) -> tuple[dict[str, list[LatencySketch]], int, list[int]]:
    names = list(dict.fromkeys(list(scenario.endpoints) + sorted({k for r in results for k in r.sketches})))
    sketches = {name: [r.sketches.get(name) or LatencySketch() for r in results] for name in names}
    return sketches, sum(r.events for r in results), [r.replication for r in results]


def measurement_end(scenario: Scenario) -> float:
    return scenario.run.duration


def expected_requests(scenario: Scenario) -> float:
    wl = scenario.workload
    if wl.mode == "open" and wl.arrivals is not None:
        return wl.arrivals.mean_rate * scenario.run.duration
    return math.nan
