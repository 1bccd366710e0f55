"""An application entity in the shape of pynetdicom's `AE`: contexts, `associate`, `start_server`.

    ae = ApplicationEntity("CINEBRIDGE", IMPLEMENTATION_CLASS_UID, "CINEBRIDGE_01")
    ae.add_supported_context(VERIFICATION, [IMPLICIT_VR_LE])
    server = ae.start_server(("127.0.0.1", 11112), [(Evt.C_ECHO, handle_echo)])
    ...
    server.shutdown()

    ae.add_requested_context(VERIFICATION, [IMPLICIT_VR_LE])
    assoc = ae.associate("127.0.0.1", 11112, "PACS")
    assoc.send_c_echo()
    assoc.release()

`start_server` never blocks (each association runs in its own thread, as the SCP's listener
does); `associate` returns an established `requestor.Association` or raises.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import struct
import threading
from collections.abc import Mapping, Sequence

from . import pdu, requestor, tls
from .acceptor import MAX_ASSOCIATE_RQ, AcceptorAssociation, AcceptorPolicy
from .events import Binding, Evt, Handler, binding_table


class ApplicationEntity:
    def __init__(
        self,
        ae_title: str,
        implementation_class_uid: str,
        implementation_version_name: str,
        *,
        max_pdu: int = requestor.DEFAULT_MAX_PDU,
        acse_timeout_s: float = 30.0,
        network_timeout_s: float = 60.0,
        dimse_timeout_s: float = 60.0,
    ) -> None:
        self.ae_title = ae_title
        self.implementation_class_uid = implementation_class_uid
        self.implementation_version_name = implementation_version_name
        self.max_pdu = max_pdu
        self.acse_timeout_s = acse_timeout_s
        self.network_timeout_s = network_timeout_s
        self.dimse_timeout_s = dimse_timeout_s
        self.requested_contexts: list[tuple[str, list[str]]] = []
        self.supported_contexts: dict[str, frozenset[str]] = {}

    def add_requested_context(self, abstract_syntax: str, transfer_syntaxes: Sequence[str]) -> None:
        self.requested_contexts.append((abstract_syntax, list(transfer_syntaxes)))

    def add_supported_context(self, abstract_syntax: str, transfer_syntaxes: Sequence[str]) -> None:
        known = self.supported_contexts.get(abstract_syntax, frozenset())
        self.supported_contexts[abstract_syntax] = known | frozenset(transfer_syntaxes)

    # ------------------------------------------------------------------ requestor

    def associate(
        self,
        host: str,
        port: int,
        ae_title: str,
        roles: Mapping[str, tuple[int, int]] | None = None,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> requestor.Association:
        """An established association (DICOM TLS when `tls`, see `tls.client_context`); `roles`
        proposes SCU/SCP role selection per abstract syntax (PS3.7 D.3.3.4)."""
        settings = requestor.Settings(
            calling_ae=self.ae_title,
            called_ae=ae_title,
            implementation_class_uid=self.implementation_class_uid,
            implementation_version_name=self.implementation_version_name,
            max_pdu=self.max_pdu,
            connect_s=self.acse_timeout_s,
            acse_s=self.acse_timeout_s,
            network_s=self.network_timeout_s,
            dimse_s=self.dimse_timeout_s,
            tls=tls,
        )
        return requestor.Association.request(host, port, settings, self.requested_contexts, roles)

    # ------------------------------------------------------------------ acceptor

    def policy(self) -> AcceptorPolicy:
        return AcceptorPolicy(
            ae_title=self.ae_title,
            supported=dict(self.supported_contexts),
            max_pdu=self.max_pdu,
            implementation_class_uid=self.implementation_class_uid,
            implementation_version_name=self.implementation_version_name,
            acse_timeout_s=self.acse_timeout_s,
            network_timeout_s=self.network_timeout_s,
            pdu_timeout_s=self.network_timeout_s,
            dimse_timeout_s=self.dimse_timeout_s,
        )

    def start_server(
        self,
        address: tuple[str, int],
        evt_handlers: Sequence[Binding],
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Server:
        """Listen on `address` (DICOM TLS when `ssl_context`, see `tls.server_context`)."""
        server = Server(address, self.policy(), binding_table(evt_handlers), ssl_context)
        thread = threading.Thread(target=server.serve_forever, name="dicom-server", daemon=True)
        thread.start()
        return server


class _Handler(socketserver.BaseRequestHandler):
    server: Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # docs/peers.md, "Nagle"
        policy = self.server.policy
        header = b""
        sock.settimeout(policy.acse_timeout_s)
        with contextlib.suppress(OSError):  # Sta2: closed, or ARTIM expired (AA-5, AA-2)
            tls.handshake(sock, policy.acse_timeout_s)  # a refused handshake: closed
            while len(header) < 6:
                chunk = sock.recv(6 - len(header))  # exactly the header: the rest is the RQ's
                if not chunk:
                    break
                header += chunk
        if len(header) < 6:
            return
        kind, _, length = struct.unpack(">BBL", header)
        if kind != pdu.ASSOCIATE_RQ or length > MAX_ASSOCIATE_RQ:
            with contextlib.suppress(OSError):
                sock.sendall(pdu.a_abort(pdu.UNEXPECTED_PDU, source=2))
            return
        assoc = AcceptorAssociation(
            sock, str(self.client_address[0]), policy, self.server.handlers, header
        )
        with self.server.lock:
            self.server.active.add(assoc)
        try:
            assoc.run()
        finally:
            with self.server.lock:
                self.server.active.discard(assoc)


class Server(socketserver.ThreadingTCPServer):
    """A listening AE: one thread per association; `shutdown()` stops it and cuts them."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        policy: AcceptorPolicy,
        handlers: Mapping[Evt, Handler],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.ssl_context = ssl_context
        self.handlers = handlers
        self.lock = threading.Lock()
        self.active: set[AcceptorAssociation] = set()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = self.socket.accept()
        if self.ssl_context is not None:
            client = tls.accept(self.ssl_context, client)
        return client, address

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def shutdown(self) -> None:
        super().shutdown()
        with self.lock:
            active = list(self.active)
        for assoc in active:
            assoc.close()
        self.server_close()
