"""A scripted DICOM acceptor over a raw socket, to drive a requestor through PS3.8 Table 9-10.

The station's requestors (the sender's C-STORE, the worklist's C-FIND) are tested against a peer
that can send any PDU at any moment: an unexpected PDU while the requestor awaits the
A-ASSOCIATE-AC (Sta5) or a DIMSE response (Sta6), an A-ABORT mid data set, an A-RELEASE-RQ of its
own (release collision, Sta7), silence (ARTIM). Each accepted connection runs `script(conn, n)`
in its own thread; what the peer received is recorded on the connection for the test to assert.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA = 0x01, 0x02, 0x03, 0x04
RELEASE_RQ, RELEASE_RP, ABORT = 0x05, 0x06, 0x07
APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLEMENTATION_CLASS_UID = b"1.2.826.0.1.3680043.10.1452.9"


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBL", kind, 0, len(body)) + body


def item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def abort_pdu(source: int = 0, reason: int = 0) -> bytes:
    return pdu(ABORT, bytes([0, 0, source, reason]))


RELEASE_RQ_PDU = pdu(RELEASE_RQ, bytes(4))
RELEASE_RP_PDU = pdu(RELEASE_RP, bytes(4))


def p_data(context_id: int, control: int, data: bytes) -> bytes:
    return pdu(P_DATA, struct.pack(">LBB", len(data) + 2, context_id, control) + data)


def encode_command(ds: Dataset) -> bytes:
    """A command set in Implicit VR Little Endian with its group length (PS3.7 6.3.1)."""
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, ds)
    raw = out.getvalue()
    return struct.pack("<HHLL", 0, 0, 4, len(raw)) + raw


def decode_command(data: bytes) -> Dataset:
    return read_dataset(io.BytesIO(data), is_implicit_VR=True, is_little_endian=True)


@dataclass
class Proposed:
    context_id: int
    abstract_syntax: str
    transfer_syntaxes: list[str]


def parse_contexts(body: bytes) -> list[Proposed]:
    """The presentation contexts of an A-ASSOCIATE-RQ body (PS3.8 9.3.2.2)."""
    found: list[Proposed] = []
    pos = 68
    while pos + 4 <= len(body):
        kind, length = body[pos], struct.unpack_from(">H", body, pos + 2)[0]
        value = body[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if kind != 0x20:
            continue
        abstract, syntaxes, sub = "", [], 4
        while sub + 4 <= len(value):
            sub_kind, sub_len = value[sub], struct.unpack_from(">H", value, sub + 2)[0]
            text = value[sub + 4 : sub + 4 + sub_len].rstrip(b"\0 ").decode("ascii")
            if sub_kind == 0x30:
                abstract = text
            elif sub_kind == 0x40:
                syntaxes.append(text)
            sub += 4 + sub_len
        found.append(Proposed(value[0], abstract, syntaxes))
    return found


def associate_ac(rq_body: bytes, contexts: list[Proposed], max_pdu: int = 16384) -> bytes:
    """Accept every proposed context with its first transfer syntax."""
    items = item(0x10, APPLICATION_CONTEXT)
    for cx in contexts:
        ts = cx.transfer_syntaxes[0].encode()
        items += item(0x21, bytes([cx.context_id, 0, 0, 0]) + item(0x40, ts))
    user = item(0x51, struct.pack(">L", max_pdu)) + item(0x52, IMPLEMENTATION_CLASS_UID)
    items += item(0x50, user)
    return pdu(ASSOCIATE_AC, rq_body[:68] + items)


@dataclass
class Message:
    """One DIMSE message as received: its command and the data set bytes (None if absent)."""

    context_id: int
    command: Dataset
    data: bytes | None


@dataclass
class RawConnection:
    sock: socket.socket
    index: int
    contexts: dict[int, Proposed] = field(default_factory=dict)
    #: Every PDU type received, in order (the test asserts on it).
    received: list[int] = field(default_factory=list)
    _buffer: bytearray = field(default_factory=bytearray)

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def read_pdu(self, timeout_s: float = 30.0) -> tuple[int, bytes] | None:
        """The next PDU, or None if the requestor closed the connection (or timed out)."""
        self.sock.settimeout(timeout_s)
        head = self._exact(6)
        if head is None:
            return None
        kind, _, length = struct.unpack(">BBL", head)
        body = self._exact(length)
        if body is None:
            return None
        self.received.append(kind)
        return kind, body

    def _exact(self, n: int) -> bytes | None:
        try:
            while len(self._buffer) < n:
                chunk = self.sock.recv(max(65536, n - len(self._buffer)))
                if not chunk:
                    return None
                self._buffer += chunk
        except OSError:
            return None
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def accept(self) -> bool:
        """Read the A-ASSOCIATE-RQ and accept it; False if something else came."""
        first = self.read_pdu()
        if first is None or first[0] != ASSOCIATE_RQ:
            return False
        proposed = parse_contexts(first[1])
        self.contexts = {cx.context_id: cx for cx in proposed}
        self.send(associate_ac(first[1], proposed))
        return True

    def read_message(self, timeout_s: float = 30.0) -> Message | tuple[int, bytes] | None:
        """The next whole DIMSE message; a PDU other than P-DATA is returned as it is."""
        command, data = bytearray(), bytearray()
        parsed: Dataset | None = None
        context_id = 0
        while True:
            got = self.read_pdu(timeout_s)
            if got is None or got[0] != P_DATA:
                return got
            body, pos = got[1], 0
            while pos + 6 <= len(body):
                length = struct.unpack_from(">L", body, pos)[0]
                context_id, control = body[pos + 4], body[pos + 5]
                fragment = body[pos + 6 : pos + 4 + length]
                pos += 4 + length
                if control & 0x01:
                    command += fragment
                    if control & 0x02:
                        parsed = decode_command(bytes(command))
                        if int(parsed.CommandDataSetType) == 0x0101:
                            return Message(context_id, parsed, None)
                else:
                    data += fragment
                    if control & 0x02 and parsed is not None:
                        return Message(context_id, parsed, bytes(data))

    def respond(
        self, message: Message, field_: int, status: int, data: bytes | None = None
    ) -> None:
        """A response to `message` (PS3.7 9.3): same class, instance and Message ID."""
        rsp = Dataset()
        rsp.AffectedSOPClassUID = message.command.AffectedSOPClassUID
        rsp.CommandField = field_
        rsp.MessageIDBeingRespondedTo = message.command.MessageID
        rsp.CommandDataSetType = 0x0101 if data is None else 0x0000
        rsp.Status = status
        if "AffectedSOPInstanceUID" in message.command:
            rsp.AffectedSOPInstanceUID = message.command.AffectedSOPInstanceUID
        out = p_data(message.context_id, 0x03, encode_command(rsp))
        if data is not None:
            out += p_data(message.context_id, 0x02, data)
        self.send(out)

    def closed_by_peer(self, timeout_s: float = 30.0) -> bool:
        """Drain until the requestor closes; True if it did within the timeout."""
        self.sock.settimeout(timeout_s)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self._buffer += chunk
        except OSError:
            return False


Script = Callable[[RawConnection], None]


class RawAcceptor:
    """Listens on 127.0.0.1; connection n (from 0) runs `scripts[min(n, last)]`."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = scripts
        self.connections: list[RawConnection] = []
        self.errors: list[BaseException] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._done = threading.Event()
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RawAcceptor:
        self._accepting.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.sock.close()
        for thread in self._threads:
            thread.join(10)

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._done.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn = RawConnection(sock, len(self.connections))
            self.connections.append(conn)
            script = self.scripts[min(conn.index, len(self.scripts) - 1)]
            thread = threading.Thread(target=self._run, args=(script, conn), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, script: Script, conn: RawConnection) -> None:
        try:
            script(conn)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                conn.sock.close()

    def finished(self, count: int, timeout_s: float = 60.0) -> bool:
        """True once `count` connections were accepted and their scripts ended."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self._threads) >= count and not any(t.is_alive() for t in self._threads):
                return True
            time.sleep(0.05)
        return False
