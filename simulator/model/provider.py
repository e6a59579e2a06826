"""An LLM provider as the gateway sees it: time to first token, then tokens at a rate;
error statuses with their probabilities; now and then a call that never answers; a
concurrency limit that queues or rejects; and a fault schedule (brownout, error storm,
outage, hang, connection reset).

A streamed request (``ctx.stream``) is answered at its first chunk, the instant the
gateway can start relaying it (``simulator.policies.streaming``): the caller's fallback,
deadline and race see that instant, while the call keeps its concurrency slot (and counts
as in flight) until the stream ends at ``ctx.stream_end_at``.  A reset that comes after the
first chunk breaks the relayed stream (``ctx.stream_error``) instead of failing the call.

An ``llm`` latency model (``LLMServerLatency``) is a server whose speed depends on its load:
a call waits for the prefill (one prompt at a time, FIFO), whose end is the first token,
then decodes its output tokens in ``policies.llm_server.SharedDecode`` with the other
streams; the end of a stream is not known when it starts, so a streamed reply's end is the
event ``ctx.stream_done``.  Its calls always run as processes (``slots``, unbounded without a
concurrency limit): none can be placed ahead.
"""

from __future__ import annotations

import math

import simpy

from simulator.distributions import Deterministic, Sampler
from simulator.model.context import Failure
from simulator.model.flow import Stuck
from simulator.model.servers import Servers
from simulator.model.slots import Slots
from simulator.policies.llm_server import SharedDecode
from simulator.policies.quota import (
    ERROR_RETRY_AFTER_S,
    PROMPT_TOKENS,
    ProviderQuota,
    QuotaEntry,
    header_seconds,
    requested_tokens,
)
from simulator.policies.streaming import PLAIN_REPLY_TOKENS, even_figures, reply_tokens, tokens_per_chunk
from simulator.scenario import LLMServerLatency, PlainLatency, Provider, TokenLatency, active_fault

