"""Is a fitted workload good enough to plan with?  Replay against fit on the Azure LLM traces.

For each Azure trace (conversation, code) the gateway of ``scenarios/traces/azure_conv.toml``
(three deployments, sequential fallback on 429) runs on the trace replayed and on the workload
``gwsim fit workload`` fits to the same window, at 1x, 2x and 4x the trace's speed
(``workload.time_scale``; both play the whole window, faster).  Prints P50/P95/P99 of both and
the fitted-vs-replayed difference (targets: P50 within 5 %, P95 and P99 within 10 %).  The
simulator never sees the replayed run when the fitted one is computed: the fit reads the trace
only.  Prints figures; asserts nothing (``tests/test_trace.py`` holds the conversation trace's
1x check).  Needs the traces in the data directory (GWSIM_DATA_DIR, else ../shared/data).

    python benchmarks/trace_fit.py [--window 1800] [-n 4] [--growth 1,2,4] [--traces conv,code]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gwsim.whatif.workload_fit import fit_workload  # noqa: E402
from simulator.api import run_scenario  # noqa: E402
from simulator.datadir import find, skip_reason  # noqa: E402
from simulator.scenario import read_scenario_data, scenario_from_data  # noqa: E402

SCENARIO = ROOT / "scenarios/traces/azure_conv.toml"
TRACES = {"conv": "azure-llm-2023/AzureLLMInferenceTrace_conv.csv", "code": "azure-llm-2023/AzureLLMInferenceTrace_code.csv"}
TARGETS = {"p50": 0.05, "p95": 0.10, "p99": 0.10}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=1800.0, help="Seconds of trace from its start (default 1800).")
    ap.add_argument("-n", "--replications", type=int, default=4)
    ap.add_argument("--growth", default="1,2,4", help="time_scale values (default 1,2,4).")
    ap.add_argument("--traces", default="conv,code")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    growth = [float(g) for g in args.growth.split(",")]
    print(f"scenario {SCENARIO.relative_to(ROOT)}; window {args.window:g} s of each trace; {args.replications} "
          f"replications per run; targets: P50 within 5 %, P95 and P99 within 10 %")
    print(f"{'trace':5}  {'growth':>6}  {'fit':5}  {'replayed P50/P95/P99 ms':>25}  {'fitted P50/P95/P99 ms':>25}  "
          f"{'diff P50/P95/P99':>22}  verdict")
    for name in args.traces.split(","):
        rel = TRACES[name]
        if find(rel)[0] is None:
            print(f"{name}: skipped: {skip_reason(rel)}")
            continue
        data = read_scenario_data(SCENARIO)
        data["workload"]["trace"]["file"] = "{data}/" + rel
        data["workload"]["trace"]["duration"] = f"{args.window}s"
        base = scenario_from_data(data, str(SCENARIO), SCENARIO.parent)
        fit = fit_workload(base.workload.trace.data, source=rel, format="azure2023", duration_s=args.window)
        for k in growth:
            replay = copy.deepcopy(data)
            replay["run"]["duration"] = f"{args.window / k}s"
            replay["workload"]["time_scale"] = k
            fitted = copy.deepcopy(replay)
            fitted["workload"] = dict(fit.workload, time_scale=k)
            started = time.perf_counter()
            a = run_scenario(scenario_from_data(replay, str(SCENARIO), SCENARIO.parent), replications=args.replications,
                             seed=args.seed).summary["overall"]["latency_ms"]
            b = run_scenario(scenario_from_data(fitted, str(SCENARIO), SCENARIO.parent), replications=args.replications,
                             seed=args.seed).summary["overall"]["latency_ms"]
            diffs = {q: b[q] / a[q] - 1 for q in TARGETS}
            ok = all(abs(diffs[q]) < TARGETS[q] for q in TARGETS)
            print(f"{name:5}  {k:>5g}x  {fit.process:5}  "
                  f"{a['p50']:>7,.0f} / {a['p95']:>6,.0f} / {a['p99']:>6,.0f}  "
                  f"{b['p50']:>7,.0f} / {b['p95']:>6,.0f} / {b['p99']:>6,.0f}  "
                  f"{diffs['p50'] * 100:+5.1f} / {diffs['p95'] * 100:+5.1f} / {diffs['p99'] * 100:+5.1f} %  "
                  f"{'within targets' if ok else 'MISSES a target'}  ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
