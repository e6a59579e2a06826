"""The machine under a measured run: its cores shared by every thread that does CPU work.

The real engine's load generator, gateway (event loop plus ``cpu_workers`` threads) and
emulators are processes on one machine.  Each thread runs its CPU work in order (an event
loop does one callback at a time).  Linux shares the cores fairly among sessions first
(autogroup: each of the three processes is its own session, as is each other program
started from a shell), then among a session's runnable threads.  So when more sessions
want CPU than there are cores (counting other work on the machine, ``background``
sessions with one busy thread each), each runs slower.  That is processor sharing,
simulated here as a fluid: the cores are water-filled over the runnable sessions (a
session gets at most one core per runnable thread), every running job progresses at its
thread's share, and the shares are recomputed whenever a job starts or ends.

The gateway's CPU workers are threads of a Python process: they need the GIL between
their chunks of hashing, so while the gateway's event loop runs Python they make no
progress (``stalled_by``).  That is why a CPU-bound gateway slows down as its request rate
(and so its event loop's load) grows, beyond what the cores alone explain.
"""

from __future__ import annotations

import math
from collections import deque

import simpy

from simulator.distributions import ZERO as ZERO_DIST
from simulator.distributions import Sampler, Uniform

_EPS = 1e-9  # a nanosecond of CPU left is float noise, not work
#: asyncio's epoll selector waits whole milliseconds, rounding the time left up
TIMER_GRAIN_S = 0.001
#: The share of an emulator's CPU per call that an LLM server's emulator spends after the
#: prefill (the reply's headers and first chunk), before its event loop can start the next
#: prompt's prefill.  Measured in the emulator under ``queued_ttft`` (2026-12-06): the next
#: prompt started 0.31 ms (median; mean 0.44) after the previous one's prefill ended, against
#: the profile's 0.575 ms of emulator CPU per call; a half, as for the gateway's default split.
LLM_REPLY_SHARE = 0.5


class _Job:
    __slots__ = ("remaining", "event", "thread", "on_start", "urgent", "exclusive")

    def __init__(self, remaining: float, event: simpy.Event, thread: "Thread", on_start=None, urgent: bool = False,
                 exclusive: bool = False) -> None:
        self.remaining = remaining
        self.event = event
        self.thread = thread
        self.on_start = on_start  # called when the thread takes the job up (it may queue first)
        #: on a shared thread, runs ahead of the thread's other jobs, which wait meanwhile
        self.urgent = urgent
        #: on a shared thread, one step that runs to its end ahead of everything else there, urgent
        #: work included (the first such job to come first)
        self.exclusive = exclusive


class Thread:
    """One OS thread: its CPU work runs one job at a time, first come first served.
    Threads of one process share its ``group`` (the scheduler's fairness unit)."""

    __slots__ = ("name", "queue", "stalled_by", "busy_s", "group", "shared")

    def __init__(self, name: str, stalled_by: "Thread | None" = None, group: str | None = None,
                 shared: bool = False) -> None:
        self.name = name
        self.queue: deque[_Job] = deque()
        self.stalled_by = stalled_by
        self.busy_s = 0.0
        self.group = group if group is not None else name
        #: An event loop whose jobs are many short steps taken round-robin: every queued job runs
        #: at once, each at an equal part of the thread's share (processor sharing), not in turn.
        self.shared = shared

    def __repr__(self) -> str:
        kind = " shared" if self.shared else ""
        return f"<Thread {self.name}{kind} queued={len(self.queue)}>"


def fair_level(demands: list[int], background: float, cores: float) -> float:
    """The water level ``s`` of max-min fair sharing: each session gets ``min(demand, s)`` cores,
    ``background`` sessions ``min(1, s)`` each, and together no more than ``cores``."""
    if sum(demands) + background <= cores:
        return float(max(demands, default=1))
    lo, hi = 0.0, float(max(max(demands, default=1), 1))
    for _ in range(40):
        mid = (lo + hi) / 2
        if sum(min(d, mid) for d in demands) + background * min(1.0, mid) > cores:
            hi = mid
        else:
            lo = mid
    return lo


