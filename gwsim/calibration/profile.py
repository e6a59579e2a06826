"""``gwsim calibrate profile``: what this machine adds to every request, measured.

The real engine pays costs the scenario does not state.  Its three processes (load
generator, gateway, emulators) spend Python CPU on every request and every upstream call,
on a machine whose cores they share with each other and with whatever else runs there;
each call also waits on loopback and on event-loop timers that fire late.  This module
measures them on this machine:

* two real-engine runs on near-empty scenarios (one upstream call per request, then two),
  reading each process's CPU time from ``/proc`` over the arrival window: CPU per request
  of the load generator and the gateway's event loop, per upstream call of the gateway and
  the emulators; and the other work on the machine meanwhile (``background``);
* from the same runs' per-request records, the wall time per request and per upstream call
  beyond that CPU and the emulated service times, kept as samples (empirical
  distributions: their spread is what sets light-load P95/P99);
* a run of bursts (20 requests due at once): the gap between a burst's sends is the load
  generator's CPU to send one request (``client_send_cpu``), the rest of its per-request CPU
  being the reply's reading and the record's building;
* small benchmarks for a TCP connect, a TLS handshake and a Redis round trip (medians).

The result is a profile TOML (plus two sample files next to it) that scenarios name with
``profile = "..."``; its ``[machine]`` table becomes the scenario's machine section.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gwsim.calibration.speed import probe_s
from real_engine import settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


async def _loopback_benchmarks(n: int, redis_url: str) -> dict[str, float]:
    import aiohttp
    from aiohttp import web

    from real_engine.tls import make_self_signed

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"provider": "p", "model": "m", "alternatives": []})

    app = web.Application()
    app.router.add_post("/predict", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - port 0 chosen by the kernel
    out: dict[str, float] = {}
    try:
        # HTTP round trip over a kept-alive connection: the per-hop cost outside the gateway's CPU.
        body = {"prompt": "x" * 120, "endpoint": "e", "class": "c"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
            for _ in range(20):  # warm the connection and the code paths
                async with s.post(f"http://127.0.0.1:{port}/predict", json=body) as r:
                    await r.read()
            rtts = []
            for _ in range(n):
                t = time.perf_counter()
                async with s.post(f"http://127.0.0.1:{port}/predict", json=body) as r:
                    await r.read()
                rtts.append(time.perf_counter() - t)
        out["hop_rtt"] = statistics.median(rtts)
        # TCP connect on loopback.
        dials = []
        for _ in range(n):
            t = time.perf_counter()
            _, w = await asyncio.open_connection("127.0.0.1", port)
            dials.append(time.perf_counter() - t)
            w.close()
            await w.wait_closed()
        out["dial_time"] = statistics.median(dials)
    finally:
        await runner.cleanup()

    # TLS handshake: a TLS server on loopback, connect + handshake minus a plain connect.
    server_ctx, client_ctx = make_self_signed()

    async def tls_handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(tls_handle, "127.0.0.1", 0, ssl=server_ctx)
    tport = server.sockets[0].getsockname()[1]
    try:
        hs = []
        for _ in range(max(10, n // 4)):
            t = time.perf_counter()
            _, w = await asyncio.open_connection("127.0.0.1", tport, ssl=client_ctx, server_hostname="localhost")
            hs.append(time.perf_counter() - t)
            w.close()
            try:
                await w.wait_closed()
            except (ConnectionError, OSError):
                pass
        out["tls_handshake_time"] = max(statistics.median(hs) - out["dial_time"], 0.0)
    finally:
        server.close()
        await server.wait_closed()

    # Redis GET round trip.
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        await client.set("gwsim:calibrate:probe", "1")
        ops = []
        for _ in range(n):
            t = time.perf_counter()
            await client.get("gwsim:calibrate:probe")
            ops.append(time.perf_counter() - t)
        out["redis_op_time"] = statistics.median(ops)
        await client.delete("gwsim:calibrate:probe")  # a key left behind lengthens every semantic scan
    finally:
        await client.aclose()
    return out


async def _redis_client_costs(redis_url: str, n: int, entries: int = 200) -> dict[str, float]:
    """The gateway's own Redis code (``RedisCaches``) on this process's event loop: its CPU per
    round trip (redis.asyncio encoding a command and parsing the reply), its CPU per entry a
    semantic scan compares (decode the vector, cosine) beyond that entry's round trip, and the
    round trip's wall time beyond the CPU (``redis_op_time``: loopback and the server)."""
    from real_engine.gateway.caches import RedisCaches
    from simulator.scenario import scenario_from_data

    data = {
        "run": {"duration": "1s"},
        "workload": {"mode": "open", "arrivals": {"process": "constant", "rate": "1/s"}, "mix": {"ep": 1.0}},
        "endpoints": {"ep": {"kind": "select_model", "classes": [{"name": "c"}]}},
        "model_selection": {"candidates": ["p"], "semantic_cache": {"enabled": True, "initial_entries": entries}},
        "providers": {"p": {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "1ms"}}}},
    }
    caches = RedisCaches(scenario_from_data(data, "<profile>"), redis_url, f"gwsim:calibrate:{os.getpid()}:", run_clock=time.monotonic)
    rng = np.random.default_rng(7)
    try:
        await caches.seed({}, {}, rng, {})
        probe = "a prompt nobody stored"
        for _ in range(50):  # warm the connection and the code paths
            await caches.semantic_get(probe)
        ops = 5 * n
        wall = []
        cpu0 = time.process_time()
        for _ in range(ops):
            t = time.perf_counter()
            await caches.semantic_get(probe)
            wall.append(time.perf_counter() - t)
        per_op = (time.process_time() - cpu0) / ops
        vector = rng.standard_normal(64)
        vector /= np.linalg.norm(vector)
        await caches.semantic_scan(vector)
        calls, keys = caches.scan_calls, caches.scanned_keys
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(5):
            await caches.semantic_scan(vector)
        cpu, scan_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        calls, keys = caches.scan_calls - calls, caches.scanned_keys - keys
    finally:
        await caches.close()
    per_entry = max(0.0, (cpu - (calls + keys) * per_op) / keys) if keys else 0.0
    # a scan's round trips back to back: what each took beyond the client's CPU is the wire and
    # the server (a single GET's wall time hides it: the reply is back before its parse is done)
    trips = calls + keys
    wire = (scan_wall - cpu) / trips if trips else statistics.median(wall) - per_op
    return {"redis_cpu": per_op, "scan_entry_cpu": per_entry, "redis_op_time": max(wire, 0.0)}


