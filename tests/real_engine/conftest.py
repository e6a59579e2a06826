"""Shared fixtures for real-socket tests of the real engine (emulators, load generator, gateway).

Everything binds 127.0.0.1 only.  No pytest asyncio plugin is needed: a test gets the
``run_async`` fixture and runs its coroutine with ``run_async(coro)``.

Fixtures
--------
``free_port``
    ``free_port() -> int``: a TCP port free on 127.0.0.1 right now.
``run_async``
    ``run_async(coro, timeout=10.0)`` runs ``coro`` in a fresh event loop and returns its
    result.  The test fails when, after the coroutine returns, asyncio tasks are still
    pending (a 0.5 s grace lets closing transports finish), when an aiohttp
    ``ClientSession`` or ``web.AppRunner`` created during the test was left open, or when
    the process holds more socket file descriptors than before the test.
``make_scenario``
    ``make_scenario(data=None, overrides=())`` -> ``Scenario``: a small valid scenario
    (``BASE_SCENARIO``: endpoints ``select`` and ``chat``, providers ``p1`` and ``p2``)
    deep-merged with ``data`` (nested dicts, scenario TOML shapes; a table whose tag
    such as ``process`` or ``dist`` changes replaces the old one; ``None`` removes a key)
    then ``--set``-style ``overrides``.
``emulator_set``
    ``async with emulator_set(scenario, t0=None, seed=1) as emu`` starts
    ``real_engine.emulators.start_emulators`` (``t0`` defaults to now) and closes it.
``echo_server``
    ``async with echo_server(handler=None) as url``: a tiny aiohttp server answering
    every path; the default handler replies 200 ``{"ok": true}`` at once.  A custom
    ``handler(request) -> Response`` may sleep, fail, set headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import os
import socket
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from simulator.scenario import Scenario, apply_overrides, scenario_from_data

BASE_SCENARIO: dict[str, Any] = {
    "run": {"name": "test", "duration": "2s", "drain": "2s", "seed": 1},
    "workload": {
        "mode": "open",
        "arrivals": {"process": "constant", "rate": "20/s"},
        "mix": {"select": 0.5, "chat": 0.5},
    },
    "endpoints": {
        "select": {"kind": "select_model", "classes": [{"name": "s1"}, {"name": "s2"}]},
        "chat": {
            "kind": "chat_completions",
            "classes": [{"name": "c1", "output_tokens": {"dist": "deterministic", "value": 20}}],
        },
    },
    "providers": {
        "p1": {"latency": {"model": "tokens", "ttft": {"dist": "deterministic", "value": "20ms"}, "tokens_per_s": 1000}},
        "p2": {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "10ms"}}},
    },
}


_TAGS = ("process", "dist", "model", "kind")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; a table whose tag (process, dist, model, kind) changes replaces the old one."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and all(value.get(t, old.get(t)) == old.get(t) for t in _TAGS):
            out[key] = _merge(old, value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture
def make_scenario() -> Callable[..., Scenario]:
    def make(data: dict[str, Any] | None = None, overrides: tuple[str, ...] | list[str] = ()) -> Scenario:
        raw = _merge(BASE_SCENARIO, data or {})
        raw = apply_overrides(raw, list(overrides), "test")
        return scenario_from_data(raw, "test")

    return make


@pytest.fixture
def free_port() -> Callable[[], int]:
    def get() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return get


def _socket_fds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


@pytest.fixture
def run_async(monkeypatch) -> Callable[..., Any]:
    # Strong references (AppRunner has __slots__, no weakrefs); dropped after the test.
    sessions: list[aiohttp.ClientSession] = []
    runners: list[web.AppRunner] = []
    orig_session_init = aiohttp.ClientSession.__init__
    orig_runner_init = web.AppRunner.__init__

    def session_init(self, *a, **kw):
        orig_session_init(self, *a, **kw)
        sessions.append(self)

    def runner_init(self, *a, **kw):
        orig_runner_init(self, *a, **kw)
        runners.append(self)

    monkeypatch.setattr(aiohttp.ClientSession, "__init__", session_init)
    monkeypatch.setattr(web.AppRunner, "__init__", runner_init)
    gc.collect()
    fds_before = _socket_fds()
    problems: list[str] = []

    def run(coro: Awaitable[Any], timeout: float = 10.0) -> Any:
        async def main() -> Any:
            try:
                return await asyncio.wait_for(coro, timeout)
            finally:
                me = asyncio.current_task()
                deadline = time.monotonic() + 0.5
                while True:
                    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
                    if not left or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.01)
                if left:
                    problems.append(f"tasks left pending: {[t.get_name() + ' ' + repr(t.get_coro()) for t in left]}")

        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(main())
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    yield run

    for s in sessions:
        if not s.closed:
            problems.append(f"aiohttp ClientSession left open: {s!r}")
    for r in runners:
        if r.server is not None:
            problems.append(f"aiohttp AppRunner not cleaned up: {r!r}")
    sessions.clear()
    runners.clear()
    gc.collect()
    fds_after = _socket_fds()
    if fds_after > fds_before:
        problems.append(f"socket fds leaked: {fds_before} before the test, {fds_after} after")
    assert not problems, "; ".join(problems)


@pytest.fixture
def emulator_set():
    from real_engine.emulators import start_emulators

    @contextlib.asynccontextmanager
    async def start(scenario: Scenario, t0: float | None = None, seed: int = 1) -> AsyncIterator[Any]:
        emu = await start_emulators(scenario, time.monotonic() if t0 is None else t0, seed)
        try:
            yield emu
        finally:
            await emu.close()

    return start


async def _ok_handler(request: web.Request) -> web.StreamResponse:
    await request.read()
    return web.json_response({"ok": True})


@pytest.fixture
def echo_server():
    @contextlib.asynccontextmanager
    async def start(handler: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler or _ok_handler)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()

    return start