class MachineCPU:
    """Processor sharing of ``cores`` among the running jobs (the head job of each busy thread)."""

    def __init__(self, env: simpy.Environment, cores: int, background: float = 0.0, speed: float = 1.0) -> None:
        self.env = env
        self.cores = cores
        self.background = background
        self.speed = speed  # CPU seconds are the profile's; the cores may run faster or slower
        self.running: list[_Job] = []
        self._stamp = env.now
        self._generation = 0

    def run(self, thread: Thread, seconds: float, on_start=None, urgent: bool = False, exclusive: bool = False):
        """Generator: do ``seconds`` of CPU on ``thread``; returns when that work is done.
        ``on_start()`` is called when the thread takes the job up, after the jobs queued before it.
        ``urgent`` work on a shared thread takes the thread's whole share (split among the urgent
        jobs) while the thread's other jobs wait.  ``exclusive`` work on a shared thread is one
        step: it takes the thread's whole share ahead of everything else there, urgent work
        included, one exclusive job at a time in the order they came.

        A waiter that is interrupted leaves the job running: CPU work once started is spent.
        """
        if seconds <= 0:
            if on_start is not None:
                on_start()
            return
        seconds = seconds / self.speed
        job = _Job(seconds, self.env.event(), thread, on_start, urgent and thread.shared, exclusive and thread.shared)
        if thread.shared:
            if on_start is not None:
                on_start()
            self._advance()
            thread.queue.append(job)
            self.running.append(job)
            self._schedule()
        elif not thread.queue:
            if on_start is not None:
                on_start()
            self._advance()  # at the shares before this job: it may stall others (the GIL)
            thread.queue.append(job)
            self.running.append(job)
            self._schedule()
        else:
            thread.queue.append(job)
        yield job.event

    # ------------------------------------------------------------------ fluid scheduling

    def _rates(self) -> list[float]:
        running = self.running
        stalled = [j.thread.stalled_by is not None and bool(j.thread.stalled_by.queue) for j in running]
        demand: dict[str, int] = {}
        counted: set[int] = set()
        for job, s in zip(running, stalled):
            if not s and id(job.thread) not in counted:  # a shared thread's jobs are one runnable thread
                counted.add(id(job.thread))
                demand[job.thread.group] = demand.get(job.thread.group, 0) + 1
        if not demand:
            return [0.0] * len(running)
        level = fair_level(list(demand.values()), self.background, self.cores)
        urgent = self._urgent_counts()
        holders = self._step_holders()
        rates = []
        for job, s in zip(running, stalled):
            thread = job.thread
            holder = holders.get(id(thread))
            if holder is not None and not s:
                rates.append(min(demand[thread.group], level) / demand[thread.group] if job is holder else 0.0)
                continue
            if s or (thread.shared and urgent.get(id(thread)) and not job.urgent):
                rates.append(0.0)  # stalled by the GIL, or waiting for a reply's work on its loop
                continue
            share = min(demand[thread.group], level) / demand[thread.group]
            rates.append(share / (urgent.get(id(thread)) or len(thread.queue)) if thread.shared else share)
        return rates

    def _step_holders(self) -> dict[int, _Job]:
        """id(thread) -> the exclusive job holding it, for the shared threads that have one."""
        holders: dict[int, _Job] = {}
        for job in self.running:
            if job.exclusive and id(job.thread) not in holders:
                holders[id(job.thread)] = job
        return holders

    def _urgent_counts(self) -> dict[int, int]:
        """id(thread) -> its urgent running jobs, for the shared threads that have any."""
        counts: dict[int, int] = {}
        for job in self.running:
            if job.urgent:
                counts[id(job.thread)] = counts.get(id(job.thread), 0) + 1
        return counts

    def _advance(self) -> None:
        """Bring every running job's remaining work up to now, at the shares since the last change."""
        now = self.env.now
        dt = now - self._stamp
        self._stamp = now
        if dt <= 0 or not self.running:
            return
        urgent = self._urgent_counts()
        holders = self._step_holders()
        for job, rate in zip(self.running, self._rates()):
            if rate > 0:
                job.remaining -= dt * rate
                if not job.thread.shared or id(job.thread) in holders:
                    job.thread.busy_s += dt
                else:
                    job.thread.busy_s += dt / (urgent.get(id(job.thread)) or len(job.thread.queue))

    def _schedule(self) -> None:
        self._generation += 1
        if not self.running:
            return
        soonest = None
        for job, rate in zip(self.running, self._rates()):
            if rate > 0:
                t = max(job.remaining, 0.0) / rate
                if soonest is None or t < soonest:
                    soonest = t
        if soonest is None:
            return  # everything stalled: a job starting or ending will reschedule
        generation = self._generation
        self.env.timeout(soonest).callbacks.append(lambda _event: self._wake(generation))

    def _wake(self, generation: int) -> None:
        if generation != self._generation:
            return  # the shares changed since this was scheduled
        self._advance()
        done = [j for j in self.running if j.remaining <= _EPS]
        if not done:
            self._schedule()
            return
        for job in done:
            self.running.remove(job)
            thread = job.thread
            if thread.shared:
                thread.queue.remove(job)
                job.event.succeed()
                continue
            thread.queue.popleft()
            if thread.queue:
                head = thread.queue[0]
                self.running.append(head)
                if head.on_start is not None:
                    head.on_start()
            job.event.succeed()
        self._schedule()

    def set_background(self, background: float) -> None:
        """Other work changes now: the running jobs keep what they did at the old shares."""
        self._advance()
        self.background = background
        self._schedule()

    def __repr__(self) -> str:
        return f"<MachineCPU cores={self.cores} background={self.background:g} running={len(self.running)}>"


