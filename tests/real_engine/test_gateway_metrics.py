"""The real gateway's /metrics as a Prometheus server scrapes it: the exposition format the Accept
header asks for with its standard content type, no _created series, and the request-duration
buckets of real_engine.gateway.metrics (10-30 s covered)."""

from __future__ import annotations

import time

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as read_openmetrics
from prometheus_client.parser import text_string_to_metric_families as read_text

from real_engine.gateway import start_gateway
from real_engine.gateway.metrics import REQUEST_BUCKETS_S
from real_engine.settings import redis_url

pytestmark = pytest.mark.real

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def test_metrics_negotiate_the_format_and_leave_out_created_series(make_scenario, emulator_set, run_async) -> None:
    sc = make_scenario({"model_selection": {"semantic_cache": {"enabled": False}}})

    async def main():
        got = {}
        async with emulator_set(sc) as emu, aiohttp.ClientSession() as s:
            async with await start_gateway(sc, emu.urls, time.monotonic(), 1, redis_url()) as gw:
                body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
                async with s.post(gw.url + "/v1/select-model", json=body, headers={"X-Gwsim-Class": "s1"}) as r:
                    await r.read()
                for name, accept in (("plain", None), ("openmetrics", OPENMETRICS)):
                    async with s.get(gw.url + "/metrics", headers={"Accept": accept} if accept else {}) as r:
                        got[name] = (r.status, r.headers["Content-Type"], await r.text())
        return got

    got = run_async(main())
    status, content_type, text = got["plain"]
    assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")
    samples = [s for family in read_text(text) for s in family.samples]
    assert samples and not any(s.name.endswith("_created") for s in samples)
    les = [float(s.labels["le"]) for s in samples if s.name == "gwsim_request_duration_seconds_bucket"
           and s.labels["status"] == "200"]
    assert les[:-1] == [float(b) for b in REQUEST_BUCKETS_S] and les[-1] == float("inf")
    status, content_type, text = got["openmetrics"]
    assert status == 200 and content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert text.rstrip().endswith("# EOF")
    assert not any(s.name.endswith("_created") for family in read_openmetrics(text) for s in family.samples)
