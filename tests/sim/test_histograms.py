"""records="none": bounded histograms give the same counts as the records and percentiles
within the documented bin error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from simulator import histograms as h
from simulator.api import run_scenario
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
MM10 = ROOT / "scenarios/validation/mm10.toml"
SHORT = ['run.duration="600s"', 'run.warmup="50s"']


def test_percentiles_from_bins_are_within_the_bin_error() -> None:
    rng = np.random.default_rng(3)
    lat_s = rng.lognormal(-1.0, 1.2, 20_000)
    hist = np.zeros(h.N_BINS, dtype=np.int64)
    for x in lat_s:
        hist[h.bin_of(float(x))] += 1
    for q in (50, 90, 95, 99, 99.9):
        exact = float(np.percentile(lat_s * 1000.0, q))
        assert abs(h.percentile_ms(hist, q) / exact - 1) <= h.RELATIVE_ERROR + 1e-3


def test_sketches_merge_by_adding() -> None:
    a, b = h.LatencySketch(), h.LatencySketch()
    a.add(0, "ok", 0.5)
    a.add(1, "timeout", 2.0)
    b.add(0, "ok", 1.5)
    b.add(9, "mystery", 1.0)
    m = a.merge(b)
    assert (m.count, m.ok) == (4, 2)
    assert m.lat_max_s == 1.5 and m.lat_min_s == 0.5
    assert m.other == {"mystery": 1}
    assert int(m.counts.sum()) == 2


def test_records_none_matches_records_all() -> None:
    sc = load_scenario(MM10, SHORT)
    full = run_scenario(sc, replications=2, workers=1)
    lean = run_scenario(sc, replications=2, workers=1, records="none")
    assert lean.records.empty and lean.sketches is not None
    fo, lo = full.summary["overall"], lean.summary["overall"]
    assert lo["count"] == fo["count"] and lo["throughput_rps"] == fo["throughput_rps"]
    assert lean.summary["outcomes"] == full.summary["outcomes"]
    assert abs(lo["latency_ms"]["mean"] / fo["latency_ms"]["mean"] - 1) < 1e-5  # exact up to rounding
    assert lo["latency_ms"]["max"] == fo["latency_ms"]["max"]
    for key in ("p50", "p95", "p99"):
        assert abs(lo["latency_ms"][key] / fo["latency_ms"][key] - 1) <= h.RELATIVE_ERROR + 2e-3
    assert lean.summary["records"] == "none"
    assert len(lean.per_replication()) == len(full.per_replication())


def test_cli_records_none_is_deterministic() -> None:
    def once() -> str:
        args = [sys.executable, "-m", "gwsim.cli", "run", str(MM10), "--json", "--records", "none", "-n", "2"]
        for s in SHORT:
            args += ["--set", s]
        proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    first = once()
    assert first == once()
    assert json.loads(first)["overall"]["count"] > 4000
