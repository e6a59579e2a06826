"""Emulated upstreams over real loopback sockets: batching, token timing, SSE, errors, limits, faults."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from real_engine.emulators import stats_path
from real_engine.emulators.embedding import embed
from real_engine.emulators.providers import FifoLimiter

pytestmark = pytest.mark.real

DET = lambda v: {"dist": "deterministic", "value": v}  # noqa: E731


def _timing(resp: aiohttp.ClientResponse) -> dict[str, float]:
    out = {}
    for part in resp.headers["X-Emulator-Timing"].split(","):
        name, _, dur = part.strip().partition(";dur=")
        out[name] = float(dur)
    return out


async def _predict(session, url, cls="s1", endpoint="select"):
    async with session.post(url + "/predict", json={"prompt": "p", "endpoint": endpoint, "class": cls}) as r:
        return r.status, await r.read(), r


async def _chat(session, url, stream=False, cls="c1"):
    body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "stream": stream}
    headers = {"X-Gwsim-Endpoint": "chat", "X-Gwsim-Class": cls, "X-Gwsim-Request-Id": "1"}
    return session.post(url + "/v1/chat/completions", json=body, headers=headers)


# --------------------------------------------------------------------------- AI service


def test_ai_batches_never_exceed_max_and_account_for_every_request(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"ai_service": {"max_batch_size": 4, "batch_timeout": "30ms", "batch_base": DET("20ms")}})

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            results = await asyncio.gather(*(_predict(s, emu.urls["ai_service"]) for _ in range(13)))
            return [st for st, _, _ in results], emu.stats()["ai_service"]

    statuses, stats = run_async(go())
    assert statuses == [200] * 13
    sizes = {int(k): v for k, v in stats["batch_sizes"].items()}
    assert max(sizes) <= 4
    assert sum(k * v for k, v in sizes.items()) == 13
    assert sizes.get(4, 0) >= 2  # 13 simultaneous requests fill batches


def test_ai_single_request_waits_for_the_batch_timeout(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"ai_service": {"max_batch_size": 8, "batch_timeout": "120ms"}})

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            await _predict(s, emu.urls["ai_service"])  # warm the connection
            t = time.monotonic()
            status, _, resp = await _predict(s, emu.urls["ai_service"])
            return status, time.monotonic() - t, _timing(resp)

    status, elapsed, timing = run_async(go())
    assert status == 200
    assert elapsed >= 0.12
    assert elapsed < 0.12 + 0.5
    assert timing["queue"] >= 119


def test_ai_selection_rotates_provider_order_by_class_index(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"model_selection": {"candidates": ["p2", "p1"]}})

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            _, b1, _ = await _predict(s, emu.urls["ai_service"], "s1")
            _, b2, _ = await _predict(s, emu.urls["ai_service"], "s2")
            return json.loads(b1), json.loads(b2)

    first, second = run_async(go())
    assert first == {"provider": "p2", "model": "p2-model", "alternatives": ["p1"]}
    assert second["provider"] == "p1" and second["alternatives"] == ["p2"]


def test_ai_queue_limit_rejects_with_503(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"ai_service": {"workers": 1, "max_batch_size": 1, "queue_limit": 1, "batch_base": DET("300ms")}})

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            url = emu.urls["ai_service"]
            first = asyncio.ensure_future(_predict(s, url))
            await asyncio.sleep(0.1)  # the first is in service; the queue is empty
            rest = await asyncio.gather(*(_predict(s, url) for _ in range(3)))
            return sorted([(await first)[0]] + [st for st, _, _ in rest]), emu.stats()["ai_service"]

    statuses, stats = run_async(go())
    assert statuses == [200, 200, 503, 503]
    assert stats["queue_rejected"] == 2


def test_ai_workers_run_batches_concurrently(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"ai_service": {"workers": 3, "max_batch_size": 1, "batch_base": DET("200ms")}})

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            t = time.monotonic()
            res = await asyncio.gather(*(_predict(s, emu.urls["ai_service"]) for _ in range(3)))
            return [r[0] for r in res], time.monotonic() - t

    statuses, elapsed = run_async(go())
    assert statuses == [200] * 3
    assert elapsed < 0.55  # three 200 ms batches side by side, not one after another (600 ms)


# --------------------------------------------------------------------------- providers


def test_provider_reply_takes_ttft_plus_tokens_over_rate(run_async, make_scenario, emulator_set):
    scenario = make_scenario({
        "providers": {"p1": {"latency": {"model": "tokens", "ttft": DET("60ms"), "tokens_per_s": 200}}},
        "endpoints": {"chat": {"classes": [{"name": "c1", "output_tokens": DET(20)}]}},
    })

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            t = time.monotonic()
            async with await _chat(s, emu.urls["providers"]["p1"]) as r:
                body = await r.json()
                return r.status, time.monotonic() - t, body, _timing(r)

    status, elapsed, body, timing = run_async(go())
    assert status == 200
    assert elapsed >= 0.16  # 60 ms + 20 tokens / 200 per s
    assert body["usage"]["completion_tokens"] == 20
    assert body["choices"][0]["message"]["content"].count("tok") == 20
    assert timing["intended"] == pytest.approx(160, abs=0.01)


def test_provider_streams_sse_chunks_at_token_times(run_async, make_scenario, emulator_set):
    scenario = make_scenario({
        "providers": {"p1": {"latency": {"model": "tokens", "ttft": DET("50ms"), "tokens_per_s": 100}}},
        "endpoints": {"chat": {"classes": [{"name": "c1", "output_tokens": DET(10)}]}},
    })

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            t = time.monotonic()
            events = []
            async with await _chat(s, emu.urls["providers"]["p1"], stream=True) as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                async for line in r.content:
                    line = line.strip()
                    if line.startswith(b"data: "):
                        events.append((time.monotonic() - t, line[6:]))
            return events

    events = run_async(go())
    assert events[-1][1] == b"[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.count("tok") == 10
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 10
    assert events[0][0] >= 0.05  # first event at ttft
    assert events[-1][0] >= 0.15  # last token at ttft + 10 / 100 per s
    assert len(chunks) >= 3  # tokens spread over several chunks, not sent at once


def test_provider_429_carries_retry_after(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"providers": {"p2": {"errors": {"429": 1.0}}}})

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            async with await _chat(s, emu.urls["providers"]["p2"]) as r:
                return r.status, r.headers.get("Retry-After"), await r.json()

    status, retry_after, body = run_async(go())
    assert status == 429
    assert retry_after == "1"
    assert body["error"]["code"] == 429


def test_provider_concurrency_reject_answers_429(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"providers": {"p2": {"concurrency": 1, "over_limit": "reject",
                                                   "latency": {"model": "plain", "time": DET("200ms")}}}})

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            url = emu.urls["providers"]["p2"]

            async def one(delay):
                await asyncio.sleep(delay)
                async with await _chat(s, url) as r:
                    await r.read()
                    return r.status

            res = await asyncio.gather(one(0), one(0.05))
            return res, emu.stats()["providers"]["p2"]

    statuses, stats = run_async(go())
    assert statuses == [200, 429]
    assert stats["concurrency_rejected"] == 1


def test_provider_concurrency_queue_serves_in_arrival_order(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"providers": {"p2": {"concurrency": 1, "latency": {"model": "plain", "time": DET("100ms")}}}})

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            url = emu.urls["providers"]["p2"]
            done = []

            async def one(i):
                await asyncio.sleep(0.02 * i)
                async with await _chat(s, url) as r:
                    await r.read()
                    done.append(i)
                    return r.status, _timing(r)["queue"]

            res = await asyncio.gather(*(one(i) for i in range(3)))
            return res, done

    res, done = run_async(go())
    assert [st for st, _ in res] == [200, 200, 200]
    assert done == [0, 1, 2]
    assert res[2][1] >= 100  # the third waited behind two 100 ms calls (minus its 40 ms head start)


def test_fifo_limiter_hands_slot_on_when_waiter_cancelled(run_async):
    async def go():
        lim = FifoLimiter(1)
        await lim.acquire()
        waiter = asyncio.ensure_future(lim.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        lim.release()
        await asyncio.wait_for(lim.acquire(), 0.5)  # the slot is free again
        return lim.active, lim.waiting

    assert run_async(go()) == (1, 0)


# --------------------------------------------------------------------------- faults


def test_hang_fault_ends_in_a_client_timeout(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"providers": {"p2": {"faults": [{"start": 0, "end": "60s", "kind": "hang"}]}}})

    async def go():
        async with emulator_set(scenario) as emu:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as s:
                with pytest.raises(asyncio.TimeoutError):
                    async with await _chat(s, emu.urls["providers"]["p2"]) as r:
                        await r.read()
            await asyncio.sleep(0.1)  # the server notices the client leaving
            return emu.stats()["providers"]["p2"]

    stats = run_async(go())
    assert stats["requests"] == 1
    assert stats["in_flight"] == 0  # the hung handler ended when the client went away


def test_reset_fault_gives_a_client_error(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"providers": {"p2": {"faults": [{"start": 0, "end": "60s", "kind": "reset"}]}},
                              "ai_service": {"faults": [{"start": 0, "end": "60s", "kind": "reset"}]}})

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            errors = []
            try:
                async with await _chat(s, emu.urls["providers"]["p2"]) as r:
                    await r.read()
            except aiohttp.ClientError as exc:
                errors.append(exc)
            try:
                await _predict(s, emu.urls["ai_service"])
            except aiohttp.ClientError as exc:
                errors.append(exc)
            return errors

    errors = run_async(go())
    assert len(errors) == 2
    assert all(isinstance(e, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)) for e in errors)


def test_outage_refuses_connections_then_recovers_on_the_same_port(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"providers": {"p2": {"faults": [{"start": "200ms", "end": "500ms", "kind": "outage"}]}}})

    async def go():
        async with emulator_set(scenario) as emu:
            url = emu.urls["providers"]["p2"]
            t0 = time.monotonic()
            # force_close: each request dials, as a client with no idle connection would
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
                async def status():
                    try:
                        async with await _chat(s, url) as r:
                            await r.read()
                            return r.status
                    except aiohttp.ClientConnectorError:
                        return "refused"

                before = await status()
                await asyncio.sleep(max(0.0, t0 + 0.3 - time.monotonic()))
                during = await status()
                await asyncio.sleep(max(0.0, t0 + 0.65 - time.monotonic()))
                after = await status()
            return before, during, after, url == emu.urls["providers"]["p2"]

    assert run_async(go()) == (200, "refused", 200, True)


def test_outage_drops_requests_on_open_connections(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"ai_service": {"faults": [{"start": "150ms", "end": "60s", "kind": "outage"}]}})

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            first, _, _ = await _predict(s, emu.urls["ai_service"])  # opens a kept-alive connection
            await asyncio.sleep(0.25)
            with pytest.raises(aiohttp.ClientError):
                await _predict(s, emu.urls["ai_service"])
            return first

    assert run_async(go()) == 200


def test_errors_and_slow_faults(run_async, make_scenario, emulator_set):
    scenario = make_scenario({
        "providers": {
            "p1": {"faults": [{"start": 0, "end": "60s", "kind": "errors", "error_rate": 1.0, "error_status": 500}]},
            "p2": {"faults": [{"start": 0, "end": "60s", "kind": "slow", "latency_factor": 3.0}]},
        },
    })

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            async with await _chat(s, emu.urls["providers"]["p1"]) as r:
                err = r.status
            t = time.monotonic()
            async with await _chat(s, emu.urls["providers"]["p2"]) as r:
                await r.read()
                return err, r.status, time.monotonic() - t, _timing(r)["intended"]

    err, ok, elapsed, intended = run_async(go())
    assert err == 500
    assert ok == 200
    assert intended == pytest.approx(30.0, abs=0.01)  # 10 ms plain latency x 3
    assert elapsed >= 0.03


# --------------------------------------------------------------------------- embedding


def test_embedding_vectors_are_deterministic_unit_vectors(run_async, make_scenario, emulator_set):
    scenario = make_scenario({"model_selection": {"semantic_cache": {"embedding_time": DET("30ms")}}})

    async def go():
        async with emulator_set(scenario) as emu, aiohttp.ClientSession() as s:
            out = []
            for text in ("what is the capital of France?", "what is the capital of France?", "write a poem"):
                t = time.monotonic()
                async with s.post(emu.urls["embedding"] + "/v1/embeddings", json={"input": text, "model": "emb"}) as r:
                    out.append(((await r.json())["data"][0]["embedding"], time.monotonic() - t))
            return out

    (a, ta), (b, _), (c, _) = run_async(go())
    assert a == b
    assert len(a) == 64
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-4)
    assert sum(x * y for x, y in zip(a, c)) < 0.9
    assert ta >= 0.03
    assert a == embed("what is the capital of France?")


# --------------------------------------------------------------------------- CLI


def test_cli_writes_urls_serves_and_writes_stats_on_sigterm(tmp_path: Path):
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        '[run]\nduration = "1s"\n[workload]\narrivals = {process = "constant", rate = "1/s"}\nmix = {select = 1.0}\n'
        '[endpoints.select]\nkind = "select_model"\nclasses = [{name = "a"}]\n'
        '[providers.p1]\nlatency = {model = "plain", time = {dist = "deterministic", value = "5ms"}}\n'
    )
    ready = tmp_path / "urls.json"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "real_engine.emulators", "--scenario", str(scenario), "--set", "ai_service.workers=2",
         "--t0", str(time.monotonic()), "--seed", "3", "--ready-file", str(ready)],
        env=env, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no ready file"
            time.sleep(0.05)
        urls = json.loads(ready.read_text())
        assert set(urls) == {"ai_service", "embedding", "providers"}

        async def call():
            async with aiohttp.ClientSession() as s:
                return (await _predict(s, urls["ai_service"], "a"))[0]

        assert asyncio.run(call()) == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    stats = json.loads(stats_path(ready).read_text())
    assert stats["ai_service"]["requests"] == 1
    assert stats["providers"]["p1"]["requests"] == 0
