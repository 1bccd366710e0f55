"""One association as acceptor, in its own thread: our own lean DICOM Upper Layer (PS3.8).

Why not pynetdicom: its acceptor handles every PDU through two threads, queues and a state
machine, ~10 ms per small C-STORE here, eight times DCMTK's storescp (bench/scp.py). A Storage
and Verification SCP needs little of the standard: negotiate, receive C-STORE data sets into a
file as their fragments arrive, answer C-STORE and C-ECHO, release or abort. Everything is read
through one buffer with a deadline per PDU, every length a peer announces is checked before
anything is allocated or read, and anything unexpected aborts the association (PS3.8 9.3.8)
after removing the partial file.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cinebridge_common.conformance import STATUS_SUCCESS, VERIFICATION_SOP_CLASS
from cinebridge_common.logging import kv
from cinebridge_dicom import dimse, negotiation, pdu
from cinebridge_dicom.pdu import ProtocolError

from . import metrics
from .ingest import Command
from .receive import ReceiveConfig, ReceiveFile, file_meta_bytes

log = logging.getLogger(__name__)

VERIFICATION = VERIFICATION_SOP_CLASS[1]
#: A command set is a handful of elements; more than this is not a command set.
MAX_COMMAND_BYTES = 1 << 16
#: Receive buffer for PDU headers and command sets (every association has one).
SMALL = 1 << 16
#: Largest read of data set bytes; this buffer is allocated at an association's first C-STORE.
CHUNK = 1 << 18
#: C-ECHO-RSP / C-STORE-RSP status: SOP class not supported (PS3.7 C.4, PS3.4 B.2.3).
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122


class Closed(Exception):
    """The peer closed the connection, or it broke."""


class TooSlow(Exception):
    """A PDU did not arrive completely within its deadline, or the association sat idle."""


@dataclass(frozen=True)
class Limits:
    max_pdu: int
    acse_timeout_s: float
    network_timeout_s: float
    pdu_timeout_s: float
    max_pending: int
    max_associations: int
    #: Longest wait for the next PDU while a DIMSE message is half received.
    dimse_timeout_s: float = 60.0


class StoreSink(Protocol):
    def store_instance(self, rf: ReceiveFile, command: Command) -> int: ...


@dataclass(frozen=True)
class AcceptorConfig:
    """What every association of one listener shares (read-only)."""

    ae_title: str
    require_called_ae: bool
    allowed_calling_ae_titles: frozenset[str]
    #: Abstract syntax → transfer syntaxes we accept for it (Tables 22 and 23).
    supported: dict[str, frozenset[str]]
    limits: Limits
    implementation_class_uid: str
    implementation_version_name: str
    receive: ReceiveConfig
    ingest: StoreSink


class Connection:
    """A socket read through one buffer, every read bounded by a deadline."""

    def __init__(self, sock: socket.socket, prefix: bytes, network_timeout_s: float) -> None:
        self.sock = sock
        self._buf = bytearray(SMALL)
        self._view = memoryview(self._buf)
        self._big: memoryview | None = None
        self._start = 0
        self._end = len(prefix)
        self._buf[: len(prefix)] = prefix
        self._network_timeout_s = network_timeout_s
        self._timeout: float | None = -1.0

    def _recv_into(self, view: memoryview, deadline: float) -> int:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TooSlow("deadline passed")
        timeout = min(remaining, self._network_timeout_s)
        if abs(timeout - (self._timeout or 0.0)) > 0.05:  # settimeout is a system call
            self.sock.settimeout(timeout)
            self._timeout = timeout
        try:
            count = self.sock.recv_into(view)
        except TimeoutError as exc:
            raise TooSlow("no data within the network timeout") from exc
        except OSError as exc:
            raise Closed(str(exc)) from exc
        if count == 0:
            raise Closed("connection closed by the peer")
        return count

    def read(self, n: int, deadline: float) -> bytes:
        """Exactly `n` bytes (the caller has bounded `n`)."""
        if self._end - self._start >= n:
            out = bytes(self._view[self._start : self._start + n])
            self._start += n
            return out
        if n > SMALL:
            out_buf = bytearray()
            self.stream(n, out_buf.extend, deadline)
            return bytes(out_buf)
        if self._start:  # compact what is buffered to the front
            have = self._end - self._start
            self._buf[:have] = self._view[self._start : self._end]
            self._start, self._end = 0, have
        while self._end < n:
            self._end += self._recv_into(self._view[self._end :], deadline)
        out = bytes(self._view[:n])
        self._start = n
        return out

    def stream(self, n: int, sink: Callable[[memoryview], object], deadline: float) -> None:
        """Pass the next `n` bytes to `sink` in pieces, without collecting them."""
        have = self._end - self._start
        if have:
            take = min(have, n)
            sink(self._view[self._start : self._start + take])
            self._start += take
            n -= take
        if self._start == self._end:
            self._start = self._end = 0
        if n > 0 and self._big is None:
            self._big = memoryview(bytearray(CHUNK))
        big = self._big
        while n > 0:
            assert big is not None
            count = self._recv_into(big[: min(n, CHUNK)], deadline)
            sink(big[:count])
            n -= count

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise Closed(str(exc)) from exc


@dataclass
class _Store:
    """A C-STORE whose data set is being received."""

    context: pdu.ContextResult
    message_id: int
    command: Command
    file: ReceiveFile


class Association:
    """Runs one association to its end: `run()` returns when it is released, aborted or cut."""

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        config: AcceptorConfig,
        header: bytes,
        admit: Callable[[], bool],
    ) -> None:
        self.conn = Connection(sock, b"", config.limits.network_timeout_s)
        #: Short random id joining this association's log lines (and its instances').
        self.id = secrets.token_hex(6)
        self.peer = peer
        self.config = config
        self._header = header
        self._admit = admit
        self.calling_ae = ""
        self._contexts: dict[int, pdu.ContextResult] = {}
        self._peer_max_pdu = 0
        self._command = bytearray()
        self._command_context = 0
        self._store: _Store | None = None
        #: Counted against the association limit (released by the server when run() ends).
        self.admitted = False
        self.established = False

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        try:
            if self._associate():
                self.established = True
                self._serve()
        except ProtocolError as exc:
            metrics.ASSOCIATIONS_ENDED.labels("protocol_error").inc()
            log.warning(
                "protocol error, aborting",
                extra=kv(
                    association=self.id, peer=self.peer, calling_ae=self.calling_ae, reason=str(exc)
                ),
            )
            self._abort(exc.reason)
        except TooSlow as exc:
            metrics.ASSOCIATIONS_ENDED.labels("timeout").inc()
            log.warning(
                "peer too slow or idle, aborting",
                extra=kv(
                    association=self.id, peer=self.peer, calling_ae=self.calling_ae, reason=str(exc)
                ),
            )
            self._abort(0)
        except Closed as exc:
            metrics.ASSOCIATIONS_ENDED.labels("closed").inc()
            level = logging.WARNING if self._store is not None else logging.INFO
            log.log(
                level,
                "connection closed",
                extra=kv(association=self.id, peer=self.peer, reason=str(exc)),
            )
        finally:
            self._discard_partial()

    def _discard_partial(self) -> None:
        if self._store is not None:
            self._store.file.discard()
            log.warning(
                "partial instance discarded",
                extra=kv(association=self.id, peer=self.peer, calling_ae=self.calling_ae),
            )
            self._store = None

    def _abort(self, reason: int) -> None:
        with contextlib.suppress(OSError):
            self.conn.sock.settimeout(1.0)
            self.conn.sock.sendall(pdu.a_abort(reason, source=2))

    # ------------------------------------------------------------------ association phase

    def _associate(self) -> bool:
        limits = self.config.limits
        _, _, length = struct.unpack(">BBL", self._header)
        body = self.conn.read(length, time.monotonic() + limits.acse_timeout_s)
        rq = pdu.parse_associate_rq(body)
        self.calling_ae = rq.calling_ae
        refusal = self._refusal(rq)
        if refusal is None:
            self.admitted = self._admit()
            if not self.admitted:
                refusal = (2, 3, 2, "too many associations")  # transient, local limit exceeded
        if refusal is not None:
            result, source, reason, why = refusal
            log.warning(
                "association rejected",
                extra=kv(
                    association=self.id,
                    peer=self.peer,
                    calling_ae=rq.calling_ae,
                    called_ae=rq.called_ae,
                    result=result,
                    source=source,
                    reason=reason,
                    why=why,
                ),
            )
            metrics.rejected(why)
            self.conn.send(pdu.associate_rj(result, source, reason))
            return False
        results, roles = negotiation.negotiate(rq, self.config.supported)
        self._contexts = {r.id: r for r in results if r.result == pdu.ACCEPTANCE}
        self._peer_max_pdu = rq.max_pdu
        self.conn.send(
            pdu.associate_ac(
                rq,
                results,
                roles,
                limits.max_pdu,
                self.config.implementation_class_uid,
                self.config.implementation_version_name,
            )
        )
        metrics.ASSOCIATIONS_ACCEPTED.inc()
        log.info(
            "association accepted",
            extra=kv(
                association=self.id,
                peer=self.peer,
                calling_ae=rq.calling_ae,
                contexts=len(self._contexts),
            ),
        )
        return True

    def _refusal(self, rq: pdu.AssociateRq) -> tuple[int, int, int, str] | None:
        """(result, source, reason, why) of an A-ASSOCIATE-RJ (PS3.8 Table 9-21), or None."""
        cfg = self.config
        if not rq.protocol_version & 1:
            return 1, 2, 2, "protocol version not supported"
        if rq.application_context != pdu.APPLICATION_CONTEXT:
            return 1, 1, 2, "application context name not supported"
        if cfg.require_called_ae and rq.called_ae != cfg.ae_title:
            return 1, 1, 7, "called AE title not recognised"
        if not rq.calling_ae:
            return 1, 1, 3, "calling AE title empty"
        allowed = cfg.allowed_calling_ae_titles
        if allowed and rq.calling_ae not in allowed:
            return 1, 1, 3, "calling AE title not in allow-list"
        return None

    # ------------------------------------------------------------------ data transfer phase

    def _serve(self) -> None:
        limits = self.config.limits
        while True:
            wait = limits.network_timeout_s
            if self._store is not None or self._command:  # a DIMSE message is half received
                wait = min(wait, limits.dimse_timeout_s)
            header = self.conn.read(6, time.monotonic() + wait)
            kind, _, length = struct.unpack(">BBL", header)
            deadline = time.monotonic() + limits.pdu_timeout_s
            if kind == pdu.P_DATA_TF:
                if length > limits.max_pdu:
                    raise ProtocolError(
                        f"P-DATA-TF of {length} bytes exceeds the negotiated {limits.max_pdu}"
                    )
                self._p_data(length, deadline)
            elif kind == pdu.RELEASE_RQ:
                if length != 4:
                    raise ProtocolError("A-RELEASE-RQ with a wrong length")
                self.conn.read(4, deadline)
                self._discard_partial()
                metrics.ASSOCIATIONS_ENDED.labels("released").inc()  # counted before the peer knows
                self.conn.send(pdu.RELEASE_RP_PDU)
                log.info("association released", extra=kv(association=self.id, peer=self.peer))
                return
            elif kind == pdu.ABORT:
                metrics.ASSOCIATIONS_ENDED.labels("peer_abort").inc()
                log.info(
                    "association aborted by the peer", extra=kv(association=self.id, peer=self.peer)
                )
                return
            elif kind in (pdu.ASSOCIATE_RQ, pdu.ASSOCIATE_AC, pdu.ASSOCIATE_RJ, pdu.RELEASE_RP):
                raise ProtocolError(f"unexpected PDU type 0x{kind:02X}", pdu.UNEXPECTED_PDU)
            else:
                raise ProtocolError(f"unrecognised PDU type 0x{kind:02X}", pdu.UNRECOGNISED_PDU)

    def _p_data(self, length: int, deadline: float) -> None:
        if length < 6:
            raise ProtocolError("P-DATA-TF without a complete PDV")
        left = length
        while left > 0:
            if left < 6:
                raise ProtocolError("PDV header runs past the end of its P-DATA-TF")
            pdv_length, context_id, control = struct.unpack(">IBB", self.conn.read(6, deadline))
            if pdv_length < 2 or pdv_length + 4 > left:
                raise ProtocolError(f"PDV length {pdv_length} does not fit its P-DATA-TF")
            left -= 4 + pdv_length
            context = self._contexts.get(context_id)
            if context is None:
                raise ProtocolError(f"PDV for presentation context {context_id}, not accepted")
            size, last = pdv_length - 2, bool(control & 0x02)
            if control & 0x01:
                self._command_fragment(context, size, last, deadline)
            else:
                self._data_fragment(context, size, last, deadline)

    def _command_fragment(
        self, context: pdu.ContextResult, size: int, last: bool, deadline: float
    ) -> None:
        if self._store is not None:
            raise ProtocolError("command fragment while a data set is being received")
        if self._command and context.id != self._command_context:
            raise ProtocolError("command fragments on two presentation contexts")
        if len(self._command) + size > MAX_COMMAND_BYTES:
            raise ProtocolError("command set larger than any command set can be")
        self._command_context = context.id
        self._command += self.conn.read(size, deadline)
        if last:
            command = bytes(self._command)
            self._command.clear()
            self._dispatch(context, dimse.parse_command(command))

    def _dispatch(self, context: pdu.ContextResult, elements: dict[int, bytes]) -> None:
        field = dimse.command_us(elements, 0x0100)
        message_id = dimse.command_us(elements, 0x0110)
        data_set_type = dimse.command_us(elements, 0x0800)
        if field is None or message_id is None or data_set_type is None:
            raise ProtocolError("command set lacks Command Field, Message ID or Data Set Type")
        has_data = data_set_type != dimse.NO_DATA_SET
        if field == dimse.C_ECHO_RQ and not has_data:
            ok = context.abstract_syntax == VERIFICATION
            status = STATUS_SUCCESS if ok else STATUS_SOP_CLASS_NOT_SUPPORTED
            metrics.ECHOES.inc()
            self._respond(
                context, dimse.response(dimse.C_ECHO_RSP, message_id, status, VERIFICATION)
            )
        elif field == dimse.C_STORE_RQ and has_data:
            command = Command(
                sop_class_uid=dimse.command_ui(elements, 0x0002),
                sop_instance_uid=dimse.command_ui(elements, 0x1000),
                calling_ae=self.calling_ae,
                source_address=self.peer,
                association=self.id,
            )
            rf = ReceiveFile(self.config.receive)
            self._store = _Store(context, message_id, command, rf)
            if command.sop_class_uid != context.abstract_syntax:
                rf.refuse("SOP Class UID of the command differs from its presentation context")
            rf.write(
                file_meta_bytes(
                    command.sop_class_uid,
                    command.sop_instance_uid,
                    context.transfer_syntax,
                    self.config.implementation_class_uid,
                    self.config.implementation_version_name,
                    self.calling_ae,
                )
            )
        else:
            raise ProtocolError(f"unsupported DIMSE command 0x{field:04X} (data set: {has_data})")

    def _data_fragment(
        self, context: pdu.ContextResult, size: int, last: bool, deadline: float
    ) -> None:
        store = self._store
        if store is None or store.context.id != context.id:
            raise ProtocolError(
                "data set fragment without a C-STORE-RQ on its presentation context"
            )
        self.conn.stream(size, store.file.write, deadline)
        if last:
            self._store = None
            status = self.config.ingest.store_instance(store.file, store.command)
            rsp = dimse.response(
                dimse.C_STORE_RSP,
                store.message_id,
                status,
                store.command.sop_class_uid,
                store.command.sop_instance_uid,
            )
            self._respond(context, rsp)

    def _respond(self, context: pdu.ContextResult, command: bytes) -> None:
        """One PDV per PDU, in pieces if the peer's maximum length asks for it (PS3.8 D.1)."""
        piece = self._peer_max_pdu - 6 if self._peer_max_pdu > 6 else len(command)
        piece = max(piece, 1)
        out = bytearray()
        for start in range(0, len(command), piece):
            last = start + piece >= len(command)
            out += pdu.p_data(context.id, 0x03 if last else 0x01, command[start : start + piece])
        self.conn.send(bytes(out))

    def close(self) -> None:
        """Cut the connection from another thread (service stop): the run() thread wakes."""
        with contextlib.suppress(OSError):
            self.conn.sock.shutdown(socket.SHUT_RDWR)