_NULL_SCENARIO = """
[run]
name = "null-{kind}"
duration = "{duration}s"
warmup = "1s"
drain = "5s"
seed = 3

[workload]
mode = "open"
arrivals = {arrivals}
mix = {{ ep = 1.0 }}

[endpoints.ep]
kind = "chat_completions"
model_selection = {selection}
classes = [{{ name = "c", provider = "p" }}]

[gateway]
cpu_workers = 1

[ai_service]
workers = 4
max_batch_size = 1
batch_base = {{ dist = "deterministic", value = "{ai_s}s" }}

[model_selection]
candidates = ["p"]
semantic_cache = {{ enabled = false }}

[providers.p]
latency = {{ model = "plain", time = {{ dist = "deterministic", value = "{provider_s}s" }} }}

[prompt_cache]
enabled = false

[fallback]
mode = "none"
max_attempts = 1
"""

#: Emulated service times of the null runs: not zero, so the emulators' timers run (and are
#: late) as in any scenario; what is measured is the time beyond them.
NULL_AI_S = 0.010
NULL_PROVIDER_S = 0.020

#: Per-request record fields that are stages of the gateway's own work or its upstream calls;
#: the latency beyond their sum is the client side (load generator, loopback, gateway handler).
_STAGES = (
    "cpu_wait_s", "cpu_s", "cache_s", "embedding_s", "ai_pool_wait_s", "ai_connect_s", "ai_queue_s", "ai_service_s",
    "provider_pool_wait_s", "provider_connect_s", "provider_queue_s", "provider_s", "prompt_cache_s", "store_s",
)
#: LiteLLM's proxy (``gwsim measure --gateway litellm``) is the gateway of its runs: without it here
#: its session, busy with the run's own requests, was counted as other work on the machine.
_PROCESS_NAMES = {"real_engine.loadgen": "loadgen", "real_engine.gateway": "gateway", "real_engine.emulators": "emulators",
                  "litellm.proxy.proxy_cli": "gateway"}


