"""The rollout gate: may this gateway configuration go out?

Like a canary analysis, but before the canary: the proposed configuration is simulated on
its own scenario and on a stress suite (2x load, a provider brownout and outage, an
AI-service outage, a Redis stall), and every SLO is judged on every scenario with its
margin and 95 % interval.  The answer is pass (exit 0) or fail (exit 1), and a Markdown
report fit for a pull-request comment.

A stress file (TOML) says how to turn the proposed scenario into a harder one::

    [stress]
    name = "provider brownout"
    description = "Primary provider 5x slower for the middle half of the run."
    load_factor = 1.0          # multiply the arrival rate (or users)
    set = ["redis.op_timeout='1s'"]   # more overrides, as --set
    scenario = "incident.toml" # or: a whole scenario file instead of the proposed one
    slo = ["success>=0.95"]    # replaces the SLO on the same endpoint and metric

    [[stress.faults]]
    target = "primary_provider"  # providers.NAME, providers.*, ai_service, redis
    kind = "slow"                # as a scenario fault
    latency_factor = 5.0
    start = 0.25                 # fraction of the measurement window
    end = 0.75                   # or: length = "5s"

The default suite ships in ``gwsim/stress/``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gwsim.whatif.runner import DaskExecutor, LocalExecutor, Progress, ScenarioSource, Variant, run_variants
from gwsim.whatif.slo import SLO, Verdict, check_goodput, judge, parse_slo, parse_slos, slo_values
from simulator.errors import ScenarioError, UsageError
from simulator.scenario import validation_error_line
from simulator.units import UnitError, format_duration, parse_duration, parse_rate

DEFAULT_SUITE = Path(__file__).resolve().parent.parent / "stress"


class StressFault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(description="primary_provider, providers.NAME, providers.*, ai_service or redis.")
    kind: Literal["slow", "errors", "outage", "hang", "reset", "stall"]
    start: float = Field(ge=0, le=1, description="Start as a fraction of the measurement window.")
    end: float | None = Field(default=None, gt=0, le=1, description="End as a fraction of the measurement window.")
    length: float | None = Field(default=None, gt=0, description="Or: a length such as '5s'.")
    latency_factor: float = Field(default=1.0, gt=0)
    error_rate: float = Field(default=1.0, ge=0, le=1)
    error_status: Literal[429, 500, 503] = 503

    @field_validator("length", mode="before")
    @classmethod
    def _length(cls, v: Any) -> Any:
        if v is None:
            return None
        try:
            return parse_duration(v)
        except UnitError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _window(self) -> "StressFault":
        if (self.end is None) == (self.length is None):
            raise ValueError("expected exactly one of end (a fraction) or length (a duration)")
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"expected end after start, got start={self.start} end={self.end}")
        return self


class StressSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    load_factor: float = Field(default=1.0, gt=0)
    set: tuple[str, ...] = ()
    scenario: str | None = None
    slo: tuple[str, ...] = ()
    faults: tuple[StressFault, ...] = ()


@dataclass(frozen=True)
class Stress:
    spec: StressSpec
    path: Path | None  # None for the built-in "as proposed" entry

    @property
    def name(self) -> str:
        return self.spec.name


AS_PROPOSED = Stress(StressSpec(name="as proposed", description="The scenario as proposed."), None)


def load_stress(path: str | Path) -> Stress:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: expected a readable stress file, got {exc.__class__.__name__}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: malformed TOML: {exc}") from None
    if set(data) != {"stress"}:
        raise UsageError(f"{path}: expected one [stress] table, got {sorted(data) or 'nothing'}")
    try:
        spec = StressSpec.model_validate(data["stress"])
    except ValidationError as exc:
        raise UsageError(validation_error_line(f"{path} [stress]", exc)) from None
    return Stress(spec, path)


def load_suite(suite: str | None) -> list[Stress]:
    """``None`` or ``default``: the shipped suite; ``none``: the scenario alone; a directory:
    every ``*.toml`` in it (sorted by name); a file: that one stress; several comma-separated."""
    if suite is None or suite == "default":
        paths = sorted(DEFAULT_SUITE.glob("*.toml"))
    elif suite == "none":
        return [AS_PROPOSED]
    else:
        paths = []
        for part in [p.strip() for p in suite.split(",") if p.strip()]:
            p = Path(part)
            if p.is_dir():
                found = sorted(p.glob("*.toml"))
                if not found:
                    raise UsageError(f"--stress {part}: expected *.toml stress files in the directory, found none")
                paths.extend(found)
            elif p.is_file():
                paths.append(p)
            else:
                raise UsageError(f"--stress {part}: expected a stress file or directory, 'default' or 'none', found nothing")
    stresses = [load_stress(p) for p in paths]
    names = [s.name for s in stresses]
    if len(set(names)) != len(names):
        raise UsageError(f"--stress: expected distinct stress names, got {names}")
    return stresses


# --------------------------------------------------------------------------- applying


def _scale_rate(raw: Any, factor: float) -> str:
    return f"{parse_rate(raw) * factor:.6g}/s"


def apply_load_factor(data: dict[str, Any], factor: float) -> None:
    """Multiply the offered load of raw scenario data in place."""
    if factor == 1.0:
        return
    wl = data.get("workload", {})
    if wl.get("mode", "open") == "closed":
        wl["users"] = max(1, int(round(int(wl["users"]) * factor)))
        return
    if wl.get("mode") == "trace":  # the trace played factor times as fast
        wl["time_scale"] = float(wl.get("time_scale", 1.0)) * factor
        return
    arrivals = wl.get("arrivals", {})
    if arrivals.get("process") == "burst":
        # same burst size, bursts factor times as often
        arrivals["every"] = format_duration(parse_duration(arrivals["every"]) / factor)
    else:
        arrivals["rate"] = _scale_rate(arrivals["rate"], factor)


def _fault_targets(target: str, data: dict[str, Any], primary: str) -> list[list]:
    """The fault lists (inside ``data``) a stress fault goes to."""
    providers = data.setdefault("providers", {})
    if target == "primary_provider":
        names = [primary]
    elif target == "providers.*":
        names = list(providers)
    elif target.startswith("providers."):
        name = target.split(".", 1)[1]
        if name not in providers:
            raise UsageError(f"stress fault target {target!r}: expected a provider from {sorted(providers)}")
        names = [name]
    elif target in ("ai_service", "redis"):
        return [data.setdefault(target, {}).setdefault("faults", [])]
    else:
        raise UsageError(f"stress fault target {target!r}: expected primary_provider, providers.NAME, providers.*, ai_service or redis")
    return [providers[n].setdefault("faults", []) for n in names]


def stress_transform(stress: Stress, warmup: float, duration: float, primary: str):
    """A function of raw scenario data applying the stress's load factor and faults."""
    spec = stress.spec
    span = duration - warmup

    def transform(data: dict[str, Any]) -> dict[str, Any]:
        apply_load_factor(data, spec.load_factor)
        for fault in spec.faults:
            start = warmup + fault.start * span
            end = warmup + fault.end * span if fault.end is not None else start + (fault.length or 0.0)
            entry: dict[str, Any] = {"start": f"{start:.6g}s", "end": f"{end:.6g}s", "kind": fault.kind}
            if fault.kind == "slow":
                entry["latency_factor"] = fault.latency_factor
            if fault.kind == "errors":
                entry["error_rate"] = fault.error_rate
                entry["error_status"] = fault.error_status
            for faults in _fault_targets(fault.target, data, primary):
                faults.insert(0, entry)  # listed first: it wins over the scenario's own faults
        return data

    return transform


