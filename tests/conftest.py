"""The test session's Redis: the one at ``$REDIS_URL`` (default redis://127.0.0.1:6379/0) when
it answers, else a ``redis-server`` this session starts on a free loopback port and stops at
the end.

Either way ``REDIS_URL`` is set for the whole session before any test module is imported, so
the tests, the real engine they start in-process and the ``gwsim measure`` processes they
spawn all talk to the same server (``real_engine.settings.redis_url``).  With no Redis
answering and no ``redis-server`` installed, the ``real`` tests are skipped with a line saying
how to install it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from real_engine.settings import REDIS_URL_ENV, redis_url
from redis_server import INSTALL_HINT, answers, start_redis_server

_STARTED: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    url = redis_url()
    if answers(url):
        os.environ[REDIS_URL_ENV] = url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        _STARTED["missing"] = INSTALL_HINT.format(url=url)
        return
    workdir = Path(tempfile.mkdtemp(prefix="gwsim-test-redis-"))
    proc, started = start_redis_server(binary, workdir)
    _STARTED.update(proc=proc, workdir=workdir, url=started, was=os.environ.get(REDIS_URL_ENV))
    os.environ[REDIS_URL_ENV] = started


def pytest_report_header(config: pytest.Config) -> str:
    if "missing" in _STARTED:
        return f"redis: {_STARTED['missing']}"
    if "proc" in _STARTED:
        return f"redis: started redis-server at {_STARTED['url']} for this session"
    return f"redis: {os.environ.get(REDIS_URL_ENV)}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _STARTED.get("missing")
    if not reason:
        return
    skip = pytest.mark.skip(reason=str(reason))
    for item in items:
        if item.get_closest_marker("real") is not None:
            item.add_marker(skip)


def pytest_unconfigure(config: pytest.Config) -> None:
    proc = _STARTED.pop("proc", None)
    if proc is None:
        return
    assert isinstance(proc, subprocess.Popen)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    was = _STARTED.pop("was", None)
    if was is None:
        os.environ.pop(REDIS_URL_ENV, None)
    else:
        os.environ[REDIS_URL_ENV] = str(was)
    shutil.rmtree(str(_STARTED.pop("workdir")), ignore_errors=True)
