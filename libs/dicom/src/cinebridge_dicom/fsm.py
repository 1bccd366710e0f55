"""The DICOM Upper Layer state machine of PS3.8 9.2, as the table the standard prints.

States Sta1-Sta13 (Table 9-1), events Evt1-Evt19 (Table 9-2), actions AE-n, DT-n, AR-n, AA-n
(Tables 9-6 to 9-9) and the state transition table (Table 9-10). Both roles run through it:
the requestor (`Evt1` A-ASSOCIATE request … `Evt11` A-RELEASE request) and the acceptor (`Evt5`
transport connection indication … `Evt14` A-RELEASE response). The machine does no I/O itself:
each action calls the `Transport` it is given (connect, send a PDU, close) and tells the
`ServiceUser` what the standard calls a primitive (indication or confirmation). ARTIM is a
deadline the caller's read loop honours: `artim_deadline` is set by the actions that start it,
and its expiry is `Evt18`.

A pair of (event, state) that the table leaves empty is a local user issuing a primitive the
standard does not allow in that state; it raises `InvalidPrimitive` and changes nothing.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from . import pdu


class State(enum.Enum):
    """PS3.8 Table 9-1."""

    STA1 = "Sta1"  # Idle
    STA2 = "Sta2"  # Transport connection open (awaiting A-ASSOCIATE-RQ PDU)
    STA3 = "Sta3"  # Awaiting local A-ASSOCIATE response primitive
    STA4 = "Sta4"  # Awaiting transport connection opening to complete
    STA5 = "Sta5"  # Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU
    STA6 = "Sta6"  # Association established and ready for data transfer
    STA7 = "Sta7"  # Awaiting A-RELEASE-RP PDU
    STA8 = "Sta8"  # Awaiting local A-RELEASE response primitive
    STA9 = "Sta9"  # Release collision requestor side; awaiting A-RELEASE response
    STA10 = "Sta10"  # Release collision acceptor side; awaiting A-RELEASE-RP PDU
    STA11 = "Sta11"  # Release collision requestor side; awaiting A-RELEASE-RP PDU
    STA12 = "Sta12"  # Release collision acceptor side; awaiting A-RELEASE response primitive
    STA13 = "Sta13"  # Awaiting Transport Connection Close Indication


class Event(enum.Enum):
    """PS3.8 Table 9-2."""

    EVT1 = "Evt1"  # A-ASSOCIATE request (local user)
    EVT2 = "Evt2"  # Transport connect confirmation (local transport service)
    EVT3 = "Evt3"  # A-ASSOCIATE-AC PDU received
    EVT4 = "Evt4"  # A-ASSOCIATE-RJ PDU received
    EVT5 = "Evt5"  # Transport connection indication
    EVT6 = "Evt6"  # A-ASSOCIATE-RQ PDU received
    EVT7 = "Evt7"  # A-ASSOCIATE response primitive (accept)
    EVT8 = "Evt8"  # A-ASSOCIATE response primitive (reject)
    EVT9 = "Evt9"  # P-DATA request primitive
    EVT10 = "Evt10"  # P-DATA-TF PDU received
    EVT11 = "Evt11"  # A-RELEASE request primitive
    EVT12 = "Evt12"  # A-RELEASE-RQ PDU received
    EVT13 = "Evt13"  # A-RELEASE-RP PDU received
    EVT14 = "Evt14"  # A-RELEASE response primitive
    EVT15 = "Evt15"  # A-ABORT request primitive
    EVT16 = "Evt16"  # A-ABORT PDU received
    EVT17 = "Evt17"  # Transport connection closed indication
    EVT18 = "Evt18"  # ARTIM timer expired
    EVT19 = "Evt19"  # Unrecognized or invalid PDU received


class Primitive(enum.Enum):
    """What an action tells the local service user (PS3.8 7.1-7.3)."""

    ASSOCIATE_INDICATION = "A-ASSOCIATE indication"
    ASSOCIATE_ACCEPTED = "A-ASSOCIATE confirmation (accept)"
    ASSOCIATE_REJECTED = "A-ASSOCIATE confirmation (reject)"
    P_DATA = "P-DATA indication"
    RELEASE_INDICATION = "A-RELEASE indication"
    RELEASE_COLLISION = "A-RELEASE indication (release collision)"
    RELEASE_CONFIRMED = "A-RELEASE confirmation"
    ABORT = "A-ABORT indication"
    PROVIDER_ABORT = "A-P-ABORT indication"


# The events that are PDUs arriving (the others are local primitives, transport or timer).
PDU_EVENTS = frozenset(
    {
        Event.EVT3,
        Event.EVT4,
        Event.EVT6,
        Event.EVT10,
        Event.EVT12,
        Event.EVT13,
        Event.EVT16,
        Event.EVT19,
    }
)
#: PDU type (PS3.8 Table 9-11) → the event of its arrival.
PDU_EVENT = {
    pdu.ASSOCIATE_RQ: Event.EVT6,
    pdu.ASSOCIATE_AC: Event.EVT3,
    pdu.ASSOCIATE_RJ: Event.EVT4,
    pdu.P_DATA_TF: Event.EVT10,
    pdu.RELEASE_RQ: Event.EVT12,
    pdu.RELEASE_RP: Event.EVT13,
    pdu.ABORT: Event.EVT16,
}


class InvalidPrimitive(RuntimeError):
    """The local user issued a primitive that Table 9-10 does not allow in the current state."""


class Transport(Protocol):
    """What the actions do to the transport connection (PS3.8 9.1.2)."""

    def connect(self) -> None: ...

    def send(self, data: object) -> None: ...

    def close(self) -> None: ...


class ServiceUser(Protocol):
    """Receives the primitives the actions issue, with the event's payload."""

    def indicate(self, primitive: Primitive, payload: object) -> None: ...


