"""The gateway's HTTP edge: body limit (413), malformed requests (400), the rate limiter
(429), /healthz and /metrics, and the record headers on every reply."""

from __future__ import annotations

import time

import aiohttp
import pytest

from real_engine.gateway import start_gateway
from real_engine.settings import redis_url

pytestmark = pytest.mark.real

REDIS = redis_url()  # the session's Redis (tests/conftest.py)
RECORD_HEADERS = (
    "X-Gwsim-Outcome", "X-Gwsim-Provider", "X-Gwsim-Attempts", "X-Gwsim-Fallback", "X-Gwsim-Selection-Fallback",
    "X-Gwsim-Cache-Hit", "X-Gwsim-Prompt-Cache-Hit", "X-Gwsim-Breaker",
)


def test_limits_and_malformed_requests(make_scenario, emulator_set, run_async):
    sc = make_scenario(
        {
            "gateway": {"body_limit_bytes": 200, "rate_limit": {"limit": 4, "window": "10s"}},
            "model_selection": {"semantic_cache": {"enabled": False}},
        }
    )

    async def main():
        out = {}
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, REDIS) as gw:
                url = gw.url + "/v1/select-model"
                big = {"model": "auto", "messages": [{"role": "user", "content": "x" * 500}]}
                async with s.post(url, json=big) as r:
                    out["too_large"] = (r.status, dict(r.headers))
                async with s.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
                    out["bad_json"] = (r.status, dict(r.headers))
                async with s.post(url, json={"model": "auto"}) as r:
                    out["no_messages"] = (r.status, dict(r.headers))
                ok = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
                statuses = []
                for i in range(5):
                    async with s.post(url, json=ok, headers={"X-Gwsim-Request-Id": "0", "X-Gwsim-Class": "s1"}) as r:
                        await r.read()
                        statuses.append((r.status, r.headers.get("X-Gwsim-Outcome")))
                out["limited"] = statuses
                async with s.get(gw.url + "/healthz") as r:
                    out["healthz"] = r.status
                async with s.get(gw.url + "/metrics") as r:
                    out["metrics"] = await r.text()
        return out

    out = run_async(main())
    status, headers = out["too_large"]
    assert status == 413 and headers["X-Gwsim-Outcome"] == "too_large"
    assert all(h in headers for h in RECORD_HEADERS)
    assert out["bad_json"][0] == 400 and out["bad_json"][1]["X-Gwsim-Outcome"] == "bad_request"
    assert out["no_messages"][0] == 400
    # the 413 and the two 400s passed the limiter first (the seed's order), so one more fits in 4
    assert out["limited"][0] == (200, "ok")
    assert out["limited"][1:] == [(429, "rate_limited")] * 4
    assert out["healthz"] == 200
    metrics = out["metrics"]
    assert 'gwsim_request_duration_seconds_count{endpoint="select",status="413"} 1.0' in metrics
    assert 'gwsim_request_duration_seconds_count{endpoint="select",status="429"} 4.0' in metrics
    assert "gwsim_pool_connections_idle" in metrics
