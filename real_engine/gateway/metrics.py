"""The gateway's Prometheus metrics, as an operator would scrape them from ``/metrics``.

One ``CollectorRegistry`` per gateway instance (not the global one), so several
gateways in one process (tests) do not collide.  Gauges that mirror live state (breaker
state, pool in use/idle) are read at scrape time through callbacks.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

BREAKER_STATES = ("closed", "open", "half_open")

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _LiveCollector:
    """Collects gauges whose values live in other objects (pools, breakers)."""

    def __init__(self) -> None:
        self.pools: dict[str, Callable[[], tuple[int, int]]] = {}
        self.breakers: dict[str, Callable[[], str]] = {}

    def collect(self):
        in_use = GaugeMetricFamily("gwsim_pool_connections_in_use", "Connections lent out, by upstream.", labels=["upstream"])
        idle = GaugeMetricFamily("gwsim_pool_connections_idle", "Idle pooled connections, by upstream.", labels=["upstream"])
        for name, fn in self.pools.items():
            a, i = fn()
            in_use.add_metric([name], a)
            idle.add_metric([name], i)
        state = GaugeMetricFamily(
            "gwsim_breaker_state", "1 for the breaker's current state, by breaker.", labels=["breaker", "state"]
        )
        for name, fn in self.breakers.items():
            current = fn()
            for s in BREAKER_STATES:
                state.add_metric([name, s], 1.0 if current == s else 0.0)
        yield in_use
        yield idle
        yield state


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_duration = Histogram(
            "gwsim_request_duration_seconds",
            "Time from request read to reply, by endpoint and status.",
            ["endpoint", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.cache = Counter(
            "gwsim_cache_operations",
            "Cache lookups by cache (semantic, prompt) and result (hit, miss, timeout).",
            ["cache", "result"],
            registry=self.registry,
        )
        self.upstream_calls = Counter(
            "gwsim_upstream_calls",
            "Upstream HTTP attempts by upstream and result kind.",
            ["upstream", "result"],
            registry=self.registry,
        )
        self.dials = Counter("gwsim_pool_dials", "New connections dialled, by upstream.", ["upstream"], registry=self.registry)
        self.edge_events = Counter(
            "gwsim_edge_events",
            "Requests the HTTP edge ended early, by reason: overloaded (503), body_timeout (408), "
            "unsupported_media_type (415), client_gone (the client left mid-request), cancelled (shutdown).",
            ["reason"],
            registry=self.registry,
        )
        self.in_flight = Gauge("gwsim_requests_in_flight", "Requests being handled.", registry=self.registry)
        self._live = _LiveCollector()
        self.registry.register(self._live)

    def watch_pool(self, name: str, fn: Callable[[], tuple[int, int]]) -> None:
        self._live.pools[name] = fn

    def watch_breaker(self, name: str, fn: Callable[[], str]) -> None:
        self._live.breakers[name] = fn

    def render(self) -> bytes:
        return generate_latest(self.registry)
