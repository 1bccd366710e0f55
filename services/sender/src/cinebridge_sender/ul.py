"""A lean DICOM Upper Layer client for C-STORE only (PS3.8 9.3, PS3.7 9.1.1 / 9.3.1).

Why not pynetdicom for the data phase: its reactor handles every P-DATA PDU in Python through
queues and a state machine, about 5 ms per small instance here (bench/send.py), five times
DCMTK. The store path needs little of the standard: associate, send the command set and the
file's data set bytes as they are in PDU-sized pieces, read the response, release or abort.
Everything else (C-ECHO, the SCPs in tests) stays on pynetdicom. Blocking; one thread per
association.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cinebridge_dicom import dimse, pdu
from cinebridge_dicom.pdu import APPLICATION_CONTEXT

__all__ = [
    "APPLICATION_CONTEXT",
    "Context",
    "StoreAssociation",
    "UlError",
    "associate_rq",
    "c_store_rq",
    "parse_associate_ac",
    "response_status",
]

#: Largest P-DATA we accept, announced in A-ASSOCIATE-RQ (PS3.8 D.1); responses are tiny.
OUR_MAX_PDU = 65536
#: Piece size when the peer announces no limit (max length 0, PS3.8 D.1.1).
UNLIMITED_PIECE = 1 << 20


class UlError(Exception):
    """The association failed or broke; `transient` says whether trying later may help."""

    def __init__(self, reason: str, *, transient: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True)
class Context:
    id: int
    abstract_syntax: str
    transfer_syntax: str


def associate_rq(
    called: str,
    calling: str,
    contexts: Iterable[tuple[int, str, list[str]]],
    impl_uid: str,
    impl_version: str,
) -> bytes:
    """A-ASSOCIATE-RQ (PS3.8 9.3.2) with the given (id, abstract, transfer syntaxes)."""
    return pdu.associate_rq(called, calling, contexts, OUR_MAX_PDU, impl_uid, impl_version)


def parse_associate_ac(body: bytes, proposed: dict[int, str]) -> tuple[dict[int, Context], int]:
    """Accepted contexts by id and the peer's maximum PDU length (0: unlimited)."""
    try:
        ac = pdu.parse_associate_ac(body)
    except pdu.ProtocolError as exc:
        raise UlError(f"malformed A-ASSOCIATE-AC: {exc}") from exc
    accepted = {
        cid: Context(cid, proposed[cid], syntax) for cid in proposed if (syntax := ac.accepted(cid))
    }
    return accepted, ac.max_pdu


