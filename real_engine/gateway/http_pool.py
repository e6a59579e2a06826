"""The gateway's HTTP/1.1 client pool to one upstream host, over asyncio streams.

This is the real counterpart of Go's ``net/http.Transport`` for one host (the seed's
protocol-manager client and the provider SDK clients): keep-alive connections, reuse of
the most recently idled one, a new dial (plus TLS handshake when ``tls=true``) when none
is idle, a FIFO wait beyond ``max_conns_per_host``, and the churn the seed suffered:
on release, a connection is *closed* when the host already holds ``max_idle_per_host``
idle ones.  Every one of those decisions is made by
``simulator.policies.pool.ConnectionPoolPolicy`` (the same code the simulator runs); this
module does the I/O the policy asks for: dial, write, read, close.

The scenario's ``dial_time`` and ``tls_handshake_time`` model the network distance to a
remote upstream, which loopback does not have: each new connection first waits a
sampled ``dial_time`` (+ ``tls_handshake_time`` with TLS), then really connects (and
really handshakes).  ``dial_timeout`` bounds both.

State changes (policy calls, the idle map, waiter futures) are synchronous and separate
from the awaits; every exit path, cancellation included, returns the connection or its
slot to the policy, so no socket or slot leaks.

``open_stream`` is the same exchange for a reply relayed as it comes (server-sent events):
it returns after the status line and headers, and the caller reads the body piece by piece
(each HTTP chunk as it arrives) while the connection stays out of the pool; ``close`` gives
it back (reusable only when the body was read to its end).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

import numpy as np

from simulator.policies.eventlog import RUN_LOG_LIMIT
from simulator.policies.pool import ConnectionPoolPolicy
from simulator.scenario import ConnectionPool

log = logging.getLogger(__name__)

_MAX_HEADER_BYTES = 65536


class UpstreamError(Exception):
    """An upstream call failed before a status line arrived: ``kind`` is connect, reset or timeout."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass
class CallTiming:
    """Filled in as the call progresses, so a caller that times out still sees where."""

    pool_wait_s: float = 0.0
    connect_s: float = 0.0
    exchange_s: float = 0.0  # request written to response fully read
    reused: bool = False
    dialed: bool = False


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    reusable: bool


@dataclass
class _Conn:
    conn_id: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: int = 0
    idle_since: float = 0.0
    broken: bool = field(default=False)

    def looks_dead(self) -> bool:
        # The peer closed an idle keep-alive connection (FIN seen) or the transport went away.
        return self.reader.at_eof() or self.writer.transport.is_closing() or self.reader.exception() is not None


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise UpstreamError("reset", f"malformed status line {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(parts[1]), parts[0], headers


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bool]:
    """(status, headers, keep-alive) of a response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, version, headers = _parse_head(head[:-4])
    return status, headers, version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"


def _upstream_error(exc: BaseException, where: str) -> UpstreamError | None:
    """The ``UpstreamError`` an exchange's I/O exception stands for (None: not an I/O failure)."""
    if isinstance(exc, (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ssl.SSLError)):
        return UpstreamError("reset", f"{where}: {exc.__class__.__name__}")
    if isinstance(exc, OSError):
        return UpstreamError("reset", f"{where}: {exc}")
    if isinstance(exc, ValueError):
        return UpstreamError("reset", f"{where}: malformed response")
    return None


async def _read_response(reader: asyncio.StreamReader) -> HttpResponse:
    status, headers, reusable = await _read_head(reader)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # trailers (usually none) end with an empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            chunk = await reader.readexactly(size + 2)
            chunks.append(chunk[:-2])
        body = b"".join(chunks)
    elif "content-length" in headers:
        n = int(headers["content-length"])
        body = await reader.readexactly(n) if n else b""
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        body = await reader.read()  # body delimited by connection close
        reusable = False
    return HttpResponse(status, headers, body, reusable)