def _ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def _proc_cpu(pid: int | str) -> float | None:
    """User + system CPU seconds of a process from /proc (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _ticks()
    except (OSError, IndexError, ValueError):
        return None


def _machine_state() -> tuple[float | None, int | None, float | None]:
    """(CPU seconds all cores have spent busy since boot, threads runnable now, CPU seconds the
    hypervisor has taken from the cores since boot) from /proc/stat.  The last is ``steal``: time
    a virtual core was ready to run but the host ran something else."""
    busy = running = stolen = None
    try:
        with open("/proc/stat", "rb") as f:
            lines = f.read().splitlines()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in lines[0].split()[1:9])
        busy = (user + nice + system + irq + softirq + steal) / _ticks()
        stolen = steal / _ticks()
        for line in lines:
            if line.startswith(b"procs_running"):
                running = int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return busy, running, stolen


def _runnable_sessions(exclude: set[int]) -> int:
    """Sessions other than ``exclude`` with a thread runnable now: Linux (autogroup) shares the
    cores fairly among sessions, so this, not the thread count, is what competes with ours."""
    sessions: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            tasks = os.listdir(f"/proc/{entry}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{entry}/task/{tid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields and fields[0] == b"R":
                sid = int(fields[3])
                if sid not in exclude and sid != 0:
                    sessions.add(sid)
                break  # one runnable thread is enough for the session to take its share
    return len(sessions)


def _children() -> dict[str, int]:
    """The real engine's processes started by this process: name -> pid."""
    me = str(os.getpid())
    out: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = f.read().rsplit(b")", 1)[1].split()[1].decode()
            if ppid != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, IndexError):
            continue
        for arg in argv[:4]:
            name = _PROCESS_NAMES.get(arg.decode(errors="replace"))
            if name:
                out[name] = int(entry)
    return out


