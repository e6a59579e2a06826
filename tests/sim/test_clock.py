"""The replication's clock against SimPy's own environment: the same processes give the
same (event, time) log, and ``Clock.run_until`` stops where ``Environment.run(until=...)`` does."""

from __future__ import annotations

import pytest
import simpy

from simulator.model.clock import Clock


def _world(env: simpy.Environment, log: list) -> None:
    """Timeouts, a resource queue, a condition, an interrupt and a failed event caught."""
    res = simpy.Resource(env, capacity=1)

    def user(name: str, at: float, hold: float):
        yield env.timeout(at)
        with res.request() as req:
            yield req
            log.append((f"{name} in", env.now))
            yield env.timeout(hold)
        log.append((f"{name} out", env.now))

    def sleeper():
        try:
            yield env.timeout(10)
        except simpy.Interrupt as stop:
            log.append((f"interrupted {stop.cause}", env.now))

    def waker(target):
        yield env.timeout(2.5)
        target.interrupt("early")

    def racer():
        fired = yield env.timeout(1, "a") | env.timeout(2, "b")
        log.append(("race " + ",".join(sorted(fired.values())), env.now))
        failing = env.event()
        env.timeout(0.5).callbacks.append(lambda _: failing.fail(ValueError("boom")))
        try:
            yield failing
        except ValueError as err:
            log.append((f"caught {err}", env.now))

    for i, (at, hold) in enumerate([(0, 1.5), (0.5, 1), (1, 0.25)]):
        env.process(user(f"u{i}", at, hold))
    env.process(waker(env.process(sleeper())))
    env.process(racer())


def test_clock_gives_the_same_log_as_simpy() -> None:
    logs = []
    for env in (simpy.Environment(), Clock()):
        log: list = []
        _world(env, log)
        env.run(until=4)
        logs.append((log, env.now))
    assert logs[0] == logs[1]
    assert logs[1][0][:2] == [("u0 in", 0.0), ("race a", 1.0)]


def test_run_until_stops_where_simpy_does_and_events_at_the_horizon_wait() -> None:
    logs = []
    for runner in (lambda env: env.run(until=3), lambda env: env.run_until(3)):
        env = Clock()
        log: list = []

        def ticker():
            while True:
                yield env.timeout(1)
                log.append(("tick", env.now))

        env.process(ticker())
        runner(env)
        logs.append((log, env.now, env._now))
    assert logs[0] == logs[1] == ([("tick", 1), ("tick", 2)], 3, 3)


def test_an_unhandled_failure_stops_run_until() -> None:
    env = Clock()
    env.event().fail(RuntimeError("nobody waits for this"))
    with pytest.raises(RuntimeError, match="nobody waits"):
        env.run_until(1)


def test_clock_timeout_refuses_a_negative_delay() -> None:
    with pytest.raises(ValueError):
        Clock().timeout(-1)