class HttpPool:
    """Keep-alive HTTP/1.1 connections to one ``base_url``, admitted by the pool policy."""

    def __init__(
        self,
        name: str,
        base_url: str,
        cfg: ConnectionPool,
        rng: np.random.Generator,
        *,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_dial: Callable[[], None] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        self.name = name
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https" or cfg.tls
        self.base_path = parts.path.rstrip("/")
        self.cfg = cfg
        self.policy = ConnectionPoolPolicy.from_config(cfg, log_limit=RUN_LOG_LIMIT)
        self._rng = rng
        self._ssl = ssl_context if self.tls else None
        if self.tls and self._ssl is None:
            from real_engine.tls import client_context

            self._ssl = client_context()
        self._clock = clock
        self._on_dial = on_dial
        self._host_header = f"{self.host}:{self.port}"
        self._idle: dict[int, _Conn] = {}
        self._active: dict[int, _Conn] = {}
        self._handed: dict[int, _Conn] = {}
        self._waiters: dict[int, asyncio.Future[bool]] = {}
        self._closing: list[asyncio.StreamWriter] = []
        self._closed = False
        self.requests = 0
        self.stale_reuses = 0

    def __repr__(self) -> str:
        p = self.policy
        return (
            f"<HttpPool {self.name} {self.host}:{self.port} active={p.active} idle={p.idle} "
            f"queued={p.queued} dials={p.dials} reuses={p.reuses} churn={p.churn_closes}>"
        )

    # ------------------------------------------------------------------ views

    @property
    def in_use(self) -> int:
        return self.policy.active

    @property
    def idle(self) -> int:
        return self.policy.idle

    def stats(self) -> dict[str, int]:
        p = self.policy
        return {
            "requests": self.requests,
            "dials": p.dials,
            "reuses": p.reuses,
            "churn_closes": p.churn_closes,
            "idle_expired": p.idle_expired,
            "dial_failures": p.dial_failures,
            "wait_cancels": p.cancels,
            "stale_reuses": self.stale_reuses,
            "active": p.active,
            "idle": p.idle,
            "queued": p.queued,
        }

    # ------------------------------------------------------------------ state changes (no awaits)

    def _close_conn(self, conn: _Conn, *, abort: bool = False) -> None:
        conn.broken = True
        w = conn.writer
        if abort:
            w.transport.abort()
        else:
            w.close()
        self._closing.append(w)
        if len(self._closing) > 1024:
            # closed long ago: the loop has released their sockets; keep the list bounded
            del self._closing[:512]

    def _sweep_expired(self, now: float) -> None:
        """Close the sockets of idle connections the policy has expired (same rule, same clock)."""
        timeout = self.cfg.idle_timeout
        if not timeout or not self._idle:
            return
        limit = now - timeout
        for cid in [c for c, conn in self._idle.items() if conn.idle_since < limit]:
            self._close_conn(self._idle.pop(cid))

    def _wake(self, waiter: int, dial: bool) -> None:
        fut = self._waiters.pop(waiter, None)
        if fut is not None and not fut.done():
            fut.set_result(dial)
        # else: the waiter was cancelled; its own cleanup finds waiter_conn() and gives it back

    def _give_slot_back(self, conn_id: int) -> None:
        """A slot (to dial ``conn_id``) nobody will use: free it, maybe for the next waiter."""
        w = self.policy.dial_failed(conn_id, self._clock())
        if w is not None:
            self._wake(w, True)

    def _release(self, conn: _Conn, reusable: bool) -> None:
        cid = conn.conn_id
        self._active.pop(cid, None)
        reusable = reusable and not conn.broken and not self._closed
        now = self._clock()
        r = self.policy.release(cid, now, reusable)
        if r.kind == "idle":
            conn.idle_since = now
            self._idle[cid] = conn
        elif r.kind == "handoff":
            self._handed[cid] = conn
            self._wake(r.waiter, False)  # type: ignore[arg-type]
        else:
            if not conn.broken:
                self._close_conn(conn)  # churn: Go closes it gracefully
            if r.dial_for is not None:
                self._wake(r.dial_for, True)

    # ------------------------------------------------------------------ I/O

    async def _dial(self, conn_id: int, timing: CallTiming) -> _Conn:
        cfg = self.cfg
        started = time.perf_counter()
        try:
            delay = cfg.dial_time.sample(self._rng)
            if self.tls:
                delay += cfg.tls_handshake_time.sample(self._rng)
            async with asyncio.timeout(cfg.dial_timeout):
                if delay > 0:
                    await asyncio.sleep(delay)
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                    limit=_MAX_HEADER_BYTES * 16,
                )
        except BaseException as exc:
            self._give_slot_back(conn_id)
            if isinstance(exc, TimeoutError):
                raise UpstreamError("connect", f"dial timeout to {self._host_header}") from None
            if isinstance(exc, (OSError, ssl.SSLError)):
                raise UpstreamError("connect", f"{self._host_header}: {exc}") from None
            raise
        finally:
            timing.connect_s += time.perf_counter() - started
        timing.dialed = True
        if self._on_dial is not None:
            self._on_dial()
        conn = _Conn(conn_id, reader, writer)
        if self._closed:
            self._close_conn(conn, abort=True)
            self._give_slot_back(conn_id)
            raise UpstreamError("connect", "pool closed")
        self._active[conn_id] = conn
        return conn

    async def _wait(self, waiter: int, timing: CallTiming) -> tuple[int, bool]:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = fut
        started = time.perf_counter()
        try:
            dial = await fut
        except BaseException:
            self._waiters.pop(waiter, None)
            if not self.policy.cancel_wait(waiter, self._clock()):
                # handed a connection (or a slot) just as we gave up: give it back
                cid = self.policy.waiter_conn(waiter)
                if cid is not None:
                    conn = self._handed.pop(cid, None)
                    if conn is not None:
                        self._release(conn, True)
                    else:
                        self._give_slot_back(cid)
            raise
        finally:
            timing.pool_wait_s += time.perf_counter() - started
        cid = self.policy.waiter_conn(waiter)
        assert cid is not None, "a woken waiter always holds a connection id"
        return cid, dial

    async def _acquire(self, timing: CallTiming) -> _Conn:
        while True:
            if self._closed:
                raise UpstreamError("connect", "pool closed")
            now = self._clock()
            decision = self.policy.acquire(now)
            self._sweep_expired(now)
            if decision.kind == "reuse":
                conn = self._idle.pop(decision.conn_id)  # type: ignore[arg-type]
                if conn.looks_dead():
                    # the server closed it while idle: Go drops it and tries again
                    self.stale_reuses += 1
                    self._active[conn.conn_id] = conn
                    self._close_conn(conn)
                    self._release(conn, False)
                    continue
                timing.reused = True
                self._active[conn.conn_id] = conn
                return conn
            if decision.kind == "dial":
                return await self._dial(decision.conn_id, timing)  # type: ignore[arg-type]
            cid, dial = await self._wait(decision.waiter, timing)  # type: ignore[arg-type]
            if dial:
                return await self._dial(cid, timing)
            conn = self._handed.pop(cid)
            self._active[cid] = conn
            if conn.looks_dead():
                self.stale_reuses += 1
                self._close_conn(conn)
                self._release(conn, False)
                continue
            timing.reused = True
            return conn

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timing: CallTiming | None = None,
    ) -> HttpResponse:
        """One HTTP exchange on a pooled connection.  Raises ``UpstreamError`` (connect,
        reset); a caller's timeout cancels it and the connection is closed, not reused."""
        timing = timing if timing is not None else CallTiming()
        conn = await self._acquire(timing)
        self.requests += 1
        started = time.perf_counter()
        lines = [
            f"{method} {self.base_path}{path} HTTP/1.1",
            f"Host: {self._host_header}",
            f"Content-Length: {len(body)}",
        ]
        if headers:
            lines.extend(f"{k}: {v}" for k, v in headers.items())
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        try:
            conn.writer.write(payload)
            await conn.writer.drain()
            resp = await _read_response(conn.reader)
        except BaseException as exc:
            # The exchange did not finish: the connection's state is unknown, never reuse it.
            self._close_conn(conn, abort=True)
            self._release(conn, False)
            error = _upstream_error(exc, self._host_header)
            if error is not None:
                raise error from None
            raise
        finally:
            timing.exchange_s += time.perf_counter() - started
        conn.requests += 1
        self._release(conn, resp.reusable)
        return resp

    async def open_stream(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timing: CallTiming | None = None,
    ) -> "UpstreamStream":
        """``request`` up to the reply's headers: the body is read with ``UpstreamStream.piece``
        as it arrives.  The caller must ``close`` the stream (``async with`` does)."""
        timing = timing if timing is not None else CallTiming()
        conn = await self._acquire(timing)
        self.requests += 1
        started = time.perf_counter()
        lines = [
            f"{method} {self.base_path}{path} HTTP/1.1",
            f"Host: {self._host_header}",
            f"Content-Length: {len(body)}",
        ]
        if headers:
            lines.extend(f"{k}: {v}" for k, v in headers.items())
        try:
            conn.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await conn.writer.drain()
            status, resp_headers, reusable = await _read_head(conn.reader)
        except BaseException as exc:
            timing.exchange_s += time.perf_counter() - started
            self._close_conn(conn, abort=True)
            self._release(conn, False)
            error = _upstream_error(exc, self._host_header)
            if error is not None:
                raise error from None
            raise
        return UpstreamStream(self, conn, status, resp_headers, reusable, timing, started)

    def _stream_done(self, conn: _Conn, reusable: bool) -> None:
        if reusable:
            conn.requests += 1
        else:
            self._close_conn(conn, abort=True)
        self._release(conn, reusable)

    async def close(self) -> None:
        """Close every connection and fail every waiter; waits (briefly) for sockets to close."""
        self._closed = True
        for waiter, fut in list(self._waiters.items()):
            if not fut.done():
                fut.set_exception(UpstreamError("connect", "pool closed"))
        self._waiters.clear()
        for conn in list(self._idle.values()) + list(self._handed.values()) + list(self._active.values()):
            if not conn.broken:
                self._close_conn(conn, abort=conn.conn_id in self._active)
        self._idle.clear()
        self._handed.clear()
        closing, self._closing = self._closing, []
        for w in closing:
            try:
                await asyncio.wait_for(w.wait_closed(), 0.5)
            except Exception:  # noqa: BLE001 - a socket that will not close politely is aborted
                w.transport.abort()


