"""A ``redis-server`` of the test session's own, for machines where no Redis answers at
``$REDIS_URL`` (tests/conftest.py): started on a free loopback port, without persistence, in its
own session (a Ctrl-C aimed at a test's child does not reach it), and killed with pytest."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

INSTALL_HINT = ("no Redis answers at {url} and redis-server is not installed: install it "
                "(Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) "
                "or point REDIS_URL at a running Redis")


def answers(url: str, timeout_s: float = 0.5) -> bool:
    """A Redis (or anything speaking its protocol) replies to PING at ``url``."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        # TLS or a unix socket: let redis-py decide (it is a test dependency)
        import redis

        try:
            return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s).ping())
        except redis.exceptions.RedisError:
            return False
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError:
        return False
    # +PONG, or -NOAUTH/-ERR: a Redis is there either way (authentication is the URL's business)
    return reply[:1] in (b"+", b"-")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In redis-server: SIGTERM when the pytest process dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_redis_server(binary: str, workdir: Path, attempts: int = 3) -> tuple[subprocess.Popen, str]:
    """Start ``redis-server`` on a free loopback port (no persistence); its URL once it answers."""
    last = ""
    for _ in range(attempts):
        port = free_port()
        log = workdir / f"redis-{port}.log"
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--logfile", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            # its own session: a Ctrl-C meant for a test's child must not take the server down
            start_new_session=True, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and proc.poll() is None:
            if answers(url):
                return proc, url
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        last = lines[-1] if lines else f"exit code {proc.returncode}"
    raise RuntimeError(f"redis-server did not start on a free port ({last})")
