"""The real gateway: an aiohttp server running the scenario's request flows on loopback.

    handle = await start_gateway(scenario, upstream_urls, t0, seed, redis_url)
    handle.url      # http://127.0.0.1:<port>
    handle.stats()  # pools, breakers, caches, CPU, outcomes
    await handle.close()

``python -m real_engine.gateway`` runs it as its own process (see ``__main__``).
"""

from real_engine.gateway.app import GatewayApp, GatewayHandle, start_gateway
from real_engine.gateway.flow import GATEWAY_SOURCES, OUTCOME_STATUS, GatewayCore, RequestContext

__all__ = ["GATEWAY_SOURCES", "OUTCOME_STATUS", "GatewayApp", "GatewayCore", "GatewayHandle", "RequestContext", "start_gateway"]
