"""The gateway's HTTP edge under abuse: wrong content types, JSON of the wrong shape, a client
that trickles its body, clients that vanish mid-request, admission control, and a
hypothesis fuzz of both endpoints.  Real sockets, a real gateway and real emulators.

What must hold throughout: no 5xx for a client's fault (only the documented upstream
ones, and those need a failing upstream), a JSON error body and the ``X-Gwsim-Outcome``
header on every reply, every request counted once, and no task or socket left behind
(``run_async`` checks the last two).
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from real_engine.gateway import start_gateway
from real_engine.settings import redis_url
from real_engine.gateway.app import MAX_JSON_DEPTH
from real_engine.gateway.flow import OUTCOME_STATUS
from simulator.records import OUTCOMES

pytestmark = pytest.mark.real

REDIS = redis_url()  # the session's Redis (tests/conftest.py)
SELECT, CHAT = "/v1/select-model", "/v1/chat/completions"
OK_BODY = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def _fast(make_scenario, extra=None, overrides=()):
    data = {"model_selection": {"semantic_cache": {"enabled": False}}}
    data.update(extra or {})
    return make_scenario(data, overrides)


def _sample(metrics_text: str, name: str, **labels) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in metrics_text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _metrics(session: aiohttp.ClientSession, gw) -> str:
    async with session.get(gw.url + "/metrics") as r:
        return await r.text()


async def _post(session, url, data: bytes, content_type: str | None = "application/json", headers=None):
    hdrs = dict(headers or {})
    skip = ()
    if content_type is None:
        skip = ("Content-Type",)  # aiohttp would add application/octet-stream
    else:
        hdrs["Content-Type"] = content_type
    async with session.post(url, data=data, headers=hdrs, skip_auto_headers=skip) as r:
        return r.status, dict(r.headers), await r.read()


def _error_type(body: bytes) -> str:
    doc = json.loads(body)
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
    return doc["error"]["type"]


async def _raw_exchange(host: str, port: int, head: bytes, first: bytes = b"", trickle: bytes = b"", every: float = 0.2,
                        limit_s: float = 8.0) -> tuple[bytes, float, bool]:
    """Send ``head`` + ``first``, then ``trickle`` one byte every ``every`` seconds; return
    (everything the server sent, seconds until its reply began, whether it closed)."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()

    async def dribble() -> None:
        for i in range(len(trickle)):
            await asyncio.sleep(every)
            writer.write(trickle[i:i + 1])
            await writer.drain()

    writer.write(head + first)
    await writer.drain()
    feeder = asyncio.ensure_future(dribble())
    try:
        chunk = await asyncio.wait_for(reader.read(65536), limit_s)
        answered = time.monotonic() - started
        data = chunk
        closed = False
        while True:
            more = await asyncio.wait_for(reader.read(65536), 2.0)
            if not more:
                closed = True
                break
            data += more
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    return data, answered, closed


