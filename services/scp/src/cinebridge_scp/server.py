"""The DICOM listener: a threaded TCP server with a gate in front of our own acceptor.

Each TCP connection gets one thread. Before any association state exists, the gate waits
(blocking, no CPU) for the first PDU header, refuses anything that is not an A-ASSOCIATE-RQ of
sane size and anyone outside the address allow-list, and only then runs the association
(acceptor.py), which bounds every further PDU by length and by time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections.abc import Sequence

from cinebridge_common.logging import kv
from cinebridge_dicom import pdu, tls

from . import metrics
from .acceptor import AcceptorConfig, Association

log = logging.getLogger(__name__)

#: PS3.8 9.3.3: an A-ASSOCIATE-RQ with 128 contexts of 45 syntaxes is ~160 KB; allow 1 MiB.
MAX_ASSOCIATE_RQ = 1 << 20


def parse_networks(
    entries: Sequence[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


class GatedRequestHandler(socketserver.BaseRequestHandler):
    """Admits a connection to the acceptor only once it has sent a plausible A-ASSOCIATE-RQ."""

    server: ScpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        server = self.server
        if not server.enter_gate():
            metrics.ASSOCIATIONS_REJECTED.labels("too_many_pending").inc()
            log.warning("too many pending connections, refusing", extra=kv(peer=self._peer()))
            _close(sock)
            return
        try:
            header = self._await_associate_rq(sock)
        finally:
            server.leave_gate()
        if header is None:
            _close(sock)
            return
        assoc = Association(sock, self._peer(), server.config, header, server.admit)
        server.track(assoc)
        metrics.ASSOCIATIONS_OPEN.inc()
        try:
            assoc.run()
        finally:
            metrics.ASSOCIATIONS_OPEN.dec()
            server.untrack(assoc)
            _close(sock)

    def _peer(self) -> str:
        return str(self.client_address[0])

    def _await_associate_rq(self, sock: socket.socket) -> bytes | None:
        limits = self.server.config.limits
        deadline = time.monotonic() + limits.acse_timeout_s
        try:
            tls.handshake(sock, limits.acse_timeout_s)
            header = _recv_until(sock, 6, deadline)
        except (OSError, ValueError) as exc:
            log.info(
                "connection dropped before association",
                extra=kv(peer=self._peer(), error=type(exc).__name__),
            )
            return None
        if len(header) < 6:
            log.info("connection closed before association", extra=kv(peer=self._peer()))
            return None
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type != 0x01 or length > MAX_ASSOCIATE_RQ or length < 68:
            log.warning(
                "not an A-ASSOCIATE-RQ, aborting",
                extra=kv(peer=self._peer(), pdu_type=pdu_type, length=length),
            )
            with contextlib.suppress(OSError):
                sock.sendall(pdu.a_abort(1 if pdu_type > 7 else 2, source=2))
            return None
        if not self.server.address_allowed(self._peer()):
            metrics.ASSOCIATIONS_REJECTED.labels("address_not_allowed").inc()
            log.warning(
                "association rejected: source address not in allow-list",
                extra=kv(peer=self._peer()),
            )
            with contextlib.suppress(OSError):
                _recv_until(sock, length, deadline)
                sock.sendall(pdu.associate_rj(1, 1, 1))  # permanent, service-user, no reason
            return None
        return header


def _recv_until(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("ARTIM expired")
        if not isinstance(sock, ssl.SSLSocket) or not sock.pending():
            ready, _, _ = select.select([sock], [], [], remaining)
            if not ready:
                raise TimeoutError("ARTIM expired")
        sock.settimeout(remaining)
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class ScpServer(socketserver.ThreadingTCPServer):
    """One listening socket: a thread per connection, TCP_NODELAY, deferred TLS handshake."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        config: AcceptorConfig,
        allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        self.allowed_networks = allowed_networks
        self.ssl_context = ssl_context
        self.reuse_port = reuse_port
        self._pending = 0
        self._lock = threading.Lock()
        self._active: set[Association] = set()
        self._admitted = 0
        super().__init__(address, GatedRequestHandler)

    def server_bind(self) -> None:
        if self.reuse_port:  # worker processes share the port (workers.py)
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = self.socket.accept()
        # Nagle + delayed ACK costs ~40 ms per small C-STORE-RSP (docs/peers.md, "Nagle").
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(self.config.limits.network_timeout_s)
        if self.ssl_context is not None:
            # The handshake runs in the connection's own thread (gate), not in the accept loop.
            client = tls.accept(self.ssl_context, client)
        return client, address

    def handle_error(self, request: object, client_address: object) -> None:
        log.exception("association thread failed", extra=kv(peer=str(client_address)))

    def enter_gate(self) -> bool:
        with self._lock:
            if self._pending >= self.config.limits.max_pending:
                return False
            self._pending += 1
            return True

    def leave_gate(self) -> None:
        with self._lock:
            self._pending -= 1

    def track(self, assoc: Association) -> None:
        with self._lock:
            self._active.add(assoc)

    def untrack(self, assoc: Association) -> None:
        with self._lock:
            self._active.discard(assoc)
            if assoc.admitted:
                self._admitted -= 1

    def admit(self) -> bool:
        """Called once per association about to be accepted: False when at the limit."""
        with self._lock:
            if self._admitted >= self.config.limits.max_associations:
                return False
            self._admitted += 1
            return True

    @property
    def pending_connections(self) -> int:
        return self._pending

    @property
    def active_associations(self) -> int:
        with self._lock:
            return sum(1 for a in self._active if a.admitted)

    def close_all(self) -> None:
        with self._lock:
            active = list(self._active)
        for assoc in active:
            assoc.close()

    def address_allowed(self, host: str) -> bool:
        nets = self.allowed_networks
        if not nets:
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in nets)
