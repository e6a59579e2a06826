"""An LLM inference server's decode, as a vLLM-class server runs it: the streams being decoded
share the GPU's token throughput.

Every active stream advances at the same rate, ``min(max_stream_tokens_per_s,
decode_tokens_per_s / n)`` tokens per second with ``n`` streams active: alone a stream runs at
its own maximum; beyond ``decode_tokens_per_s / max_stream_tokens_per_s`` streams they slow
down together (processor sharing with a per-job cap).  The state is kept on a virtual clock:
``v`` is how many tokens one stream has decoded since the server started, so a stream that
joined at ``v0`` with ``work`` tokens to decode is done when ``v`` reaches ``v0 + work``, and
the next to finish is always the one with the smallest ``v0 + work``; a change in ``n`` only
changes how fast ``v`` moves.  Written once, ``now`` passed in: the simulator schedules the
next finish from it, the emulated provider paces each stream's chunks by it.
"""

from __future__ import annotations

import heapq
import itertools
import math

__all__ = ["DecodeJob", "SharedDecode"]


class DecodeJob:
    """One stream in decode: joined at virtual time ``v0`` with ``work`` tokens to decode."""

    __slots__ = ("key", "v0", "work", "done_v", "min_rate", "active")

    def __init__(self, key: int, v0: float, work: float, rate: float) -> None:
        self.key = key
        self.v0 = v0
        self.work = work
        self.done_v = v0 + work
        self.min_rate = rate  # the slowest per-stream rate seen while active (its widest chunk gap)
        self.active = True

    def __repr__(self) -> str:
        return f"<DecodeJob {self.key} work={self.work:g} active={self.active}>"


class SharedDecode:
    """The decode of one server: ``join`` a stream, ``leave`` it (done or abandoned), ask when
    the next finishes (``next_done``) and how far a stream has got (``progress``)."""

    def __init__(self, decode_tokens_per_s: float, max_stream_tokens_per_s: float | None = None) -> None:
        if decode_tokens_per_s <= 0 or (max_stream_tokens_per_s is not None and max_stream_tokens_per_s <= 0):
            raise ValueError(f"expected positive token rates, got {decode_tokens_per_s}, {max_stream_tokens_per_s}")
        self.total = float(decode_tokens_per_s)
        self.cap = float(max_stream_tokens_per_s) if max_stream_tokens_per_s is not None else self.total
        self.v = 0.0
        self.at = 0.0
        self.active = 0
        self.peak = 0
        self._heap: list[tuple[float, int, DecodeJob]] = []
        self._jobs: dict[int, DecodeJob] = {}
        self._keys = itertools.count()

    def rate(self, n: int | None = None) -> float:
        """Tokens per second of each stream when ``n`` (default: the active count) are active."""
        n = self.active if n is None else n
        return self.cap if n <= 0 else min(self.cap, self.total / n)

    def _advance(self, now: float) -> None:
        if now > self.at:
            if self.active:
                self.v += (now - self.at) * self.rate()
            self.at = now

    def join(self, now: float, work: float) -> DecodeJob:
        """A stream with ``work`` tokens to decode starts now."""
        self._advance(now)
        self.active += 1
        self.peak = max(self.peak, self.active)
        rate = self.rate()
        job = DecodeJob(next(self._keys), self.v, max(float(work), 0.0), rate)
        self._jobs[job.key] = job
        heapq.heappush(self._heap, (job.done_v, job.key, job))
        for other in self._jobs.values():
            if other.min_rate > rate:
                other.min_rate = rate
        return job

    def leave(self, now: float, job: DecodeJob) -> None:
        """``job`` leaves (its work done, or abandoned): the others speed up."""
        if not job.active:
            return
        self._advance(now)
        job.active = False
        del self._jobs[job.key]
        self.active -= 1

    def progress(self, now: float, job: DecodeJob) -> float:
        """Tokens ``job`` has decoded by ``now`` (at most its work)."""
        self._advance(now)
        return min(self.v - job.v0, job.work) if job.active else job.work

    def time_to(self, now: float, job: DecodeJob, tokens: float) -> float:
        """Seconds from ``now`` until ``job`` has decoded ``tokens``, if nothing joins or leaves."""
        self._advance(now)
        left = job.v0 + tokens - self.v
        return max(left, 0.0) / self.rate() if left > 0 else 0.0

    def next_done(self, now: float) -> tuple[float, DecodeJob] | None:
        """When the next active stream finishes at the current rates, and which; None when idle."""
        heap = self._heap
        while heap and not heap[0][2].active:
            heapq.heappop(heap)
        if not heap:
            return None
        self._advance(now)
        done_v, _, job = heap[0]
        return now + max(done_v - self.v, 0.0) / self.rate(), job

    def __repr__(self) -> str:
        return f"<SharedDecode active={self.active} rate={self.rate():.3g}/s v={self.v:.6g}>"


def mm1_ps_mean_response(arrival_rate: float, mean_work_s: float) -> float:
    """Mean response time of an M/G/1 processor-sharing server (the M/M/1 one: insensitive to
    the work's distribution): ``E[S] / (1 - ρ)``, ρ = λ·E[S] < 1."""
    rho = arrival_rate * mean_work_s
    return mean_work_s / (1.0 - rho) if rho < 1 else math.inf
