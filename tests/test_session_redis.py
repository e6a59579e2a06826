"""One Redis setting (``REDIS_URL``, else redis://127.0.0.1:6379/0) for the real engine, the CLI
and the tests, and the test session's own ``redis-server`` when none answers (tests/conftest.py)."""

from __future__ import annotations

import os
import shutil

import pytest

from redis_server import INSTALL_HINT, answers, free_port, start_redis_server
from real_engine.settings import DEFAULT_REDIS_URL, REDIS_URL_ENV, redis_url


def test_redis_url_is_the_flag_then_the_environment_then_loopback(monkeypatch) -> None:
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)
    assert redis_url() == DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"
    monkeypatch.setenv(REDIS_URL_ENV, "redis://10.0.0.5:7000/2")
    assert redis_url() == "redis://10.0.0.5:7000/2"
    assert redis_url("redis://h:1/0") == "redis://h:1/0"


@pytest.mark.real
def test_the_session_points_every_test_at_a_redis_thatanswers() -> None:
    assert answers(os.environ[REDIS_URL_ENV])
    assert redis_url() == os.environ[REDIS_URL_ENV]


def test_a_started_redis_server_answers_on_its_own_port_and_stops(tmp_path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(INSTALL_HINT.format(url=redis_url()))
    assert not answers(f"redis://127.0.0.1:{free_port()}/0")  # nothing there: the probe can say no
    proc, url = start_redis_server(binary, tmp_path)
    try:
        assert url.startswith("redis://127.0.0.1:") and url != DEFAULT_REDIS_URL
        assert answers(url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not answers(url)
