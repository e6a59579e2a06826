"""What the load generator sends an external OpenAI-compatible gateway: the class's model name and
an Authorization header (from --header or $GWSIM_API_KEY), against a real aiohttp server that checks them."""

from __future__ import annotations

import json
import time

import pytest
from aiohttp import web

from real_engine.loadgen import API_KEY_ENV, HEADERS_ENV, build_body, request_headers, run_load


def test_body_carries_the_class_model_or_auto():
    assert json.loads(build_body("chat", "c1", 3, False, 10))["model"] == "auto"
    body = json.loads(build_body("chat", "c1", 3, False, 300, model="gpt-4o-group"))
    assert body["model"] == "gpt-4o-group"
    assert len(build_body("chat", "c1", 3, False, 300, model="gpt-4o-group")) == 300  # still padded exactly


def test_headers_from_flags_environment_and_api_key():
    assert request_headers([], {}) == {}
    assert request_headers(["X-Team:  blue "], {}) == {"X-Team": "blue"}
    assert request_headers([], {API_KEY_ENV: "sk-1"}) == {"Authorization": "Bearer sk-1"}
    # an explicit Authorization header wins over the key in the environment
    assert request_headers(["authorization: Basic abc"], {API_KEY_ENV: "sk-1"}) == {"authorization": "Basic abc"}
    passed = {HEADERS_ENV: json.dumps({"Authorization": "Bearer sk-2"}), API_KEY_ENV: "sk-1"}
    assert request_headers([], passed) == {"Authorization": "Bearer sk-2"}
    for bad in ("no colon", ": value", "Two words: x"):
        with pytest.raises(ValueError, match="expected 'Name: value'"):
            request_headers([bad], {})
    with pytest.raises(ValueError, match=HEADERS_ENV):
        request_headers([], {HEADERS_ENV: "[1, 2]"})


@pytest.mark.real
def test_gateway_that_requires_a_key_sees_it_and_the_model(run_async, make_scenario, echo_server):
    sc = make_scenario({
        "workload": {"arrivals": {"process": "burst", "size": 3, "every": "1s"}, "mix": {"chat": 1.0, "select": 0.0}},
        "endpoints": {"chat": {"kind": "chat_completions", "model_selection": False,
                               "classes": [{"name": "c1", "provider": "p1", "model": "fast-group"}]}},
    })
    seen = []

    async def handler(request):
        body = await request.json()
        seen.append((request.headers.get("Authorization"), body["model"]))
        if request.headers.get("Authorization") != "Bearer sk-test":
            return web.json_response({"error": {"message": "no key"}}, status=401)
        return web.json_response({"choices": []})

    async def go(headers):
        async with echo_server(handler) as url:
            return await run_load(sc, url, time.monotonic() + 0.05, 1, 0.5, headers=headers)

    records, acc = run_async(go(request_headers([], {API_KEY_ENV: "sk-test"})))
    assert acc["ok"] == 3 and seen == [("Bearer sk-test", "fast-group")] * 3
    records, acc = run_async(go({}))
    assert acc["ok"] == 0 and {(r.outcome, r.status_code) for r in records} == {("bad_request", 401)}