@dataclass(frozen=True)
class ProviderRejection:
    """Payload of `Evt6` when the service provider itself finds the A-ASSOCIATE-RQ
    unacceptable (AE-6, second branch): the A-ASSOCIATE-RJ PDU to send."""

    associate_rj: bytes


@dataclass(frozen=True)
class AbortReason:
    """Payload of `Evt15` or `Evt19`: A-ABORT source and reason (PS3.8 Table 9-26)."""

    source: int = 0
    reason: int = 0


S = State
E = Event


def _states(*numbers: int) -> tuple[State, ...]:
    return tuple(State(f"Sta{n}") for n in numbers)


#: Every state from the A-ASSOCIATE request or indication up to the release.
_AFTER_REQUEST = _states(3, 5, 6, 7, 8, 9, 10, 11, 12)


def _same(states: tuple[State, ...], action: str) -> dict[State, str]:
    return dict.fromkeys(states, action)


#: PS3.8 Table 9-10, one row per event: state → action. Rows read as the printed table does.
#: The "unexpected PDU" rows (Evt3, Evt4, Evt6, Evt10, Evt12, Evt13, Evt19) share a shape:
#: AA-1 in Sta2, AA-8 in every state from Sta3 on, AA-6 (ignore) or AA-7 in Sta13.
_UNEXPECTED = {S.STA2: "AA-1", **_same(_AFTER_REQUEST, "AA-8"), S.STA13: "AA-6"}
TABLE_ROWS: dict[Event, dict[State, str]] = {
    E.EVT1: {S.STA1: "AE-1"},
    E.EVT2: {S.STA4: "AE-2"},
    E.EVT3: {**_UNEXPECTED, S.STA5: "AE-3"},
    E.EVT4: {**_UNEXPECTED, S.STA5: "AE-4"},
    E.EVT5: {S.STA1: "AE-5"},
    E.EVT6: {**_UNEXPECTED, S.STA2: "AE-6", S.STA13: "AA-7"},
    E.EVT7: {S.STA3: "AE-7"},
    E.EVT8: {S.STA3: "AE-8"},
    E.EVT9: {S.STA6: "DT-1", S.STA8: "AR-7"},
    E.EVT10: {**_UNEXPECTED, S.STA6: "DT-2", S.STA7: "AR-6"},
    E.EVT11: {S.STA6: "AR-1"},
    E.EVT12: {**_UNEXPECTED, S.STA6: "AR-2", S.STA7: "AR-8"},
    E.EVT13: {**_UNEXPECTED, S.STA7: "AR-3", S.STA10: "AR-10", S.STA11: "AR-3"},
    E.EVT14: {S.STA8: "AR-4", S.STA9: "AR-9", S.STA12: "AR-4"},
    E.EVT15: {S.STA4: "AA-2", **_same(_AFTER_REQUEST, "AA-1")},
    E.EVT16: {S.STA2: "AA-2", **_same(_AFTER_REQUEST, "AA-3"), S.STA13: "AA-2"},
    E.EVT17: {S.STA2: "AA-5", S.STA4: "AA-4", **_same(_AFTER_REQUEST, "AA-4"), S.STA13: "AR-5"},
    E.EVT18: {S.STA2: "AA-2", S.STA13: "AA-2"},
    E.EVT19: {**_UNEXPECTED, S.STA13: "AA-7"},
}
#: The same table keyed by (event, state), as the machine looks it up.
TABLE: dict[tuple[Event, State], str] = {
    (event, state): action for event, row in TABLE_ROWS.items() for state, action in row.items()
}