def _head(path: str, port: int, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


# --------------------------------------------------------------------------- shapes and types


def _deep(levels: int) -> bytes:
    return b'{"messages":[{"content":"hi"}],"x":' + b"[" * levels + b"]" * levels + b"}"


# (content type or None for none at all, body, expected status, expected error type or None for 200)
CASES = [
    ("text/plain", json.dumps(OK_BODY).encode(), 415, "unsupported_media_type"),
    ("application/x-www-form-urlencoded", b"messages=hi", 415, "unsupported_media_type"),
    ("multipart/form-data; boundary=x", b"--x--", 415, "unsupported_media_type"),
    (None, json.dumps(OK_BODY).encode(), 200, None),
    ("application/json; charset=utf-8", json.dumps(OK_BODY).encode(), 200, None),
    ("application/vnd.api+json", json.dumps(OK_BODY).encode(), 200, None),
    ("application/json", b"", 400, "bad_request"),
    ("application/json", b"[]", 400, "bad_request"),
    ("application/json", b"[1, 2]", 400, "bad_request"),
    ("application/json", b"null", 400, "bad_request"),
    ("application/json", b'"hi"', 400, "bad_request"),
    ("application/json", b"1e400", 400, "bad_request"),
    ("application/json", b'{"messages": null}', 400, "bad_request"),
    ("application/json", b'{"messages": []}', 400, "bad_request"),
    ("application/json", b'{"messages": [null]}', 400, "bad_request"),
    ("application/json", b'{"messages": [1]}', 400, "bad_request"),
    ("application/json", b'{"messages": [{"content": 5}]}', 400, "bad_request"),
    ("application/json", b'{"messages": [{"content": null}]}', 400, "bad_request"),
    ("application/json", b'{"messages": [{"content": {"a": 1}}]}', 400, "bad_request"),
    ("application/json", b'{"messages": [{"content": "\\ud800"}]}', 400, "bad_request"),  # lone surrogate
    ("application/json", b'{"messages": [{"content": "\xff\xfe"}]}', 400, "bad_request"),  # invalid UTF-8
    ("application/json", b'{"messages": [{"content": "hi"}], "n": ' + b"9" * 5000 + b"}", 400, "bad_request"),
    ("application/json", _deep(MAX_JSON_DEPTH + 5), 400, "bad_request"),
    ("application/json", _deep(100_000), 400, "bad_request"),  # past the recursion limit
    ("application/json", b'{"messages": [{"content": "hi"}], "n": 1e400, "m": -1e400}', 200, None),
    ("application/json", b'{"messages": [{"content": "hi"}], "n": ' + b"9" * 1000 + b"}", 200, None),
    ("application/json", _deep(MAX_JSON_DEPTH - 5), 200, None),
    ("application/json", b'{"messages": [{"content": [{"type": "text", "text": "hi"}, 3, {"text": null}]}]}', 200, None),
    ("application/json", '{"messages": [{"content": "h\u00e9llo \u2603 \U0001f600"}]}'.encode(), 200, None),
]


def test_content_types_and_body_shapes(make_scenario, emulator_set, run_async):
    sc = _fast(make_scenario)

    async def main():
        out = []
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:
                for path in (SELECT, CHAT):
                    for ctype, body, *_ in CASES:
                        out.append(await _post(s, gw.url + path, body, ctype))
                # X-Gwsim-* headers go on to the upstreams: printable ASCII only
                out.append(await _post(s, gw.url + SELECT, json.dumps(OK_BODY).encode(),
                                       headers={"X-Gwsim-Request-Id": "\u00e9\u2603"}))
                out.append(await _post(s, gw.url + SELECT, json.dumps(OK_BODY).encode(),
                                       headers={"X-Gwsim-Class": "x" * 1000}))
                metrics = await _metrics(s, gw)
                outcomes = dict(gw.core.outcomes)
        return out, metrics, outcomes

    out, metrics, outcomes = run_async(main(), timeout=60)
    expected = [(status, etype) for _ in (SELECT, CHAT) for _, _, status, etype in CASES]
    expected += [(400, "bad_request"), (400, "bad_request")]
    for (ctype, body, *_), got, want in zip(CASES * 2, out, expected):
        status, headers, reply = got
        assert status == want[0], (ctype, body[:80], status, reply[:200])
        assert headers["X-Gwsim-Outcome"] == ("ok" if status == 200 else "bad_request")
        if want[1] is not None:
            assert headers["Content-Type"].startswith("application/json")
            assert _error_type(reply) == want[1]
        else:
            assert json.loads(reply)
    n_415 = sum(1 for _, _, s, _ in CASES if s == 415) * 2
    assert _sample(metrics, "gwsim_edge_events_total", reason="unsupported_media_type") == n_415
    n_ok = sum(1 for s, _ in expected if s == 200)
    assert outcomes == {"ok": n_ok, "bad_request": len(expected) - n_ok}


# --------------------------------------------------------------------------- slow clients


def test_slow_client_gets_408_and_frees_its_handler(make_scenario, emulator_set, run_async):
    sc = _fast(make_scenario, {"gateway": {"body_read_timeout": "500ms"}})
    body = json.dumps(OK_BODY).encode()

    async def main():
        out = {}
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:
                await _post(s, gw.url + SELECT, body)  # warm: pools, keep-alive tasks
                await asyncio.sleep(0.2)
                tasks_before = len(asyncio.all_tasks())
                # trickles one byte every 200 ms: 40+ bytes would take 8 s
                out["trickle"] = await _raw_exchange(gw.host, gw.port, _head(SELECT, gw.port, len(body)),
                                                     body[:5], body[5:])
                # sends the head, promises a body and sends nothing
                out["silent"] = await _raw_exchange(gw.host, gw.port, _head(CHAT, gw.port, len(body)))
                await asyncio.sleep(0.3)
                out["tasks"] = (tasks_before, len(asyncio.all_tasks()))
                out["in_flight"] = (gw.core.admission.in_flight, gw.metrics.in_flight._value.get())
                out["after"] = await _post(s, gw.url + CHAT, body)
                out["metrics"] = await _metrics(s, gw)
                out["outcomes"] = dict(gw.core.outcomes)
        return out

    out = run_async(main(), timeout=60)
    for key in ("trickle", "silent"):
        data, answered, closed = out[key]
        head, _, reply = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), data[:200]
        assert b"X-Gwsim-Outcome: bad_request" in head
        assert json.loads(reply)["error"]["type"] == "request_timeout"
        # the gateway's 0.5 s, not the client's 8 s of trickling; generous for a busy machine
        assert 0.4 <= answered < 3.0, answered
        assert closed, "a half-read body cannot be skipped: the gateway must close the connection"
    assert out["tasks"][1] <= out["tasks"][0], out["tasks"]
    assert out["in_flight"] == (0, 0)
    assert out["after"][0] == 200
    assert _sample(out["metrics"], "gwsim_edge_events_total", reason="body_timeout") == 2
    assert out["outcomes"] == {"ok": 2, "bad_request": 2}


