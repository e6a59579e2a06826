"""Overload: twice the gateway's capacity for 60 s, then normal load, on the real engine
(three processes, ``real_engine.measure``).

The scenario's capacity is set by its upstream, not by the machine: an AI service with two
workers of 50 ms each (40 req/s), behind a gateway admitting at most 16 requests at once
(``gateway.max_in_flight``).  The test first measures that capacity (a closed loop of 16
users), then offers half of it for 10 s, twice of it for 60 s and half again for 12 s.

Stated bounds, checked:

- the gateway process is alive throughout and exits cleanly (code 0) when told to;
- its RSS stays under ``RSS_BOUND_MB`` and grows by less than ``RSS_GROWTH_MB`` over the run;
- every request sent is accounted for exactly once (one record per id; ok or a failure
  with its reason), and the gateway's own counts agree with the load generator's;
- within ``RECOVERY_BOUND_S`` of the overload's end, the P50 of every 1-s window (by
  arrival) is back within ``2x`` the baseline P50 (and stays there).

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from real_engine.measure import measure
from simulator.engine import Replication
from simulator.records import OUTCOMES
from simulator.scenario import load_scenario

pytestmark = [pytest.mark.real, pytest.mark.slow]

MAX_IN_FLIGHT = 16
THEORETICAL_CAPACITY = 2 / 0.050  # two AI workers, 50 ms each
BASELINE_S, OVERLOAD_S, RECOVERY_S = 10.0, 60.0, 12.0
RSS_BOUND_MB = 300.0
RSS_GROWTH_MB = 100.0
RECOVERY_BOUND_S = 10.0

SCENARIO = """
[run]
name = "overload"
duration = "{duration}s"
drain = "5s"
seed = 7
[workload]
arrivals = {{process = "constant", rate = "{rate}/s"}}
rate_profile = [{{at = "0s", factor = 0.5}}, {{at = "{o_start}s", factor = 2.0}}, {{at = "{o_end}s", factor = 0.5}}]
client_timeout = "10s"
mix = {{select = 1.0}}
[endpoints.select]
kind = "select_model"
classes = [{{name = "s1"}}]
[model_selection.semantic_cache]
enabled = false
[model_selection.ai_client]
request_timeout = "10s"
pool = {{max_idle_per_host = 64}}
[ai_service]
workers = 2
per_item = {{dist = "deterministic", value = "50ms"}}
[gateway]
max_in_flight = {max_in_flight}
[providers.p1]
latency = {{model = "plain", time = {{dist = "deterministic", value = "5ms"}}}}
"""


class GatewayWatch(threading.Thread):
    """Samples the gateway process (found through its ready file) every 0.25 s: RSS, alive."""

    def __init__(self, ready_file: Path) -> None:
        super().__init__(daemon=True)
        self.ready_file = ready_file
        self.samples: list[tuple[float, float, bool]] = []  # (monotonic, rss MB, alive)
        self.pid: int | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while self.pid is None and not self._halt.is_set():
            try:
                self.pid = int(json.loads(self.ready_file.read_text())["pid"])
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        if self.pid is None:
            return
        proc = psutil.Process(self.pid)
        while not self._halt.is_set():
            try:
                alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
                rss = proc.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                alive, rss = False, 0.0
            self.samples.append((time.monotonic(), rss, alive))
            if not alive:
                return
            time.sleep(0.25)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def _write(tmp_path: Path, name: str, rate: float) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        SCENARIO.format(
            duration=BASELINE_S + OVERLOAD_S + RECOVERY_S, rate=round(rate, 3), o_start=BASELINE_S,
            o_end=BASELINE_S + OVERLOAD_S, max_in_flight=MAX_IN_FLIGHT,
        )
    )
    return path


def _capacity(tmp_path: Path) -> float:
    """Completed req/s of a closed loop of MAX_IN_FLIGHT users that never think: the
    gateway is never idle and never refuses, so this is what it can serve."""
    path = _write(tmp_path, "capacity", THEORETICAL_CAPACITY)
    result = measure(
        path, ["workload.mode=\"closed\"", f"workload.users={MAX_IN_FLIGHT}", "workload.rate_profile=[]", 'run.duration="7s"'],
        startup_s=3.0, workdir=tmp_path / "capacity-run",
    )
    assert result.accounting_ok and result.accounting["failures"] == {}, result.accounting
    done = np.array([r.finished_at for r in result.records if r.ok])
    return float(((done >= 2.0) & (done < 7.0)).sum() / 5.0)


def _p50_ms(latencies: list[float]) -> float:
    return float(np.median(latencies) * 1e3)


def test_twice_capacity_for_60s_then_recovery(tmp_path):
    capacity = _capacity(tmp_path)
    # the upstream sets it, not the machine (a loaded box serves a little less)
    assert 0.5 * THEORETICAL_CAPACITY <= capacity <= 1.1 * THEORETICAL_CAPACITY, capacity
    # twice what the upstream allows: a capacity measured while other work shares the cores
    # can come out low, and twice that would not be an overload once the cores are free again
    offered = 2 * THEORETICAL_CAPACITY
    path = _write(tmp_path, "overload", THEORETICAL_CAPACITY)
    workdir = tmp_path / "overload-run"
    watch = GatewayWatch(workdir / "gateway.json")
    watch.start()
    try:
        result = measure(path, startup_s=4.0, workdir=workdir)
    finally:
        watch.stop()
    acc = result.accounting
    o_start, o_end = BASELINE_S, BASELINE_S + OVERLOAD_S
    end = o_end + RECOVERY_S
    recs = result.records
    gw = result.gateway_stats or {}
    during = [s for s in watch.samples if result.t0 <= s[0] <= result.t0 + end]
    rss = [mb for _, mb, alive in watch.samples if alive] or [float("nan")]
    start_rss, peak_rss = rss[0], max(rss)
    rejected = [r for r in recs if r.outcome == "rejected"]
    # the overload phase (its first 2 s left out: the queue fills then)
    over = [r for r in recs if o_start + 2 <= r.arrived_at < o_end]
    over_ok = sum(r.ok for r in over)
    refused_share = 1 - over_ok / max(1, len(over))
    served = over_ok / (OVERLOAD_S - 2)
    baseline = _p50_ms([r.latency_s for r in recs if r.ok and 2.0 <= r.arrived_at < o_start])
    bound = max(2 * baseline, baseline + 50.0)
    overload_p50 = _p50_ms([r.latency_s for r in over if r.ok])
    windows = []
    for k in range(int(RECOVERY_S)):
        lat = [r.latency_s for r in recs if r.ok and o_end + k <= r.arrived_at < o_end + k + 1]
        windows.append(_p50_ms(lat) if lat else float("inf"))
    recovered_after = next((k for k in range(len(windows)) if all(w <= bound for w in windows[k:])), None)
    # the simulator on the same file, with the same admission control
    sim = Replication(load_scenario(path, ['profile="none"']), 0, 7).run().records
    sim_over = sim[(sim.arrived_at >= o_start + 2) & (sim.arrived_at < o_end)]
    sim_refused = float((sim_over.outcome == "rejected").mean())

    print(
        f"\noverload: capacity {capacity:.1f} req/s (theory {THEORETICAL_CAPACITY:.0f}, max_in_flight {MAX_IN_FLIGHT}); "
        f"offered {offered:.1f} req/s for {OVERLOAD_S:.0f} s, {0.5 * THEORETICAL_CAPACITY:.1f} req/s before and after\n"
        f"  served during overload {served:.1f} req/s, refused {refused_share:.1%} (simulator {sim_refused:.1%})\n"
        f"  gateway RSS start {start_rss:.1f} MB, peak {peak_rss:.1f} MB (bound {RSS_BOUND_MB:.0f} MB, "
        f"growth bound {RSS_GROWTH_MB:.0f} MB); alive in {sum(a for *_, a in during)}/{len(during)} samples, "
        f"exit codes {result.exit_codes}\n"
        f"  accounting: sent {acc['sent']} = ok {acc['ok']} + {acc['failures']}; records {len(recs)}, "
        f"ids unique {len(set(r.id for r in recs)) == len(recs)}; gateway counted {gw.get('outcomes')}\n"
        f"  P50 baseline {baseline:.1f} ms, during overload {overload_p50:.1f} ms; after the drop, 1-s windows "
        f"{[round(w, 1) for w in windows]} ms\n"
        f"  recovered (every window <= {bound:.1f} ms) {recovered_after} s after the load dropped "
        f"(bound {RECOVERY_BOUND_S:.0f} s)"
    )

    # --- alive throughout, clean exit
    assert result.exit_codes == {"loadgen": 0, "gateway": 0, "emulators": 0}, result.problems
    assert len(during) > end * 2, "the watcher did not sample the run"
    assert all(alive for _, _, alive in during)

    # --- memory
    assert peak_rss < RSS_BOUND_MB and peak_rss - start_rss < RSS_GROWTH_MB, (start_rss, peak_rss)

    # --- accounting: every request once, with a reason
    ids = [r.id for r in recs]
    assert acc["sent"] == len(recs) == len(set(ids)) and sorted(ids) == list(range(acc["sent"]))
    assert acc["sent"] == acc["ok"] + sum(acc["failures"].values())
    assert all(r.outcome in OUTCOMES for r in recs)
    assert set(acc["failures"]) <= {"rejected"}, acc["failures"]
    assert all(r.status_code == 503 for r in rejected)
    assert gw["outcomes"] == {k: v for k, v in {"ok": acc["ok"], "rejected": len(rejected)}.items() if v}
    assert gw["admission"]["rejections"] == len(rejected) and gw["admission"]["peak"] <= MAX_IN_FLIGHT
    # the overload was one: about half refused, the rest served at about capacity
    assert 0.25 <= refused_share <= 0.8, refused_share
    assert served >= 0.7 * capacity, (served, capacity)
    # before and after it, nothing refused
    assert not any(r.outcome == "rejected" for r in recs if r.arrived_at < o_start or r.arrived_at >= o_end + 2)

    # --- recovery
    assert recovered_after is not None and recovered_after <= RECOVERY_BOUND_S, windows

    # --- the simulator answers to the same admission control
    assert set(sim.outcome) <= {"ok", "rejected"}
    assert abs(sim_refused - refused_share) < 0.15, (sim_refused, refused_share)