class UpstreamStream:
    """A reply being read as it arrives, on a connection held out of its pool.

    ``piece()`` returns the next piece of the body (one HTTP chunk of a chunked reply, else
    what the socket has), ``b""`` at its end; an I/O failure raises ``UpstreamError`` (reset)
    and closes the stream.  ``close()`` gives the connection back: to the pool when the body
    was read to its end, else closed (its state is unknown).  ``timing.exchange_s`` runs
    from the request's write to the close.
    """

    def __init__(self, pool: HttpPool, conn: _Conn, status: int, headers: dict[str, str], reusable: bool,
                 timing: CallTiming, started: float) -> None:
        self.pool = pool
        self.status = status
        self.headers = headers
        self.timing = timing
        self._conn = conn
        self._reusable = reusable
        self._started = started
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self._left: int | None = None
        if not self._chunked:
            if length is not None:
                self._left = int(length) if length.strip().isdigit() else 0
            elif status in (204, 304) or 100 <= status < 200:
                self._left = 0
            else:
                self._reusable = False  # delimited by the connection's close
        self.ended = False
        self._closed = False

    async def piece(self) -> bytes:
        if self.ended or self._closed:
            return b""
        reader = self._conn.reader
        try:
            if self._chunked:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    self.ended = True
                    return b""
                return (await reader.readexactly(size + 2))[:-2]
            if self._left is not None:
                if self._left == 0:
                    self.ended = True
                    return b""
                data = await reader.read(min(self._left, 65536))
                if not data:
                    raise asyncio.IncompleteReadError(b"", self._left)
                self._left -= len(data)
                return data
            data = await reader.read(65536)
            if not data:
                self.ended = True
            return data
        except BaseException as exc:
            self._reusable = False
            self.close()
            error = _upstream_error(exc, self.pool._host_header)
            if error is not None:
                raise error from None
            raise

    async def read_all(self) -> bytes:
        """The rest of the body (an error reply's), then the stream is closed."""
        parts = []
        try:
            while True:
                data = await self.piece()
                if not data:
                    return b"".join(parts)
                parts.append(data)
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.timing.exchange_s += time.perf_counter() - self._started
        self.pool._stream_done(self._conn, self._reusable and self.ended)

    async def __aenter__(self) -> "UpstreamStream":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<UpstreamStream {self.pool.name} status={self.status} ended={self.ended} closed={self._closed}>"
