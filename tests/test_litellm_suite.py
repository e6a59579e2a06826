"""The CI subset of scenarios/litellm against LiteLLM's real proxy, thresholds enforced: the
simulator's prediction (its own traffic, the scenario alone) and the proxy measured under the
same scenario, every figure decided and within issue 13's thresholds, no KS failure.  Skipped
(one line) when the extra gwsim[litellm] is missing; CI installs it after the main run
(.ci/run).

The shipped profile is of this machine as it ran when it was measured, and these VMs drift:
on 2026-12-07 the proxy spent 17-22 ms per request in the suite's run 12 (16:06) and 33-42 ms
in CI's check twenty minutes later (the speed probe 52-59 % slower).  So a scenario that fails
with the shipped profile is checked once more with a profile measured now (``gwsim calibrate
profile --gateway litellm``, into a copy of the suite); the test fails when that fails too.
Both tables are in the failure message."""

from __future__ import annotations

from pathlib import Path

import pytest
from profiled_suite import suite_profiled_now

from gwsim.extras import missing

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(bool(missing("litellm")), reason=f"needs gwsim[litellm] (missing: {', '.join(missing('litellm'))})"),
]

SUITE = Path(__file__).resolve().parents[1] / "scenarios" / "litellm"
#: Two scenarios that passed every full run of the suite (docs/litellm.md), at their own
#: 120 s (about 3 minutes each with the proxy's start-up and the drain): the routing a latency
#: window decides, and a failure mode (30 % of 503s, retries, cooldowns).  Not shortened: cut to
#: 100 s (1,800 requests), errors_cooldown's P99 was undecided twice in a row on the slow VM of
#: 2026-12-07 22:00 (its measured 95 % CI +-12.4 and +-12.5 % against the 10 % threshold); at
#: 120 s (2,200) it was decided in runs 11-15, +-5.7 to +-9.0 %.
CI_SUBSET = ("slow_deployment", "errors_cooldown")
CI_DURATION_S = None  # each scenario's own run.duration


def _check(suite: Path, names) -> list:
    from gwsim.calibration.check import check_scenario

    return [check_scenario(suite / f"{name}.toml", duration_s=CI_DURATION_S, gateway="litellm") for name in names]


def _passed(check) -> bool:
    return (check.accounting["sent"] >= 900 and not check.problems
            and all(not e.misses and not e.ks_failed and not e.inconclusive for e in check.endpoints))


@pytest.mark.timeout(1800)
def test_ci_subset_of_the_litellm_suite_is_predicted_within_its_thresholds(tmp_path):
    from gwsim.calibration.check import format_checks, suite_document

    checks = _check(SUITE, CI_SUBSET)
    table = "\nwith the shipped profile:\n" + format_checks(checks)
    failed = [name for name, c in zip(CI_SUBSET, checks) if not _passed(c)]
    if failed:
        again = _check(suite_profiled_now(SUITE, tmp_path, gateway="litellm"), failed)
        table += "\nwith a profile measured now:\n" + format_checks(again)
        checks = [c for c in checks if _passed(c)] + again
    doc = suite_document(str(SUITE), checks, traffic="own", background="profile")
    assert doc["prediction"], table
    # Measured while the hypervisor took the cores (in both of check_scenario's measurements of
    # a scenario): not the machine the profile describes, and a miss there says nothing of the model.
    noisy = [f"{c.scenario} steal peak {c.steal_peak:.0%}" for c in checks if not c.quiet]
    if noisy:
        pytest.skip(f"the machine was not quiet during the measurement ({', '.join(noisy)}):\n{table}")
    assert all(c.accounting["sent"] >= 900 and not c.problems for c in checks), table + str([c.problems for c in checks])
    for c in checks:
        for e in c.endpoints:
            assert not e.misses and not e.ks_failed, table
            assert not e.inconclusive, table
    assert doc["passed"], table
