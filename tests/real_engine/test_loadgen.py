"""The load generator against tiny aiohttp servers on loopback: accounting, arrivals, timeouts, the cap, headers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from aiohttp import web

from real_engine.loadgen import (
    accounting_path,
    arrival_times,
    build_body,
    canonical_prompt,
    outcome_for_status,
    parse_server_timing,
    run_load,
)
from real_engine.rng import Streams

pytestmark = pytest.mark.real


def _check_accounting(records, acc):
    assert acc["sent"] == len(records)
    assert acc["sent"] == acc["ok"] + sum(acc["failures"].values())
    assert len({r.id for r in records}) == len(records)
    assert acc["ok"] == sum(r.outcome == "ok" for r in records)


# --------------------------------------------------------------------------- pure parts


def test_burst_arrivals_are_exact(make_scenario):
    sc = make_scenario({"workload": {"arrivals": {"process": "burst", "size": 10, "every": "1s"}}})
    times = list(arrival_times(sc.workload, 3.0, np.random.default_rng(0)))
    assert times == [0.0] * 10 + [1.0] * 10 + [2.0] * 10


def test_constant_arrivals_follow_step_profile_and_pause_at_zero(make_scenario):
    sc = make_scenario({"workload": {"arrivals": {"process": "constant", "rate": "10/s"},
                                     "rate_profile": [{"at": "1s", "factor": 0.0}, {"at": "2s", "factor": 2.0}]}})
    times = list(arrival_times(sc.workload, 3.0, np.random.default_rng(0)))
    assert sum(t < 1 for t in times) == 10
    assert not any(1 <= t < 2 for t in times)
    assert sum(t >= 2 for t in times) == 20
    assert times == sorted(times)


def test_poisson_arrivals_rate_and_ramp(make_scenario):
    sc = make_scenario({"workload": {"arrivals": {"process": "poisson", "rate": "1000/s"}}})
    times = np.array(list(arrival_times(sc.workload, 10.0, np.random.default_rng(1))))
    assert abs(len(times) - 10_000) < 400  # 4 standard deviations
    assert np.all(np.diff(times) > 0)
    ramp = make_scenario({"workload": {"arrivals": {"process": "poisson", "rate": "1000/s"}, "profile_shape": "ramp",
                                       "rate_profile": [{"at": 0, "factor": 0.0}, {"at": "10s", "factor": 1.0}]}})
    t = np.array(list(arrival_times(ramp.workload, 10.0, np.random.default_rng(2))))
    assert abs(len(t) - 5_000) < 300  # mean factor 0.5
    assert (t >= 5).sum() > 2.5 * (t < 5).sum()  # 3/4 of a linear ramp's mass is in the second half


def test_body_is_padded_and_prompt_is_canonical_on_hit():
    hit = build_body("select", "a", 17, True, 200)
    miss = build_body("select", "a", 17, False, 200)
    assert len(hit) == 200 and len(miss) == 200
    assert json.loads(hit)["messages"][0]["content"] == canonical_prompt("select", "a") == "gwsim:select:a"
    assert json.loads(miss)["messages"][0]["content"] == "gwsim:select:a #17"
    short = build_body("select", "a", 1, True, 10)  # cannot shrink: left as is
    assert json.loads(short)["max_tokens"] == 256


def test_server_timing_and_status_mapping():
    st = parse_server_timing('cpu;dur=1.5, cache;dur=3.25, cpu_wait;dur=0.5, foo;dur=9, provider;desc="x";dur=100')
    assert st == pytest.approx({"cpu_s": 0.0015, "cache_s": 0.00325, "cpu_wait_s": 0.0005, "provider_s": 0.1})
    assert [outcome_for_status(s) for s in (200, 302, 429, 413, 400, 504, 502, 503, 404)] == [
        "ok", "ok", "rate_limited", "too_large", "bad_request", "timeout", "upstream_error", "upstream_error", "bad_request"]


def test_streams_are_reproducible_and_distinct():
    a, b = Streams.for_process(5, "emulators"), Streams.for_process(5, "emulators")
    assert a["ai_service"].random() == b["ai_service"].random()
    assert Streams.for_process(5, "emulators")["ai_service"].random() != Streams.for_process(5, "emulators")["ai_rtt"].random()
    assert Streams.for_process(5, "emulators")["ai_service"].random() != Streams.for_process(5, "gateway", ("ai_service",))["ai_service"].random()
    emu = Streams.for_process(5, "emulators")
    one, two = emu.child("providers", ["b", "a"]), emu.child("providers", ["0", "a", "b"])
    assert one["a"].random() == two["a"].random()  # adding a provider leaves the others' streams alone
    assert one["b"].random() != one["a"].random()


# --------------------------------------------------------------------------- against a server


def test_open_loop_counts_every_request_once(run_async, make_scenario, echo_server):
    sc = make_scenario({"workload": {"arrivals": {"process": "constant", "rate": "100/s"}}})

    async def go():
        async with echo_server() as url:
            return await run_load(sc, url, time.monotonic() + 0.05, 3, 0.5)

    records, acc = run_async(go())
    _check_accounting(records, acc)
    assert acc["sent"] == 50
    assert acc["ok"] == 50
    assert [r.arrived_at for r in records] == pytest.approx([i / 100 for i in range(50)])
    assert all(r.finished_at >= r.started_at >= r.arrived_at for r in records)
    assert Counter(r.endpoint for r in records).keys() == {"select", "chat"}
    assert acc["send_lag_p99_ms"] is not None and acc["send_lag_p99_ms"] >= 0


def test_same_seed_same_plan(run_async, make_scenario, echo_server):
    sc = make_scenario({"workload": {"arrivals": {"process": "poisson", "rate": "200/s"}}})

    async def go():
        async with echo_server() as url:
            a, _ = await run_load(sc, url, time.monotonic() + 0.05, 11, 0.3)
            b, _ = await run_load(sc, url, time.monotonic() + 0.05, 11, 0.3)
            return a, b

    a, b = run_async(go())
    assert [(r.arrived_at, r.endpoint, r.request_class) for r in a] == [(r.arrived_at, r.endpoint, r.request_class) for r in b]


def test_burst_requests_hit_the_server_together(run_async, make_scenario, echo_server):
    sc = make_scenario({"workload": {"arrivals": {"process": "burst", "size": 8, "every": "200ms"}}})
    seen = []

    async def handler(request):
        seen.append(time.monotonic())
        return web.json_response({})

    async def go():
        async with echo_server(handler) as url:
            return await run_load(sc, url, time.monotonic() + 0.05, 1, 0.6)

    records, acc = run_async(go())
    _check_accounting(records, acc)
    assert acc["sent"] == 24 and acc["ok"] == 24
    assert Counter(round(r.arrived_at, 6) for r in records) == {0.0: 8, 0.2: 8, 0.4: 8}


def test_client_timeout_is_recorded_as_status_0(run_async, make_scenario, echo_server):
    sc = make_scenario({"workload": {"arrivals": {"process": "burst", "size": 3, "every": "1s"}, "client_timeout": "200ms"}})

    async def slow(request):
        await asyncio.sleep(2)
        return web.json_response({})

    async def go():
        async with echo_server(slow) as url:
            return await run_load(sc, url, time.monotonic() + 0.05, 1, 0.5)

    records, acc = run_async(go())
    _check_accounting(records, acc)
    assert acc["failures"] == {"client_timeout": 3}
    assert all(r.status_code == 0 and r.outcome == "client_timeout" for r in records)
    assert all(0.19 <= r.latency_s < 1.0 for r in records)


def test_concurrency_cap_is_respected_and_latency_from_sent(run_async, make_scenario, echo_server):
    sc = make_scenario({"workload": {"arrivals": {"process": "burst", "size": 10, "every": "1s"},
                                     "concurrency_cap": 3, "latency_from": "sent"}})
    state = {"now": 0, "max": 0}

    async def handler(request):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        try:
            await asyncio.sleep(0.05)
            return web.json_response({})
        finally:
            state["now"] -= 1

    async def go():
        async with echo_server(handler) as url:
            return await run_load(sc, url, time.monotonic() + 0.05, 1, 0.5)

    records, acc = run_async(go())
    _check_accounting(records, acc)
    assert acc["ok"] == 10
    assert state["max"] == 3
    assert acc["max_past_cap"] == 3
    waited = sorted(r.client_wait_s for r in records)
    assert waited[-1] >= 0.1  # the last of 10 waited for three rounds of 50 ms
    for r in records:
        assert r.latency_s == pytest.approx(r.finished_at - r.started_at)
        assert r.started_at - r.arrived_at >= r.client_wait_s - 1e-9


def test_gateway_headers_fill_the_record(run_async, make_scenario, echo_server):
    sc = make_scenario({"workload": {"arrivals": {"process": "burst", "size": 2, "every": "1s"}, "mix": {"chat": 1.0, "select": 0.0}}})
    paths = []

    async def handler(request):
        paths.append((request.path, request.headers["X-Gwsim-Endpoint"], request.headers["X-Gwsim-Class"]))
        return web.json_response({}, status=502, headers={
            "Server-Timing": "cpu;dur=2.0, provider;dur=40.0, cpu_wait;dur=1.0",
            "X-Gwsim-Outcome": "reset", "X-Gwsim-Provider": "p1", "X-Gwsim-Attempts": "2",
            "X-Gwsim-Fallback": "1", "X-Gwsim-Selection-Fallback": "0", "X-Gwsim-Cache-Hit": "1",
            "X-Gwsim-Prompt-Cache-Hit": "0", "X-Gwsim-Breaker": "half_open",
        })

    async def go():
        async with echo_server(handler) as url:
            return await run_load(sc, url, time.monotonic() + 0.05, 1, 0.5)

    records, acc = run_async(go())
    _check_accounting(records, acc)
    assert paths == [("/v1/chat/completions", "chat", "c1")] * 2
    r = records[0]
    assert (r.outcome, r.status_code, r.provider, r.attempts) == ("reset", 502, "p1", 2)
    assert (r.fallback_used, r.selection_fallback, r.cache_hit, r.prompt_cache_hit, r.breaker_state) == (True, False, True, False, "half_open")
    assert (r.cpu_s, r.provider_s, r.cpu_wait_s) == pytest.approx((0.002, 0.04, 0.001))


def test_refused_connection_is_connect_error(run_async, make_scenario, free_port):
    sc = make_scenario({"workload": {"arrivals": {"process": "burst", "size": 2, "every": "1s"}}})

    async def go():
        return await run_load(sc, f"http://127.0.0.1:{free_port()}", time.monotonic(), 1, 0.5)

    records, acc = run_async(go())
    _check_accounting(records, acc)
    assert acc["failures"] == {"connect_error": 2}
    assert {r.status_code for r in records} == {0}


def test_requests_in_flight_at_the_end_are_unfinished(run_async, make_scenario, echo_server):
    sc = make_scenario({"workload": {"arrivals": {"process": "constant", "rate": "20/s"}}})

    async def handler(request):
        if int(request.headers["X-Gwsim-Request-Id"]) % 2:
            await asyncio.sleep(30)
        return web.json_response({})

    async def go():
        async with echo_server(handler) as url:
            return await run_load(sc, url, time.monotonic(), 1, 0.5, drain_s=0.2)

    records, acc = run_async(go())
    _check_accounting(records, acc)
    assert acc["sent"] == 10
    assert acc["ok"] == 5 and acc["failures"] == {"unfinished": 5}
    assert all(r.status_code == 0 for r in records if r.outcome == "unfinished")


def test_closed_loop_users_with_think_time(run_async, make_scenario, echo_server):
    sc = make_scenario({"workload": {"mode": "closed", "users": 2, "arrivals": None,
                                     "think_time": {"dist": "deterministic", "value": "100ms"}}})
    state = {"now": 0, "max": 0, "n": 0}

    async def handler(request):
        state["n"] += 1
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        try:
            await asyncio.sleep(0.05)
            return web.json_response({})
        finally:
            state["now"] -= 1

    async def go():
        async with echo_server(handler) as url:
            return await run_load(sc, url, time.monotonic(), 1, 0.5)

    records, acc = run_async(go())
    _check_accounting(records, acc)
    # each user: send (50 ms), think (100 ms): due at 0, ~0.15, ~0.30, ~0.45 -> 4 each
    assert 6 <= acc["sent"] <= 8 and acc["ok"] == acc["sent"] == state["n"]
    assert state["max"] == 2  # never more requests in flight than users
    firsts = sorted(r.arrived_at for r in records)[:2]
    assert firsts == [0.0, 0.0]
    later = sorted(r.arrived_at for r in records)[2:]
    assert all(t >= 0.15 for t in later)  # a user's next request waits for its answer and its think time


def test_stop_ends_sending_early(run_async, make_scenario, echo_server):
    from real_engine.loadgen import LoadGenerator

    sc = make_scenario({"workload": {"arrivals": {"process": "constant", "rate": "50/s"}}})

    async def go():
        async with echo_server() as url:
            gen = LoadGenerator(sc, url, time.monotonic(), 1, 5.0)
            asyncio.get_running_loop().call_later(0.3, gen.stop)
            return await gen.run()

    records, acc = run_async(go())
    _check_accounting(records, acc)
    assert acc["stopped_early"] is True
    assert 5 <= acc["sent"] <= 25  # about 0.3 s of a 50/s stream, far from 5 s worth


def test_cli_writes_parquet_accounting_and_progress(tmp_path: Path, make_scenario):
    # An echo server in a child process; the load generator CLI in another.
    server = tmp_path / "server.py"
    server.write_text(
        "import sys\nfrom aiohttp import web\n"
        "async def h(r):\n    await r.read()\n    return web.json_response({})\n"
        "app = web.Application(); app.router.add_route('*', '/{t:.*}', h)\n"
        "web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None)\n"
    )
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        '[run]\nduration = "1s"\n[workload]\narrivals = {process = "constant", rate = "20/s"}\nmix = {select = 1.0}\n'
        '[endpoints.select]\nkind = "select_model"\nclasses = [{name = "a"}]\n'
        '[providers.p1]\nlatency = {model = "plain", time = {dist = "deterministic", value = "5ms"}}\n'
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    srv = subprocess.Popen([sys.executable, str(server), str(port)], env=env)
    out = tmp_path / "records.parquet"
    r, w = os.pipe()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        proc = subprocess.run(
            [sys.executable, "-m", "real_engine.loadgen", "--scenario", str(scenario), "--set", "workload.arrivals.rate=40/s",
             "--target", f"http://127.0.0.1:{port}", "--seed", "2", "--duration", "1.2s", "--out", str(out), "--progress-fd", str(w)],
            env=env, pass_fds=(w,), capture_output=True, timeout=60,
        )
        os.close(w)
        w = None
        lines = os.read(r, 1 << 16).decode().splitlines()
    finally:
        srv.terminate()
        srv.wait(timeout=10)
        if w is not None:
            os.close(w)
        os.close(r)
    assert proc.returncode == 0, proc.stderr.decode()
    frame = pd.read_parquet(out)
    acc = json.loads(accounting_path(out).read_text())
    assert len(frame) == acc["sent"] == 48  # 40/s over 1.2 s
    assert acc["ok"] + sum(acc["failures"].values()) == acc["sent"]
    assert (frame["outcome"] == "ok").all()
    progress = [json.loads(x) for x in lines]
    assert progress and set(progress[-1]) == {"t", "sent", "done", "ok", "p95_ms"}
    assert progress[-1]["done"] == 48


def test_cancelling_run_leaves_nothing_behind(run_async, make_scenario, echo_server):
    from real_engine.loadgen import LoadGenerator

    sc = make_scenario({"workload": {"arrivals": {"process": "constant", "rate": "50/s"}}})

    async def slow(request):
        await asyncio.sleep(5)
        return web.json_response({})

    async def go():
        async with echo_server(slow) as url:
            gen = LoadGenerator(sc, url, time.monotonic(), 1, 5.0)
            task = asyncio.ensure_future(gen.run())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return gen

    gen = run_async(go())  # the fixture fails the test if a task, session or socket is left
    assert gen.sent >= 3
    assert gen.done == gen.sent  # all counted, as unfinished
    assert {r.outcome for r in gen.records} == {"unfinished"}
