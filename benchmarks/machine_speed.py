"""How steady this machine's Python speed is: the same fixed piece of work, timed again and again.

Every CPU cost in a machine profile (the load generator's, the gateway's, LiteLLM's proxy's
per request) holds for the speed the machine had while it was profiled.  On a cloud VM that
speed moves.  This script repeats a fixed piece of gateway-like Python work (JSON in and out of
a chat-completion-sized body, dicts, strings; no I/O) for ``--duration`` seconds and prints the
CPU time of one repeat (``time.process_time``: time taken from the VM by others is not
counted) per window: median, mean, min and max.  The spread of the windows' medians is how far
a profile's CPU costs can be off for a run of that length measured at another moment.

Seen on 2026-12-07 (2 cores, a quiet machine, load average 0.4): 10-s medians of 62.4-78.2 ms
(25 % apart within a minute), single repeats 60-142 ms.

    python benchmarks/machine_speed.py [--duration 60] [--window 10]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

_BODY = {
    "model": "gpt-4o",
    "messages": [{"role": "system", "content": "You are a helpful assistant. " * 8},
                 {"role": "user", "content": "Summarise the following text in three sentences: " + "lorem ipsum " * 60}],
    "temperature": 0.2,
    "max_tokens": 256,
    "metadata": {"user": "u-123", "tags": ["a", "b", "c"], "trace": {"id": "t" * 32, "span": 7}},
}


def work(rounds: int = 2000) -> int:
    """``rounds`` requests' worth of parsing, routing and answering in Python."""
    raw = json.dumps(_BODY)
    total = 0
    for i in range(rounds):
        body = json.loads(raw)
        headers = {f"x-header-{k}": f"value-{k}-{i}" for k in range(12)}
        model = body["model"].lower().strip()
        deployments = [{"name": f"{model}-{d}", "weight": d + 1, "in_flight": (i * 7 + d) % 5} for d in range(4)]
        chosen = min(deployments, key=lambda d: (d["in_flight"], -d["weight"]))
        words = body["messages"][-1]["content"].split()
        reply = {
            "id": f"chatcmpl-{i}", "object": "chat.completion", "model": chosen["name"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words[:40])},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(words), "completion_tokens": 40, "total_tokens": len(words) + 40},
            "headers": sorted(headers.items()),
        }
        total += len(json.dumps(reply))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds to keep timing (default 60)")
    ap.add_argument("--window", type=float, default=10.0, help="seconds per printed window (default 10)")
    args = ap.parse_args()
    work()  # warm-up
    start = time.monotonic()
    rows: list[tuple[float, float]] = []
    while time.monotonic() - start < args.duration:
        t = time.process_time()
        work()
        rows.append((time.monotonic() - start, time.process_time() - t))
    at, cpu = np.array(rows).T
    print(f"{'window s':>10}  {'repeats':>7}  {'median ms':>9}  {'mean ms':>7}  {'min ms':>6}  {'max ms':>6}")
    medians = []
    for lo in np.arange(0.0, args.duration, args.window):
        ms = cpu[(at >= lo) & (at < lo + args.window)] * 1e3
        if ms.size:
            medians.append(float(np.median(ms)))
            print(f"{lo:4.0f}-{lo + args.window:<4.0f}  {ms.size:7d}  {np.median(ms):9.1f}  {ms.mean():7.1f}  {ms.min():6.1f}  {ms.max():6.1f}")
    if medians:
        print(f"window medians: {min(medians):.1f}-{max(medians):.1f} ms ({max(medians) / min(medians) - 1:.0%} apart); "
              f"all repeats: P5/P50/P95 {np.percentile(cpu * 1e3, 5):.1f}/{np.median(cpu) * 1e3:.1f}/{np.percentile(cpu * 1e3, 95):.1f} ms")


if __name__ == "__main__":
    main()