class StateMachine:
    """One association's Upper Layer state, driven by `fire(event, payload)`."""

    def __init__(
        self,
        transport: Transport,
        user: ServiceUser,
        artim_s: float,
        clock: Callable[[], float] = time.monotonic,
        closing_artim_s: float | None = None,
    ) -> None:
        self.state = State.STA1
        self.transport = transport
        self.user = user
        #: ARTIM while the transport is open and no A-ASSOCIATE-RQ has come (AE-5).
        self.artim_s = artim_s
        #: ARTIM once the association ends and the peer's close is awaited in Sta13 (AE-8,
        #: AR-4, AA-1, AA-8). PS3.8 9.1.5 leaves both values to the implementation; a short one
        #: here bounds how long a peer that never closes holds the connection.
        self.closing_artim_s = artim_s if closing_artim_s is None else closing_artim_s
        self.clock = clock
        #: When ARTIM expires (monotonic seconds), or None when it is not running.
        self.artim_deadline: float | None = None
        #: True once this side issued the A-ASSOCIATE request (AR-8 picks Sta9 or Sta10).
        self.requestor = False
        self._associate_rq = b""
        #: Every (event, state, action) taken, oldest first (bounded by the caller's needs).
        self.trace: list[tuple[Event, State, str]] | None = None

    def fire(self, event: Event, payload: object = None) -> str:
        """Run the action Table 9-10 names for `event` in the current state; return its name."""
        action = TABLE.get((event, self.state))
        if action is None:
            raise InvalidPrimitive(f"{event.value} is not allowed in {self.state.value}")
        if self.trace is not None:
            self.trace.append((event, self.state, action))
        self.state = _ACTIONS[action](self, payload)
        return action

    @property
    def artim_expired(self) -> bool:
        return self.artim_deadline is not None and self.clock() >= self.artim_deadline

    # ------------------------------------------------------------------ helpers for actions

    def _start_artim(self) -> None:
        self.artim_deadline = self.clock() + self.artim_s

    def _start_closing_artim(self) -> None:
        self.artim_deadline = self.clock() + self.closing_artim_s

    def _stop_artim(self) -> None:
        self.artim_deadline = None

    def _send(self, data: object) -> None:
        self.transport.send(data)


def _ae_1(m: StateMachine, payload: object) -> State:
    """Issue TRANSPORT CONNECT request primitive to local transport service."""
    assert isinstance(payload, bytes), "Evt1 carries the A-ASSOCIATE-RQ PDU to send"
    m.requestor, m._associate_rq = True, payload
    m.transport.connect()
    return S.STA4