@dataclass
class CpuSampler:
    """Samples, every ``every`` seconds, the CPU time of the real engine's processes, of this
    process and of the whole machine, and the machine's speed (``gwsim.calibration.speed``), so
    any window of a run can be read afterwards."""

    every: float = 0.2
    samples: list[tuple[float, dict[str, float], float | None, float, int | None]] = field(default_factory=list)
    probes: list[tuple[float, float]] = field(default_factory=list)  # (monotonic time, probe CPU seconds)
    stolen: list[tuple[float, float]] = field(default_factory=list)  # (monotonic time, steal seconds since boot)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "CpuSampler":
        self._thread = threading.Thread(target=self._loop, name="gwsim-cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def _loop(self) -> None:
        pids: dict[str, int] = {}
        own_session = os.getsid(0)
        while not self._stop.is_set():
            if len(pids) < len(set(_PROCESS_NAMES.values())):
                pids.update(_children())
            cpu = {name: c for name, pid in pids.items() if (c := _proc_cpu(pid)) is not None}
            busy, _running, stolen = _machine_state()
            sessions = _runnable_sessions({*pids.values(), own_session})
            self.samples.append((time.monotonic(), cpu, busy, time.process_time(), sessions))
            self.probes.append((time.monotonic(), probe_s()))
            if stolen is not None:
                self.stolen.append((time.monotonic(), stolen))
            self._stop.wait(self.every)

    def window(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds per process over [start, end] (monotonic), plus 'machine', 'self' and 'wall'."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            raise RuntimeError("profile: too few CPU samples in the measurement window")
        a, b = inside[0], inside[-1]
        out = {name: b[1][name] - a[1][name] for name in b[1] if name in a[1]}
        out["wall"] = b[0] - a[0]
        out["self"] = b[3] - a[3]
        if a[2] is not None and b[2] is not None:
            out["machine"] = b[2] - a[2]
        sessions = [s[4] for s in inside if s[4] is not None]
        if sessions:
            out["sessions"] = float(np.mean(sessions))
        return out

    def speed(self, start: float, end: float) -> float | None:
        """The speed probe's mean CPU seconds over [start, end] (monotonic); None with fewer than 5 probes."""
        inside = [d for t, d in self.probes if start <= t <= end]
        return float(np.mean(inside)) if len(inside) >= 5 else None

    def steal(self, start: float, end: float, span: float = 5.0) -> tuple[float, float] | None:
        """The share of the cores' time the hypervisor took over [start, end] (monotonic): its
        mean, and its largest over any ``span`` seconds in it (from one sample to the first at
        least ``span`` later); None with fewer than two samples."""
        inside = [s for s in self.stolen if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        cores = os.cpu_count() or 1

        def share(a: tuple[float, float], b: tuple[float, float]) -> float:
            return (b[1] - a[1]) / ((b[0] - a[0]) * cores) if b[0] > a[0] else 0.0

        peak, j = 0.0, 0
        for i, a in enumerate(inside):
            j = max(j, i + 1)
            while j < len(inside) - 1 and inside[j][0] - a[0] < span:
                j += 1
            if j < len(inside) and (inside[j][0] - a[0] >= span or i == 0):
                peak = max(peak, share(a, inside[j]))
        return share(inside[0], inside[-1]), peak

    def sessions(self) -> list[tuple[float, int]]:
        """(monotonic time, other runnable sessions) of every sample."""
        return [(s[0], s[4]) for s in self.samples if s[4] is not None]

    def background(self, start: float, end: float) -> float:
        """Other work on the machine over [start, end]: sessions with a runnable thread that are
        not the real engine's or this process's, on average."""
        w = self.window(start, end)
        if "sessions" in w:
            return w["sessions"]
        ours = sum(w.get(k, 0.0) for k in ("loadgen", "gateway", "emulators", "self")) / w["wall"] if w["wall"] > 0 else 0.0
        if "machine" in w and w["wall"] > 0:
            return max(w["machine"] / w["wall"] - ours, 0.0)
        return 0.0


@dataclass
class NullRun:
    hops: int
    requests: int  # arrivals inside the CPU window
    cpu: dict[str, float]  # process -> CPU seconds in the window (+ machine, self, wall)
    background: float  # other runnable threads on the machine meanwhile
    timer_lag: list[tuple[float, float]]  # (p50, p99) seconds of the emulators' timer lateness
    request_wall: np.ndarray  # latency beyond the stages, per request (s)
    hop_wall: np.ndarray  # upstream call time beyond the emulated time, per call (s)
    latency: np.ndarray
    speed: float | None = None  # the speed probe's mean meanwhile (s; gwsim.calibration.speed)


def _null_scenario(kind: str, hops: int, arrivals: str, duration_s: float) -> str:
    """``_NULL_SCENARIO`` with ``hops`` upstream calls per request, ``arrivals`` as its TOML
    inline table."""
    return _NULL_SCENARIO.format(kind=kind, duration=duration_s, selection=str(hops > 1).lower(), arrivals=arrivals,
                                 ai_s=NULL_AI_S, provider_s=NULL_PROVIDER_S)


def _measure_text(name: str, text: str, duration_s: float, redis_url: str, sampler: CpuSampler | None = None):
    """Measure scenario ``text`` on the real engine (a temporary file named ``name``);
    ``sampler`` samples the processes' CPU meanwhile."""
    from real_engine.measure import measure

    with tempfile.TemporaryDirectory(prefix="gwsim-profile-") as d:
        path = Path(d) / f"{name}.toml"
        path.write_text(text)
        if sampler is not None:
            sampler.start()
        try:
            return measure(str(path), [], duration_s=duration_s, redis_url=redis_url, startup_s=8.0)
        finally:
            if sampler is not None:
                sampler.stop()


def _settle_s(duration_s: float) -> float:
    """Run time before which a null run's requests are left out: the processes' imports and
    first connections are not per-request costs, and a load generator that started late sends
    its first requests late."""
    return min(3.0, duration_s / 3)


def _null_run(hops: int, duration_s: float, rate: float, redis_url: str) -> NullRun:
    sampler = CpuSampler()
    constant = f'{{ process = "constant", rate = "{rate}/s" }}'
    result = _measure_text(f"null_{hops}", _null_scenario(f"{hops}hop", hops, constant, duration_s), duration_s, redis_url, sampler)
    df = result.frame()
    settle = _settle_s(duration_s)
    ok = df.loc[(df["outcome"] == "ok") & (df["arrived_at"] >= settle)]
    if len(ok) < 10:
        raise RuntimeError(f"profile benchmark with {hops} upstream call(s): only {len(ok)} successful requests")
    lo, hi = result.t0 + settle, result.t0 + duration_s - 0.2
    cpu = sampler.window(lo, hi)
    arrived = df["arrived_at"].to_numpy()
    requests = int(((arrived >= lo - result.t0) & (arrived < hi - result.t0)).sum())
    stages = ok[[c for c in _STAGES if c in ok.columns]].sum(axis=1).to_numpy()
    latency = ok["latency_s"].to_numpy()
    hop_wall = [ok["provider_s"].to_numpy() - NULL_PROVIDER_S]
    if hops > 1:
        hop_wall.append(ok["ai_service_s"].to_numpy() - NULL_AI_S)
    return NullRun(hops, max(requests, 1), cpu, sampler.background(lo, hi), _timer_lags(result), latency - stages,
                   np.concatenate(hop_wall), latency, sampler.speed(lo, hi))


def _timer_lags(result) -> list[tuple[float, float]]:
    """(p50, p99) seconds of each emulator's timer lateness in a measured run (those with 20 delays or more)."""
    lags = []
    stats = result.emulator_stats or {}
    for snap in [stats.get("ai_service") or {}, *(stats.get("providers") or {}).values()]:
        if snap.get("lag_p50_ms") is not None and snap.get("lag_p99_ms") is not None and snap.get("delays", 0) >= 20:
            lags.append((snap["lag_p50_ms"] / 1000, snap["lag_p99_ms"] / 1000))
    return lags


def timer_lateness_table(lags: list[tuple[float, float]]) -> tuple[dict, float, float, float]:
    """The emulators' timers fire late (the loop's timers count whole milliseconds): a lognormal
    through the median and 99th percentile of their own lag records.  Returns (its distribution
    table, its mean, the median p50, the median p99), in seconds."""
    lag50 = float(np.median([a for a, _ in lags])) if lags else 0.0
    lag99 = float(np.median([b for _, b in lags])) if lags else 0.0
    if lag50 > 0 and lag99 > lag50:
        sigma = float(np.log(lag99 / lag50) / 2.3263478740408408)
        return {"dist": "lognormal", "mu": float(np.log(lag50)), "sigma": sigma}, float(np.exp(np.log(lag50) + sigma * sigma / 2)), lag50, lag99
    return {"dist": "deterministic", "value": max(lag50, 0.0)}, max(lag50, 0.0), lag50, lag99


#: The burst run: ``BURST_SIZE`` requests due at once every ``BURST_EVERY_S``.
BURST_SIZE = 20
BURST_EVERY_S = 0.5


def send_gaps(df: pd.DataFrame) -> np.ndarray:
    """Seconds between consecutive sends of requests due at the same instant (a burst), each
    burst's sends in the order they left: the load generator's CPU to send one request, the
    sends of a burst running one after another on its one thread."""
    gaps = [np.diff(np.sort(group.to_numpy())) for _, group in df.groupby("arrived_at")["started_at"] if len(group) > 1]
    return np.concatenate(gaps) if gaps else np.array([])


def _burst_send_gap(duration_s: float, redis_url: str) -> float:
    """The median gap between a burst's sends (``send_gaps``), measured on the real engine with
    one upstream call per request: the load generator's CPU per send."""
    arrivals = f'{{ process = "burst", size = {BURST_SIZE}, every = "{BURST_EVERY_S}s" }}'
    df = _measure_text("null_burst", _null_scenario("burst", 1, arrivals, duration_s), duration_s, redis_url).frame()
    # past the first bursts, which open the connections the later ones reuse
    gaps = send_gaps(df.loc[df["arrived_at"] >= _settle_s(duration_s)])
    if gaps.size < 10:
        raise RuntimeError(f"profile burst run: only {gaps.size} gaps between sends")
    return float(np.median(gaps))


#: The Redis database calibration measures in: a semantic scan SCANs the whole database, so keys
#: other programs keep in the default one (or left behind) would lengthen it.
CALIBRATION_DB = 15


def calibration_redis_url(url: str | None = None) -> str:
    """The Redis server of ``url`` (else the real engine's setting), database ``CALIBRATION_DB``."""
    from urllib.parse import urlsplit, urlunsplit

    url = settings.redis_url(url)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return url  # a unix socket names its database in the query; left as given
    return urlunsplit(parts._replace(path=f"/{CALIBRATION_DB}"))


def redis_keys(url: str) -> int | None:
    """Keys in the database of ``url`` (None when Redis does not answer)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        return int(client.dbsize())
    except redis.exceptions.RedisError:
        return None
    finally:
        client.close()


_SCAN_SCENARIO = """
[run]
name = "null-scan"
duration = "{duration}s"
warmup = "1s"
drain = "5s"
seed = 3

[workload]
mode = "open"
arrivals = {{ process = "constant", rate = "{rate}/s" }}
mix = {{ ep = 1.0 }}

[endpoints.ep]
kind = "select_model"
classes = [{{ name = "c" }}]

[ai_service]
workers = 4
max_batch_size = 1
batch_base = {{ dist = "deterministic", value = "{ai_s}s" }}

[model_selection]
candidates = ["p"]
semantic_cache = {{ enabled = true, scan_on_miss = true, initial_entries = {entries} }}

[providers.p]
latency = {{ model = "plain", time = {{ dist = "deterministic", value = "{ai_s}s" }} }}
"""


@dataclass
class ScanRun:
    """A real-engine run whose every request misses the semantic cache and scans it."""

    cpu_per_request: float  # the gateway process's CPU per request (s)
    cache_s: float  # median time in the cache stage (the GET and the scan)
    round_trips: float  # Redis round trips of the scan per request (SCAN calls and GETs)
    keys: float  # entries compared per request
    background: float


def _scan_run(duration_s: float, rate: float, redis_url: str, entries: int = 200) -> ScanRun:
    """The gateway scanning ``entries`` entries at a low rate: its CPU per request from /proc and
    the cache stage's wall time, in situ (a client benchmark alone runs on an idle event loop
    and a warm cache, and is off by a factor that changes from run to run)."""
    sampler = CpuSampler()
    text = _SCAN_SCENARIO.format(duration=duration_s, rate=rate, entries=entries, ai_s=NULL_AI_S)
    result = _measure_text("null_scan", text, duration_s, redis_url, sampler)
    df = result.frame()
    settle = _settle_s(duration_s)
    ok = df.loc[(df["outcome"] == "ok") & (df["arrived_at"] >= settle)]
    if len(ok) < 10:
        raise RuntimeError(f"profile benchmark of the semantic scan: only {len(ok)} successful requests")
    lo, hi = result.t0 + settle, result.t0 + duration_s - 0.2
    cpu = sampler.window(lo, hi)
    arrived = df["arrived_at"].to_numpy()
    requests = max(int(((arrived >= lo - result.t0) & (arrived < hi - result.t0)).sum()), 1)
    scan = (result.gateway_stats or {}).get("semantic_scan") or {}
    total = max(len(df), 1)
    calls, keys = scan.get("scan_calls", 0) / total, scan.get("keys_read", 0) / total
    return ScanRun(cpu.get("gateway", 0.0) / requests, float(ok["cache_s"].median()), calls + keys, keys,
                   sampler.background(lo, hi))


@dataclass
class Profile:
    """What ``measure_profile`` found: scalars in seconds (cores and background as counts) and
    the wall-time samples behind the two empirical distributions."""

    values: dict[str, float]
    request_latency: np.ndarray
    hop_latency: np.ndarray
    notes: list[str] = field(default_factory=list)
    timer_lateness: dict | None = None  # distribution table
    #: machine keys written as these distribution tables (seconds) rather than as their mean in ``values``;
    #: an empirical table's ``file = "@NAME"`` is the sample file written from ``samples[NAME]``
    distributions: dict[str, dict] = field(default_factory=dict)
    samples: dict[str, np.ndarray] = field(default_factory=dict)


def measure_profile(
    *, n: int = 200, duration_s: float = 12.0, rate: float = 20.0, redis_url: str | None = None
) -> Profile:
    """All machine parameters of this machine (see the module docstring)."""
    redis_url = settings.redis_url(redis_url)
    values = asyncio.run(_loopback_benchmarks(n, redis_url))
    values.pop("hop_rtt", None)  # the null runs measure a whole upstream call instead
    # the Redis round trip split into the gateway loop's CPU and the rest (replaces the plain wall time)
    values.update(asyncio.run(_redis_client_costs(redis_url, n)))
    one = _null_run(1, duration_s, rate, redis_url)
    two = _null_run(2, duration_s, rate, redis_url)
    scan = _scan_run(duration_s, min(rate, 5.0), calibration_redis_url(redis_url))
    send_gap = _burst_send_gap(duration_s, redis_url)
    cores = os.cpu_count() or 1

    def per_request(run: NullRun, name: str) -> float:
        return run.cpu.get(name, 0.0) / run.requests

    client = (per_request(one, "loadgen") + per_request(two, "loadgen")) / 2
    # The gateway's event loop: a + h per request with one call, a + 2h with two.
    g1, g2 = per_request(one, "gateway"), per_request(two, "gateway")
    hop = max(g2 - g1, 0.0)
    if hop == 0.0 or hop > g1:
        hop = g2 / 3  # the difference drowned in noise: split evenly per request and per call
    gateway = max(g1 - hop, 0.0)
    # The scan in situ: the gateway's CPU per request beyond a request with two upstream calls
    # (the embedding API and the AI service) is the scan's, split between round trips and
    # entries as the client benchmark splits it; the cache stage's wall time beyond that CPU,
    # per round trip, is the wire and the server.
    bench_trip, bench_entry = values["redis_cpu"], values["scan_entry_cpu"]
    scan_cpu = max(scan.cpu_per_request - gateway - 2 * hop, 0.0)
    if scan.round_trips > 0 and scan_cpu > 0:
        ratio = bench_entry / bench_trip if bench_trip > 0 else 0.0
        trip_cpu = scan_cpu / (scan.round_trips + ratio * scan.keys)
        values["redis_cpu"], values["scan_entry_cpu"] = trip_cpu, ratio * trip_cpu
        trips = scan.round_trips + 1  # and the exact GET before the scan
        values["redis_op_time"] = max((scan.cache_s - trip_cpu * trips - values["scan_entry_cpu"] * scan.keys) / trips, 0.0)
    upstream = (one.cpu.get("emulators", 0.0) + two.cpu.get("emulators", 0.0)) / (one.requests + 2 * two.requests)
    background = (one.background + two.background) / 2
    # The measured wall time beyond the stages includes that CPU, slowed by whatever shared
    # the cores meanwhile; the simulator adds the CPU itself on its machine model (one of our
    # threads among `background` others), so the wall-time samples keep only the rest.
    slow = max(1.0, (1.0 + background) / cores)
    lateness, lag_mean, lag50, lag99 = timer_lateness_table(one.timer_lag + two.timer_lag)
    # (half the client's CPU is after the reply has been timed: see simulator.model.machine.request_end)
    request_latency = less_mean(np.concatenate([one.request_wall, two.request_wall]), (client / 2 + gateway) * slow)
    hop_wall = np.concatenate([one.hop_wall, two.hop_wall])
    typical_call = float(np.median(hop_wall)) if hop_wall.size else 0.0
    share = call_cpu_on_path_share(hop, upstream, typical_call, slow, lag_mean)
    if share < 1.0:
        values["_hop_cpu_on_path_share"] = share
        hop, upstream = hop * share, upstream * share
    hop_latency = less_mean(hop_wall, (hop + upstream) * slow + lag_mean)
    speeds = [run.speed for run in (one, two) if run.speed is not None]
    if speeds:
        values["_speed_probe"] = float(np.mean(speeds))
    values.update(
        cores=float(cores), background=background, client_cpu=client, client_send_cpu=min(send_gap, client / 2),
        gateway_cpu=gateway, gateway_hop_cpu=hop,
        upstream_cpu=upstream,
        _timer_lag_p50=lag50, _timer_lag_p99=lag99,
        _one_hop_latency=float(np.median(one.latency)), _two_hop_latency=float(np.median(two.latency)),
        _request_latency_p50=float(np.median(request_latency)), _request_latency_p99=float(np.percentile(request_latency, 99)),
        _hop_latency_p50=float(np.median(hop_latency)), _hop_latency_p99=float(np.percentile(hop_latency, 99)),
    )
    notes = []
    try:
        notes.append("load average at the end: " + " ".join(open("/proc/loadavg").read().split()[:3]))
    except OSError:
        pass
    if "_hop_cpu_on_path_share" in values:
        notes.append(f"per-call CPU charged: {values['_hop_cpu_on_path_share']:.0%} of the CPU counted "
                     f"(the median call took {typical_call * 1e3:.2f} ms)")
    return Profile(values, request_latency, hop_latency, notes, lateness)


def call_cpu_on_path_share(hop_cpu: float, upstream_cpu: float, typical_call_s: float, slow: float, lag_s: float) -> float:
    """The share of the CPU counted per upstream call (the gateway's ``hop_cpu``, the emulator's
    ``upstream_cpu``) that lies on the call's path: 1, unless the typical measured call
    (``typical_call_s``, the null runs' median beyond the emulated time) took less wall time than
    that CPU (slowed by ``slow``) and the timer's lateness ``lag_s``; then what the call leaves
    room for.

    The CPU /proc counts per call includes work off its path (the emulator's and the gateway's
    bookkeeping after the reply is on its way), and a call cannot take less wall time than the
    CPU on its path.  (Charging all of it made a batching AI service's P50 16 % and P99 34 % slow
    in a run whose calls measured 1.4-1.6 ms against 2.2 ms charged.)"""
    counted = (hop_cpu + upstream_cpu) * slow
    if counted <= 0 or counted + lag_s <= typical_call_s:
        return 1.0
    return max(typical_call_s - lag_s, 0.0) / counted


def less_mean(samples: np.ndarray, amount: float) -> np.ndarray:
    """``samples`` less ``amount`` on average, none below zero: the largest shift ``c`` with
    ``mean(max(samples - c, 0)) == mean(samples) - amount`` (all zeros when that is not possible).

    A plain ``clip(samples - amount, 0)`` would raise the mean by every sample it clips.
    """
    samples = np.asarray(samples, dtype=float)
    target = float(samples.mean()) - amount
    if samples.size == 0 or target <= 0:
        return np.zeros_like(samples)
    lo, hi = 0.0, float(samples.max())  # mean(max(x - c, 0)) falls from mean(x) to 0 as c rises
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.maximum(samples - mid, 0.0).mean() > target:
            lo = mid
        else:
            hi = mid
    return np.maximum(samples - (lo + hi) / 2, 0.0)


def sample_paths(out: str | Path) -> dict[str, Path]:
    """The sample files written next to profile ``out``."""
    out = Path(out)
    return {key: out.with_name(f"{out.stem}.{key}.csv") for key in ("request_latency", "hop_latency")}


def write_profile(profile: Profile, out: str | Path) -> list[Path]:
    """Write the profile TOML and its two sample files; return their paths."""
    from gwsim.output import atomic_write_text

    paths = sample_paths(out)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    extra = {key: Path(out).with_name(f"{Path(out).stem}.{key}.csv") for key in profile.samples}
    for key, path in [*paths.items(), *extra.items()]:
        samples = profile.samples[key] if key in profile.samples else getattr(profile, key)
        atomic_write_text(path, "seconds\n" + "".join(f"{x:.7f}\n" for x in samples))

    def named(table):
        if isinstance(table, dict):
            out_table = {k: named(v) for k, v in table.items()}
            if isinstance(table.get("file"), str) and table["file"].startswith("@"):
                out_table["file"] = extra[table["file"][1:]].name
            return out_table
        if isinstance(table, list):
            return [named(v) for v in table]
        return table

    atomic_write_text(out, profile_toml(profile.values, "; ".join(profile.notes), {k: p.name for k, p in paths.items()},
                                        profile.timer_lateness, named(profile.distributions)))
    return [Path(out), *paths.values(), *extra.values()]


def inline_toml(value) -> str:
    """``value`` (a distribution table: strings, numbers, nested tables and lists) as inline TOML."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {inline_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(inline_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{value:.6g}"


def profile_toml(values: dict[str, float], note: str = "", sample_files: dict[str, str] | None = None,
                 timer_lateness: dict | None = None, distributions: dict[str, dict] | None = None) -> str:
    from simulator.scenario import PROFILE_KEYS

    lines = [
        "# Machine profile written by `gwsim calibrate profile` " + time.strftime("%Y-%m-%d %H:%M:%S"),
        "# Scenarios refer to it with profile = \"...\"; [machine] becomes their machine section.",
    ]
    if note:
        lines.append(f"# {note}")
    for key in ("_one_hop_latency", "_two_hop_latency", "_request_latency_p50", "_request_latency_p99",
                "_hop_latency_p50", "_hop_latency_p99", "_timer_lag_p50", "_timer_lag_p99"):
        if key in values:
            lines.append(f"# {key.strip('_')}: {values[key] * 1000:.3f} ms")
    lines.append("")
    lines.append("[machine]")
    if "cores" in values:
        lines.append(f"cores = {int(values['cores'])}")
    if "background" in values:
        lines.append(f"background = {values['background']:.3f}")
    for key in ("client_cpu", "client_send_cpu", "gateway_cpu", "gateway_hop_cpu", "upstream_cpu"):
        if key in (distributions or {}):
            lines.append(f"{key} = {inline_toml(distributions[key])}")
        elif key in values:
            lines.append(f'{key} = {{ dist = "deterministic", value = "{values[key] * 1e6:.0f}us" }}')
    for key, value in (distributions or {}).items():
        if key not in ("client_cpu", "client_send_cpu", "gateway_cpu", "gateway_hop_cpu", "upstream_cpu"):
            lines.append(f"{key} = {inline_toml(value)}")
    for key in ("redis_cpu", "scan_entry_cpu"):
        if key in values:
            lines.append(f'{key} = {{ dist = "deterministic", value = "{values[key] * 1e6:.1f}us" }}')
    if timer_lateness is not None:
        inner = ", ".join(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v:.6g}" for k, v in timer_lateness.items())
        lines.append("timer_lateness = { " + inner.replace("'", '"') + " }")
    for key, name in (sample_files or {}).items():
        lines.append(f'{key} = {{ dist = "empirical", file = "{name}", column = "seconds" }}')
    for key in PROFILE_KEYS:
        if key in values:
            lines.append(f'{key} = "{values[key] * 1e6:.0f}us"')
    if values.get("_speed_probe"):
        # not machine parameters: what the profile's runs saw, for `gwsim calibrate check` to compare
        lines += ["", "[measured]", f"speed_probe_ms = {values['_speed_probe'] * 1e3:.4f}"]
    return "\n".join(lines) + "\n"
