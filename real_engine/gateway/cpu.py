"""The gateway's CPU: real work on a fixed number of worker threads.

A gateway spends CPU per request (parse, middleware, reply), per upstream hop (encode,
decode) and on building provider SDK clients.  The scenario gives those as durations
and ``gateway.cpu_workers`` as the number of cores.  Here each piece of work really
burns that much CPU: SHA-256 over a buffer until the worker thread's own CPU clock
(``time.thread_time``) has advanced by the sampled amount.  ``hashlib`` releases the
GIL for buffers above 2 KiB, so ``cpu_workers`` threads hash in parallel and contend
for the machine's cores like the real thing; when all workers are busy, work queues
(``cpu_wait``).  Nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)

_CHUNK = b"\x5a" * 16384  # ~10-30 us of hashing per update: fine-grained, GIL released


def burn(seconds: float) -> float:
    """Burn ``seconds`` of this thread's CPU time by hashing; return the wall time taken."""
    start_wall = time.perf_counter()
    if seconds <= 0:
        return 0.0
    deadline = time.thread_time() + seconds
    h = hashlib.sha256()
    while time.thread_time() < deadline:
        h.update(_CHUNK)
    return time.perf_counter() - start_wall


@dataclass(frozen=True)
class CpuTiming:
    wait_s: float  # queued for a worker
    busy_s: float  # on a worker


class CpuPool:
    """``workers`` threads running CPU work; ``await run(s)`` -> how long it queued and ran."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gw-cpu")
        self._lock = threading.Lock()
        self._busy = 0
        self._queued = 0
        self.jobs = 0
        self.busy_total_s = 0.0
        self._closed = False

    def __repr__(self) -> str:
        return f"<CpuPool workers={self.workers} busy={self._busy} queued={self._queued} jobs={self.jobs}>"

    def _job(self, submitted: float, seconds: float) -> CpuTiming:
        started = time.perf_counter()
        with self._lock:
            self._queued -= 1
            self._busy += 1
        try:
            busy = burn(seconds)
        finally:
            with self._lock:
                self._busy -= 1
                self.busy_total_s += time.perf_counter() - started
        return CpuTiming(wait_s=started - submitted, busy_s=busy)

    async def run(self, seconds: float) -> CpuTiming:
        """Run ``seconds`` of CPU on a worker; zero costs nothing (no thread hop)."""
        if seconds <= 0 or self._closed:
            return CpuTiming(0.0, 0.0)
        with self._lock:
            self._queued += 1
        self.jobs += 1
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, self._job, time.perf_counter(), seconds)
        # A cancelled request cannot stop a thread mid-hash; the work finishes and is dropped,
        # as a real goroutine's CPU would be spent anyway.
        return await fut

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
