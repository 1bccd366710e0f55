"""One association as requestor, blocking, in the caller's thread, driven by PS3.8 Table 9-10.

Why not pynetdicom here: its per-PDU machinery (a DUL thread, queues, pydicom decoding of every
command set) made a 1,000-entry worklist query three times slower than DCMTK `findscu` and
500 small C-STOREs several times slower than `storescu` (docs/peers.md). This requestor reads
through one buffer with a deadline per wait and a size limit per PDU (P-DATA longer than the
maximum we announced, PS3.8 D.1, or any other PDU over 1 MiB aborts), sends a C-STORE data set
from the file as it is (whole PDUs gathered into few system calls), checks that every response
answers the request in flight (Message ID Being Responded To, PS3.7 9.3.1.2), and turns an
A-ABORT, an unexpected PDU or a lost connection into `Aborted`, a transient error.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import BinaryIO, NoReturn

from . import dimse, pdu
from .connection import describe, send_gathered
from .fsm import PDU_EVENT, AbortReason, Event, Primitive, State, StateMachine
from .pdv import MessageAssembler
from .requestor_types import (
    DEFAULT_MAX_PDU,
    Aborted,
    AssociationError,
    Context,
    Expired,
    Message,
    Rejected,
    Settings,
)

__all__ = [
    "DEFAULT_MAX_PDU",
    "Aborted",
    "Association",
    "AssociationError",
    "Context",
    "Expired",
    "Message",
    "Rejected",
    "Settings",
]

#: Piece size when the peer announces no limit (max length 0, PS3.8 D.1.1).
UNLIMITED_PIECE = 1 << 20
#: Any PDU but P-DATA-TF longer than this is refused (an A-ASSOCIATE-AC is a few KB).
MAX_OTHER_PDU = 1 << 20
#: Bytes read from a file at once.
_BLOCK = 1 << 20
#: The Verification SOP Class (PS3.4 A.4).
VERIFICATION = "1.2.840.10008.1.1"


class Association:
    """An association as requestor: `Association.request(...)`, DIMSE, `release()`."""

    def __init__(self, host: str, port: int, settings: Settings) -> None:
        self.host, self.port, self.settings = host, port, settings
        self.where = f"{settings.called_ae}@{host}:{port}"
        # ARTIM (Sta13): how long we wait for the peer's close after an A-ABORT.
        self.fsm = StateMachine(self, self, settings.acse_s, closing_artim_s=0.5)
        self.sock: socket.socket | None = None
        self.contexts: dict[int, Context] = {}
        self.peer_max_pdu = 0
        self.piece = UNLIMITED_PIECE
        self.message_id = 0
        self._buffer = bytearray()
        self._messages = MessageAssembler(settings.max_dataset)
        self._indicated: tuple[Primitive, object] | None = None

    # ------------------------------------------------------------------ fsm.Transport, ServiceUser

    def connect(self) -> None:
        s = self.settings
        try:
            sock = socket.create_connection((self.host, self.port), timeout=s.connect_s)
        except socket.gaierror as exc:  # the name does not resolve: say so, no traceback
            raise AssociationError(f"cannot reach {self.where}: {exc.strerror or exc}") from None
        except OSError as exc:
            raise AssociationError(f"cannot connect to {self.where}: {describe(exc)}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # docs/peers.md, "Nagle"
        if s.tls is not None:
            try:
                sock = s.tls.wrap_socket(sock, server_hostname=self.host)
            except (OSError, ValueError) as exc:
                sock.close()
                raise AssociationError(f"TLS with {self.where} failed ({exc})") from exc
        self.sock = sock

    def send(self, data: object) -> None:
        """DT-1 and every other PDU: one buffer, or a list of them (`send_gathered`)."""
        sock = self.sock
        assert sock is not None
        if isinstance(data, list):
            send_gathered(sock, data)
        else:
            assert isinstance(data, bytes)
            sock.sendall(data)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()

    def indicate(self, primitive: Primitive, payload: object) -> None:
        self._indicated = (primitive, payload)

    @property
    def is_established(self) -> bool:
        return self.fsm.state is State.STA6

    # ------------------------------------------------------------------ establishment

    @classmethod
    def request(
        cls,
        host: str,
        port: int,
        settings: Settings,
        contexts: Sequence[tuple[str, Sequence[str]]],
        roles: Mapping[str, tuple[int, int]] | None = None,
    ) -> Association:
        """Connect and negotiate (AE-1, AE-2, then AE-3 or AE-4); raises `Rejected` when the
        peer refuses or accepts no context, `AssociationError` when it cannot be reached.
        `roles`: abstract syntax → (SCU role, SCP role) proposed (PS3.7 D.3.3.4), e.g. (0, 1)
        to send a Storage Commitment N-EVENT-REPORT as the SCP (PS3.4 J.3.3)."""
        assoc = cls(host, port, settings)
        numbered = [(2 * n + 1, a, list(ts)) for n, (a, ts) in enumerate(contexts)]
        try:
            rq = pdu.associate_rq(
                settings.called_ae,
                settings.calling_ae,
                numbered,
                settings.max_pdu,
                settings.implementation_class_uid,
                settings.implementation_version_name,
                roles,
            )
        except ValueError as exc:  # an AE title outside the PS3.5 repertoire
            raise AssociationError(str(exc), transient=False) from None
        assoc.fsm.fire(Event.EVT1, rq)  # AE-1: connect (raises when it cannot)
        try:
            assoc.sock.settimeout(settings.acse_s)  # type: ignore[union-attr]
            assoc.fsm.fire(Event.EVT2)  # AE-2: A-ASSOCIATE-RQ
            kind, body = assoc._next_pdu(time.monotonic() + settings.acse_s)
        except (OSError, AssociationError, pdu.ProtocolError) as exc:
            assoc.abort()
            raise AssociationError(f"association with {assoc.where} failed: {exc}") from exc
        if kind == pdu.ASSOCIATE_RJ:
            assoc.fsm.fire(Event.EVT4, body)  # AE-4: closes
            permanent, why = pdu.rejection(body)
            text = "permanently" if permanent else "transiently"
            raise Rejected(
                f"{assoc.where} {text} rejected the association: {why}", transient=not permanent
            )
        if kind != pdu.ASSOCIATE_AC:
            assoc._abort_on(kind, body)
            raise AssociationError(
                f"{assoc.where} answered the association request with PDU type {kind:#x}"
            )
        try:
            ac = pdu.parse_associate_ac(body)
        except pdu.ProtocolError as exc:
            assoc._invalid(exc)
            raise AssociationError(f"malformed A-ASSOCIATE-AC from {assoc.where}: {exc}") from exc
        assoc.fsm.fire(Event.EVT3, ac)  # AE-3: established
        assoc.contexts = {
            cid: Context(cid, abstract, syntax)
            for cid, abstract, _ in numbered
            if (syntax := ac.accepted(cid))
        }
        assoc.peer_max_pdu = ac.max_pdu
        assoc.piece = (ac.max_pdu - 6) if ac.max_pdu > 6 else UNLIMITED_PIECE
        if not assoc.contexts:
            assoc.abort()
            raise Rejected(
                f"{assoc.where} accepted no presentation context of those proposed",
                transient=False,
            )
        return assoc

    def context_for(
        self, abstract_syntax: str, transfer_syntax: str | None = None
    ) -> Context | None:
        for cx in self.contexts.values():
            if cx.abstract_syntax == abstract_syntax and transfer_syntax in (
                None,
                cx.transfer_syntax,
            ):
                return cx
        return None

    # ------------------------------------------------------------------ DIMSE

    def next_message_id(self) -> int:
        self.message_id = (self.message_id % 0xFFFF) + 1
        return self.message_id

    def send_message(self, context: Context, command: bytes, dataset: bytes | None = None) -> None:
        """A P-DATA request (Evt9, DT-1): command set, then data set, each in PDVs that fit."""
        self._send_stream(context, command, io.BytesIO(dataset) if dataset is not None else None)

    def send_c_echo(self, context: Context | None = None) -> int:
        """C-ECHO (PS3.7 9.1.5): the status of the C-ECHO-RSP."""
        context = context or self.context_for(VERIFICATION)
        if context is None:
            raise AssociationError("Verification was not accepted", transient=False)
        mid = self.next_message_id()
        self.send_message(context, dimse.request(dimse.C_ECHO_RQ, mid, context.abstract_syntax))
        return self._final_status(self.receive_response(mid, dimse.C_ECHO_RSP))

    def send_c_store(
        self, context: Context, sop_class: str, sop_instance: str, source: BinaryIO
    ) -> int:
        """C-STORE (PS3.7 9.1.1) of a data set read from `source` as it is: the status."""
        mid = self.next_message_id()
        command = dimse.request(
            dimse.C_STORE_RQ, mid, sop_class, sop_instance, has_data_set=True, priority=0
        )
        self._send_stream(context, command, source)
        return self._final_status(self.receive_response(mid, dimse.C_STORE_RSP))

    def send_c_find(
        self, context: Context, identifier: bytes, deadline: float, priority: int = 2
    ) -> Iterator[Message]:
        """C-FIND (PS3.7 9.1.2): each response as it arrives, the final one last. Call
        `cancel()` to send C-CANCEL; the responses until the final one still come."""
        mid = self.next_message_id()
        self.send_message(
            context,
            dimse.request(
                dimse.C_FIND_RQ, mid, context.abstract_syntax, has_data_set=True, priority=priority
            ),
            identifier,
        )
        while True:
            message = self.receive_response(mid, dimse.C_FIND_RSP, deadline)
            yield message
            if message.status not in (0xFF00, 0xFF01):
                return

    def cancel(self, context: Context, message_id: int) -> None:
        """C-CANCEL (PS3.7 9.3.2.3) of the request `message_id`."""
        self.send_message(context, dimse.request(dimse.C_CANCEL_RQ, message_id, ""))

    def send_n(
        self,
        context: Context,
        command_field: int,
        sop_instance: str | None,
        dataset: bytes | None = None,
        type_id: int | None = None,
    ) -> Message:
        """N-CREATE, N-SET, N-ACTION or N-EVENT-REPORT (PS3.7 10.1): the response."""
        mid = self.next_message_id()
        command = dimse.request(
            command_field,
            mid,
            context.abstract_syntax,
            sop_instance,
            has_data_set=dataset is not None,
            type_id=type_id,
        )
        self.send_message(context, command, dataset)
        return self.receive_response(mid, dimse.RESPONSE_OF[command_field])

    def receive_response(
        self, message_id: int, field: int, deadline: float | None = None
    ) -> Message:
        """The next message, which must be the response `field` to `message_id`; anything
        else aborts the association (PS3.7 9.3.1.2: Message ID Being Responded To)."""
        if deadline is None:
            deadline = time.monotonic() + (self.settings.dimse_s or 1e9)
        message = self.receive(deadline)
        if message.field != field or message.command.message_id != message_id:
            self.abort()
            raise Aborted(
                f"{self.where} sent 0x{message.field:04X} answering message "
                f"{message.command.message_id}, not 0x{field:04X} to {message_id}: aborted"
            )
        return message

    def _final_status(self, message: Message) -> int:
        if message.status is None:
            self.abort()
            raise Aborted(f"{self.where} sent a response without a status: aborted")
        return message.status

    # ------------------------------------------------------------------ sending

    def _send_stream(self, context: Context, command: bytes, source: BinaryIO | None) -> None:
        """Command PDV in its own PDU, in the same system call as the first data PDUs."""
        if not self.is_established:
            raise Aborted(f"the association with {self.where} has ended")
        pending: list[bytes | memoryview] = []
        for start in range(0, len(command), self.piece):
            last = start + self.piece >= len(command)
            pending += pdu.p_data_gathered(
                context.id, 0x03 if last else 0x01, command[start : start + self.piece]
            )
        block_size = self.piece * max(1, _BLOCK // self.piece)
        try:
            block = source.read(block_size) if source is not None else b""
            if source is not None and not block:
                pending += pdu.p_data_gathered(context.id, 0x02, b"")
            while block:
                assert source is not None
                following = source.read(block_size)
                view = memoryview(block)
                for start in range(0, len(view), self.piece):
                    last = not following and start + self.piece >= len(view)
                    pending += pdu.p_data_gathered(
                        context.id, 0x02 if last else 0x00, view[start : start + self.piece]
                    )
                self._p_data(pending)
                pending = []
                block = following
            if pending:
                self._p_data(pending)
        except OSError as exc:
            self._lost(exc)

    def _p_data(self, buffers: list[bytes | memoryview]) -> None:
        """P-DATA request (Evt9): DT-1 in Sta6 sends these PDUs."""
        if self.fsm.state is not State.STA6:
            raise Aborted(f"the association with {self.where} has ended")
        assert self.sock is not None
        self.sock.settimeout(self.settings.network_s or None)
        self.fsm.fire(Event.EVT9, buffers)

    # ------------------------------------------------------------------ receiving

    def receive(self, deadline: float) -> Message:
        """The next complete DIMSE message (command and, if announced, its data set)."""
        while True:
            try:
                kind, body = self._next_pdu(deadline)
            except pdu.ProtocolError as exc:
                self._invalid(exc)
            if kind != pdu.P_DATA_TF:
                self._abort_on(kind, body)
            self.fsm.fire(Event.EVT10, body)  # DT-2 (AR-6 in Sta7)
            self._indicated = None
            try:
                message = self._messages.feed(body)
            except pdu.ProtocolError as exc:
                self._invalid(exc)
            if message is not None:
                return message

    def _next_pdu(self, deadline: float) -> tuple[int, bytes]:
        self._fill(6, deadline)
        kind, _, length = struct.unpack_from(">BBI", self._buffer)
        limit = self.settings.max_pdu if kind == pdu.P_DATA_TF else MAX_OTHER_PDU
        if length > limit:
            raise pdu.ProtocolError(f"a {length}-byte PDU (limit {limit})")
        self._fill(6 + length, deadline)
        body = bytes(self._buffer[6 : 6 + length])
        del self._buffer[: 6 + length]
        return kind, body

    def _fill(self, size: int, deadline: float) -> None:
        sock = self.sock
        assert sock is not None
        while len(self._buffer) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._expired()
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(max(65536, size - len(self._buffer)))
            except TimeoutError:
                self._expired()
            except OSError as exc:
                self._lost(exc)
            if not chunk:
                self._lost(None)
            self._buffer += chunk

    # ------------------------------------------------------------------ errors → events

    def _expired(self) -> NoReturn:
        if self.fsm.state is State.STA13:
            raise Expired("ARTIM expired")
        raise Expired(f"{self.where} did not answer in time")

    def _lost(self, exc: OSError | None) -> NoReturn:
        if self.fsm.state is not State.STA1:
            self.fsm.fire(Event.EVT17)  # AA-4 (AR-5 in Sta13)
        why = f"connection to {self.where} lost" + (f": {describe(exc)}" if exc else "")
        raise Aborted(why)

    def _invalid(self, exc: pdu.ProtocolError) -> NoReturn:
        """Evt19: AA-8 sends A-ABORT (provider source) and awaits the close."""
        self.fsm.fire(Event.EVT19, AbortReason(2, exc.reason))
        self._await_close()
        raise Aborted(f"{self.where} broke the protocol ({exc}): aborted")

    def _abort_on(self, kind: int, body: bytes) -> NoReturn:
        """A PDU other than P-DATA-TF where a DIMSE message was awaited."""
        event = PDU_EVENT.get(kind, Event.EVT19)
        payload = AbortReason(2, pdu.UNRECOGNISED_PDU) if event is Event.EVT19 else body
        self.fsm.fire(event, payload)
        indicated, self._indicated = self._indicated, None
        if event is Event.EVT16:  # AA-3: the peer aborted
            raise Aborted(f"{self.where} aborted the association (A-ABORT)")
        if indicated is not None and indicated[0] is Primitive.RELEASE_INDICATION:
            self.fsm.fire(Event.EVT14)  # AR-4: answer the release, then await the close
            self._await_close()
            raise Aborted(f"{self.where} released the association in the middle of an exchange")
        self._await_close()
        raise Aborted(f"{self.where} sent PDU type {kind:#x} instead of a response: aborted")

    def _await_close(self) -> None:
        """Sta13: wait for the peer's close until ARTIM expires (AR-5 or AA-2)."""
        while self.fsm.state is State.STA13:
            try:
                kind, _ = self._next_pdu(self.fsm.artim_deadline or time.monotonic())
                self.fsm.fire(PDU_EVENT.get(kind, Event.EVT19))
            except (Expired, pdu.ProtocolError):
                # ARTIM expired, or a peer sending garbage while we wait: AA-2 closes.
                self.fsm.fire(Event.EVT18)
            except Aborted:
                if self.fsm.state is State.STA13:
                    self.fsm.fire(Event.EVT17)

    # ------------------------------------------------------------------ ending

    def release(self, timeout_s: float = 2.0) -> None:
        """A-RELEASE (AR-1); AR-3 closes on the A-RELEASE-RP. A peer that does not answer
        within `timeout_s` is aborted; a release collision (AR-8) is answered (AR-9)."""
        if not self.is_established:
            self.close()
            return
        self.fsm.fire(Event.EVT11)
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(AssociationError, OSError, pdu.ProtocolError):
            while self.fsm.state not in (State.STA1, State.STA13):
                kind, body = self._next_pdu(deadline)
                self.fsm.fire(PDU_EVENT.get(kind, Event.EVT19), body)
                if self.fsm.state is State.STA9:
                    self.fsm.fire(Event.EVT14)  # AR-9: our A-RELEASE-RP, then await theirs
        if self.fsm.state not in (State.STA1, State.STA13):
            self.abort()
        self._await_close()
        self.close()

    def abort(self) -> None:
        """A-ABORT request (Evt15, AA-1), then the close."""
        if self.fsm.state not in (State.STA1, State.STA4, State.STA13):
            with contextlib.suppress(OSError):
                self.fsm.fire(Event.EVT15)
        elif self.fsm.state is State.STA4:
            self.fsm.fire(Event.EVT15)  # AA-2
        self.fsm.artim_deadline = time.monotonic()  # the abort was sent: close now
        with contextlib.suppress(AssociationError):
            self._await_close()
        self.close()