# --------------------------------------------------------------------------- disconnects


def _slow_upstreams(make_scenario, cancel: bool):
    # every upstream call takes 1.5 s, so work still running is easy to see
    return _fast(
        make_scenario,
        {
            "gateway": {"cancel_on_disconnect": cancel},
            "ai_service": {"workers": 4, "per_item": {"dist": "deterministic", "value": "1500ms"}},
            "providers": {
                "p1": {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "1500ms"}}},
                "p2": {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "1500ms"}}},
            },
            # chat goes straight to its provider, so its abort lands in the provider call
            "endpoints": {"chat": {"model_selection": False, "classes": [{"name": "c1", "provider": "p1"}]}},
        },
    )


async def _abort_after(host: str, port: int, data: bytes, after_s: float) -> None:
    """Send ``data``, wait, then reset the connection (no FIN handshake, no reply read)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(after_s)
    writer.transport.abort()


async def _wait_for(cond, limit_s: float) -> float:
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > limit_s:
            break
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def _disconnect_run(sc, emulator_set):
    body = json.dumps(OK_BODY).encode()

    async def main():
        out = {}
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:
                core = gw.core
                for name, path in (("select", SELECT), ("chat", CHAT)):
                    await _abort_after(gw.host, gw.port, _head(path, gw.port, len(body)) + body, 0.3)
                    # upstream work left: the AI call for select, the provider call for chat
                    out[name] = await _wait_for(lambda: core.admission.in_flight == 0, 3.0)
                # a client that vanishes halfway through its body
                await _abort_after(gw.host, gw.port, _head(SELECT, gw.port, len(body)) + body[:10], 0.1)
                await _wait_for(lambda: core.admission.in_flight == 0, 3.0)
                out["pools_in_use"] = {p.name: p.in_use for p in core.pools()}
                out["after"] = await _post(s, gw.url + CHAT, body)
                out["metrics"] = await _metrics(s, gw)
                out["outcomes"] = dict(core.outcomes)
                out["emulators"] = emu.stats()
        return out

    return main()


def test_disconnect_cancels_upstream_work_when_configured(make_scenario, emulator_set, run_async):
    out = run_async(_disconnect_run(_slow_upstreams(make_scenario, cancel=True), emulator_set), timeout=60)
    # the handler ended within moments of the reset, long before its 1.5 s upstream call
    assert out["select"] < 0.8 and out["chat"] < 0.8, out
    assert out["pools_in_use"] == {"ai_service": 0, "embedding": 0, "p1": 0, "p2": 0}
    assert out["after"][0] == 200
    # each vanished client counted once, with its reason
    assert out["outcomes"] == {"client_gone": 3, "ok": 1}
    metrics = out["metrics"]
    assert _sample(metrics, "gwsim_edge_events_total", reason="client_gone") == 3
    assert _sample(metrics, "gwsim_request_duration_seconds_count", endpoint="select", status="499") == 2
    assert _sample(metrics, "gwsim_request_duration_seconds_count", endpoint="chat", status="499") == 1
    # the upstreams saw their calls abandoned (499: their handler was cancelled), not answered
    assert out["emulators"]["ai_service"]["statuses"].get("499") == 1
    provider_499 = sum(out["emulators"]["providers"][p]["statuses"].get("499", 0) for p in ("p1", "p2"))
    assert provider_499 == 1


def test_disconnect_without_cancellation_finishes_the_work(make_scenario, emulator_set, run_async):
    # the seed's behaviour: the work goes on and is counted once, as what it became
    out = run_async(_disconnect_run(_slow_upstreams(make_scenario, cancel=False), emulator_set), timeout=60)
    assert out["select"] > 1.0 and out["chat"] > 1.0, out
    assert out["pools_in_use"] == {"ai_service": 0, "embedding": 0, "p1": 0, "p2": 0}
    assert out["after"][0] == 200
    # the half-sent body is the one request that could not go on
    assert out["outcomes"] == {"ok": 3, "client_gone": 1}
    assert _sample(out["metrics"], "gwsim_edge_events_total", reason="client_gone") == 1
    assert out["emulators"]["ai_service"]["statuses"].get("200") == 1


# --------------------------------------------------------------------------- admission


def test_admission_refuses_beyond_max_in_flight(make_scenario, emulator_set, run_async):
    sc = _fast(
        make_scenario,
        {
            "gateway": {"max_in_flight": 2},
            "ai_service": {"workers": 8, "per_item": {"dist": "deterministic", "value": "500ms"}},
        },
    )
    body = json.dumps(OK_BODY).encode()

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:

                async def one():
                    t = time.monotonic()
                    got = await _post(s, gw.url + SELECT, body)
                    return got, time.monotonic() - t

                first = [asyncio.ensure_future(one()) for _ in range(2)]
                await _wait_for(lambda: gw.core.admission.in_flight == 2, 2.0)
                rest = await asyncio.gather(*(one() for _ in range(5)))
                done = await asyncio.gather(*first)
                after = await one()
                return done, rest, after, await _metrics(s, gw), gw.stats()

    done, rest, after, metrics, stats = run_async(main(), timeout=30)
    assert [g[0] for g, _ in done] == [200, 200]
    for (status, headers, reply), took in rest:
        assert status == 503 and headers["X-Gwsim-Outcome"] == "rejected"
        assert _error_type(reply) == "overloaded"
        assert took < 0.4  # refused at once, not after the 0.5 s upstream call
    assert after[0][0] == 200
    assert _sample(metrics, "gwsim_edge_events_total", reason="overloaded") == 5
    assert stats["admission"] == {"max_in_flight": 2, "peak": 2, "admitted": 3, "rejections": 5}
    assert stats["outcomes"] == {"ok": 3, "rejected": 5}


# --------------------------------------------------------------------------- OpenAPI


def test_openapi_describes_both_endpoints_and_every_status(make_scenario, emulator_set, run_async):
    sc = _fast(make_scenario)

    async def main():
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:
                async with s.get(gw.url + "/openapi.json") as r:
                    return r.status, await r.json()

    status, spec = run_async(main())
    assert status == 200 and spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {SELECT, CHAT}
    sent = {str(s) for s in OUTCOME_STATUS.values() if s != 499} | {"408", "415"}
    for path in (SELECT, CHAT):
        assert set(spec["paths"][path]["post"]["responses"]) == sent


# --------------------------------------------------------------------------- fuzz

_UPSTREAM_OUTCOMES = {"timeout", "upstream_error", "connect_error", "reset", "rejected", "breaker_open"}

_json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=20)
_content = st.one_of(
    st.text(max_size=50),
    st.lists(st.one_of(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}), _json), max_size=3),
    _json,
)
_message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]), "content": _content}),
    st.dictionaries(st.text(max_size=8), _json, max_size=3),
    _json,
)
_good_message = st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=50)})
_chatish = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(_good_message, min_size=1, max_size=3), st.lists(_message, max_size=3), _json)},
    optional={"model": _json, "max_tokens": _json, "temperature": _json, "stream": st.booleans(), "user": st.text(max_size=10)},
)
_body = st.one_of(
    _chatish.map(lambda d: json.dumps(d).encode()),
    _chatish.map(lambda d: json.dumps(d, ensure_ascii=False).encode()),
    _json.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=300),
    _chatish.map(lambda d: json.dumps(d).encode()).flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda i: b[:i])),
)
# JSON (or nothing) most of the time, so the well-formed bodies reach the flows
_ctype = st.one_of(st.none(), st.sampled_from(["application/json"] * 4 + ["application/json; charset=utf-8", "text/plain",
                                               "application/x-www-form-urlencoded", "application/problem+json", "*/*"]))
_header_text = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x24FF, blacklist_categories=("Cc", "Cs")), max_size=300),
)
_headers = st.one_of(
    st.just({}),
    st.fixed_dictionaries({}, optional={"X-Gwsim-Request-Id": _header_text, "X-Gwsim-Class": _header_text,
                                        "X-Gwsim-Prompt-Nonce": _header_text}),
)


def _well_formed(body: bytes, ctype: str | None, headers: dict) -> bool:
    """The oracle: the gateway must answer 200 exactly for these."""
    if ctype is not None and not (ctype.split(";")[0] == "application/json" or ctype.endswith("+json")):
        return False
    if any(len(v) > 256 or not all(" " <= c <= "~" for c in v) for v in headers.values()):
        return False
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return False
    if not isinstance(doc, dict) or not isinstance(doc.get("messages"), list) or not doc["messages"]:
        return False
    last = doc["messages"][-1]
    if not isinstance(last, dict):
        return False
    content = last.get("content", "")
    if isinstance(content, list):
        return True
    if not isinstance(content, str):
        return False
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def test_fuzz_both_endpoints(make_scenario, emulator_set, run_async):
    sc = _fast(make_scenario, {"gateway": {"body_limit_bytes": 250}})
    seen: dict[int, int] = {}

    async def main():
        loop = asyncio.get_running_loop()
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:

                @settings(max_examples=200, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
                @given(path=st.sampled_from([SELECT, CHAT]), body=_body, ctype=_ctype, headers=_headers)
                def check(path, body, ctype, headers):
                    fut = asyncio.run_coroutine_threadsafe(_post(s, gw.url + path, body, ctype, headers), loop)
                    status, got_headers, reply = fut.result(timeout=20)
                    seen[status] = seen.get(status, 0) + 1
                    outcome = got_headers.get("X-Gwsim-Outcome")
                    assert outcome in OUTCOMES, (status, got_headers)
                    if status >= 500:
                        # only the documented upstream failures may be 5xx, and these upstreams are healthy
                        assert outcome in _UPSTREAM_OUTCOMES
                        pytest.fail(f"5xx from healthy upstreams: {status} {outcome} {reply[:200]!r}")
                    if status != 200:
                        assert got_headers["Content-Type"].startswith("application/json")
                        assert _error_type(reply)
                    too_large = len(body) > 250
                    if too_large:
                        assert status == 413
                    else:
                        assert (status == 200) == _well_formed(body, ctype, headers), (status, reply[:200])

                await loop.run_in_executor(None, check)
                return gw.core.admission.in_flight, gw.metrics.in_flight._value.get()

    in_flight = run_async(main(), timeout=120)
    assert in_flight == (0, 0)
    assert seen.get(200, 0) > 0 and seen.get(400, 0) > 0 and seen.get(413, 0) > 0, seen
    print(f"\nfuzz statuses: {dict(sorted(seen.items()))}")
