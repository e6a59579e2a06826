"""Traces and the new arrival processes in the real engine (issue 16): the load generator sends
a trace's requests at the trace's times with their token counts, plans gamma/MMPP arrivals as
``simulator.arrivals`` does, and the emulated provider generates the tokens a request asks for."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from real_engine.loadgen import run_load
from simulator.api import run_scenario
from simulator.arrivals import plan
from simulator.rng import Streams

pytestmark = pytest.mark.real

DET = lambda v: {"dist": "deterministic", "value": v}  # noqa: E731


def _trace(tmp_path: Path) -> tuple[Path, list[tuple[float, str, int, int]]]:
    rows = [(0.02 * i + (0.005 if i % 3 else 0.0), "chat" if i % 4 else "gpt", 100 + i, 5 + i) for i in range(25)]
    path = tmp_path / "trace.csv"
    path.write_text("t_ms,model,in,out\n" + "".join(f"{t * 1000:.3f},{m},{a},{b}\n" for t, m, a, b in rows))
    return path, rows


def test_loadgen_sends_the_trace_at_its_times_with_its_tokens(tmp_path, run_async, make_scenario):
    path, rows = _trace(tmp_path)
    sc = make_scenario({
        "workload": {"mode": "trace", "arrivals": None, "mix": {"chat": 1.0, "select": None},
                     "trace": {"file": str(path), "format": "csv", "timestamp_unit": "ms", "map": {"gpt": "select"},
                               "columns": {"timestamp": "t_ms", "endpoint": "model", "input_tokens": "in", "output_tokens": "out"}}},
    })
    seen: list[tuple[str, dict]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.path, json.loads(await request.read())))
        return web.json_response({"ok": True})

    async def go():
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            return await run_load(sc, f"http://127.0.0.1:{port}", time.monotonic() + 0.05, 1, 1.0)
        finally:
            await runner.cleanup()

    records, acc = run_async(go())
    assert acc["sent"] == len(rows) == acc["ok"]
    records.sort(key=lambda r: r.arrived_at)
    assert [r.arrived_at for r in records] == pytest.approx([t for t, *_ in rows])
    assert [r.endpoint for r in records] == ["chat" if m == "chat" else "select" for _, m, _, _ in rows]
    bodies = sorted((b for _, b in seen), key=lambda b: b["gwsim_input_tokens"])
    assert [b["gwsim_output_tokens"] for b in bodies] == [o for *_, o in rows]
    assert [b["max_tokens"] for b in bodies] == [o for *_, o in rows]
    assert {p for p, _ in seen} == {"/v1/chat/completions", "/v1/select-model"}


def test_loadgen_plans_gamma_arrivals_as_the_simulator_does(run_async, make_scenario, echo_server):
    sc = make_scenario({"workload": {"arrivals": {"process": "gamma", "rate": "60/s", "cv": 2.0}}})

    async def go():
        async with echo_server() as url:
            return await run_load(sc, url, time.monotonic() + 0.05, 4, 0.5)

    records, acc = run_async(go())
    streams = Streams(4, 0)  # the simulator's first replication's
    expected = [p[0] for p in plan(sc.workload, 0.5, streams["arrivals"], streams["tokens"])]
    assert sorted(r.arrived_at for r in records) == pytest.approx(expected)
    assert acc["sent"] == len(expected) > 5


def test_loadgen_sends_the_traffic_of_the_simulators_replication_with_its_seed(run_async, make_scenario, echo_server):
    """Common random numbers: a measurement with seed S sends the Poisson arrivals and the
    endpoint mix that the simulator's replication 0 with seed S simulates, request by request;
    another seed, or replication 1, is other traffic."""
    sc = make_scenario({"run": {"duration": "1s"}, "workload": {"arrivals": {"process": "poisson", "rate": "60/s"}}})

    async def go():
        async with echo_server() as url:
            return await run_load(sc, url, time.monotonic() + 0.05, 9, 1.0)

    records, acc = run_async(go())
    sent = sorted((r.arrived_at, r.endpoint) for r in records)

    def simulated(seed: int, replication: int) -> list[tuple[float, str]]:
        recs = run_scenario(sc, replications=replication + 1, seed=seed).records
        recs = recs[recs.replication == replication]
        return sorted(zip(recs.arrived_at, recs.endpoint))

    same = simulated(9, 0)
    assert acc["sent"] == len(sent) == len(same) > 30
    assert [t for t, _ in sent] == pytest.approx([t for t, _ in same], abs=1e-9)
    assert [e for _, e in sent] == [e for _, e in same]
    assert {"select", "chat"} == {e for _, e in same}
    for other in (simulated(10, 0), simulated(9, 1)):
        assert [t for t, _ in other][:10] != pytest.approx([t for t, _ in sent][:10], abs=1e-6)


def test_emulated_provider_generates_the_tokens_asked_for(run_async, make_scenario, emulator_set):
    scenario = make_scenario({
        "providers": {"p1": {"latency": {"model": "tokens", "ttft": DET("40ms"), "tokens_per_s": 500}}},
        "endpoints": {"chat": {"classes": [{"name": "c1", "output_tokens": DET(300)}]}},
    })

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "gwsim_output_tokens": 37, "gwsim_input_tokens": 900}
            headers = {"X-Gwsim-Endpoint": "chat", "X-Gwsim-Class": "c1"}
            t = time.monotonic()
            async with s.post(emu.urls["providers"]["p1"] + "/v1/chat/completions", json=body, headers=headers) as r:
                return r.status, await r.json(), time.monotonic() - t, r.headers.get("X-Emulator-Timing", "")

    status, body, elapsed, timing = run_async(go())
    assert status == 200
    assert body["usage"]["completion_tokens"] == 37  # the request's, not the class's 300
    assert elapsed >= 0.04 + 37 / 500 - 0.005
    assert "intended" in timing and float(timing.split("intended;dur=")[1].split(",")[0]) == pytest.approx(114, abs=0.01)
