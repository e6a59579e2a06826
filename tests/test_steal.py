"""The hypervisor's steal: a check samples it, reports it, and does not count a measurement
taken during one of its spells as a test of the model (it measures the scenario again)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gwsim.calibration.check import QUIET_STEAL_PEAK, ScenarioCheck, format_checks, suite_document
from gwsim.calibration.metrics import compare_frames
from gwsim.calibration.profile import CpuSampler

ROOT = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1


def _sampler_with_a_spell(take_per_s: float, spell: tuple[float, float], every: float = 0.5, end: float = 60.0) -> CpuSampler:
    """Samples every ``every`` s over [0, end]: nothing stolen but ``take_per_s`` CPU seconds per
    second inside ``spell``."""
    sampler = CpuSampler()
    stolen, t = 0.0, 0.0
    while t <= end + 1e-9:
        sampler.stolen.append((t, stolen))
        if spell[0] <= t < spell[1]:
            stolen += take_per_s * every
        t += every
    return sampler


def test_steal_is_the_share_of_the_cores_on_average_and_in_its_worst_span():
    # 0.6 CPU seconds a second for 8 s: 30 % of two cores at worst, 4 % over the minute
    sampler = _sampler_with_a_spell(0.6, (20.0, 28.0))
    mean, peak = sampler.steal(0.0, 60.0, span=5.0)
    assert mean == pytest.approx(0.6 * 8 / (60 * CORES))
    assert peak == pytest.approx(0.6 / CORES)
    # a window that misses the spell is quiet; one that clips it sees the part inside
    assert sampler.steal(30.0, 60.0) == (0.0, 0.0)
    mean, peak = sampler.steal(25.0, 60.0, span=5.0)
    assert peak == pytest.approx(0.6 * 3 / (5 * CORES))
    assert sampler.steal(10.0, 10.4) is None  # one sample: nothing to say


def test_a_window_shorter_than_the_span_is_judged_whole():
    sampler = _sampler_with_a_spell(0.2, (0.0, 100.0), end=3.0)
    mean, peak = sampler.steal(0.0, 3.0, span=5.0)
    assert mean == pytest.approx(peak) and peak == pytest.approx(0.2 / CORES)


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat (Linux)")
def test_a_running_sampler_records_the_steal_counter():
    import time

    sampler = CpuSampler(every=0.05).start()
    time.sleep(0.4)
    sampler.stop()
    assert len(sampler.stolen) >= 3
    assert all(b[1] >= a[1] for a, b in zip(sampler.stolen, sampler.stolen[1:]))  # a counter since boot
    mean, peak = sampler.steal(sampler.stolen[0][0], sampler.stolen[-1][0])
    assert 0.0 <= mean <= peak <= 1.0


def test_a_check_measured_during_a_spell_does_not_pass_and_says_why():
    # the same records on both sides: every figure passes, so only the steal can fail it
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"endpoint": "chat", "request_class": "c", "arrived_at": np.linspace(0, 100, 20000, endpoint=False),
                          "latency_s": rng.gamma(4, 0.05, 20000), "outcome": "ok"})
    same = compare_frames(frame, frame, window=(0, 100), counts="fixed")
    assert all(e.passed for e in same)
    quiet = ScenarioCheck(scenario="calm", path="a.toml", duration_s=100.0, window=(0.0, 100.0), replications=1,
                          endpoints=same, steal=0.002, steal_peak=0.01)
    noisy = ScenarioCheck(scenario="noisy", path="b.toml", duration_s=100.0, window=(0.0, 100.0), replications=1,
                          endpoints=same, steal=0.04, steal_peak=0.25, not_quiet=[0.31])
    assert quiet.quiet and quiet.passed
    assert not noisy.quiet and not noisy.passed
    assert QUIET_STEAL_PEAK < 0.25
    doc = suite_document("s", [quiet, noisy], traffic="own", background="profile")
    assert not doc["passed"]
    row = doc["scenarios"][1]
    assert row["quiet"] is False and row["steal_peak"] == 0.25 and row["not_quiet_measurements"] == [0.31]
    table = format_checks([quiet, noisy])
    assert "steal % mean/peak" in table and "4.0/25 (again after 31)" in table
    assert "1 measured on a machine that was not quiet" in table and "1/2 scenarios pass" in table
    noisy_row = next(line for line in table.splitlines() if line.startswith("noisy"))
    assert "NOT QUIET" in noisy_row and "NOT QUIET" not in next(line for line in table.splitlines() if line.startswith("calm"))


@pytest.mark.real
@pytest.mark.timeout(300)
def test_a_check_measures_again_when_the_hypervisor_took_the_cores(monkeypatch):
    """The real engine measured twice: the first measurement's window reported as a spell
    (as the sampler would have seen one), the second as quiet; only the second is compared."""
    from gwsim.calibration import check as check_module

    seen: list[tuple[float, float]] = []
    real_steal = CpuSampler.steal

    def steal(self, start, end, span=5.0):
        seen.append((start, end))
        real_steal(self, start, end, span)  # the real reading runs too
        return (0.08, 0.30) if len(seen) == 1 else (0.0, 0.0)

    monkeypatch.setattr(CpuSampler, "steal", steal)
    path = ROOT / "scenarios" / "examples" / "retries.toml"
    c = check_module.check_scenario(path, duration_s=4.0, replications=1, startup_s=3.0)
    assert len(seen) == 2 and seen[1][0] > seen[0][1]  # two measurements, one after the other
    assert c.not_quiet == [0.30] and c.quiet and c.steal_peak == 0.0
    assert 0 < c.accounting["sent"] <= 4.0 * 30 * 2  # one measurement's requests, not two

    seen.clear()
    c = check_module.check_scenario(path, duration_s=4.0, replications=1, startup_s=3.0, remeasure=0)
    assert len(seen) == 1 and not c.quiet and not c.passed and c.not_quiet == []
    assert "NOT QUIET" in format_checks([c])
