"""The DICOM listener: pynetdicom's threaded server with a gate in front and bounded PDUs.

pynetdicom gives each TCP connection two polling threads straight away, trusts the PDU length a
peer announces (reliability-notes §0.2: `recv(pdu_length)` up to 4 GiB) and leaves Nagle on.
So before pynetdicom sees a connection, the gate here waits (blocking, no CPU) for the first PDU
header, refuses anything that is not an A-ASSOCIATE-RQ of sane size and anyone outside the
address allow-list, and only then creates the association. Each association's socket then
aborts on a PDU longer than the negotiated maximum (PS3.8 D.1: a protocol error) and drops a
peer that drips one PDU slower than `pdu_timeout_s`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cinebridge_common.logging import kv
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.transport import (
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from .reactor import TICK_S, FastAssociation, WakingQueue
from .receive import ReceiveConfig

log = logging.getLogger(__name__)

#: PS3.8 9.3.3: an A-ASSOCIATE-RQ with 128 contexts of 45 syntaxes is ~160 KB; allow 1 MiB.
MAX_ASSOCIATE_RQ = 1 << 20
#: Other non-data PDUs (release, abort) are 4 bytes long.
MAX_CONTROL_PDU = 1 << 16
P_DATA_TF = 0x04


def a_abort(reason: int) -> bytes:
    """A-ABORT PDU from the service provider (PS3.8 9.3.8): source 2, `reason`."""
    return struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 2, reason)


def a_associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    return struct.pack(">BBLBBBB", 0x03, 0, 4, 0, result, source, reason)


@dataclass(frozen=True)
class Limits:
    max_pdu: int
    acse_timeout_s: float
    network_timeout_s: float
    pdu_timeout_s: float
    max_pending: int
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


def parse_networks(
    entries: Sequence[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


class GuardedSocket(AssociationSocket):
    """AssociationSocket that bounds every PDU by length and by time, and reads fast."""

    def __init__(
        self, assoc: Association, client_socket: socket.socket, limits: Limits, prefix: bytes
    ) -> None:
        super().__init__(assoc, client_socket=client_socket)
        self._limits = limits
        self._prefix = bytearray(prefix)
        self._expected_body: int | None = None
        self._deadline = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def wake(self) -> None:
        """Interrupt a blocked `ready` (something was queued for sending by another thread)."""
        if threading.current_thread() is self.assoc.dul:
            return  # the DUL itself queued it (inline C-STORE response): it is not in select()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    @property
    def ready(self) -> bool:
        """Block (no CPU) until data arrives, a wake-up, or TICK_S (see reactor.py)."""
        if self._prefix:
            return True
        sock = self.socket
        if sock is None or not self._is_connected:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        # Only block when the DUL has nothing else to do: no queued event or primitive, and not
        # Sta13 (awaiting transport close), where upstream polls once and closes.
        dul = self.assoc.dul
        busy = (
            not dul.event_queue.empty()
            or not dul.to_provider_queue.empty()
            or dul.state_machine.current_state == "Sta13"
        )
        try:
            readable, _, _ = select.select([sock, self._wake_r], [], [], 0 if busy else TICK_S)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")
            return False
        if self._wake_r in readable:
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)
        return sock in readable

    def close(self) -> None:
        super().close()
        for end in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                end.close()

    def recv(self, nr_bytes: int) -> bytearray:
        """pynetdicom reads a 6-byte PDU header, then the body it announced; bound both."""
        if self._expected_body is not None and nr_bytes == self._expected_body:
            self._expected_body = None
            return self._read_exactly(nr_bytes)  # same deadline as its header
        self._expected_body = None
        if nr_bytes > 6:  # not the body we checked: never allocate what a peer announced
            self._abort_now(reason=6)
            return bytearray()
        self._deadline = time.monotonic() + self._limits.pdu_timeout_s
        data = self._read_exactly(nr_bytes)
        if len(data) == 6:
            pdu_type, _, length = struct.unpack(">BBL", data)
            limit = {P_DATA_TF: self._limits.max_pdu, 0x01: MAX_ASSOCIATE_RQ}.get(
                pdu_type, MAX_CONTROL_PDU
            )
            if length > limit:
                log.warning(
                    "pdu too long, aborting",
                    extra=kv(pdu_type=pdu_type, length=length, limit=limit),
                )
                self._abort_now(reason=6)  # invalid-PDU-parameter value
                return bytearray()
            self._expected_body = length
        return data

    def _read_exactly(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = min(len(self._prefix), n)
        view[:got] = self._prefix[:got]
        del self._prefix[:got]
        sock = self.socket
        assert sock is not None
        try:
            while got < n:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("pdu too slow, dropping peer", extra=kv(received=got, wanted=n))
                    self._abort_now(reason=0)
                    return buf[:got]
                sock.settimeout(min(remaining, self._limits.network_timeout_s))
                count = sock.recv_into(view[got:], n - got)
                if count == 0:
                    break
                got += count
        except (TimeoutError, OSError):
            pass
        return buf[:got] if got < n else buf

    def _abort_now(self, reason: int) -> None:
        sock = self.socket
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.settimeout(1.0)
            sock.sendall(a_abort(reason))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class GatedRequestHandler(RequestHandler):
    """Admits a connection to pynetdicom only once it has sent a plausible A-ASSOCIATE-RQ."""

    server: ScpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        server = self.server
        if not server.enter_gate():
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
        assoc = self._create_guarded_association(header)
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()

    def _peer(self) -> str:
        return str(self.client_address[0])

    def _await_associate_rq(self, sock: socket.socket) -> bytes | None:
        limits = self.server.limits
        deadline = time.monotonic() + limits.acse_timeout_s
        try:
            if isinstance(sock, ssl.SSLSocket):
                sock.settimeout(limits.acse_timeout_s)
                sock.do_handshake()
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
                sock.sendall(a_abort(1 if pdu_type > 7 else 2))
            return None
        if not self.server.address_allowed(self._peer()):
            log.warning(
                "association rejected: source address not in allow-list",
                extra=kv(peer=self._peer()),
            )
            with contextlib.suppress(OSError):
                _recv_until(sock, length, deadline)
                sock.sendall(a_associate_rj(1, 1, 1))  # permanent, service-user, no reason
            return None
        return header

    def _create_guarded_association(self, header: bytes) -> Association:
        assoc = FastAssociation(self.ae, "acceptor")
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now(UTC):%Y%m%d%H%M%S}"
        guarded = GuardedSocket(assoc, self.request, self.server.limits, header)
        assoc.set_socket(guarded)
        assoc.dul.to_provider_queue = WakingQueue(guarded.wake)
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        # Shared, read-only: pynetdicom deep-copies them per association, which for 237 contexts
        # x 45 syntaxes costs milliseconds per association.
        assoc.acceptor.supported_contexts = self.server.contexts
        assoc.requestor.address_info = self.remote
        for event, handlers in self.server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in handlers:  # type: ignore[misc]
                    assoc.bind(event, handler, args)
        return assoc


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


class ScpServer(ThreadedAssociationServer):
    """ThreadedAssociationServer with the gate, TCP_NODELAY, deferred TLS handshake."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        ae: Any,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[Any],
        limits: Limits,
        receive_config: ReceiveConfig,
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: list[Any] | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.limits = limits
        self.receive_config = receive_config
        self.reuse_port = reuse_port
        self._pending = 0
        self._pending_lock = threading.Lock()
        super().__init__(
            ae,
            address,
            ae_title,
            contexts,
            ssl_context,
            evt_handlers,
            request_handler=GatedRequestHandler,
        )

    def server_bind(self) -> None:
        if self.reuse_port:  # worker processes share the port (workers.py)
            assert self.socket is not None
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        # Nagle + delayed ACK costs ~40 ms per small C-STORE-RSP (peer-notes "Nagle").
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(self.limits.network_timeout_s)
        if self.ssl_context is not None:
            # The handshake runs in the connection's own thread (gate), not in the accept loop.
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def enter_gate(self) -> bool:
        with self._pending_lock:
            if self._pending >= self.limits.max_pending:
                return False
            self._pending += 1
            return True

    def leave_gate(self) -> None:
        with self._pending_lock:
            self._pending -= 1

    @property
    def pending_connections(self) -> int:
        return self._pending

    def address_allowed(self, host: str) -> bool:
        nets = self.limits.allowed_networks
        if not nets:
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in nets)
