"""Results tables show settings as written, in a reader's words: durations keep their unit, counts
stay integers, and a 0 the schema defines as "no cap" (or "never") says so."""

from __future__ import annotations

import pandas as pd
import pytest

from gwsim.whatif.display import format_setting, zero_means
from gwsim.whatif.sweep import SweepResult, column_values, format_points


@pytest.mark.parametrize("path, raw, shown", [
    ("fallback.attempt_timeout", "2s", "2 s"),
    ("fallback.attempt_timeout", "250ms", "250 ms"),
    ("fallback.attempt_timeout", "1.5s", "1.5 s"),
    ("workload.arrivals.rate", "5/s", "5/s"),
    ("providers.alpha.concurrency", "1000000", "1000000"),
    ("providers.alpha.breaker.failure_threshold", "20", "20"),
    ("providers.alpha.pool.max_conns_per_host", "0", "none"),
    ("model_selection.ai_client.pool.max_conns_per_host", "0", "none"),
    ("providers.alpha.pool.max_conns_per_host", "16", "16"),
    ("providers.alpha.breaker.count_interval", "0", "never"),
    ("providers.alpha.concurrency", "0", "0"),  # no meaning declared for 0: the number
    ("workload.time_scale", "0.5", "0.5"),
    ("fallback.mode", "race", "race"),
])
def test_a_setting_reads_as_a_person_writes_it(path, raw, shown) -> None:
    assert format_setting(path, raw) == shown


def test_zero_meanings_come_from_the_schema_help() -> None:
    assert zero_means("providers.x.pool.max_conns_per_host") == "none"
    assert zero_means("providers.x.concurrency") is None
    assert zero_means("no.such.field") is None


def test_sweep_table_keeps_units_integers_and_none() -> None:
    values = {"fallback.attempt_timeout": ("2s", "4s"), "providers.alpha.pool.max_conns_per_host": ("0", "8")}
    rows = []
    for t in column_values(values["fallback.attempt_timeout"]):
        for cap in column_values(values["providers.alpha.pool.max_conns_per_host"]):
            rows.append({"fallback.attempt_timeout": t, "providers.alpha.pool.max_conns_per_host": cap,
                         "p95_ms": 1000.0, "p95_ms_lo": 900.0, "p95_ms_hi": 1100.0})
    result = SweepResult(tuple(values), pd.DataFrame(), pd.DataFrame(rows), 2, 1, 4, values)
    lines = format_points(result, ["p95_ms"]).splitlines()[2:]
    assert [line.split()[:3] for line in lines] == [["2", "s", "none"], ["2", "s", "8"], ["4", "s", "none"], ["4", "s", "8"]]
