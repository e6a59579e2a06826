"""The rollout gate: exit codes 0 / 1 / 2, the Markdown report, and the stress suite's
transformations of a scenario (load factor, faults at fractions of the window)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gwsim.cli import cli
from gwsim.whatif.gate import DEFAULT_SUITE, apply_load_factor, load_suite, stress_variant
from gwsim.whatif.runner import ScenarioSource
from simulator.errors import UsageError
from stage_scenario import single_stage

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = str(ROOT / "notebooks" / "scenarios" / "small_gateway.toml")

MM = single_stage("mm_gate", duration="150s", warmup="15s", replications=3, seed=3, rate="4/s",
                  service='{ dist = "exponential", mean = "500ms" }', servers=8, queue=False)


@pytest.fixture()
def mm(tmp_path: Path) -> str:
    path = tmp_path / "mm.toml"
    path.write_text(MM)
    return str(path)


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_exit_0_when_every_slo_holds_and_report_says_pass(mm: str, tmp_path: Path) -> None:
    report = tmp_path / "gate.md"
    res = _run("validate", mm, "--slo", "p95<10s", "--slo", "success>=0.99", "--stress", "none", "--workers", "1",
               "--report", str(report))
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output
    text = report.read_text()
    assert text.startswith("## ✅ gwsim validate: PASS")
    assert "| scenario | SLO | value [95% CI] | margin [95% CI] | result |" in text
    rows = [line for line in text.splitlines() if line.startswith("| as proposed")]
    assert len(rows) == 2
    assert all("✅ pass" in r for r in rows)
    assert "`p95<10s`" in rows[0] and "ms" in rows[0]


def test_exit_1_when_an_slo_fails_and_report_names_it(mm: str, tmp_path: Path) -> None:
    report = tmp_path / "gate.md"
    res = _run("validate", mm, "--slo", "p50<100ms", "--slo", "success>=0.99", "--stress", "none", "--workers", "1",
               "--report", str(report), "--json")
    assert res.exit_code == 1, res.output
    payload = json.loads(res.stdout)
    assert payload["passed"] is False
    verdicts = {v["slo"]: v for v in payload["results"][0]["verdicts"]}
    assert verdicts["p50<100ms"]["passed"] is False and verdicts["p50<100ms"]["margin"] < 0
    assert verdicts["success>=0.99"]["passed"] is True
    text = report.read_text()
    assert text.startswith("## ❌ gwsim validate: FAIL")
    assert "1 check(s) miss their SLO: as proposed `p50<100ms`." in text
    assert "❌ **FAIL**" in text


@pytest.mark.parametrize(
    "args",
    [
        ["--slo", "p95<<2s"],
        ["--slo", "p95<2s", "--stress", "/nonexistent/suite"],
        ["--slo", "nosuchendpoint:p95<2s"],
        ["--slo", "p95<2s", "--set", "providers.servers.concurrency=-1"],
        ["--slo", "p95<2s", "--report", "/nonexistent/dir/r.md"],
        ["--slo", "p95<2s", "-n", "1"],
    ],
)
def test_exit_2_on_bad_input(mm: str, args: list[str]) -> None:
    res = _run("validate", mm, *args)
    assert res.exit_code == 2, res.output
    assert "error" in res.output


def test_exit_2_on_missing_scenario_and_bad_stress_file(mm: str, tmp_path: Path) -> None:
    assert _run("validate", str(tmp_path / "missing.toml"), "--slo", "p95<2s").exit_code == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('[stress]\nname = "x"\n[[stress.faults]]\ntarget = "redis"\nkind = "stall"\nstart = 0.5\n')
    res = _run("validate", mm, "--slo", "p95<2s", "--stress", str(bad))
    assert res.exit_code == 2
    assert "exactly one of end" in res.output


def test_default_suite_ships_six_stresses() -> None:
    names = [s.name for s in load_suite("default")]
    assert names == ["normal load", "2x load", "provider brownout", "provider outage", "AI-service outage", "Redis stall"]
    assert len(list(DEFAULT_SUITE.glob("*.toml"))) == 6


def test_stress_variants_change_what_they_say() -> None:
    source = ScenarioSource(GATEWAY)
    base = source.build()
    suite = {s.name: s for s in load_suite("default")}
    window = base.run.duration - base.run.warmup
    double = stress_variant(source, suite["2x load"], 1).scenario
    assert double.workload.arrivals.rate == pytest.approx(2 * base.workload.arrivals.rate)
    brown = stress_variant(source, suite["provider brownout"], 2).scenario
    fault = brown.providers["alpha"].faults[0]
    assert (fault.kind, fault.latency_factor) == ("slow", 5.0)
    assert fault.start == pytest.approx(base.run.warmup + 0.25 * window)
    assert fault.end == pytest.approx(base.run.warmup + 0.75 * window)
    assert brown.providers["beta"].faults == ()
    assert stress_variant(source, suite["AI-service outage"], 3).scenario.ai_service.faults[0].kind == "outage"
    stall = stress_variant(source, suite["Redis stall"], 4).scenario.redis.faults[0]
    assert stall.end - stall.start == pytest.approx(5.0)


def test_load_factor_on_burst_and_closed_loop() -> None:
    burst = {"workload": {"arrivals": {"process": "burst", "size": 10, "every": "1s"}}}
    apply_load_factor(burst, 2.0)
    assert burst["workload"]["arrivals"]["every"] == "500ms"
    closed = {"workload": {"mode": "closed", "users": 5}}
    apply_load_factor(closed, 2.0)
    assert closed["workload"]["users"] == 10


def test_stress_can_replace_an_slo_and_brownout_fails_the_gate(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "a.toml").write_text((DEFAULT_SUITE / "01_normal.toml").read_text())
    (suite / "b.toml").write_text((DEFAULT_SUITE / "03_provider_brownout.toml").read_text())
    (suite / "c.toml").write_text('[stress]\nname = "relaxed"\nslo = ["p95<60s"]\n')
    res = _run("validate", GATEWAY, "--slo", "p95<4s", "--stress", str(suite), "-n", "2", "--workers", "2",
               "--set", 'run.duration="150s"', "--json")
    assert res.exit_code == 1, res.output
    results = {r["stress"]: r["verdicts"] for r in json.loads(res.stdout)["results"]}
    assert results["normal load"][0]["passed"] is True
    assert results["provider brownout"][0]["passed"] is False
    assert results["relaxed"][0]["slo"] == "p95<60s" and results["relaxed"][0]["passed"] is True


def test_load_suite_rejects_duplicates(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.toml").write_text('[stress]\nname = "same"\n')
    with pytest.raises(UsageError):
        load_suite(str(tmp_path))
