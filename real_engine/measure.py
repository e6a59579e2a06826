"""The measurement orchestrator: emulated upstreams, the real gateway and the load generator
as three OS processes on loopback, as a load test of a staging system would run them.

``measure()`` checks Redis, picks a shared run start ``t0`` a little in the future,
starts the emulators and the gateway together (the gateway waits for the emulators'
URL file), then the load generator against the gateway, relays its progress lines,
and shuts everything down in order: the load generator finishes (or is told to stop
and writes what it has), then SIGTERM to the gateway and the emulators, SIGKILL after a
grace period.  That order holds on every exit path, Ctrl-C included; whatever finished
is kept.  The accounting always satisfies ``sent == ok + sum(failures.values())``: when
the load generator died without writing, the requests it had reported as sent but not
as answered count as ``unfinished``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from real_engine import settings
from simulator.errors import GwsimError
from simulator.records import RECORD_FIELDS, RequestRecord
from simulator.scenario import Scenario, load_scenario

log = logging.getLogger(__name__)

#: Seconds between the start of the processes and the run start when not given:
#: room for two interpreter start-ups (emulators and gateway in parallel, then the load generator).
DEFAULT_STARTUP_S = 4.0
READY_TIMEOUT_S = 30.0
TERM_GRACE_S = 10.0


class MeasureError(GwsimError):
    """The measurement could not run (Redis down, a process failed to start)."""


class GatewayLauncher(Protocol):
    """A gateway other than the built-in one, started in its own process in front of the emulators
    (``gwsim.litellm.proxy`` starts LiteLLM's proxy): ``launch`` starts it (the orchestrator then
    owns the process and stops it on every exit path), ``wait_ready`` returns its URL."""

    name: str
    startup_s: float  # from launch to the run's first arrival (a slower start is reported)
    ready_timeout_s: float  # the longest start-up tolerated
    headers: dict[str, str]  # what the load generator must send it (its key)

    def launch(self, upstream_urls: dict[str, Any], workdir: Path) -> "ChildProcess": ...

    def wait_ready(self, proc: "ChildProcess", deadline: float) -> str: ...


@dataclass
class MeasureResult:
    """What a measurement left: records, the load generator's accounting, process stats."""

    records: list[RequestRecord]
    accounting: dict[str, Any]
    emulator_stats: dict[str, Any] | None
    gateway_stats: dict[str, Any] | None
    scenario: Scenario
    seed: int
    t0: float
    target_url: str
    duration_s: float
    interrupted: bool = False
    problems: list[str] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)

    def frame(self):
        from simulator.records import records_frame

        return records_frame(self.records)

    @property
    def accounting_ok(self) -> bool:
        a = self.accounting
        return a.get("sent", 0) == a.get("ok", 0) + sum(a.get("failures", {}).values())


# --------------------------------------------------------------------------- helpers