class MachineModel:
    """The measured run's processes on the machine: client, gateway event loop, emulators.

    ``cores == 0``: no contention, each cost is a plain delay.
    """

    def __init__(self, env: simpy.Environment, cfg, rng) -> None:
        self.env = env
        self.cfg = cfg
        self.cpu = MachineCPU(env, cfg.cores, cfg.background, cfg.speed) if cfg.cores > 0 else None
        self.client = Thread("client")
        self.loop = Thread("gateway", shared=cfg.gateway_loop_shared)
        self.upstreams = Thread("emulators")
        self.client_cpu = Sampler(cfg.client_cpu, rng)
        self.client_send_cpu = Sampler(cfg.client_send_cpu, rng) if cfg.client_send_cpu is not None else None
        self.gateway_cpu = Sampler(cfg.gateway_cpu, rng)
        self.before_call = cfg.gateway_cpu_before_call
        self.replies_first = cfg.gateway_replies_first
        self.first_step = Sampler(cfg.gateway_first_step, rng) if cfg.gateway_first_step != ZERO_DIST else None
        self.hop_cpu = Sampler(cfg.gateway_hop_cpu, rng)
        self.upstream_cpu = Sampler(cfg.upstream_cpu, rng)
        self.request_latency = Sampler(cfg.request_latency, rng)
        self.hop_latency = Sampler(cfg.hop_latency, rng)
        self.timer_lateness = Sampler(cfg.timer_lateness, rng)
        self.timer_grain = Sampler(Uniform(low=0.0, high=TIMER_GRAIN_S), rng)
        self.redis_cpu = Sampler(cfg.redis_cpu, rng)
        self.scan_entry_cpu = Sampler(cfg.scan_entry_cpu, rng)
        if self.cpu is not None and cfg.background_trace:
            env.process(self._follow_background(cfg.background_trace))

    def _follow_background(self, trace):
        for at, background in sorted(trace):
            if at > self.env.now:
                yield self.env.timeout(at - self.env.now)
            self.cpu.set_background(background)

    def worker(self, index: int) -> Thread:
        """A gateway CPU worker thread (stalls while the event loop holds the GIL)."""
        return Thread(f"gw-cpu-{index}", self.loop if self.cfg.gil else None, group=self.loop.group)

    def work(self, thread: Thread, seconds: float, on_start=None, urgent: bool = False, exclusive: bool = False):
        if self.cpu is None or seconds <= 0:
            if on_start is not None:
                on_start()
            if seconds > 0:
                yield self.env.timeout(seconds / self.cfg.speed)
        else:
            yield from self.cpu.run(thread, seconds, on_start, urgent, exclusive)

    def request_start(self, on_send=None, ctx=None):
        """Client sends (``client_send_cpu``, else half its CPU), the gateway parses (``gateway_cpu_before_call`` of its
        per-request CPU; on a shared loop, ``gateway_first_step`` of it first, as one step ahead of all else: a step
        longer than the request's parsing takes the rest from its first upstream call's encoding, ``ctx.step_credit``).  ``on_send()``: called when the client's thread takes the send up, after
        the sends queued before it (a burst's requests leave one at a time): the load generator's
        "sent" instant."""
        client = self.client_cpu()
        gateway = self.gateway_cpu()
        send = client / 2 if self.client_send_cpu is None else min(self.client_send_cpu(), client / 2)
        yield from self.work(self.client, send, on_send)
        before = gateway * self.before_call
        step = self.first_step() if self.first_step is not None and self.loop.shared else 0.0
        if ctx is None:
            step = min(step, before)
        if step > 0:
            yield from self.work(self.loop, step, exclusive=True)
            if step > before:
                ctx.step_credit = step - before
        yield from self.work(self.loop, max(before - step, 0.0))
        return client, gateway, client / 2 - send

    def request_end(self, costs):
        """The gateway replies, the client reads the reply (what its first half of CPU per
        request leaves after the send), then the wall time beyond CPU; the client's other half
        (taking the reply apart, building the record) runs on its thread but after the load
        generator has stopped the request's clock, so the request does not wait for it (the
        profile's null runs: their latency beyond the emulated time is about the CPU on the path
        with only half the client's).  Returns that work's process (None without client CPU):
        a closed-loop user's next request starts after it, as the load generator's does."""
        client, gateway, read = costs
        yield from self.work(self.loop, gateway * (1.0 - self.before_call), urgent=self.replies_first)
        if read > 0:
            yield from self.work(self.client, read)
        after = self.env.process(self.work(self.client, client / 2)) if client > 0 else None
        wall = self.request_latency()
        if wall > 0:
            yield self.env.timeout(wall)
        return after

    def first_chunk_path(self) -> float:
        """Seconds from the gateway holding a streamed reply's first chunk to the client reading
        it: the reply's share of the gateway's per-request CPU (it prepares the response and writes
        the chunk; a plain delay here, not on the cores) and a draw of the wall time per request
        beyond CPU, which the client's send and the reply's way back both lie on.  The whole
        reply pays them in ``request_end``; the first chunk pays them on its own way out."""
        return self.gateway_cpu() * (1.0 - self.before_call) / self.cfg.speed + self.request_latency()

    def hop_start(self, llm_server: bool = False, ctx=None):
        """The gateway encodes an upstream call, the emulator parses it.  An LLM server's
        emulator spends ``LLM_REPLY_SHARE`` of its CPU per call after the prefill instead
        (``llm_reply``).  A request's first step may have done some of the encoding already
        (``request_start``)."""
        encode = self.hop_cpu() * self.before_call
        if ctx is not None and ctx.step_credit > 0:
            done = min(ctx.step_credit, encode)
            ctx.step_credit -= done
            encode -= done
        yield from self.work(self.loop, encode)
        share = 1.0 - LLM_REPLY_SHARE if llm_server else 1.0
        yield from self.work(self.upstreams, self.upstream_cpu() * share)

    def llm_reply(self):
        """An LLM server's emulator starts the reply after a prefill (headers, first chunk); its
        event loop takes the next prompt's prefill only after that."""
        yield from self.work(self.upstreams, self.upstream_cpu() * LLM_REPLY_SHARE)

    def timer_late(self, delay_s: float | None = None) -> float:
        """Seconds an emulator's timer of ``delay_s`` fires late.  The event loop's epoll wait
        counts whole milliseconds and rounds the time left up, so a timer ends on the next
        millisecond boundary past its due time: ``ceil(delay) - delay`` for a known delay, a
        uniform share of a millisecond for one drawn from a continuous distribution (``None``).
        Then the wake-up itself, the profile's ``timer_lateness``, which ``gwsim calibrate
        profile`` measures on whole-millisecond delays (where the rounding is nil)."""
        if delay_s is None:
            rounding = self.timer_grain()
        else:
            grains = delay_s / TIMER_GRAIN_S
            rounding = max(math.ceil(grains - 1e-6) - grains, 0.0) * TIMER_GRAIN_S
        return rounding + self.timer_lateness()

    def hop_end(self, timer: bool = False, delay_s: float | None = None):
        """Loopback (and, for a call whose emulated time is one timer, that timer's lateness,
        ``timer_late(delay_s)``), then the gateway decodes the reply."""
        wall = self.hop_latency() + (self.timer_late(delay_s) if timer else 0.0)
        if wall > 0:
            yield self.env.timeout(wall)
        yield from self.work(self.loop, self.hop_cpu() * (1.0 - self.before_call), urgent=self.replies_first)
