"""How fast this machine runs Python right now: a small fixed piece of work, timed in CPU seconds.

A cloud VM's core is not a constant.  On the machines these suites run on, the same work takes
its best time for a while, then 1.5-1.8 times as long for tens of seconds, as the host's other
tenants come and go (``benchmarks/machine_speed.py`` shows the two states; no steal time shows
in ``/proc/stat`` meanwhile).  A profile's CPU costs hold for the mix of the two states during
its own minutes; a measurement in other minutes can find the gateway 15-25 % faster or slower
than its profile says, and a scenario whose latency is mostly CPU follows that.

The probe is that fixed work (dict updates and string building, as a gateway's request handling
does), a couple of milliseconds of it, run by the CPU sampler's thread at each sample: about
1 % of one core.  Its CPU time, not its wall time, is kept, so waiting for a core does not
count, only how fast the core runs once it has it.  The profile keeps the probe's mean over its
runs (``[measured] speed_probe_ms``); ``gwsim calibrate check`` reports each measurement's
probe against it (column ``slower %``).  It is a diagnostic: the simulator is never given it.
"""

from __future__ import annotations

import time
from pathlib import Path

#: Iterations of the fixed work: about 2 ms of CPU on the machines of 2026-12.
PROBE_ITERATIONS = 10_000


def _work(n: int = PROBE_ITERATIONS) -> int:
    table: dict[str, int] = {}
    total = 0
    for i in range(n):
        key = f"k{i % 97}"
        table[key] = table.get(key, 0) + i
        total += len(key) * (i & 7)
    return total


def probe_s() -> float:
    """The CPU seconds this thread takes for the fixed work once."""
    start = time.thread_time()
    _work()
    return time.thread_time() - start


def profile_speed_s(profile_path: str | Path) -> float | None:
    """The probe's mean in seconds as a profile TOML recorded it (``[measured] speed_probe_ms``);
    None for a profile written before the probe existed, or none at all."""
    import tomllib

    try:
        data = tomllib.loads(Path(profile_path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    value = (data.get("measured") or {}).get("speed_probe_ms")
    return float(value) / 1e3 if isinstance(value, (int, float)) and value > 0 else None


def slower_share(run_s: float | None, profile_s: float | None) -> float | None:
    """How much longer the probe took during a run than during its profile (0.2: 20 % slower)."""
    if not run_s or not profile_s:
        return None
    return run_s / profile_s - 1.0
