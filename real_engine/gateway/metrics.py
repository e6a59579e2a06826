"""The gateway's Prometheus metrics, as an operator would scrape them from ``/metrics``.

One ``CollectorRegistry`` per gateway instance (not the global one), so several
gateways in one process (tests) do not collide.  Gauges that mirror live state (breaker
state, pool in use/idle) are read at scrape time through callbacks.

The request-duration buckets reach from a millisecond to five minutes, at most 1.5x apart from
100 ms up (2.5x below), so the latencies gwsim's own scenarios produce -- tens of milliseconds
for a cache hit, seconds for a completion, 10-30 s for the seed gateway's chat P95/P99 --
each land in a bucket narrow enough to read a percentile from.  ``/metrics`` speaks the
exposition format the scraper asks for (Accept: text 0.0.4 or OpenMetrics) with its standard
content type, and leaves out the ``_created`` series (a start timestamp per label set that
doubles the series count and that no gwsim dashboard reads).
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

BREAKER_STATES = ("closed", "open", "half_open")

REQUEST_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5,
    10, 12.5, 15, 20, 25, 30, 40, 50, 60, 90, 120, 180, 240, 300,
)


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
        disable_created_metrics()  # process-wide in prometheus_client; the gateway has its own process
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_duration = Histogram(
            "gwsim_request_duration_seconds",
            "Time from request read to reply, by endpoint and status.",
            ["endpoint", "status"],
            buckets=REQUEST_BUCKETS_S,
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

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition the ``Accept`` header asks for, and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