def _ae_2(m: StateMachine, payload: object) -> State:
    """Send A-ASSOCIATE-RQ PDU."""
    m._send(m._associate_rq)
    return S.STA5


def _ae_3(m: StateMachine, payload: object) -> State:
    """Issue A-ASSOCIATE confirmation (accept) primitive."""
    m.user.indicate(Primitive.ASSOCIATE_ACCEPTED, payload)
    return S.STA6


def _ae_4(m: StateMachine, payload: object) -> State:
    """Issue A-ASSOCIATE confirmation (reject) primitive and close transport connection."""
    m.user.indicate(Primitive.ASSOCIATE_REJECTED, payload)
    m.transport.close()
    return S.STA1


def _ae_5(m: StateMachine, payload: object) -> State:
    """Issue Transport connection response primitive; start ARTIM timer."""
    m.requestor = False
    m._start_artim()
    return S.STA2


def _ae_6(m: StateMachine, payload: object) -> State:
    """Stop ARTIM; if the A-ASSOCIATE-RQ is acceptable by the service provider, issue the
    A-ASSOCIATE indication, else send A-ASSOCIATE-RJ and start ARTIM."""
    m._stop_artim()
    if isinstance(payload, ProviderRejection):
        m._send(payload.associate_rj)
        m._start_closing_artim()
        return S.STA13
    m.user.indicate(Primitive.ASSOCIATE_INDICATION, payload)
    return S.STA3


def _ae_7(m: StateMachine, payload: object) -> State:
    """Send A-ASSOCIATE-AC PDU."""
    m._send(payload)
    return S.STA6


def _ae_8(m: StateMachine, payload: object) -> State:
    """Send A-ASSOCIATE-RJ PDU and start ARTIM timer."""
    m._send(payload)
    m._start_closing_artim()
    return S.STA13


def _dt_1(m: StateMachine, payload: object) -> State:
    """Send P-DATA-TF PDU."""
    m._send(payload)
    return S.STA6


def _dt_2(m: StateMachine, payload: object) -> State:
    """Send P-DATA indication primitive."""
    m.user.indicate(Primitive.P_DATA, payload)
    return S.STA6


def _ar_1(m: StateMachine, payload: object) -> State:
    """Send A-RELEASE-RQ PDU."""
    m._send(pdu.RELEASE_RQ_PDU)
    return S.STA7


def _ar_2(m: StateMachine, payload: object) -> State:
    """Issue A-RELEASE indication primitive."""
    m.user.indicate(Primitive.RELEASE_INDICATION, payload)
    return S.STA8


def _ar_3(m: StateMachine, payload: object) -> State:
    """Issue A-RELEASE confirmation primitive, and close transport connection."""
    m.user.indicate(Primitive.RELEASE_CONFIRMED, payload)
    m.transport.close()
    return S.STA1


def _ar_4(m: StateMachine, payload: object) -> State:
    """Issue A-RELEASE-RP PDU and start ARTIM timer."""
    m._send(pdu.RELEASE_RP_PDU)
    m._start_closing_artim()
    return S.STA13


def _ar_5(m: StateMachine, payload: object) -> State:
    """Stop ARTIM timer."""
    m._stop_artim()
    return S.STA1


def _ar_6(m: StateMachine, payload: object) -> State:
    """Issue P-DATA indication."""
    m.user.indicate(Primitive.P_DATA, payload)
    return S.STA7


def _ar_7(m: StateMachine, payload: object) -> State:
    """Issue P-DATA-TF PDU."""
    m._send(payload)
    return S.STA8


def _ar_8(m: StateMachine, payload: object) -> State:
    """Issue A-RELEASE indication (release collision): Sta9 for the requestor, else Sta10."""
    m.user.indicate(Primitive.RELEASE_COLLISION, payload)
    return S.STA9 if m.requestor else S.STA10


def _ar_9(m: StateMachine, payload: object) -> State:
    """Send A-RELEASE-RP PDU."""
    m._send(pdu.RELEASE_RP_PDU)
    return S.STA11


