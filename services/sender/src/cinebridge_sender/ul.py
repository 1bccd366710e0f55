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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
#: Largest P-DATA we accept, announced in A-ASSOCIATE-RQ (PS3.8 D.1); responses are tiny.
OUR_MAX_PDU = 65536
#: Piece size when the peer announces no limit (max length 0, PS3.8 D.1.1).
UNLIMITED_PIECE = 1 << 20
_REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


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


def _uid(value: str) -> bytes:
    return value.encode("ascii")


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii")[:16].ljust(16, b" ")


def associate_rq(
    called: str,
    calling: str,
    contexts: Iterable[tuple[int, str, list[str]]],
    impl_uid: str,
    impl_version: str,
) -> bytes:
    """A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) with the given (id, abstract, transfer syntaxes)."""
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32)
    body += _item(0x10, _uid(APPLICATION_CONTEXT))
    for cid, abstract, syntaxes in contexts:
        sub = _item(0x30, _uid(abstract)) + b"".join(_item(0x40, _uid(ts)) for ts in syntaxes)
        body += _item(0x20, struct.pack(">BBBB", cid, 0, 0, 0) + sub)
    user = _item(0x51, struct.pack(">I", OUR_MAX_PDU)) + _item(0x52, _uid(impl_uid))
    user += _item(0x55, impl_version.encode("ascii")[:16])
    body += _item(0x50, user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _items(data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(data):
        kind, _, length = struct.unpack_from(">BBH", data, pos)
        yield kind, data[pos + 4 : pos + 4 + length]
        pos += 4 + length


def parse_associate_ac(body: bytes, proposed: dict[int, str]) -> tuple[dict[int, Context], int]:
    """Accepted contexts by id and the peer's maximum PDU length (0: unlimited)."""
    accepted: dict[int, Context] = {}
    max_pdu = 0
    for kind, value in _items(body[68:]):
        if kind == 0x21 and value[2] == 0:  # result 0: acceptance (PS3.8 9.3.3.2)
            cid = value[0]
            syntaxes = [v.rstrip(b"\0").decode("ascii") for k, v in _items(value[4:]) if k == 0x40]
            if cid in proposed and syntaxes:
                accepted[cid] = Context(cid, proposed[cid], syntaxes[0])
        elif kind == 0x50:
            for sub, sub_value in _items(value):
                if sub == 0x51 and len(sub_value) == 4:
                    max_pdu = struct.unpack(">I", sub_value)[0]
    return accepted, max_pdu


def _element(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


def _ui(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def c_store_rq(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    """C-STORE-RQ command set, Implicit VR Little Endian (PS3.7 9.3.1.1, E.1)."""
    rest = (
        _element(0, 0x0002, _ui(sop_class))
        + _element(0, 0x0100, struct.pack("<H", 0x0001))  # C-STORE-RQ
        + _element(0, 0x0110, struct.pack("<H", message_id))
        + _element(0, 0x0700, struct.pack("<H", 0x0000))  # priority medium
        + _element(0, 0x0800, struct.pack("<H", 0x0000))  # a data set follows
        + _element(0, 0x1000, _ui(sop_instance))
    )
    return _element(0, 0x0000, struct.pack("<I", len(rest))) + rest


def response_status(command: bytes) -> tuple[int, int]:
    """(Command Field, Status) from a response command set (Implicit VR LE)."""
    pos, field, status = 0, -1, -1
    while pos + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, pos)
        value = command[pos + 8 : pos + 8 + length]
        if group == 0 and element == 0x0100 and length == 2:
            field = struct.unpack("<H", value)[0]
        elif group == 0 and element == 0x0900 and length == 2:
            status = struct.unpack("<H", value)[0]
        pos += 8 + length
    return field, status


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
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # peer-notes "Nagle"
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
        if kind == 0x03:
            sock.close()
            result, source, reason = body[1], body[2], body[3]
            kind_text = "permanent" if result == 1 else "transient"
            why = _REJECT_REASONS.get((source, reason), f"source {source} reason {reason}")
            raise UlError(
                f"association rejected ({kind_text}) by {where}: {why}", transient=result != 1
            )
        if kind != 0x02:
            sock.close()
            raise UlError(f"{where} answered the association request with PDU type {kind:#x}")
        accepted, max_pdu = parse_associate_ac(body, {cid: a for cid, a, _ in numbered})
        if not accepted:
            with contextlib.suppress(OSError):
                sock.sendall(_abort_pdu())
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
            self.sock.sendall(struct.pack(">BBIi", 0x05, 0, 4, 0))
            _read_pdu(self.sock, self._buffer)
        self.sock.close()

    def abort(self) -> None:
        if not self.is_established:
            return
        self.is_established = False
        with contextlib.suppress(OSError):
            self.sock.settimeout(1.0)
            self.sock.sendall(_abort_pdu())
        self.sock.close()


#: Bytes read from a file at once, and the most buffers one sendmsg takes (Linux UIO_MAXIOV 1024).
_BLOCK = 1 << 20
_IOV_MAX = 512


def _pdv(context_id: int, control: int, data: bytes | memoryview) -> list[bytes | memoryview]:
    """A P-DATA-TF PDU holding one PDV (PS3.8 9.3.5): its header, then the data as it is."""
    n = len(data)
    return [struct.pack(">BBIIBB", 0x04, 0, n + 6, n + 2, context_id, control), data]


def _abort_pdu() -> bytes:
    return struct.pack(">BBIBBBB", 0x07, 0, 4, 0, 0, 0, 0)  # service-user initiated


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
