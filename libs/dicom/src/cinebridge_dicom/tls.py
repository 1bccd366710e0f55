"""DICOM TLS: the SSL contexts of the acceptor and the requestor (PS3.15 B.1, B.9).

PS3.15 B.9 (Non-Downgrading BCP 195 TLS Secure Transport Connection Profile) asks for TLS 1.2
or later with the cipher suites BCP 195 (RFC 9325, before it RFC 7525 §4.2) recommends: ephemeral
key exchange (ECDHE, DHE) and AES-GCM only, so no RSA key transport, CBC, RC4, 3DES or NULL
suite is ever negotiated. TLS 1.3 suites are all AEAD and are left to OpenSSL. DCMTK's `+tls`
uses the same profile by default (`--profile-bcp195-nd`), so it and these contexts agree.

Certificates, keys and CA bundles are PEM files. A server that is given a CA bundle for its
clients requires each client to present a certificate issued by it (mutual TLS, PS3.15 B.1
"peer authentication"); a client verifies the server against its CA bundle (or the system's)
and the host name it dialled, unless told not to.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

#: BCP 195 (RFC 9325 §4.2) TLS 1.2 cipher suites, in OpenSSL's names, strongest first.
BCP195_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
    )
)
#: PS3.15 B.9: TLS 1.0 and 1.1 are refused (RFC 8996).
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

PathLike = str | Path


def _profile(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = MINIMUM_VERSION
    context.set_ciphers(BCP195_CIPHERS)
    # No TLS compression (CRIME) and no renegotiation by the peer.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def server_context(
    certificate: PathLike,
    private_key: PathLike,
    *,
    client_ca: PathLike | None = None,
) -> ssl.SSLContext:
    """The acceptor's context: our certificate and key; with `client_ca`, a client without a
    certificate issued by one of those CAs is refused during the handshake."""
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.load_cert_chain(str(certificate), str(private_key))
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    *,
    ca_bundle: PathLike | None = None,
    certificate: PathLike | None = None,
    private_key: PathLike | None = None,
    verify_peer: bool = True,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """The requestor's context: the server's certificate checked against `ca_bundle` (the
    system's CAs when None) and, with `check_hostname`, against the host dialled; our own
    certificate (and key, unless the certificate file holds it) for servers that ask for one.
    `verify_peer=False` accepts any server certificate: encryption without authentication."""
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if verify_peer:
        if ca_bundle is not None:
            context.load_verify_locations(cafile=str(ca_bundle))
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        context.check_hostname = check_hostname
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if certificate is not None:
        context.load_cert_chain(
            str(certificate), str(private_key) if private_key is not None else None
        )
    return context


def accept(context: ssl.SSLContext, sock: socket.socket) -> ssl.SSLSocket:
    """Wrap an accepted connection without handshaking: `handshake()` runs in the
    association's own thread, bounded by ARTIM, so a silent client never holds the accept loop."""
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def handshake(sock: socket.socket, timeout_s: float) -> None:
    """The TLS handshake of an accepted connection (a no-op on a plain one); raises OSError
    (ssl.SSLError included) when the client fails it or stays silent for `timeout_s`."""
    if isinstance(sock, ssl.SSLSocket):
        previous = sock.gettimeout()
        sock.settimeout(timeout_s)
        try:
            sock.do_handshake()
        finally:
            sock.settimeout(previous)