def _ar_10(m: StateMachine, payload: object) -> State:
    """Issue A-RELEASE confirmation primitive."""
    m.user.indicate(Primitive.RELEASE_CONFIRMED, payload)
    return S.STA12


def _abort_pdu(payload: object, source: int, reason: int) -> bytes:
    if isinstance(payload, AbortReason):
        source, reason = payload.source, payload.reason
    return pdu.a_abort(reason, source=source)


def _aa_1(m: StateMachine, payload: object) -> State:
    """Send A-ABORT PDU (service-user source, or the provider's reason that a protocol error
    carries, PS3.8 9.3.8) and start (or restart) ARTIM timer."""
    m._send(_abort_pdu(payload, 0, 0))
    m._start_closing_artim()
    return S.STA13


def _aa_2(m: StateMachine, payload: object) -> State:
    """Stop ARTIM timer if running. Close transport connection."""
    m._stop_artim()
    m.transport.close()
    return S.STA1


def _aa_3(m: StateMachine, payload: object) -> State:
    """Issue A-ABORT (or A-P-ABORT) indication and close transport connection."""
    m.user.indicate(Primitive.ABORT, payload)
    m.transport.close()
    return S.STA1


def _aa_4(m: StateMachine, payload: object) -> State:
    """Issue A-P-ABORT indication primitive."""
    m.user.indicate(Primitive.PROVIDER_ABORT, payload)
    return S.STA1


def _aa_5(m: StateMachine, payload: object) -> State:
    """Stop ARTIM timer."""
    m._stop_artim()
    return S.STA1


def _aa_6(m: StateMachine, payload: object) -> State:
    """Ignore PDU."""
    return S.STA13


def _aa_7(m: StateMachine, payload: object) -> State:
    """Send A-ABORT PDU."""
    m._send(_abort_pdu(payload, 2, pdu.UNEXPECTED_PDU))
    return S.STA13


def _aa_8(m: StateMachine, payload: object) -> State:
    """Send A-ABORT PDU (service-provider source), issue an A-P-ABORT indication, and start
    ARTIM timer."""
    m._send(_abort_pdu(payload, 2, pdu.UNEXPECTED_PDU))
    m.user.indicate(Primitive.PROVIDER_ABORT, payload)
    m._start_closing_artim()
    return S.STA13


_ACTIONS: dict[str, Callable[[StateMachine, object], State]] = {
    "AE-1": _ae_1,
    "AE-2": _ae_2,
    "AE-3": _ae_3,
    "AE-4": _ae_4,
    "AE-5": _ae_5,
    "AE-6": _ae_6,
    "AE-7": _ae_7,
    "AE-8": _ae_8,
    "DT-1": _dt_1,
    "DT-2": _dt_2,
    "AR-1": _ar_1,
    "AR-2": _ar_2,
    "AR-3": _ar_3,
    "AR-4": _ar_4,
    "AR-5": _ar_5,
    "AR-6": _ar_6,
    "AR-7": _ar_7,
    "AR-8": _ar_8,
    "AR-9": _ar_9,
    "AR-10": _ar_10,
    "AA-1": _aa_1,
    "AA-2": _aa_2,
    "AA-3": _aa_3,
    "AA-4": _aa_4,
    "AA-5": _aa_5,
    "AA-6": _aa_6,
    "AA-7": _aa_7,
    "AA-8": _aa_8,
}

#: PS3.8 Table 9-2: the event each received PDU type is (an unrecognised type is Evt19).
PDU_EVENT = {
    pdu.ASSOCIATE_RQ: Event.EVT6,
    pdu.ASSOCIATE_AC: Event.EVT3,
    pdu.ASSOCIATE_RJ: Event.EVT4,
    pdu.P_DATA_TF: Event.EVT10,
    pdu.RELEASE_RQ: Event.EVT12,
    pdu.RELEASE_RP: Event.EVT13,
    pdu.ABORT: Event.EVT16,
}