def stress_variant(source: ScenarioSource, stress: Stress, index: int) -> Variant:
    spec = stress.spec
    if spec.scenario:
        base_dir = stress.path.parent if stress.path is not None else Path(".")
        path = Path(spec.scenario)
        path = path if path.is_absolute() else base_dir / path
        src = ScenarioSource(str(path), source.overrides)
    else:
        src = source
    plain = src.build(list(spec.set))
    run = plain.run
    primary = plain.provider_order()[0]
    try:
        scenario = src.build(list(spec.set), stress_transform(stress, run.warmup, run.duration, primary))
    except ScenarioError as exc:
        raise ScenarioError(f"{exc} (stress {stress.name!r})") from None
    return Variant({"stress": stress.name}, scenario, {"index": index})


def slos_for(stress: Stress, slos: Sequence[SLO], endpoints: Sequence[str]) -> list[SLO]:
    """The gate's SLOs with the stress's own replacing those on the same endpoint and metric."""
    own = [parse_slo(t, endpoints) for t in stress.spec.slo]
    replaced = {(s.endpoint, s.column) for s in own}
    return [s for s in slos if (s.endpoint, s.column) not in replaced] + own


# --------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class GateResult:
    scenario: str
    overrides: tuple[str, ...]
    replications: int
    seed: int
    stresses: tuple[Stress, ...]
    verdicts: dict[str, list[Verdict]]  # stress name -> verdicts
    per_replication: pd.DataFrame

    @property
    def passed(self) -> bool:
        return all(v.passed for vs in self.verdicts.values() for v in vs)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def as_dict(self) -> dict:
        return {
            "scenario": self.scenario,
            "overrides": list(self.overrides),
            "replications": self.replications,
            "seed": self.seed,
            "passed": self.passed,
            "results": [
                {"stress": s.name, "description": s.spec.description,
                 "verdicts": [v.as_dict() for v in self.verdicts[s.name]]}
                for s in self.stresses
            ],
        }


