"""``real_engine.measure``: three real processes, a short run, a clean shutdown, balanced books."""

from __future__ import annotations

import os

import pytest
import redis

from real_engine.measure import MeasureError, measure
from real_engine.settings import redis_url

pytestmark = pytest.mark.real

SCENARIO = """
[run]
duration = "1s"
drain = "2s"
[workload]
arrivals = {process = "constant", rate = "40/s"}
mix = {select = 0.6, chat = 0.4}
[endpoints.select]
kind = "select_model"
classes = [{name = "s1", semantic_cache_hit = 0.5}]
[endpoints.chat]
kind = "chat_completions"
classes = [{name = "c1", prompt_cache_opt_in = true, prompt_cache_hit = 0.5}]
[model_selection.fallback_choice]
provider = "p1"
[providers.p1]
latency = {model = "plain", time = {dist = "deterministic", value = "5ms"}}
[providers.p2]
latency = {model = "plain", time = {dist = "deterministic", value = "5ms"}}
"""


def _children() -> set[int]:
    """This process's children, less the ones it had before any test ran (the session's own
    redis-server, tests/conftest.py): what a test leaves behind."""
    try:
        with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as fh:
            return {int(x) for x in fh.read().split()} - _BEFORE
    except OSError:
        return set()


_BEFORE: set[int] = set()
_BEFORE = _children()


def test_measure_runs_three_processes_and_balances(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    seen: list[dict] = []
    result = measure(path, ["workload.arrivals.rate=50/s"], progress=seen.append, startup_s=3.0, workdir=tmp_path / "run")
    acc = result.accounting
    # a loaded machine may start the processes late; that is reported, and is not a failure here
    assert [p for p in result.problems if not p.startswith("start-up took longer")] == []
    assert result.exit_codes == {"loadgen": 0, "gateway": 0, "emulators": 0}
    assert acc["sent"] == 50 and acc["sent"] == acc["ok"] + sum(acc["failures"].values())
    assert len(result.records) == acc["sent"]
    assert {r.endpoint for r in result.records} == {"select", "chat"}
    assert any(r.cache_hit for r in result.records) and any(not r.cache_hit for r in result.records)
    assert result.gateway_stats["outcomes"].get("ok", 0) == acc["ok"]
    assert result.emulator_stats["ai_service"]["requests"] > 0
    assert seen and seen[-1]["sent"] == 50
    assert _children() == set()
    prefix = result.gateway_stats["key_prefix"]
    client = redis.Redis.from_url(redis_url())
    try:
        assert list(client.scan_iter(match=prefix + "*")) == []
    finally:
        client.close()


def test_measure_says_so_when_redis_is_down(tmp_path, free_port):
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    with pytest.raises(MeasureError, match="not answering"):
        measure(path, redis_url=f"redis://127.0.0.1:{free_port()}/0")


def test_measure_with_tls_to_the_upstreams(tmp_path):
    # pools that ask for TLS get emulators serving TLS with a self-signed certificate
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    result = measure(
        path,
        ["providers.p1.pool.tls=true", "providers.p2.pool.tls=true", "model_selection.ai_client.pool.tls=true"],
        startup_s=3.0,
        workdir=tmp_path / "run",
    )
    acc = result.accounting
    assert acc["sent"] == 40 and acc["ok"] == 40, acc
    assert _children() == set()
