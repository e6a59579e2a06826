"""The shared run clock: one instant ``t0`` on CLOCK_MONOTONIC that every process agrees on.

On Linux ``time.monotonic()`` reads CLOCK_MONOTONIC, which is system-wide, so the
orchestrator can pick ``t0`` a little in the future and hand the same float to the
emulators, the gateway and the load generator.  "Time since run start" is then
``time.monotonic() - t0`` in every process, and fault schedules, arrival times and
per-request records all use that one time base.

Event-loop timers are coarse (libuv rounds to whole milliseconds, epoll waits in
milliseconds), so ``sleep_until`` sleeps until a little before the target and then
alternates short kernel naps with passes of the loop until the target has passed:
precise, and the loop is never blocked for more than a nap.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

#: How long before a target ``sleep_until`` stops sleeping on the loop's (millisecond)
#: timer and starts napping/yielding.
DEFAULT_SPIN_S = 0.0005
#: Event-loop timers are only this fine (libuv and epoll count whole milliseconds).
TIMER_GRANULARITY_S = 0.001
#: Longest blocking nap in the last ``spin_s``: the most a reply's timestamp can be late.
DEFAULT_NAP_S = 0.0001


def default_t0(lead_s: float = 0.5) -> float:
    """A run start ``lead_s`` seconds from now (time for the other processes to start)."""
    return time.monotonic() + lead_s


@dataclass(frozen=True, slots=True)
class RunClock:
    """Run time (seconds since ``t0``) and precise waits on it."""

    t0: float

    def now(self) -> float:
        """Seconds since the run start (negative before it)."""
        return time.monotonic() - self.t0

    def monotonic_at(self, run_time: float) -> float:
        """The ``time.monotonic()`` value of a run time."""
        return self.t0 + run_time

    async def sleep_until(self, run_time: float, spin_s: float = DEFAULT_SPIN_S, nap_s: float = DEFAULT_NAP_S) -> float:
        """Wait until run time ``run_time``; return how late the wake-up was (seconds, >= 0)."""
        return await sleep_until_monotonic(self.t0 + run_time, spin_s, nap_s)

    def __repr__(self) -> str:
        return f"<RunClock t0={self.t0:.6f} now={self.now():+.3f}s>"


async def sleep_until_monotonic(target: float, spin_s: float = DEFAULT_SPIN_S, nap_s: float = DEFAULT_NAP_S) -> float:
    """Wait until ``time.monotonic() >= target``; return the lateness in seconds.

    Sleep on the loop's timer until ``spin_s`` before the target; then, until the
    target, alternate a short blocking nap (``nap_s``, a high-resolution kernel sleep)
    with one pass of the event loop (``sleep(0)``) so replies keep being read.  Napping
    instead of busy-spinning keeps the process a sleeper in the kernel's eyes, so it is
    woken promptly even when other processes compete for the cores.  ``nap_s=0`` spins.
    """
    while True:
        remaining = target - time.monotonic()
        if remaining <= 0:
            return -remaining
        if remaining - spin_s >= TIMER_GRANULARITY_S:
            await asyncio.sleep(remaining - spin_s)
        else:
            # Below the loop timer's granularity a timer would fire at once (libuv
            # rounds down to whole ms) and the loop would spin; nap instead.
            if nap_s > 0:
                time.sleep(min(nap_s, remaining))
            await asyncio.sleep(0)