#: Slots of an llm provider without a concurrency limit (its calls still run as processes).
UNLIMITED = 1 << 30


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
        self.prefill: Slots | None = None  # an LLM server's one-at-a-time prefill
        #: a plain model's reply tokens (its class's output_tokens), drawn on a stream of their own
        #: so that recording them leaves the latency draws as they were
        self._plain_tokens: dict = {}
        self._llm: LLMServerLatency | None = None
        if isinstance(lat, LLMServerLatency):
            self._plain = None
            self._ttft = None
            self._llm = lat
            self._prefill_base = Sampler(lat.prefill_base, rng)
            self._default_tokens = Sampler(lat.default_output_tokens, rng)
            self._default_input = Sampler(lat.default_input_tokens, rng)
            self.servers = None
            if self.slots is None:
                self.slots = Slots(env, cfg.concurrency or UNLIMITED)
            self.prefill = Slots(env, 1)  # one prompt at a time, first come first served
            self.decode = SharedDecode(lat.decode_tokens_per_s, lat.max_stream_tokens_per_s)
            self._decode_done: dict[int, simpy.Event] = {}
            self._decode_timer = 0  # generation of the pending finish timer (older ones are stale)
        elif isinstance(lat, PlainLatency):
            self._plain = Sampler(lat.time, rng)
            self._ttft = None
            if output_tokens:
                token_rng = rng.spawn(1)[0]  # a child stream: the parent's own draws are untouched
                self._plain_tokens = {key: Sampler(dist, token_rng) for key, dist in output_tokens.items()}
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
        #: rpm/tpm quotas; ``_entry``: the charge ``_refused`` just made, taken by its caller at once
        self.quota = ProviderQuota(cfg.rpm, cfg.tpm) if cfg.rpm or cfg.tpm else None
        self._entry: QuotaEntry | None = None
        #: the machine model's timer lateness, ``MachineModel.timer_late`` (None without one): an
        #: emulated LLM server's prefill ends on a timer, and a late timer keeps the
        #: one-at-a-time prefill busy that much longer
        self.lateness = None
        #: the machine model's ``MachineModel.llm_reply`` (None without one): the emulator's CPU
        #: that starts a reply after a prefill, run before the next prompt's prefill can start
        self.reply_work = None
        #: the emulated time of a call's one timer (a whole reply; a stream's first chunk) when
        #: every call takes the same, so that it rounds the same way each time; else None
        #: (an LLM server's: its round trip's, the prefill's own timer being modelled here)
        self.timer_delay: float | None = None
        self.first_timer_delay: float | None = None
        #: whether that timer exists: the emulator sleeps only for a positive time
        self.reply_timer = True
        if isinstance(cfg.network_rtt, Deterministic):
            if isinstance(lat, PlainLatency) and isinstance(lat.time, Deterministic):
                self.timer_delay = lat.time.value + cfg.network_rtt.value
                self.reply_timer = self.timer_delay > 0
            elif isinstance(lat, TokenLatency) and isinstance(lat.ttft, Deterministic):
                self.first_timer_delay = lat.ttft.value + cfg.network_rtt.value
            elif isinstance(lat, LLMServerLatency):
                self.timer_delay = self.first_timer_delay = cfg.network_rtt.value
                self.reply_timer = cfg.network_rtt.value > 0
        self.stuck = Stuck(env)
        self.in_flight = 0
        self.calls = 0
        self.rejected = 0
        #: every call is the same: a round trip and a service time, nothing refused, failed,
        #: hung or abandoned (``place`` then stands in for ``call_at``)
        self.uniform = (
            not cfg.faults and not self._error_table and not self._hang_p and not self._rejects
            and self._plain is not None and self.slots is None and self.quota is None
        )

    def _service_time(self, class_key, tokens: float = -1) -> tuple[float, float, float]:
        """(time to first token, decode time after it, output tokens); ``tokens``: the request's
        own output tokens (a trace's), or -1 to draw them.  A plain model answers all at once."""
        if self._plain is not None:
            return self._plain(), 0.0, tokens if tokens >= 0 else self._plain_reply_tokens(class_key)
        if tokens < 0:
            tokens_sampler = self._tokens.get(class_key)
            tokens = tokens_sampler() if tokens_sampler is not None else self._default_tokens()
        tokens = max(tokens, 0.0)
        return self._ttft(), tokens / self._tokens_per_s, tokens

    def _plain_reply_tokens(self, class_key) -> float:
        sampler = self._plain_tokens.get(class_key)
        return sampler() if sampler is not None else PLAIN_REPLY_TOKENS

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

    def _refused(self, at: float, fault, rtt: float, ctx=None) -> tuple[float, Failure] | None:
        """A call refused outright: an outage (at once), over the rpm/tpm quota (a 429 with its
        Retry-After, after the round trip) or the limit full with ``reject`` (a 429 after the
        round trip); when it comes back and the failure, else None (and the call charged to
        the quota in ``_entry``)."""
        self._entry = None
        if fault is not None and fault.kind == "outage":
            return at, Failure("connect", 0)
        if self.quota is not None and ctx is not None:
            got = self.quota.admit(at, requested_tokens(ctx.input_tokens, ctx.output_tokens))
            if not isinstance(got, QuotaEntry):
                return at + rtt, Failure("429", 429, float(header_seconds(got)))
            self._entry = got
        if self.cfg.over_limit == "reject" and self._full(at):
            self.rejected += 1
            return at + rtt, Failure("429", 429, ERROR_RETRY_AFTER_S)
        return None

    def _settle(self, ctx, entry: QuotaEntry | None, at: float, output: int) -> None:
        if entry is not None:
            self.quota.settle(entry, at, (ctx.input_tokens if ctx.input_tokens >= 0 else PROMPT_TOKENS) + output)

    def _serve(self, ctx, class_key, at: float, start: float, fault, rtt: float,
               entry: QuotaEntry | None = None) -> tuple[float, Failure | None, tuple | None]:
        """The call asked for at ``at`` is served from ``start``: when its answer is back (inf:
        never), the failure it brings, and for a reply (first chunk at, tpot, largest chunk gap,
        tokens, the stream broke) for ``_replied``.  Books the limit's server when there is one."""
        if fault is None and self.cfg.faults:
            fault = active_fault(self.cfg.faults, start)
        servers = self.servers
        if (fault is not None and fault.kind == "hang") or (self._hang_p and self.rng.random() < self._hang_p):
            # never answers (a hung provider, or one stuck stream): only a deadline ends it
            if servers is not None:
                servers.book(at, start, math.inf)
            return math.inf, None, None
        first, decode, tokens = self._service_time(class_key, ctx.output_tokens)
        service = first + decode
        status = self._draw_error()
        failure = None
        broken = False
        if fault is not None:
            if fault.kind == "slow":
                service *= fault.latency_factor
                first *= fault.latency_factor
                decode *= fault.latency_factor
            elif fault.kind == "errors" and self.rng.random() < fault.error_rate:
                status = fault.error_status
            elif fault.kind == "reset":
                service /= 2
                # a stream whose first chunk went out before the reset breaks mid-way
                broken = ctx.stream and service >= first
                if not broken:
                    failure = Failure("reset", 0)
        if status and failure is None:
            # errors come back about when the first token would have
            service = min(service, self._ttft() if self._ttft is not None else service)
            failure = Failure(str(status), status, ERROR_RETRY_AFTER_S if status == 429 else None)
            broken = False
        held = rtt + service
        end = servers.book(at, start, held) if servers is not None else start + held
        if failure is not None:
            self._settle(ctx, entry, end, 0)
            return end, failure, None
        n = reply_tokens(tokens)
        self._settle(ctx, entry, end, n)
        return end, None, (start + rtt + first, decode, n, broken)

    def _replied(self, ctx, end: float, reply: tuple) -> float:
        """Write a reply's figures on the request (its first reply: a race's loser that is
        left running does not overwrite the winner's); the instant the caller is answered:
        the end, or for a stream its first chunk."""
        first_at, decode, n, broken = reply
        if ctx.reply_tokens == 0:
            if broken:
                ctx.stream_error = "reset"
            else:
                ctx.reply_tokens = n
            if ctx.stream:
                ctx.first_token_at = first_at
                ctx.stream_end_at = end
                if not broken:
                    ctx.tpot_s, ctx.itl_max_s = even_figures(decode, n)
        return first_at if ctx.stream else end

    def call_at(self, ctx, class_key, at: float) -> tuple[float, float, Failure | None]:
        """Place a call going out at ``at``: now, or later when nothing here can observe the
        gap (no concurrency limit).  Only for a provider without ``slots`` (its calls are never
        abandoned).  Returns (start, end, failure): served from ``start``, answered at ``end``
        (inf: never; a stream's first chunk).  The call is in flight until the caller calls
        ``answered``, a stream's until its end."""
        start, end, failure, reply = self._place(ctx, class_key, at)
        if reply is not None:
            end = self._replied(ctx, end, reply)
        return start, end, failure

    def _place(self, ctx, class_key, at: float) -> tuple[float, float, Failure | None, tuple | None]:
        """``call_at`` without writing the reply on the request: (start, end, failure, reply)."""
        self.calls += 1
        self.in_flight += 1
        faults = self.cfg.faults
        fault = active_fault(faults, at) if faults else None
        rtt = self.rtt()
        entry = None
        if fault is not None or self._rejects or self.quota is not None:
            refused = self._refused(at, fault, rtt, ctx)
            if refused is not None:
                return refused[0], refused[0], refused[1], None
            entry = self._entry
        start = self.servers.next_start(at) if self.servers is not None else at
        ctx.provider_queue_s += start - at
        end, failure, reply = self._serve(ctx, class_key, at, start, fault, rtt, entry)
        return start, end, failure, reply

    def place(self, ctx, at: float) -> tuple[float, float]:
        """``call_at`` for a ``uniform`` provider: (start, end) of a call going out at ``at``
        (the same draws in the same order, so the same numbers)."""
        self.calls += 1
        self.in_flight += 1
        held = self.rtt() + self._plain()
        own = ctx.output_tokens
        if own >= 0:
            ctx.reply_tokens = reply_tokens(own)
        elif self._plain_tokens:
            ctx.reply_tokens = reply_tokens(self._plain_reply_tokens((ctx.endpoint, ctx.klass.name)))
        else:
            ctx.reply_tokens = PLAIN_REPLY_TOKENS
        servers = self.servers
        if servers is None:
            start, end = at, at + held
        else:
            start, end = servers.take(at, held)
            ctx.provider_queue_s += start - at
        if ctx.stream:  # a plain model's reply comes all at once
            ctx.first_token_at = ctx.stream_end_at = end
        return start, end

    def answered(self, ctx, start: float, end: float) -> None:
        """The caller has its answer at ``end`` (a ``call_at`` call): a stream relayed from its
        first chunk keeps the call in flight to the stream's end."""
        tail_end = ctx.stream_end_at
        if ctx.stream and tail_end > end:
            ctx.provider_s += tail_end - start
            self.env.timeout(tail_end - end).callbacks.append(self._stream_over)
            return
        self.in_flight -= 1
        ctx.provider_s += end - start

    def _stream_over(self, _event) -> None:
        self.in_flight -= 1

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
            start, end, failure, reply = self._place(ctx, class_key, env.now + lead)
            answer = reply[0] if reply is not None and ctx.stream else end
            answered = False
            try:
                if end == math.inf:
                    yield self.stuck.wait()  # never answers: only a deadline ends it
                yield env.timeout(answer - env.now)
                answered = True
            finally:
                if answered and reply is not None:
                    self._replied(ctx, end, reply)
                if answered and answer < end:  # a stream: in flight to its end
                    ctx.provider_s += end - start
                    env.timeout(end - env.now).callbacks.append(self._stream_over)
                else:
                    self.in_flight -= 1
                    ctx.provider_s += max(env.now, start) - start  # the end, or when the caller walked away
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
        refused = self._refused(now, fault, rtt, ctx)
        if refused is not None:
            if refused[0] > now:
                yield env.timeout(refused[0] - now)
            raise refused[1]
        entry = self._entry
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
        if self._llm is not None:
            yield from self._llm_call(ctx, class_key, start, fault, rtt, entry)
            return
        streaming_to = -1.0  # a stream relayed from its first chunk: the slot is held to its end
        try:
            end, failure, reply = self._serve(ctx, class_key, now, start, fault, rtt, entry)
            if end == math.inf:
                yield self.stuck.wait()
            answer = reply[0] if reply is not None and ctx.stream else end
            yield env.timeout(answer - env.now)
            if reply is not None:
                self._replied(ctx, end, reply)
                if answer < end:
                    streaming_to = end
            if failure is not None:
                raise failure
        finally:
            if streaming_to > env.now:
                ctx.provider_s += streaming_to - start
                env.timeout(streaming_to - env.now).callbacks.append(lambda _: self._stream_slot_over(slots))
            else:
                self.in_flight -= 1
                ctx.provider_s += env.now - start
                slots.release()

    def _stream_slot_over(self, slots) -> None:
        self.in_flight -= 1
        slots.release()

    # ------------------------------------------------------------------ llm server

    def _llm_call(self, ctx, class_key, start: float, fault, rtt: float, entry: QuotaEntry | None = None):
        """Generator: a call on an LLM server, admitted at ``start`` (its slot held): the round
        trip, the prefill queue and prefill, then the shared decode.  A stream is answered at
        its first token; its decode goes on, holding the slot, until ``ctx.stream_done``."""
        env = self.env
        lat = self._llm
        if fault is None and self.cfg.faults:
            fault = active_fault(self.cfg.faults, start)
        job = None
        prefill_held = False
        handed_on = False  # a stream's decode took over the slot and the accounting
        try:
            if (fault is not None and fault.kind == "hang") or (self._hang_p and self.rng.random() < self._hang_p):
                yield self.stuck.wait()
            inp = ctx.input_tokens if ctx.input_tokens >= 0 else self._default_input()
            out = ctx.output_tokens
            if out < 0:
                sampler = self._tokens.get(class_key)
                out = sampler() if sampler is not None else self._default_tokens()
            out = max(out, 0.0)
            factor = fault.latency_factor if fault is not None and fault.kind == "slow" else 1.0
            prefill_s = (self._prefill_base() + max(inp, 0.0) / lat.prefill_tokens_per_s) * factor
            status = self._draw_error()
            if fault is not None and fault.kind == "errors" and self.rng.random() < fault.error_rate:
                status = fault.error_status
            if rtt > 0:
                yield env.timeout(rtt)
            queued_at = env.now
            waiting = self.prefill.acquire()
            if waiting is not None:
                try:
                    yield waiting
                except BaseException:
                    self.prefill.cancel(waiting)
                    raise
            prefill_held = True
            ctx.provider_queue_s += env.now - queued_at
            if prefill_s > 0:
                yield env.timeout(prefill_s + (self.lateness(prefill_s) if self.lateness is not None else 0.0))
            if self.reply_work is not None:
                yield from self.reply_work()
            self.prefill.release()
            prefill_held = False
            if fault is not None and fault.kind == "reset":
                self._settle(ctx, entry, env.now, 0)
                raise Failure("reset", 0)
            if status:
                self._settle(ctx, entry, env.now, 0)
                raise Failure(str(status), status, ERROR_RETRY_AFTER_S if status == 429 else None)
            n = reply_tokens(out)
            first_at = env.now
            done = env.event()
            job = self._decode_join(out * factor, done)
            if ctx.stream and ctx.reply_tokens == 0:
                ctx.reply_tokens = n
                ctx.first_token_at = first_at
                ctx.stream_end_at = math.inf
                ctx.stream_done = done
                done.callbacks.append(lambda _: self._llm_stream_over(ctx, job, first_at, n, start, entry))
                handed_on = True
                return
            yield done
            job = None
            self._settle(ctx, entry, env.now, n)
            if ctx.reply_tokens == 0:
                ctx.reply_tokens = n
        finally:
            if prefill_held:
                self.prefill.release()
            if not handed_on:
                if job is not None:  # walked away mid-decode: the stream stops
                    self._decode_leave(job)
                self.in_flight -= 1
                ctx.provider_s += env.now - start
                self.slots.release()

    def _llm_stream_over(self, ctx, job, first_at: float, n: int, start: float, entry: QuotaEntry | None) -> None:
        now = self.env.now
        ctx.stream_end_at = now
        self._settle(ctx, entry, now, n)
        if n > 1:
            gap = job.work / (n - 1) / job.min_rate if job.min_rate > 0 else 0.0
            ctx.tpot_s = (now - first_at) / (n - 1)
            ctx.itl_max_s = min(tokens_per_chunk(gap), n - 1) * gap
        self.in_flight -= 1
        ctx.provider_s += now - start
        self.slots.release()

    def _decode_join(self, work: float, done: simpy.Event):
        job = self.decode.join(self.env.now, work)
        self._decode_done[job.key] = done
        self._decode_schedule()
        return job

    def _decode_leave(self, job) -> None:
        self.decode.leave(self.env.now, job)
        self._decode_done.pop(job.key, None)
        self._decode_schedule()

    def _decode_schedule(self) -> None:
        """One timer for the next stream to finish; a join or leave makes the pending one stale."""
        self._decode_timer += 1
        nxt = self.decode.next_done(self.env.now)
        if nxt is not None:
            gen = self._decode_timer
            self.env.timeout(max(nxt[0] - self.env.now, 0.0)).callbacks.append(lambda _: self._decode_fire(gen))

    def _decode_fire(self, gen: int) -> None:
        if gen != self._decode_timer:
            return
        now = self.env.now
        while True:
            nxt = self.decode.next_done(now)
            if nxt is None or nxt[0] > now + 1e-9:
                break
            job = nxt[1]
            self.decode.leave(now, job)
            self._decode_done.pop(job.key).succeed()
        self._decode_schedule()

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
