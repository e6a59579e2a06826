"""Failure replies of emulated upstreams: error statuses and connections reset mid-response.

These are the shapes trouble takes on the wire: an HTTP error status with a small JSON
body (a 429 carries ``Retry-After: 1``, as rate-limiting APIs do), and a reply whose
headers and first half of the body arrive before the TCP connection is aborted (RST),
which a client sees as a payload error or a disconnect.  Outage and hang are handled in
``base.EmulatorServer`` (listener closed; request held until the client leaves).
"""

from __future__ import annotations

import json

from aiohttp import web


def error_reply(status: int, message: str, timing: str | None = None, retry_after: int = 1) -> web.Response:
    """An OpenAI-style error body with ``status``; 429 carries ``Retry-After`` (1 s unless told)."""
    headers = {}
    if status == 429:
        headers["Retry-After"] = str(int(retry_after))
    if timing is not None:
        headers["X-Emulator-Timing"] = timing
    body = json.dumps({"error": {"message": message, "type": "emulated_error", "code": status}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


async def reset_midway(request: web.Request, payload: bytes, headers: dict[str, str]) -> web.StreamResponse:
    """Send the status line, headers and half the body, then abort the connection (RST)."""
    resp = web.StreamResponse(status=200, headers=headers)
    resp.content_type = "application/json"
    resp.content_length = len(payload)
    await resp.prepare(request)
    await resp.write(payload[: max(1, len(payload) // 2)])
    abort(request)
    return resp


def abort(request: web.Request) -> None:
    """Abort the request's connection: unsent data is dropped and the peer gets a reset."""
    transport = request.transport
    if transport is not None:
        transport.abort()
