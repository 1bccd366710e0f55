"""A small DICOM Upper Layer client (PS3.8) for one presentation context: C-FIND and C-ECHO.

Why not pynetdicom for the SCU: its per-PDU Python machinery (DUL thread, state machine,
pydicom decoding of every command set) made a 1,000-entry worklist query three times slower
than DCMTK `findscu`; its DIMSE queue needed a private "reactor pause" to be read directly; and
it does not enforce the maximum PDU length it advertises (docs/reliability.md §1.2). This client
is blocking, single-threaded, with every read bounded by a deadline and a size:
- PDUs longer than the maximum we advertise (P-DATA, PS3.8 D.1) or 64 KiB (others) abort;
- a DIMSE command set is capped at 64 KiB and a data set at `max_dataset` bytes;
- TCP_NODELAY is set (docs/peers.md, "Nagle").
The SCP side (tests) still uses pynetdicom.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cinebridge_common.uids import make_uid
from cinebridge_dicom import dimse, pdu
from cinebridge_dicom.dimse import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_FIND_RQ,
    C_FIND_RSP,
)
from cinebridge_dicom.pdu import APPLICATION_CONTEXT

__all__ = [
    "APPLICATION_CONTEXT",
    "C_CANCEL_RQ",
    "C_ECHO_RQ",
    "C_ECHO_RSP",
    "C_FIND_RQ",
    "C_FIND_RSP",
    "Aborted",
    "Association",
    "Expired",
    "Message",
    "Rejected",
    "UpperLayerError",
    "associate",
    "associate_rq",
    "command",
    "parse_command",
]

#: Our Implementation Class UID (PS3.7 D.3.3.2): derived, stable, under 2.25 (no org root).
IMPLEMENTATION_CLASS_UID = make_uid("cinebridge", "implementation-class")
IMPLEMENTATION_VERSION = "CINEBRIDGE_01"
CONTEXT_ID = 1
_MAX_OTHER_PDU = 64 * 1024
_MAX_COMMAND = 64 * 1024
_NO_DATASET = dimse.NO_DATA_SET


class UpperLayerError(Exception):
    """The association failed or broke; the message says how (for the operator's banner)."""


class Rejected(UpperLayerError):
    pass


class Aborted(UpperLayerError):
    pass


class Expired(UpperLayerError):
    """The deadline passed while waiting for the peer."""


def associate_rq(
    calling_ae: str,
    called_ae: str,
    abstract_syntax: str,
    transfer_syntaxes: list[str],
    max_pdu: int,
) -> bytes:
    """A-ASSOCIATE-RQ (PS3.8 9.3.2) with one presentation context."""
    try:
        return pdu.associate_rq(
            called_ae,
            calling_ae,
            [(CONTEXT_ID, abstract_syntax, transfer_syntaxes)],
            max_pdu,
            IMPLEMENTATION_CLASS_UID,
            IMPLEMENTATION_VERSION,
        )
    except ValueError as exc:  # an AE title outside the PS3.5 repertoire
        raise UpperLayerError(str(exc)) from None


def command(fields: list[tuple[int, str, Any]]) -> bytes:
    """A DIMSE command set: group 0000, Implicit VR Little Endian (PS3.7 6.3.1)."""
    return dimse.command_set(
        (elem, pdu.uid_value(value) if vr == "UI" else dimse.us(value))
        for elem, vr, value in fields
    )


@functools.lru_cache(maxsize=16)
def parse_command(data: bytes) -> Mapping[int, Any]:
    """(element → value) of a command set; US/UL as int, others as stripped text.

    Read-only and cached: every pending C-FIND-RSP of a query carries the same bytes.
    """
    out: dict[int, Any] = {}
    pos = 0
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        value = data[pos : pos + length]
        pos += length
        if group != 0x0000 or len(value) != length:
            raise UpperLayerError("malformed DIMSE command set")
        if length == 2:
            out[elem] = struct.unpack("<H", value)[0]
        elif length == 4 and elem == 0x0000:
            out[elem] = struct.unpack("<I", value)[0]
        else:
            out[elem] = value.rstrip(b"\0 ").decode("ascii", "replace")
    return MappingProxyType(out)


@dataclass
class Message:
    command: Mapping[int, Any]
    dataset: bytes | None

    @property
    def field(self) -> int:
        return int(self.command.get(0x0100, -1))

    @property
    def status(self) -> int | None:
        status = self.command.get(0x0900)
        return int(status) if status is not None else None


@dataclass
class Association:
    """An established association with one accepted presentation context."""

    sock: socket.socket
    transfer_syntax: str
    peer_max_pdu: int
    max_pdu: int
    max_dataset: int
    _buffer: bytearray = field(default_factory=bytearray)
    _command: bytearray = field(default_factory=bytearray)
    _dataset: bytearray = field(default_factory=bytearray)
    _pending: Mapping[int, Any] | None = None
    open: bool = True

    # -- sending ---------------------------------------------------------------------------
    def _pdata(self, payload: bytes, is_command: bool) -> None:
        # PDV = 4-byte length + context id + control header; fragments fit the peer's maximum.
        room = (self.peer_max_pdu or 1 << 20) - 6
        chunks = [payload[i : i + room] for i in range(0, len(payload), room)] or [b""]
        for index, chunk in enumerate(chunks):
            control = (1 if is_command else 0) | (2 if index == len(chunks) - 1 else 0)
            pdv = struct.pack(">IBB", len(chunk) + 2, CONTEXT_ID, control) + chunk
            self.sock.sendall(struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv)

    def send(self, command_set: bytes, dataset: bytes | None = None) -> None:
        self._pdata(command_set, True)
        if dataset is not None:
            self._pdata(dataset, False)

    # -- receiving -------------------------------------------------------------------------
    def _fill(self, size: int, deadline: float) -> None:
        while len(self._buffer) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Expired("deadline passed while waiting for the peer")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(max(65536, size - len(self._buffer)))
            except TimeoutError:
                raise Expired("deadline passed while waiting for the peer") from None
            except OSError as exc:
                raise Aborted(f"connection lost: {exc}") from None
            if not chunk:
                raise Aborted("the peer closed the connection")
            self._buffer += chunk

    def read_pdu(self, deadline: float) -> tuple[int, bytes]:
        self._fill(6, deadline)
        kind, _, length = struct.unpack_from(">BBI", self._buffer)
        limit = self.max_pdu + 6 if kind == 0x04 else _MAX_OTHER_PDU
        if length > limit:
            self.abort()
            raise Aborted(f"the peer sent a {length}-byte PDU (limit {limit}): aborted")
        self._fill(6 + length, deadline)
        body = bytes(self._buffer[6 : 6 + length])
        del self._buffer[: 6 + length]
        return kind, body

    def receive(self, deadline: float) -> Message:
        """The next complete DIMSE message (command and, if announced, its data set)."""
        while True:
            kind, body = self.read_pdu(deadline)
            if kind == 0x07:
                self.open = False
                raise Aborted("the peer aborted the association (A-ABORT)")
            if kind == 0x05:
                self.abort()
                raise Aborted("the peer asked to release in the middle of the exchange")
            if kind != 0x04:
                self.abort()
                raise Aborted(f"unexpected PDU type 0x{kind:02X}: aborted")
            message = self._pdvs(body)
            if message is not None:
                return message

    def _pdvs(self, body: bytes) -> Message | None:
        pos, done = 0, None
        while pos + 6 <= len(body):
            length, _, control = struct.unpack_from(">IBB", body, pos)
            fragment = body[pos + 6 : pos + 4 + length]
            pos += 4 + length
            if control & 1:
                self._command += fragment
                if len(self._command) > _MAX_COMMAND:
                    self.abort()
                    raise Aborted("a DIMSE command set over 64 KiB: aborted")
                if control & 2:
                    self._pending = parse_command(bytes(self._command))
                    self._command.clear()
                    if self._pending.get(0x0800, _NO_DATASET) == _NO_DATASET:
                        done, self._pending = Message(self._pending, None), None
            else:
                self._dataset += fragment
                if len(self._dataset) > self.max_dataset:
                    self.abort()
                    raise Aborted(f"a response data set over {self.max_dataset} bytes: aborted")
                if control & 2 and self._pending is not None:
                    done = Message(self._pending, bytes(self._dataset))
                    self._pending = None
                    self._dataset.clear()
        return done

    # -- ending ----------------------------------------------------------------------------
    def release(self, timeout_s: float = 1.0) -> None:
        """A-RELEASE-RQ; waits briefly for the RP (Table 26: 50 ms on the statement's side)."""
        if not self.open:
            return
        with contextlib.suppress(OSError, UpperLayerError):
            self.sock.sendall(pdu.RELEASE_RQ_PDU)
            deadline = time.monotonic() + timeout_s
            while True:
                kind, _ = self.read_pdu(deadline)
                if kind in (0x06, 0x07):
                    break
        self.close()

    def abort(self) -> None:
        if self.open:
            with contextlib.suppress(OSError):
                self.sock.sendall(pdu.a_abort())  # source 0: service user (PS3.8 9.3.8)
        self.close()

    def close(self) -> None:
        self.open = False
        with contextlib.suppress(OSError):
            self.sock.close()


def associate(
    host: str,
    port: int,
    *,
    calling_ae: str,
    called_ae: str,
    abstract_syntax: str,
    transfer_syntaxes: list[str],
    max_pdu: int,
    timeout_s: float,
    max_dataset: int = 4 << 20,
) -> Association:
    """Connect and negotiate; raises Rejected/Aborted/Expired/UpperLayerError with the reason."""
    deadline = time.monotonic() + timeout_s
    where = f"{called_ae}@{host}:{port}"
    request = associate_rq(calling_ae, called_ae, abstract_syntax, transfer_syntaxes, max_pdu)
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise UpperLayerError(f"cannot connect to {host}:{port}: {exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assoc = Association(sock, "", 0, max_pdu, max_dataset)
    try:
        sock.sendall(request)
        kind, body = assoc.read_pdu(deadline)
    except (OSError, UpperLayerError) as exc:
        assoc.close()
        raise UpperLayerError(f"no association with {where}: {exc}") from None
    if kind == pdu.ASSOCIATE_RJ and len(body) >= 4:
        assoc.close()
        permanent, why = pdu.rejection(body)
        kind_text = "permanently" if permanent else "transiently"
        raise Rejected(f"{where} {kind_text} rejected the association: {why}")
    if kind != pdu.ASSOCIATE_AC or len(body) < 68:
        assoc.abort()
        raise UpperLayerError(f"{where} answered the association request with PDU {kind:#04x}")
    try:
        ac = pdu.parse_associate_ac(body)
    except pdu.ProtocolError as exc:
        assoc.abort()
        raise UpperLayerError(f"{where} sent a malformed A-ASSOCIATE-AC: {exc}") from None
    syntax = ac.accepted(CONTEXT_ID)
    if not syntax:
        assoc.release()
        result = ac.contexts.get(CONTEXT_ID, (None, ""))[0]
        raise Rejected(f"{where} accepted no presentation context (result {result})")
    assoc.transfer_syntax, assoc.peer_max_pdu = syntax, ac.max_pdu
    return assoc
