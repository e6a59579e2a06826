"""The machine's speed probe: a profile records it, a check reports a measurement against it."""

from __future__ import annotations

import pytest

from gwsim.calibration.check import ScenarioCheck, format_checks
from gwsim.calibration.profile import CpuSampler, profile_toml
from gwsim.calibration.speed import probe_s, profile_speed_s, slower_share
from simulator.scenario import read_profile


def test_the_probe_is_a_few_milliseconds_of_cpu():
    times = [probe_s() for _ in range(5)]
    assert all(0 < t < 0.05 for t in times), times


def test_a_profile_keeps_its_probe_apart_from_the_machine_table(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(profile_toml({"cores": 2.0, "background": 0.05, "client_cpu": 0.002, "_speed_probe": 0.00234}))
    assert profile_speed_s(path) == pytest.approx(0.00234)
    machine = read_profile(path)  # the [measured] table is not a machine parameter
    assert machine["cores"] == 2 and machine["client_cpu"] == {"dist": "deterministic", "value": "2000us"}
    assert "speed_probe_ms" not in machine and "_speed_probe" not in machine


def test_an_older_profile_without_a_probe_reads_as_unknown(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text(profile_toml({"cores": 2.0, "background": 0.05}))
    assert "[measured]" not in path.read_text()
    assert profile_speed_s(path) is None
    assert profile_speed_s(tmp_path / "missing.toml") is None


def test_slower_is_the_probes_time_against_the_profiles():
    assert slower_share(0.0024, 0.0020) == pytest.approx(0.20)
    assert slower_share(0.0018, 0.0020) == pytest.approx(-0.10)
    assert slower_share(None, 0.002) is None and slower_share(0.002, None) is None


def test_the_sampler_averages_the_probes_inside_a_window():
    sampler = CpuSampler()
    sampler.probes = [(float(t), 0.002 if t < 10 else 0.003) for t in range(20)]
    assert sampler.speed(0, 9) == pytest.approx(0.002)
    assert sampler.speed(10, 19) == pytest.approx(0.003)
    assert sampler.speed(0, 19) == pytest.approx(0.0025)
    assert sampler.speed(5, 8) is None  # four probes: too few to say


def test_a_running_sampler_probes_at_each_sample():
    import time

    sampler = CpuSampler(every=0.05).start()
    time.sleep(0.6)
    sampler.stop()
    assert len(sampler.probes) >= 5
    assert sampler.speed(sampler.probes[0][0], sampler.probes[-1][0]) > 0


def test_the_check_table_shows_how_much_slower_the_machine_ran():
    check = ScenarioCheck(scenario="s", path="s.toml", duration_s=10.0, window=(0.0, 10.0), replications=1,
                          endpoints=[], slower=0.2)
    assert "slower %" in format_checks([check])
    assert check.to_dict()["machine_slower_than_profile"] == pytest.approx(0.2)
