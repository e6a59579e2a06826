"""``gwsim calibrate check``: every scenario of a suite predicted by the simulator and measured
on the real engine, compared per endpoint (see ``metrics``).

By default the comparison is a prediction: the simulator is given the scenario and its
machine profile and nothing else.  It draws its own traffic (arrival times, endpoint mix,
classes) and takes the other work on the machine (``machine.background``) from the profile;
it runs *before* the measurement, so it cannot have seen it.  The real engine runs the
scenario without the profile (``profile=none``): it pays those overheads for real.  The
simulator runs over the same length of time as the measurement, with replications.

Two diagnostics take things from the measurement instead, to tell a model error from a
difference of inputs; their results are not predictions and are labelled so:

* ``traffic="measured"``: an open-loop scenario replays the requests the load generator
  sent (arrival time, endpoint, class; ``workload.replay``); service times, errors and
  everything downstream stay the simulator's own draws;
* ``background="measured"``: the other work sampled on the machine during the measurement
  (its mean and its 0.5 s steps, ``machine.background_trace``) instead of the profile's.
* ``speed="measured"``: the machine's speed during the measurement (``machine.speed``, from
  the speed probe against the profile's, ``gwsim.calibration.speed``) instead of the profile's.

The other work on the machine is sampled during every measurement either way and reported
(``background_seen``, column ``bg``): a shared machine changes from minute to minute, and a
queue near saturation follows it.

So is the CPU time the hypervisor takes from a virtual machine's cores (``steal``, column
``steal %``): on these VMs it comes in spells of 5-15 s taking a fifth to two fifths of the
cores, during which a gateway near its knee queues for seconds (measured 2026-12-08,
``semantic_scan`` with 200 entries: median 0.1 s outside two such spells, 0.4-1.3 s inside
them).  No prediction can know when the host's neighbours are busy, so a measurement with a
spell in its compared window (over ``QUIET_STEAL_PEAK`` of the cores' time in some
``STEAL_SPAN_S`` seconds) was not taken on a quiet machine: it is measured again (up to
``remeasure`` times; the choice depends on the steal alone, never on the comparison), and a
scenario whose last measurement was not quiet does not pass (verdict ``NOT QUIET``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from gwsim.calibration.speed import slower_share
from gwsim.calibration.metrics import FIGURES, KS_ALPHA, STREAM_FIGURES, THRESHOLDS, EndpointComparison, compare_frames
from simulator.errors import UsageError
from simulator.scenario import load_scenario

log = logging.getLogger(__name__)

#: What the simulator is given by default: its own traffic, the profile's background.
PREDICTION = {"traffic": "own", "background": "profile", "speed": "profile"}
#: A measurement is quiet when the hypervisor took at most this share of the cores' time in
#: every STEAL_SPAN_S seconds of its compared window (outside its spells the VMs here lose
#: 0-1 %; inside them 20-45 %).
QUIET_STEAL_PEAK = 0.05
STEAL_SPAN_S = 5.0
#: Measurements of a scenario at most, by default, while they are not quiet.
REMEASURE = 1


@dataclass
class ScenarioCheck:
    scenario: str
    path: str
    duration_s: float
    window: tuple[float, float]
    replications: int
    endpoints: list[EndpointComparison]
    accounting: dict = field(default_factory=dict)
    measure_s: float = 0.0
    simulate_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    measured: pd.DataFrame | None = None
    predicted: pd.DataFrame | None = None
    background: float | None = None  # other runnable sessions seen on the machine during the measurement
    background_given: float | None = None  # what the simulator was given (None: no machine model)
    traffic_mode: str = "own"
    background_mode: str = "profile"
    speed_mode: str = "profile"
    #: The gateway's CPU per request sent in the compared window, as measured (ms; a diagnostic:
    #: set beside the profile's figure it shows whether the gateway ran as the profile said)
    gateway_cpu_ms: float | None = None
    #: How much longer the machine's speed probe took during the measurement than during the
    #: profile's runs (0.2: the machine ran 20 % slower; a diagnostic, see gwsim.calibration.speed)
    slower: float | None = None
    #: The share of the cores' time the hypervisor took during the compared window: the mean,
    #: and the largest over any STEAL_SPAN_S seconds (None: not sampled)
    steal: float | None = None
    steal_peak: float | None = None
    #: The steal peaks of the earlier measurements of this scenario, not counted: not quiet
    not_quiet: list[float] = field(default_factory=list)

    @property
    def prediction(self) -> bool:
        return self.traffic_mode == "own" and self.background_mode == "profile" and self.speed_mode == "profile"

    @property
    def quiet(self) -> bool:
        """No spell of the hypervisor taking the cores during the compared window."""
        return self.steal_peak is None or self.steal_peak <= QUIET_STEAL_PEAK

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.endpoints) and not self.problems and self.quiet

    @property
    def inconclusive(self) -> list[str]:
        return [f"{e.endpoint}.{k}" for e in self.endpoints for k in e.inconclusive]

    def to_dict(self) -> dict:
        return {
            "scenario": self.scenario,
            "path": self.path,
            "duration_s": self.duration_s,
            "window_s": list(self.window),
            "replications": self.replications,
            "passed": self.passed,
            "inconclusive": self.inconclusive,
            "endpoints": [e.to_dict() for e in self.endpoints],
            "accounting": self.accounting,
            "measure_s": round(self.measure_s, 2),
            "simulate_s": round(self.simulate_s, 2),
            "problems": self.problems,
            "traffic": self.traffic_mode,
            "background": self.background_mode,
            "speed": self.speed_mode,
            "background_seen": None if self.background is None else round(self.background, 3),
            "background_given": None if self.background_given is None else round(self.background_given, 3),
            "gateway_cpu_ms_per_request": None if self.gateway_cpu_ms is None else round(self.gateway_cpu_ms, 3),
            "machine_slower_than_profile": None if self.slower is None else round(self.slower, 4),
            "steal": None if self.steal is None else round(self.steal, 4),
            "steal_peak": None if self.steal_peak is None else round(self.steal_peak, 4),
            "quiet": self.quiet,
            "not_quiet_measurements": [round(p, 4) for p in self.not_quiet],
        }


def suite_files(suite_dir: str | Path) -> list[Path]:
    d = Path(suite_dir)
    if d.is_file() and d.suffix == ".toml":
        return [d]
    if not d.is_dir():
        raise UsageError(f"{d}: expected a directory of scenario TOML files, found nothing there")
    files = sorted(p for p in d.glob("*.toml"))
    if not files:
        raise UsageError(f"{d}: expected scenario TOML files, found none")
    return files


def count_model(scenario) -> str:
    """How the number of requests in a window varies between runs (``metrics.COUNT_MODELS``):
    ``fixed`` for a fixed open-loop schedule (constant or burst arrivals: the count is known,
    only which requests succeed is random), ``closed`` for a closed loop, else ``poisson``."""
    wl = scenario.workload
    if wl.mode == "closed":
        return "closed"
    if wl.mode == "open" and wl.arrivals is not None and wl.arrivals.process in ("constant", "burst"):
        return "fixed"
    return "poisson"


def check_scenario(
    path: str | Path,
    *,
    duration_s: float | None = None,
    replications: int | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    seed: int | None = None,
    workers: int | None = None,
    keep_frames: bool = False,
    thresholds: dict | None = None,
    background: str = PREDICTION["background"],
    traffic: str = PREDICTION["traffic"],
    speed: str = PREDICTION["speed"],
    startup_s: float = 12.0,
    gateway: str = "builtin",
    remeasure: int = REMEASURE,
) -> ScenarioCheck:
    from gwsim.calibration.profile import CALIBRATION_DB, CpuSampler, calibration_redis_url, redis_keys
    from real_engine.measure import measure
    from simulator.api import run_scenario

    if background not in ("measured", "profile"):
        raise UsageError(f"background: expected 'measured' or 'profile', got {background!r}")
    if traffic not in ("measured", "own"):
        raise UsageError(f"traffic: expected 'measured' or 'own', got {traffic!r}")
    if speed not in ("measured", "profile"):
        raise UsageError(f"speed: expected 'measured' or 'profile', got {speed!r}")

    path = Path(path)
    base = load_scenario(path, list(overrides))
    duration = float(duration_s if duration_s is not None else base.run.duration)
    warmup = min(base.run.warmup, duration / 2)
    # The same arrival window on both sides: the simulator runs for the measured length.
    common = [*overrides, f"run.duration=\"{duration!r}s\"", f"run.warmup=\"{warmup!r}s\""]
    sim_sc = load_scenario(path, common)
    predicting = traffic == "own" and background == "profile" and speed == "profile"

    def simulate(scenario):
        t = time.perf_counter()
        run = run_scenario(scenario, replications=replications, seed=seed, workers=workers)
        return run, time.perf_counter() - t

    sim = simulate_s = None
    if predicting:
        # Before the measurement: the prediction cannot depend on it, and the simulator's
        # worker processes are not competing with the measured ones for the cores.
        sim, simulate_s = simulate(sim_sc)
    redis_url = calibration_redis_url()
    foreign = redis_keys(redis_url)
    not_quiet: list[float] = []
    t = time.perf_counter()
    while True:
        sampler = CpuSampler(every=0.5).start()
        try:
            # A generous start-up: on a busy machine the load generator can take longer than
            # measure's default to start, and then sends its first arrivals late, all at once; the
            # backlog that makes drains for seconds at a high utilisation, past the warm-up.
            launcher = None
            if gateway == "litellm":  # LiteLLM's real proxy in place of the built-in gateway
                from gwsim.litellm.proxy import launcher_for

                launcher = launcher_for(str(path), [*common, 'profile="none"'])
            result = measure(str(path), [*common, 'profile="none"'], duration_s=duration, seed=seed, startup_s=startup_s,
                             redis_url=redis_url,
                             gateway=launcher)
        finally:
            sampler.stop()
        steal = sampler.steal(result.t0 + warmup, result.t0 + duration, STEAL_SPAN_S)
        if steal is None or steal[1] <= QUIET_STEAL_PEAK or result.interrupted or len(not_quiet) >= remeasure:
            break
        # decided by the steal alone, before anything is compared: the prediction is the same
        log.warning("%s: the hypervisor took %.0f %% of the cores in %g s of the measurement; measuring it again",
                    base.run.name, 100 * steal[1], STEAL_SPAN_S)
        not_quiet.append(steal[1])
    measure_s = time.perf_counter() - t
    measured = result.frame()
    seen = gateway_cpu_ms = None
    slower = slower_share(sampler.speed(result.t0 + warmup, result.t0 + duration), _profile_speed(path, base))
    try:
        seen = sampler.background(result.t0 + warmup, result.t0 + duration)
        spent = sampler.window(result.t0 + warmup, result.t0 + duration)
        sent = int(((measured["arrived_at"] >= warmup) & (measured["arrived_at"] < duration)).sum()) if not measured.empty else 0
        if "gateway" in spent and sent:
            gateway_cpu_ms = spent["gateway"] / sent * 1e3
    except RuntimeError:
        pass  # too short a run to sample
    if not predicting:
        if seen is not None and background == "measured" and sim_sc.machine.cores > 0:
            # the mean over the window, and the steps as sampled: a minute on a shared machine
            # has quiet and busy spells, and a queue near saturation follows them
            trace = tuple((round(at - result.t0, 3), float(n)) for at, n in sampler.sessions() if at >= result.t0 - 1.0)
            sim_sc = load_scenario(path, [*common, f"machine.background={seen:.4f}"])
            sim_sc = sim_sc.model_copy(update={"machine": sim_sc.machine.model_copy(update={"background_trace": trace})})
        if speed == "measured" and slower is not None and sim_sc.machine.cores > 0:
            # the cores ran as fast as the probe says, against the profile's minutes
            sim_sc = sim_sc.model_copy(update={"machine": sim_sc.machine.model_copy(update={"speed": 1.0 / (1.0 + slower)})})
        if traffic == "measured" and sim_sc.workload.mode == "open" and not measured.empty:
            sim_sc = replayed(sim_sc, measured)
        sim, simulate_s = simulate(sim_sc)
    window = (warmup, duration)
    comps = compare_frames(
        sim.records, measured, window=window, predicted_replications=sim.replications, measured_replications=1,
        endpoints=list(base.endpoints), thresholds=thresholds, counts=count_model(base),
    )
    problems = list(getattr(result, "problems", []) or [])
    if foreign:
        problems.append(f"Redis database {CALIBRATION_DB} held {foreign} keys before the measurement (not this check's): "
                        "the semantic cache's SCAN reads past them too")
    if result.interrupted:
        problems.append("measurement interrupted")
    return ScenarioCheck(
        scenario=base.run.name, path=str(path), duration_s=duration, window=window, replications=sim.replications,
        endpoints=comps, accounting=result.accounting, measure_s=measure_s, simulate_s=simulate_s, problems=problems,
        measured=measured if keep_frames else None, predicted=sim.records if keep_frames else None, background=seen,
        background_given=sim_sc.machine.background if sim_sc.machine.cores > 0 else None,
        traffic_mode=traffic, background_mode=background, speed_mode=speed, gateway_cpu_ms=gateway_cpu_ms, slower=slower,
        steal=None if steal is None else steal[0], steal_peak=None if steal is None else steal[1], not_quiet=not_quiet,
    )


def _profile_speed(path: Path, scenario) -> float | None:
    """The speed probe's mean recorded by the scenario's machine profile (s), if any."""
    from gwsim.calibration.speed import profile_speed_s

    name = getattr(scenario, "profile", None)
    if not name or name == "none":
        return None
    return profile_speed_s(path.parent / name)


def self_check(
    path: str | Path,
    *,
    overrides: tuple[str, ...] | list[str] = (),
    replications: int | None = None,
    seed: int | None = None,
    measured_replication: int = 0,
    workers: int | None = None,
    thresholds: dict | None = None,
) -> list[EndpointComparison]:
    """A perfect model's check of a scenario, without the real engine: the simulator runs one
    replication more than the scenario's, one of them (``measured_replication``) plays the
    measurement and the others the prediction, compared as ``check_scenario`` compares.  What a
    suite's scenario must pass to be worth measuring: a figure this leaves undecided, or a KS
    statistic beyond its critical value, says the scenario is too short (or its latencies move
    together too much) for the check to judge the model on it."""
    from simulator.api import run_scenario

    sc = load_scenario(Path(path), list(overrides))
    n = (replications if replications is not None else sc.run.replications) + 1
    if not 0 <= measured_replication < n:
        raise UsageError(f"measured_replication: expected 0-{n - 1}, got {measured_replication}")
    run = run_scenario(sc, replications=n, seed=seed, workers=workers)
    rec = run.records
    mine = rec["replication"] == measured_replication
    warmup = min(sc.run.warmup, sc.run.duration / 2)
    return compare_frames(
        rec.loc[~mine], rec.loc[mine], window=(warmup, sc.run.duration), predicted_replications=n - 1,
        measured_replications=1, endpoints=list(sc.endpoints), thresholds=thresholds, counts=count_model(sc),
    )


def replayed(scenario, measured: pd.DataFrame):
    """``scenario`` with the measured requests as its open-loop traffic (``workload.replay``)."""
    sent = measured.sort_values(["arrived_at", "id"] if "id" in measured.columns else ["arrived_at"], kind="stable")
    requests = tuple(
        (float(at), str(ep), str(cls))
        for at, ep, cls in zip(sent["arrived_at"], sent["endpoint"], sent["request_class"])
    )
    return scenario.model_copy(update={"workload": scenario.workload.model_copy(update={"replay": requests})})


def check_suite(
    suite_dir: str | Path, *, progress: Callable[[str], None] | None = None, **kwargs
) -> list[ScenarioCheck]:
    out = []
    for path in suite_files(suite_dir):
        if progress:
            progress(path.stem)
        out.append(check_scenario(path, **kwargs))
    return out


def suite_document(suite: str, checks: list[ScenarioCheck], *, traffic: str, background: str,
                   speed: str = PREDICTION["speed"]) -> dict:
    """The JSON document of a check: what the simulator was given, the verdict, every scenario."""
    return {
        "suite": suite,
        "traffic": traffic,
        "background": background,
        "speed": speed,
        "prediction": (traffic, background, speed) == (PREDICTION["traffic"], PREDICTION["background"], PREDICTION["speed"]),
        "passed": bool(checks) and all(c.passed for c in checks),
        "thresholds": dict(THRESHOLDS),
        "ci_level": 0.95,
        "ks_alpha": KS_ALPHA,
        "inconclusive": sum(len(c.inconclusive) for c in checks),
        "scenarios": [c.to_dict() for c in checks],
    }


def _f(x, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _figure(e: EndpointComparison, key: str, spec: str) -> str:
    """``+1.2±0.8``: the error and the measured value's CI half-width (both in the figure's unit)."""
    err, half = e.errors.get(key), e.ci_halfwidth.get(key)
    if err is None:
        return "-"
    cell = format(err, spec) + ("" if half is None else "±" + format(half, spec.lstrip("+")))
    return cell + ("?" if key in e.inconclusive else "")


def verdict(e: EndpointComparison, quiet: bool = True) -> str:
    parts = [] if quiet else ["NOT QUIET"]
    if e.misses:
        parts.append("MISS " + ",".join(e.misses))
    if e.inconclusive:
        parts.append("UNDECIDED " + ",".join(e.inconclusive))
    if e.ks_failed:
        parts.append("KS")
    return "; ".join(parts) or "ok"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    return [
        "  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(), "  ".join("-" * w for w in widths),
        *("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows),
    ]


def format_checks(checks: list[ScenarioCheck]) -> str:
    head = ["scenario", "endpoint", "n meas", "P50 ms m/p", "err%", "P95 ms m/p", "err%", "P99 ms m/p", "err%",
            "thr err%", "succ %", "succ pp", "KS D/crit", "verdict", "bg", "gw CPU ms/req", "slower %",
            "steal % mean/peak"]
    rows = []
    for c in checks:
        for e in c.endpoints:
            m, p = e.measured, e.predicted
            rows.append([
                c.scenario, e.endpoint, str(e.n_measured),
                f"{_f(m['p50'], '.0f')}/{_f(p['p50'], '.0f')}", _figure(e, "p50", "+.1f"),
                f"{_f(m['p95'], '.0f')}/{_f(p['p95'], '.0f')}", _figure(e, "p95", "+.1f"),
                f"{_f(m['p99'], '.0f')}/{_f(p['p99'], '.0f')}", _figure(e, "p99", "+.1f"),
                _figure(e, "throughput", "+.1f"),
                _f(None if m["success"] is None else 100 * m["success"], ".1f"),
                _figure(e, "success_pp", "+.2f"),
                f"{_f(e.ks, '.3f')}/{_f(e.ks_critical, '.3f')}",
                verdict(e, c.quiet),
                _f(c.background, ".2f"),
                _f(c.gateway_cpu_ms, ".1f"),
                _f(None if c.slower is None else 100 * c.slower, "+.0f"),
                "-" if c.steal is None else f"{100 * c.steal:.1f}/{100 * c.steal_peak:.0f}"
                + (f" (again after {', '.join(f'{100 * p:.0f}' for p in c.not_quiet)})" if c.not_quiet else ""),
            ])
    lines = []
    if checks and not all(c.prediction for c in checks):
        c = checks[0]
        lines.append(
            f"DIAGNOSTIC, not a prediction: the simulator was given the measured "
            f"{' and '.join(x for x, on in (('traffic', c.traffic_mode == 'measured'), ('background', c.background_mode == 'measured'), ('speed', c.speed_mode == 'measured')) if on)}"
        )
    lines += _table(head, rows)
    # endpoints with streamed requests: their TTFT and TPOT figures, in a table of their own
    # (their verdict is the row's above: a miss or an undecided stream figure is named there)
    stream_rows = [
        [c.scenario, e.endpoint, str(e.streamed),
         *(cell for key in STREAM_FIGURES
           for cell in (f"{_f(e.measured[key], '.0f' if key.startswith('ttft') else '.1f')}/"
                        f"{_f(e.predicted[key], '.0f' if key.startswith('ttft') else '.1f')}", _figure(e, key, "+.1f")))]
        for c in checks for e in c.endpoints if "ttft_p50" in e.measured
    ]
    if stream_rows:
        lines.append("")
        lines += _table(["scenario", "endpoint", "n streamed", "TTFT P50 ms m/p", "err%", "TTFT P95 ms m/p", "err%",
                         "TPOT P50 ms m/p", "err%"], stream_rows)
    passed = sum(c.passed for c in checks)
    undecided = sum(len(c.inconclusive) for c in checks)
    th = checks[0].endpoints[0].thresholds if checks and checks[0].endpoints else THRESHOLDS
    lines.append(
        f"{passed}/{len(checks)} scenarios pass: every figure decided (its measured 95 % CI half-width, after ±, "
        f"below its threshold) and within it (|err| P50 <= {th['p50']:g} %, P95/P99 <= {th['p95']:g}/{th['p99']:g} %, "
        f"throughput <= {th['throughput']:g} %, success <= {th['success_pp']:g} pp"
        + (f"; TTFT P50/P95 <= {th['ttft_p50']:g}/{th['ttft_p95']:g} %, TPOT P50 <= {th['tpot_p50']:g} %" if stream_rows else "")
        + f"), KS D <= its {KS_ALPHA:.0%} critical value, measured on a quiet machine (the hypervisor took at most "
        f"{QUIET_STEAL_PEAK:.0%} of the cores in any {STEAL_SPAN_S:g} s)"
        + (f"; {undecided} figure{'s' if undecided != 1 else ''} undecided (?)" if undecided else "")
        + (f"; {noisy} measured on a machine that was not quiet (NOT QUIET)" if (noisy := sum(not c.quiet for c in checks)) else "")
    )
    for c in checks:
        for p in c.problems:
            lines.append(f"{c.scenario}: {p}")
    return "\n".join(lines)


__all__ = [
    "FIGURES", "PREDICTION", "QUIET_STEAL_PEAK", "REMEASURE", "STEAL_SPAN_S", "ScenarioCheck", "check_scenario", "check_suite", "count_model", "format_checks",
    "replayed", "self_check", "suite_document", "suite_files", "verdict",
]
