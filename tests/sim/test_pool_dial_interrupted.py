"""A caller interrupted while its connection is being dialed (a race loser cancelled) gives
the slot back, as the real pool's dial does on any exit: before, the slot leaked and a pool
at its connection cap lost capacity for the rest of the run."""

from __future__ import annotations

import numpy as np
import simpy

from simulator.model.http_pool import SimHttpPool
from simulator.scenario import ConnectionPool


def test_an_interrupted_dial_frees_its_slot_for_the_next_caller():
    env = simpy.Environment()
    cfg = ConnectionPool(max_conns_per_host=1, max_idle_per_host=1, dial_time={"dist": "deterministic", "value": "10ms"})
    pool = SimHttpPool(env, cfg, np.random.default_rng(1))
    got: list[tuple[str, float]] = []

    def caller(name: str):
        try:
            lease = yield from pool.acquire()
        except simpy.Interrupt:
            got.append((name, -1.0))
            return
        got.append((name, env.now))
        yield env.timeout(0.005)
        pool.release(lease, True)

    loser = env.process(caller("loser"))

    def cancel():
        yield env.timeout(0.004)  # mid-dial
        loser.interrupt("cancelled")

    env.process(cancel())
    env.process(caller("next"))  # queued behind the loser's dial at the cap of one connection
    env.run()
    assert ("loser", -1.0) in got
    # the freed slot goes to the waiter, which dials its own connection: 4 ms + 10 ms
    assert [t for name, t in got if name == "next"] == [0.014]
    assert pool.policy.active == 0
