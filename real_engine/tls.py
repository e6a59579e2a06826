"""TLS for the loopback upstreams: a self-signed certificate made at start-up.

In production the gateway talks to its upstreams over TLS, so every new connection
pays a handshake (key exchange and certificate checks, both CPU).  The real engine
reproduces that cost on loopback with a throw-away certificate for ``127.0.0.1`` and
``localhost`` generated with ``cryptography`` when a process starts.

The emulators (servers) and the gateway (client) run in different processes, so they
do not share a certificate.  ``client_context()`` therefore verifies nothing by default
(the handshake still does the key exchange and the server still signs it); pass the
server's PEM as ``cafile``/``cadata`` to verify for real.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelfSignedCert:
    cert_pem: bytes
    key_pem: bytes


@lru_cache(maxsize=1)
def make_cert() -> SelfSignedCert:
    """One EC P-256 certificate per process (cached: generation costs milliseconds)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gwsim-loopback")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return SelfSignedCert(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def server_context(cert: SelfSignedCert | None = None) -> ssl.SSLContext:
    """A server context holding ``cert`` (this process's self-signed one by default)."""
    cert = cert or make_cert()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain only reads files: write both PEMs to a private temp file and drop it.
    fd, path = tempfile.mkstemp(prefix="gwsim-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(cert.key_pem + cert.cert_pem)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)
    return ctx


def client_context(cadata: bytes | None = None) -> ssl.SSLContext:
    """A client context: verifies against ``cadata`` when given, else verifies nothing."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cadata is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=cadata.decode("ascii"))
    return ctx


def make_self_signed() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context that trusts exactly that server's certificate)."""
    cert = make_cert()
    return server_context(cert), client_context(cert.cert_pem)
