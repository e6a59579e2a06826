"""A copy of a calibration suite whose machine profile is measured now, on this machine.

The CI subsets (tests/test_calibration.py, tests/test_litellm_suite.py) check a scenario that
missed with the shipped profile once more against such a copy: the shipped profile holds for the
speed these VMs had when it was measured, and they drift within the hour (docs/calibration.md,
docs/litellm.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path


def suite_profiled_now(suite: Path, into: Path, gateway: str = "builtin") -> Path:
    """Copy ``suite`` (its scenarios and ``profiles/``) to ``into``/its name and overwrite the
    copy's ``profiles/this_machine.toml`` with a profile of ``gateway`` measured now
    (``gwsim calibrate profile [--gateway litellm]``); the shipped suite is left as it was."""
    from gwsim.calibration.profile import measure_profile, write_profile

    if gateway == "litellm":
        from gwsim.litellm.profile import measure_litellm_profile as measure
    elif gateway == "builtin":
        measure = measure_profile
    else:
        raise ValueError(f"gateway: expected 'builtin' or 'litellm', found {gateway!r}")
    copy = into / suite.name
    shutil.copytree(suite, copy)
    write_profile(measure(), copy / "profiles" / "this_machine.toml")
    return copy
