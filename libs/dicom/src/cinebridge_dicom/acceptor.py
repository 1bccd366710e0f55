"""One association as acceptor, in the caller's thread, every step decided by PS3.8 Table 9-10.

Why not pynetdicom's acceptor: it handles every PDU through two threads, queues and a polled
state machine, ~10 ms per small C-STORE, eight times DCMTK's storescp (bench/scp.py). Here one
thread reads the socket through one buffer with a deadline per PDU, turns what arrives into the
events of `fsm` (Evt6 A-ASSOCIATE-RQ, Evt10 P-DATA-TF, Evt12 A-RELEASE-RQ, Evt16 A-ABORT, Evt17
closed, Evt18 ARTIM, Evt19 invalid PDU…) and carries out what the table answers. Every length a
peer announces is checked before anything is allocated or read; a C-STORE data set streams into
the application's `StoreSink` as its fragments arrive, never held whole.

DIMSE requests go to the handlers bound per event (`events.Evt`); a request nobody handles is a
protocol error and aborts the association (PS3.8 9.3.8). A C-FIND handler is a generator: each
match it yields goes out as a pending response at once, and between two responses the socket
is looked at without blocking, so a C-CANCEL-RQ (PS3.7 9.3.2.3) ends the operation with status
Cancel (FE00) instead of the next match; the handler sees `is_cancelled` and its generator is
closed. Another request before the final response is a protocol error. Asynchronous operations
are not offered (PS3.7 D.3.3.3: leaving the item out of the A-ASSOCIATE-AC declines it), and user
identity negotiation is read past and never answered (PS3.7 D.3.3.7: the requestor then knows
the identity was not used).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import struct
from collections.abc import Mapping

from . import dimse, negotiation, pdu
from .acceptor_types import (
    MAX_ASSOCIATE_RQ,
    MAX_COMMAND_BYTES,
    PENDING,
    REQUEST_EVENT,
    STATUS_CANCEL,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    STATUS_SUCCESS,
    VERIFICATION,
    AcceptorPolicy,
    Pending,
    Ready,
)
from .connection import Closed, Connection, TooSlow
from .events import Evt, Handler, Rejection
from .fsm import PDU_EVENT, AbortReason, Event, Primitive, ProviderRejection, State, StateMachine

__all__ = [
    "MAX_ASSOCIATE_RQ",
    "MAX_COMMAND_BYTES",
    "PENDING",
    "STATUS_CANCEL",
    "STATUS_SOP_CLASS_NOT_SUPPORTED",
    "STATUS_SUCCESS",
    "AcceptorAssociation",
    "AcceptorPolicy",
]


class AcceptorAssociation:
    """Runs one association to its end: `run()` returns once the transport is closed."""

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        policy: AcceptorPolicy,
        handlers: Mapping[Evt, Handler],
        header: bytes,
    ) -> None:
        self.conn = Connection(sock, b"", policy.network_timeout_s)
        #: Short random id joining this association's log lines.
        self.id = secrets.token_hex(6)
        self.peer = peer
        self.policy = policy
        self.handlers = handlers
        self.fsm = StateMachine(
            self, self, policy.acse_timeout_s, closing_artim_s=policy.closing_timeout_s
        )
        self.rq: pdu.AssociateRq | None = None
        self.calling_ae = ""
        self.contexts: dict[int, pdu.ContextResult] = {}
        #: Set by the application when it counts this association against a limit.
        self.admitted = False
        self.established = False
        self._header = header
        self._peer_max_pdu = 0
        self._command = bytearray()
        self._command_context = 0
        self._pending: Pending | None = None
        self._indicated: tuple[Primitive, object] | None = None
        #: Message IDs of the requests this acceptor sent whose responses are still due.
        self._requests: set[int] = set()
        self._message_id = 0
        self._ready: Ready | None = None
        #: Message ID of the C-FIND being answered, and whether a C-CANCEL named it.
        self._finding: int | None = None
        self.is_cancelled = False

    # ------------------------------------------------------------------ fsm.Transport, ServiceUser

    def connect(self) -> None:  # pragma: no cover - an acceptor never connects (AE-1)
        raise RuntimeError("an acceptor does not open transport connections")

    def send(self, data: object) -> None:
        assert isinstance(data, bytes)
        self.conn.send(data)

    def close(self) -> None:
        """Close the transport (AA-2, AA-3, AR-3…); from another thread it cuts the association
        short (service stop): the run() thread wakes with Evt17."""
        with contextlib.suppress(OSError):
            self.conn.sock.shutdown(socket.SHUT_RDWR)

    def indicate(self, primitive: Primitive, payload: object) -> None:
        self._indicated = (primitive, payload)

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        self.fsm.fire(Event.EVT5)
        header: bytes | None = self._header
        try:
            while self.fsm.state is not State.STA1:
                try:
                    if header is None:
                        header = self.conn.read(6, self._deadline_for_header())
                    self._receive(header)
                except pdu.ProtocolError as exc:
                    self._notify(Evt.PROTOCOL_ERROR, str(exc))
                    self._fire_last(Event.EVT19, AbortReason(2, exc.reason))
                except TooSlow as exc:
                    self._timed_out(str(exc))
                except Closed as exc:
                    if self.fsm.state is not State.STA13:  # in Sta13 the close is awaited
                        self._notify(Evt.CONN_CLOSED, str(exc), self._pending is not None)
                    self.fsm.fire(Event.EVT17)
                header = None
                if self.fsm.state in (State.STA13, State.STA1):
                    self._discard_pending()  # released or aborted: nothing half-received stays
        finally:
            self._discard_pending()

    def _deadline_for_header(self) -> float:
        if self.fsm.artim_deadline is not None:
            return self.fsm.artim_deadline
        wait = self.policy.network_timeout_s
        if self._pending is not None or self._command:  # a DIMSE message is half received
            wait = min(wait, self.policy.dimse_timeout_s)
        return self.fsm.clock() + wait

    def _timed_out(self, why: str) -> None:
        if self.fsm.artim_deadline is not None:
            self.fsm.fire(Event.EVT18)  # ARTIM expired: AA-2 closes
            return
        # The association sat idle, or a PDU stalled: the local user gives up (A-ABORT request).
        self._notify(Evt.TIMEOUT, why)
        self._fire_last(Event.EVT15, AbortReason(2, 0))

    def _fire_last(self, event: Event, payload: object) -> None:
        """Fire an event whose action sends a last PDU (the A-ABORT of AA-1, AA-7, AA-8). A peer
        that stopped reading (its receive window full) or left meanwhile makes that send fail:
        that is the transport closing (Evt17), not an error to escape the association."""
        try:
            self.fsm.fire(event, payload)
        except Closed as exc:
            self._notify(Evt.CONN_CLOSED, str(exc), self._pending is not None)
            if self.fsm.state is not State.STA1:
                self.fsm.fire(Event.EVT17)

    def _discard_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and pending.sink is not None:
            pending.sink.discard()

    def _notify(self, event: Evt, *args: object) -> None:
        handler = self.handlers.get(event)
        if handler is not None:
            handler(self, *args)

    # ------------------------------------------------------------------ PDUs → events

    def _receive(self, header: bytes) -> None:
        kind, _, length = struct.unpack(">BBL", header)
        event = PDU_EVENT.get(kind)
        deadline = self.fsm.clock() + self.policy.pdu_timeout_s
        if self.fsm.artim_deadline is not None:
            deadline = min(deadline, self.fsm.artim_deadline)
        if event is None:
            raise pdu.ProtocolError(f"unrecognised PDU type 0x{kind:02X}", pdu.UNRECOGNISED_PDU)
        if event is Event.EVT10 and self.fsm.state is State.STA6:
            if length > self.policy.max_pdu:
                raise pdu.ProtocolError(
                    f"P-DATA-TF of {length} bytes exceeds the negotiated {self.policy.max_pdu}"
                )
            self.fsm.fire(event, length)  # DT-2: the P-DATA indication reads the PDVs
            self._p_data(length, deadline)
            ready, self._ready = self._ready, None
            if ready is not None:  # the PDU is consumed: the next bytes are a new PDU
                self._answer(ready)
            return
        if self.fsm.state is State.STA13 or (event is Event.EVT10):
            # Only the header matters: AA-6 ignores the PDU, AA-1/AA-7/AA-8 abort.
            self.fsm.fire(event)
            if self.fsm.state is State.STA13:  # still awaiting the close: skip the body
                self.conn.stream(length, _ignore, deadline)
            return
        body = self._body(kind, length, deadline)
        if event is Event.EVT6 and self.fsm.state is State.STA2:
            self._associate(body)
            return
        self.fsm.fire(event, body)
        self._follow_up()

    def _body(self, kind: int, length: int, deadline: float) -> bytes:
        if kind in (pdu.RELEASE_RQ, pdu.RELEASE_RP, pdu.ABORT):
            if length != 4:
                raise pdu.ProtocolError(f"PDU type 0x{kind:02X} with a wrong length")
        elif length > MAX_ASSOCIATE_RQ:
            raise pdu.ProtocolError(f"PDU type 0x{kind:02X} of {length} bytes")
        return self.conn.read(length, deadline)

    def _follow_up(self) -> None:
        """What the local user does after an indication (the primitives of the next event)."""
        indicated, self._indicated = self._indicated, None
        if indicated is None:
            return
        primitive, payload = indicated
        if primitive is Primitive.RELEASE_INDICATION:
            self._discard_pending()
            self._notify(Evt.RELEASED)
            self.fsm.fire(Event.EVT14)  # AR-4: A-RELEASE-RP, then await the close
        elif primitive is Primitive.ABORT:
            self._notify(Evt.ABORTED, payload)

    # ------------------------------------------------------------------ association phase

    def _associate(self, body: bytes) -> None:
        rq = pdu.parse_associate_rq(body)  # ProtocolError: Evt19 in Sta2, AA-1
        self.rq, self.calling_ae = rq, rq.calling_ae
        if not rq.protocol_version & 1:  # PS3.8 9.3.2: bit 0 is version 1
            version = Rejection(1, 2, 2, "protocol version not supported")
            self._notify(Evt.REJECTED, rq, version)
            self.fsm.fire(Event.EVT6, ProviderRejection(_rj(version)))
            return
        self.fsm.fire(Event.EVT6, rq)  # AE-6: A-ASSOCIATE indication, Sta3
        self._indicated = None
        rejection = self._requested(rq)
        if rejection is not None:
            self._notify(Evt.REJECTED, rq, rejection)
            self.fsm.fire(Event.EVT8, _rj(rejection))
            return
        results, roles = negotiation.negotiate(rq, self.policy.supported, self.policy.both_roles)
        self.contexts = {r.id: r for r in results if r.result == pdu.ACCEPTANCE}
        self._peer_max_pdu = rq.max_pdu
        ac = pdu.associate_ac(
            rq,
            results,
            roles,
            self.policy.max_pdu,
            self.policy.implementation_class_uid,
            self.policy.implementation_version_name,
        )
        self.fsm.fire(Event.EVT7, ac)
        self.established = True
        self._notify(Evt.ACCEPTED, rq)

    def _requested(self, rq: pdu.AssociateRq) -> Rejection | None:
        if rq.application_context != pdu.APPLICATION_CONTEXT:
            return Rejection(1, 1, 2, "application context name not supported")
        handler = self.handlers.get(Evt.REQUESTED)
        result = handler(self, rq) if handler is not None else None
        assert result is None or isinstance(result, Rejection)
        return result

    # ------------------------------------------------------------------ data transfer phase

    def _p_data(self, length: int, deadline: float) -> None:
        self._indicated = None
        if length < 6:
            raise pdu.ProtocolError("P-DATA-TF without a complete PDV")
        left = length
        while left > 0:
            if left < 6:
                raise pdu.ProtocolError("PDV header runs past the end of its P-DATA-TF")
            pdv_length, context_id, control = struct.unpack(">IBB", self.conn.read(6, deadline))
            if pdv_length < 2 or pdv_length + 4 > left:
                raise pdu.ProtocolError(f"PDV length {pdv_length} does not fit its P-DATA-TF")
            left -= 4 + pdv_length
            context = self.contexts.get(context_id)
            if context is None:
                raise pdu.ProtocolError(f"PDV for presentation context {context_id}, not accepted")
            size, last = pdv_length - 2, bool(control & 0x02)
            if control & 0x01:
                self._command_fragment(context, size, last, deadline)
            else:
                self._data_fragment(context, size, last, deadline)

    def _command_fragment(
        self, context: pdu.ContextResult, size: int, last: bool, deadline: float
    ) -> None:
        if self._pending is not None:
            raise pdu.ProtocolError("command fragment while a data set is being received")
        if self._command and context.id != self._command_context:
            raise pdu.ProtocolError("command fragments on two presentation contexts")
        if len(self._command) + size > MAX_COMMAND_BYTES:
            raise pdu.ProtocolError("command set larger than any command set can be")
        self._command_context = context.id
        self._command += self.conn.read(size, deadline)
        if last:
            raw = bytes(self._command)
            self._command.clear()
            self._request(context, dimse.decode_command(raw))

    def _request(self, context: pdu.ContextResult, command: dimse.Command) -> None:
        if command.field == dimse.N_EVENT_REPORT_RSP and command.message_id in self._requests:
            # The answer to an N-EVENT-REPORT this acceptor sent (`send_request`); its status
            # is logged by the notification, nothing waits for it (PS3.4 J.3.3.1).
            self._requests.discard(command.message_id)
            self._notify(Evt.RESPONSE, context, command)
            return
        if command.field == dimse.C_CANCEL_RQ:
            # PS3.7 9.3.2.3: it names the C-FIND in Message ID Being Responded To. One that
            # arrives after the final response, or names another message, changes nothing.
            if command.message_id == self._finding:
                self.is_cancelled = True
            return
        if self._finding is not None or self._ready is not None:
            raise pdu.ProtocolError(
                f"request 0x{command.field:04X} while message {self._finding} is being answered"
                " (no asynchronous operations window was negotiated)"
            )
        event = REQUEST_EVENT.get(command.field)
        handler = self.handlers.get(event) if event is not None else None
        if command.field == dimse.C_ECHO_RQ and not command.has_data_set:
            ok = context.abstract_syntax == VERIFICATION
            status = STATUS_SOP_CLASS_NOT_SUPPORTED if not ok else STATUS_SUCCESS
            if ok and handler is not None:
                status = handler(self, context, command)
            self.respond(context, dimse.response_to(command, status))
            return
        if handler is None or event is Evt.C_ECHO:
            raise pdu.ProtocolError(
                f"unsupported DIMSE command 0x{command.field:04X} (data set: "
                f"{command.has_data_set})"
            )
        if event is Evt.C_STORE:
            if not command.has_data_set:
                raise pdu.ProtocolError("C-STORE-RQ without a data set")
            self._pending = Pending(context, command, handler(self, context, command), None)
        elif command.has_data_set:
            self._pending = Pending(context, command, None, bytearray())
        else:
            self._expect_answer(Ready(context, command, handler, None))

    def _data_fragment(
        self, context: pdu.ContextResult, size: int, last: bool, deadline: float
    ) -> None:
        pending = self._pending
        if pending is None or pending.context.id != context.id:
            raise pdu.ProtocolError(
                "data set fragment without a request on its presentation context"
            )
        if pending.sink is not None:
            self.conn.stream(size, pending.sink.write, deadline)
        else:
            assert pending.data is not None
            if len(pending.data) + size > self.policy.max_request_data_set:
                raise pdu.ProtocolError("request data set larger than this AE accepts")
            pending.data += self.conn.read(size, deadline)
        if not last:
            return
        self._pending = None
        if pending.sink is not None:
            status = pending.sink.finish()
            self.respond(context, dimse.response_to(pending.command, status))
            return
        event = REQUEST_EVENT[pending.command.field]
        data = bytes(pending.data or b"")
        self._expect_answer(Ready(context, pending.command, self.handlers[event], data))

    def _expect_answer(self, ready: Ready) -> None:
        self._ready = ready
        if ready.command.field == dimse.C_FIND_RQ:
            self._finding, self.is_cancelled = ready.command.message_id, False

    def _answer(self, ready: Ready) -> None:
        """The handler's responses as it yields them; a C-FIND's pending ones stop at a
        C-CANCEL (FE00), or when the association ends meanwhile (A-ABORT: nothing more), and its
        generator is then closed."""
        context, command = ready.context, ready.command
        responses = iter(ready.handler(self, context, command, ready.data_set))
        try:
            for status, identifier in responses:
                if self._finding is not None and not self._still_wanted():
                    break
                rsp = dimse.response_to(command, status, has_data_set=identifier is not None)
                self.respond(context, rsp, identifier)
                if status not in PENDING:
                    # The handler runs to its end after its final response: work that follows
                    # the answer, as a Storage Commitment SCP's N-EVENT-REPORT on the same
                    # association after the N-ACTION-RSP (PS3.4 J.3.3), is not cut off.
                    for _late in responses:
                        raise RuntimeError(f"{command.field:#06x} handler answered twice")
                    return
        finally:
            close = getattr(responses, "close", None)
            if close is not None:
                close()  # the generator's own cleanup (a cursor, a file) runs now
            cancelled, self._finding = self.is_cancelled, None
        if cancelled and self.fsm.state is State.STA6:
            self.respond(context, dimse.response_to(command, STATUS_CANCEL))

    def _still_wanted(self) -> bool:
        """Read whatever the requestor sent meanwhile (a C-CANCEL-RQ, an A-ABORT…) without
        waiting; False once the C-FIND was cancelled or the association is no longer up."""
        while not self.is_cancelled and self.fsm.state is State.STA6 and self.conn.readable():
            header = self.conn.read(6, self._deadline_for_header())
            self._receive(header)
        return not self.is_cancelled and self.fsm.state is State.STA6

    def respond(
        self, context: pdu.ContextResult, command: bytes, data_set: bytes | None = None
    ) -> None:
        """A P-DATA request (Evt9, DT-1): the command set, then the data set if any, each in
        PDVs no longer than the peer's maximum length allows (PS3.8 D.1)."""
        piece = self._peer_max_pdu - 6 if self._peer_max_pdu > 6 else max(len(command), 1)
        out = bytearray()
        for flags, payload in ((0x01, command), (0x00, data_set)):
            if payload is None:
                continue
            for start in range(0, max(len(payload), 1), piece):
                last = start + piece >= len(payload)
                out += pdu.p_data(
                    context.id, flags | (0x02 if last else 0), payload[start : start + piece]
                )
        self.fsm.fire(Event.EVT9, bytes(out))

    def send_request(
        self,
        context: pdu.ContextResult,
        command_field: int,
        sop_instance: str,
        data_set: bytes | None,
        type_id: int | None = None,
    ) -> int:
        """An N-EVENT-REPORT request from the acceptor on the same association (PS3.4 J.3.3:
        a Storage Commitment SCP may report on the association of the N-ACTION while it is
        open); its response comes back through `_request` (Evt.RESPONSE). Returns its
        Message ID."""
        if command_field != dimse.N_EVENT_REPORT_RQ:
            raise ValueError("an acceptor only sends N-EVENT-REPORT requests")
        self._message_id = (self._message_id % 0xFFFF) + 1
        command = dimse.request(
            command_field,
            self._message_id,
            context.abstract_syntax,
            sop_instance,
            has_data_set=data_set is not None,
            type_id=type_id,
        )
        self._requests.add(self._message_id)
        self.respond(context, command, data_set)
        return self._message_id


def _ignore(data: memoryview) -> None:
    """Bytes of a PDU that Table 9-10 ignores (AA-6)."""


def _rj(rejection: Rejection) -> bytes:
    return pdu.associate_rj(rejection.result, rejection.source, rejection.reason)