def check_redis(redis_url: str, timeout_s: float = 2.0) -> None:
    """Raise ``MeasureError`` with one line when Redis does not answer PING."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        if not client.ping():
            raise MeasureError(f"Redis at {redis_url} did not answer PING")
    except redis.exceptions.RedisError as exc:
        raise MeasureError(
            f"Redis at {redis_url} is not answering ({exc}); start redis-server or pass another redis URL"
        ) from None
    finally:
        client.close()


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the orchestrator dies, so no process outlives a run."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ChildProcess:
    """One child process with its log file; ``stop()`` is SIGTERM, then SIGKILL after a grace."""

    def __init__(self, name: str, argv: list[str], workdir: Path, pass_fds: tuple[int, ...] = (),
                 extra_env: dict[str, str | None] | None = None) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        # a None value takes the variable out of the child's environment
        env = {k: v for k, v in {**os.environ, **(extra_env or {})}.items() if v is not None}
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Own session: a Ctrl-C in the terminal reaches the orchestrator only, which then
        # stops the children in the right order.
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env=env,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_s: float = TERM_GRACE_S) -> int | None:
        self.signal(signal.SIGTERM)
        code = self.wait(grace_s)
        if code is None:
            log.warning("%s did not stop within %.0fs of SIGTERM; killing it", self.name, grace_s)
            self.signal(signal.SIGKILL)
            code = self.wait(5.0)
        self._log.close()
        return code

    def tail(self, n: int = 5) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])


def wait_ready(path: Path, procs: list[ChildProcess], deadline: float) -> dict[str, Any]:
    while True:
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass  # written atomically, so this is only another file at that path
        for p in procs:
            if not p.alive():
                raise MeasureError(f"{p.name} exited with code {p.popen.returncode} before it was ready: {p.tail()}")
        if time.monotonic() > deadline:
            raise MeasureError(f"timed out waiting for {path.name}: {' ; '.join(p.name + ': ' + p.tail(2) for p in procs)}")
        time.sleep(0.02)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_records(path: Path) -> list[RequestRecord]:
    if not path.exists():
        return []
    import pandas as pd

    frame = pd.read_parquet(path)
    cols = [c for c in RECORD_FIELDS if c in frame.columns]
    out: list[RequestRecord] = []
    for row in frame[cols].itertuples(index=False, name=None):
        values = dict(zip(cols, row))
        for key in ("id", "replication", "status_code", "attempts"):
            if key in values:
                values[key] = int(values[key])
        for key in ("fallback_used", "selection_fallback", "cache_hit", "prompt_cache_hit"):
            if key in values:
                values[key] = bool(values[key])
        out.append(RequestRecord(**values))
    return out


def _scenario_args(scenario_path: str | Path, overrides: list[str] | tuple[str, ...]) -> list[str]:
    args = ["--scenario", str(scenario_path)]
    for item in overrides:
        args += ["--set", item]
    return args


# --------------------------------------------------------------------------- measure


def measure(
    scenario_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    duration_s: float | None = None,
    target_url: str | None = None,
    seed: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    redis_url: str | None = None,
    startup_s: float = DEFAULT_STARTUP_S,
    workdir: str | Path | None = None,
    headers: list[str] | tuple[str, ...] = (),
    gateway: GatewayLauncher | None = None,
) -> MeasureResult:
    """Run the scenario on the real engine (or against ``target_url``) and collect the results.

    ``workdir``: where the processes' ready files, logs and results go (a temporary
    directory, removed afterwards, when not given).  ``headers`` ("Name: value"): sent by the
    load generator with every request (an external gateway's key), handed to it in its
    environment, never on its command line.  ``gateway``: a gateway to measure instead of the
    built-in one, started in front of the emulators (LiteLLM's proxy); Redis is not needed then.
    """
    from real_engine.loadgen import HEADERS_ENV, request_headers

    # checked here, before any process starts (ValueError with one line)
    sent_headers = {**(gateway.headers if gateway is not None else {}), **request_headers(headers, {})}
    loadgen_env = {HEADERS_ENV: json.dumps(sent_headers)} if sent_headers else None
    # The machine profile stands for overheads the simulator must add; the real engine pays
    # them for real, so its processes load the scenario without it.
    overrides = list(overrides) + ['profile="none"']
    scenario = load_scenario(scenario_path, overrides)
    seed = scenario.run.seed if seed is None else int(seed)
    duration = scenario.run.duration if duration_s is None else float(duration_s)
    redis_url = settings.redis_url(redis_url)
    if target_url is None and gateway is None:
        check_redis(redis_url)
    if gateway is not None:
        startup_s = max(startup_s, gateway.startup_s)
    own_dir = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="gwsim-measure-")) if own_dir else Path(workdir)  # type: ignore[arg-type]
    wd.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic() + startup_s
    common = _scenario_args(scenario_path, overrides) + ["--t0", repr(t0), "--seed", str(seed)]
    py = sys.executable
    emu_ready, gw_ready = wd / "emulators.json", wd / "gateway.json"
    out = wd / "records.parquet"
    procs: dict[str, ChildProcess] = {}
    interrupted = False
    problems: list[str] = []
    last_progress: dict[str, Any] = {}
    url = target_url or ""
    read_fd = write_fd = -1
    try:
        try:
            if target_url is None:
                procs["emulators"] = ChildProcess(
                    "emulators", [py, "-m", "real_engine.emulators", *common, "--ready-file", str(emu_ready)], wd
                )
                if gateway is None:
                    procs["gateway"] = ChildProcess(
                        "gateway",
                        [py, "-m", "real_engine.gateway", *common, "--upstreams", str(emu_ready),
                         "--ready-file", str(gw_ready), "--redis-url", redis_url],
                        wd,
                    )
                    deadline = time.monotonic() + READY_TIMEOUT_S
                    wait_ready(emu_ready, [procs["emulators"]], deadline)
                    url = wait_ready(gw_ready, [procs["gateway"], procs["emulators"]], deadline)["url"]
                else:
                    deadline = time.monotonic() + max(READY_TIMEOUT_S, gateway.ready_timeout_s)
                    upstreams = wait_ready(emu_ready, [procs["emulators"]], deadline)
                    procs["gateway"] = gateway.launch(upstreams, wd)
                    url = gateway.wait_ready(procs["gateway"], deadline)
            if time.monotonic() > t0 - 0.5:
                problems.append(f"start-up took longer than startup_s={startup_s:g}s: the first arrivals may be late")
            read_fd, write_fd = os.pipe()
            procs["loadgen"] = ChildProcess(
                "loadgen",
                [py, "-m", "real_engine.loadgen", *common, "--target", url, "--duration", repr(duration),
                 "--out", str(out), "--progress-fd", str(write_fd)],
                wd,
                pass_fds=(write_fd,),
                extra_env=loadgen_env,
            )
            os.close(write_fd)
            write_fd = -1
            wl = scenario.workload
            budget = startup_s + duration + scenario.run.drain + (wl.client_timeout or 0) + 30.0
            last_progress = _follow(procs["loadgen"], read_fd, progress, time.monotonic() + budget, procs)
            if procs["loadgen"].alive():
                problems.append("load generator overran its time budget; stopped it")
        except KeyboardInterrupt:
            interrupted = True
            log.info("interrupted: stopping the load generator, keeping what finished")
    finally:
        # Order matters: the load generator first (it writes what it has on SIGTERM), then
        # the gateway (drains, deletes its Redis keys), then the upstreams it was calling.
        codes: dict[str, int | None] = {}
        try:
            for name in ("loadgen", "gateway", "emulators"):
                if name in procs:
                    codes[name] = procs[name].stop()
        except KeyboardInterrupt:
            interrupted = True
            for p in procs.values():
                p.signal(signal.SIGKILL)
                p.wait(5.0)
        for fd in (read_fd, write_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    for name, code in codes.items():
        # an external gateway (LiteLLM's proxy) may end on the SIGTERM that stops it
        stopped = gateway is not None and name == "gateway" and code == -signal.SIGTERM
        if code not in (0, None) and not (interrupted and code < 0) and not stopped:
            problems.append(f"{name} exited with code {code}: {procs[name].tail()}")
    records = _read_records(out)
    accounting = _read_json(Path(str(out) + ".accounting.json"))
    if accounting is None:
        # The load generator died without writing: what it reported as sent and not as
        # answered is unfinished, so the books still balance.
        sent = int(last_progress.get("sent", len(records)))
        ok = sum(1 for r in records if r.ok) if records else int(last_progress.get("ok", 0))
        failures: dict[str, int] = {}
        for r in records:
            if not r.ok:
                failures[r.outcome] = failures.get(r.outcome, 0) + 1
        missing = sent - ok - sum(failures.values())
        if missing > 0:
            failures["unfinished"] = failures.get("unfinished", 0) + missing
        accounting = {"sent": sent, "ok": ok, "failures": failures, "reconstructed": True}
        if target_url is None or procs:
            problems.append("load generator wrote no accounting; reconstructed from its last progress line")
    result = MeasureResult(
        records=records,
        accounting=accounting,
        emulator_stats=_read_json(Path(str(emu_ready) + ".stats.json")),
        gateway_stats=_read_json(Path(str(gw_ready) + ".stats.json")),
        scenario=scenario,
        seed=seed,
        t0=t0,
        target_url=url,
        duration_s=duration,
        interrupted=interrupted,
        problems=problems,
        exit_codes=codes,
    )
    if not result.accounting_ok:
        problems.append(
            f"accounting does not balance: sent={accounting.get('sent')} ok={accounting.get('ok')} "
            f"failures={accounting.get('failures')}"
        )
    if own_dir:
        shutil.rmtree(wd, ignore_errors=True)
    return result


def _follow(
    loadgen: ChildProcess,
    read_fd: int,
    progress: Callable[[dict[str, Any]], None] | None,
    deadline: float,
    procs: dict[str, ChildProcess],
) -> dict[str, Any]:
    """Relay progress lines until the load generator exits (or the deadline passes)."""
    last: dict[str, Any] = {}
    buf = b""
    sel = selectors.DefaultSelector()
    sel.register(read_fd, selectors.EVENT_READ)
    eof = False
    reported: set[str] = set()
    try:
        while True:
            if not loadgen.alive() and eof:
                break
            if time.monotonic() > deadline:
                break
            for name in ("gateway", "emulators"):
                p = procs.get(name)
                if p is not None and name not in reported and not p.alive():
                    reported.add(name)  # its exit code is reported with the others at shutdown
                    log.warning("%s exited during the run (code %s): %s", name, p.popen.returncode, p.tail(2))
            if eof:
                loadgen.wait(0.2)
                continue
            for _key, _ in sel.select(timeout=0.2):
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    eof = True
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue
                    last = item
                    if progress is not None:
                        try:
                            progress(item)
                        except Exception:  # noqa: BLE001 - a broken progress sink must not end the run
                            log.exception("progress callback failed; progress relaying stops")
                            progress = None
    finally:
        sel.close()
    return last