def run_gate(
    source: ScenarioSource,
    slo_texts: Sequence[str],
    stresses: Sequence[Stress],
    executor: LocalExecutor | DaskExecutor,
    *,
    replications: int | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    goodput: str | None = None,
) -> GateResult:
    """``goodput``: the per-request targets of a goodput SLO (``--goodput 'ttft<1s,tpot<50ms'``)."""
    base = source.build()
    endpoints = list(base.endpoints)
    slos = parse_slos(slo_texts, endpoints)
    targets = check_goodput(slos, goodput)
    per_stress_slos = {s.name: slos_for(s, slos, endpoints) for s in stresses}
    variants = [stress_variant(source, s, i) for i, s in enumerate(stresses)]
    n = replications if replications is not None else base.run.replications
    if n < 2:
        raise UsageError("validate needs at least 2 replications for confidence intervals")
    s = seed if seed is not None else base.run.seed
    per_rep = run_variants(variants, executor, replications=n, seed=s, progress=progress, goodput=targets)
    verdicts: dict[str, list[Verdict]] = {}
    for i, stress in enumerate(stresses):
        sub = per_rep.loc[per_rep["variant"] == i]
        out = []
        for slo in per_stress_slos[stress.name]:
            out.append(judge(slo, slo_values(sub, slo)))
        verdicts[stress.name] = out
    return GateResult(source.path, tuple(source.overrides), n, s, tuple(stresses), verdicts, per_rep)


# --------------------------------------------------------------------------- output


def _ci_text(v: Verdict, ci: tuple[float, float] | None, fmt) -> str:  # noqa: ANN001
    if ci is None or not all(math.isfinite(x) for x in ci):
        return ""
    return f"{fmt(ci[0])} .. {fmt(ci[1])}"


def _result_word(v: Verdict, markdown: bool) -> str:
    word = ("✅ pass" if markdown else "pass") if v.passed else ("❌ **FAIL**" if markdown else "FAIL")
    if not v.decided and v.value is not None:
        word += " (within noise)"
    return word


def _rows(result: GateResult, markdown: bool) -> list[list[str]]:
    rows = []
    for stress in result.stresses:
        for v in result.verdicts[stress.name]:
            slo = v.slo
            value = slo.format_value(v.value)
            ci = _ci_text(v, v.ci, lambda x: slo.format_value(x).split()[0])
            margin = slo.format_margin(v.margin)
            mci = _ci_text(v, v.margin_ci, lambda x: slo.format_margin(x).split()[0])
            rows.append([stress.name, f"`{slo.text}`" if markdown else slo.text,
                         value + (f" [{ci}]" if ci else ""), margin + (f" [{mci}]" if mci else ""),
                         _result_word(v, markdown)])
    return rows


HEADERS = ["scenario", "SLO", "value [95% CI]", "margin [95% CI]", "result"]


def format_text(result: GateResult) -> str:
    rows = _rows(result, markdown=False)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    failed = sum(1 for vs in result.verdicts.values() for v in vs if not v.passed)
    total = sum(len(vs) for vs in result.verdicts.values())
    verdict = "PASS: every SLO holds on every scenario" if result.passed else f"FAIL: {failed} of {total} checks miss their SLO"
    lines.append("")
    lines.append(f"{verdict} ({result.replications} replications, seed {result.seed})")
    return "\n".join(lines)


def format_markdown(result: GateResult) -> str:
    """A pull-request comment: verdict first, then one table row per scenario and SLO."""
    failed = [(s, v) for s in result.stresses for v in result.verdicts[s.name] if not v.passed]
    head = "## ✅ gwsim validate: PASS" if result.passed else "## ❌ gwsim validate: FAIL"
    overrides = " ".join(f"`--set {o}`" for o in result.overrides)
    lines = [head, ""]
    lines.append(f"Scenario `{result.scenario}`{' with ' + overrides if overrides else ''}: "
                 f"{len(result.stresses)} scenario(s), {result.replications} replications each, seed {result.seed}.")
    if result.passed:
        lines.append("Every SLO holds on every scenario.")
    else:
        lines.append(f"{len(failed)} check(s) miss their SLO: "
                     + "; ".join(f"{s.name} `{v.slo.text}`" for s, v in failed) + ".")
    lines += ["", "| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] * len(HEADERS)) + "|"]
    for r in _rows(result, markdown=True):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    lines += ["", "Margin: room to spare before the SLO is missed (negative: missed by that much). "
              "Intervals are 95 % Student-t over replications, cut to the values the metric can take "
              "(no latency below 0, no share beyond 0-100 %); *within noise* means the interval "
              "straddles the threshold, so more replications could change the verdict.", ""]
    lines += ["<details><summary>Scenarios</summary>", ""]
    for s in result.stresses:
        lines.append(f"- **{s.name}**: {s.spec.description or '(no description)'}")
    lines += ["", "</details>", ""]
    return "\n".join(lines)