def c_store_rq(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    """C-STORE-RQ command set, Implicit VR Little Endian (PS3.7 9.3.1.1, E.1)."""
    return dimse.command_set(
        [
            (0x0002, pdu.uid_value(sop_class)),
            (0x0100, dimse.us(dimse.C_STORE_RQ)),
            (0x0110, dimse.us(message_id)),
            (0x0700, dimse.us(0x0000)),  # priority medium
            (0x0800, dimse.us(0x0000)),  # a data set follows
            (0x1000, pdu.uid_value(sop_instance)),
        ]
    )


def response_status(command: bytes) -> tuple[int, int]:
    """(Command Field, Status) from a response command set (Implicit VR LE); -1 if absent."""
    try:
        elements = dimse.parse_command(command)
    except pdu.ProtocolError:
        return -1, -1
    field = dimse.command_us(elements, 0x0100)
    status = dimse.command_us(elements, 0x0900)
    return (-1 if field is None else field), (-1 if status is None else status)


class StoreAssociation:
    """One association as requestor: `open`, `store` each instance, then `release`."""

    def __init__(
        self,
        sock: socket.socket,
        contexts: dict[int, Context],
        peer_max_pdu: int,
        network_s: float,
        dimse_s: float,
    ) -> None:
        self.sock = sock
        self.contexts = contexts
        self.piece = (peer_max_pdu - 6) if peer_max_pdu > 6 else UNLIMITED_PIECE
        self.network_s = network_s
        self.dimse_s = dimse_s
        self.message_id = 0
        self.is_established = True
        self._buffer = bytearray()
        self._gather = not isinstance(sock, ssl.SSLSocket)
        #: Read the file in blocks of whole PDUs: few reads and few sends per instance.
        self._block = self.piece * max(1, _BLOCK // self.piece)

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        called: str,
        calling: str,
        contexts: list[tuple[str, list[str]]],
        *,
        connect_s: float,
        acse_s: float,
        network_s: float,
        dimse_s: float,
        tls: ssl.SSLContext | None,
        impl_uid: str,
        impl_version: str,
    ) -> StoreAssociation:
        try:
            sock = socket.create_connection((host, port), timeout=connect_s)
        except OSError as exc:
            raise UlError(f"cannot connect to {called}@{host}:{port} ({exc})") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # docs/peers.md, "Nagle"
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
            numbered = [(2 * n + 1, a, ts) for n, (a, ts) in enumerate(contexts)]
            sock.settimeout(acse_s)
            sock.sendall(associate_rq(called, calling, numbered, impl_uid, impl_version))
            kind, body = _read_pdu(sock, bytearray())
        except (OSError, UlError) as exc:
            sock.close()
            if isinstance(exc, UlError):
                raise
            raise UlError(f"association with {called}@{host}:{port} failed: {exc}") from exc
        where = f"{called}@{host}:{port}"
        if kind == pdu.ASSOCIATE_RJ:
            sock.close()
            permanent, why = pdu.rejection(body)
            kind_text = "permanent" if permanent else "transient"
            raise UlError(
                f"association rejected ({kind_text}) by {where}: {why}", transient=not permanent
            )
        if kind != pdu.ASSOCIATE_AC:
            sock.close()
            raise UlError(f"{where} answered the association request with PDU type {kind:#x}")
        accepted, max_pdu = parse_associate_ac(body, {cid: a for cid, a, _ in numbered})
        if not accepted:
            with contextlib.suppress(OSError):
                sock.sendall(pdu.a_abort())
            sock.close()
            raise UlError(
                f"{where} accepted none of the proposed presentation contexts", transient=False
            )
        return cls(sock, accepted, max_pdu, network_s, dimse_s)

    def context_for(self, sop_class: str, transfer_syntax: str) -> Context | None:
        for cx in self.contexts.values():
            if cx.abstract_syntax == sop_class and cx.transfer_syntax == transfer_syntax:
                return cx
        return None

    def store_file(
        self, context: Context, sop_class: str, sop_instance: str, path: Path, offset: int
    ) -> int | None:
        """C-STORE the data set of a Part 10 file (from `offset`) byte for byte; the status,
        or None when no response came (the association is then broken)."""
        with open(path, "rb") as fh:
            fh.seek(offset)
            return self._store(context, sop_class, sop_instance, fh)

    def store_bytes(
        self, context: Context, sop_class: str, sop_instance: str, data: bytes
    ) -> int | None:
        import io

        return self._store(context, sop_class, sop_instance, io.BytesIO(data))

    def _store(
        self, context: Context, sop_class: str, sop_instance: str, source: BinaryIO
    ) -> int | None:
        self.message_id = (self.message_id % 0xFFFF) + 1
        command = c_store_rq(self.message_id, sop_class, sop_instance)
        try:
            self.sock.settimeout(self.network_s)
            # Command PDV in its own PDU (Table 26: command and data not packed together), but
            # in the same system call as the first data PDUs.
            pending: list[bytes | memoryview] = [*_pdv(context.id, 0x03, command)]
            block = source.read(self._block)
            while block:
                following = source.read(self._block)
                view = memoryview(block)
                for start in range(0, len(view), self.piece):
                    piece = view[start : start + self.piece]
                    last = not following and start + self.piece >= len(view)
                    pending += _pdv(context.id, 0x02 if last else 0x00, piece)
                self._send(pending)
                pending = []
                block = following
            if pending:
                self._send(pending)
            return self._read_response()
        except (OSError, UlError):
            self.abort()
            return None

    def _send(self, buffers: list[bytes | memoryview]) -> None:
        """Send every buffer, gathering them into few system calls (sendmsg may send part)."""
        if not self._gather:  # TLS sockets cannot gather; copying is cheap next to encryption
            self.sock.sendall(b"".join(buffers))
            return
        views = [memoryview(b) for b in buffers]
        while views:
            sent = self.sock.sendmsg(views[:_IOV_MAX])
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if sent:
                views[0] = views[0][sent:]

    def _read_response(self) -> int:
        self.sock.settimeout(self.dimse_s or None)
        command = bytearray()
        while True:
            kind, body = _read_pdu(self.sock, self._buffer)
            if kind != 0x04:
                raise UlError(f"peer sent PDU type {kind:#x} instead of a C-STORE-RSP")
            pos = 0
            while pos + 6 <= len(body):
                length = struct.unpack_from(">I", body, pos)[0]
                control = body[pos + 5]
                command += body[pos + 6 : pos + 4 + length]
                pos += 4 + length
                if control & 0x01 and control & 0x02:  # last fragment of a command
                    field, status = response_status(bytes(command))
                    if field != 0x8001 or status < 0:
                        raise UlError("malformed C-STORE-RSP")
                    return status

    def release(self) -> None:
        """A-RELEASE (PS3.8 7.2); a peer that does not answer promptly is simply closed."""
        if not self.is_established:
            return
        self.is_established = False
        with contextlib.suppress(OSError, UlError):
            self.sock.settimeout(2.0)
            self.sock.sendall(pdu.RELEASE_RQ_PDU)
            _read_pdu(self.sock, self._buffer)
        self.sock.close()

    def abort(self) -> None:
        if not self.is_established:
            return
        self.is_established = False
        with contextlib.suppress(OSError):
            self.sock.settimeout(1.0)
            self.sock.sendall(pdu.a_abort())
        self.sock.close()


#: Bytes read from a file at once, and the most buffers one sendmsg takes (Linux UIO_MAXIOV 1024).
_BLOCK = 1 << 20
_IOV_MAX = 512


def _pdv(context_id: int, control: int, data: bytes | memoryview) -> list[bytes | memoryview]:
    """A P-DATA-TF PDU holding one PDV (PS3.8 9.3.5): its header, then the data as it is."""
    return [pdu.p_data_header(context_id, control, len(data)), data]


def _read_exact(sock: socket.socket, buffer: bytearray, n: int) -> bytes:
    while len(buffer) < n:
        chunk = sock.recv(max(65536, n - len(buffer)))
        if not chunk:
            raise UlError("connection closed by the peer")
        buffer += chunk
    out = bytes(buffer[:n])
    del buffer[:n]
    return out


def _read_pdu(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes]:
    kind, _, length = struct.unpack(">BBI", _read_exact(sock, buffer, 6))
    if length > OUR_MAX_PDU + 1024 and kind != 0x02:
        raise UlError(f"PDU of {length} bytes exceeds what we accept")
    if length > 1 << 20:
        raise UlError(f"PDU of {length} bytes refused")
    return kind, _read_exact(sock, buffer, length)
