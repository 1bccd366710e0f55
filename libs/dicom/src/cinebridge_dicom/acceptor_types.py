"""What an acceptor association is set up with, and the records of the requests it answers.

Split from `acceptor` (which re-exports the policy and the limits, so callers keep importing
them from there): the association's policy, the bounds it applies to what a peer announces, the
statuses it answers by itself, and the requests being received or waiting for their answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import dimse, pdu
from .events import Evt, Handler, StoreSink

#: A command set is a handful of elements; more than this is not a command set.
MAX_COMMAND_BYTES = 1 << 16
#: PS3.8 9.3.3: an A-ASSOCIATE-RQ with 128 contexts of 45 syntaxes is ~160 KB; allow 1 MiB.
MAX_ASSOCIATE_RQ = 1 << 20
#: C-ECHO status when nobody handles it: success (PS3.7 9.1.5.1.4).
STATUS_SUCCESS = 0x0000
#: C-ECHO-RSP status when the context is not Verification: SOP class not supported (PS3.7 C.4).
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
#: C-FIND: matching ended by a C-CANCEL (PS3.4 C.4.1.1.4, PS3.7 9.1.2.1.6).
STATUS_CANCEL = 0xFE00
#: Pending statuses of a C-FIND response (PS3.4 C.4.1.1.4).
PENDING = frozenset({0xFF00, 0xFF01})
VERIFICATION = "1.2.840.10008.1.1"


@dataclass(frozen=True)
class AcceptorPolicy:
    """What every association of one listening AE shares (read-only)."""

    ae_title: str
    #: Abstract syntax → transfer syntaxes accepted for it.
    supported: Mapping[str, frozenset[str]]
    max_pdu: int
    implementation_class_uid: str
    implementation_version_name: str
    #: ARTIM (PS3.8 9.1.5): awaiting the A-ASSOCIATE-RQ, and the close after release or abort.
    acse_timeout_s: float
    #: Longest wait for the next PDU of an idle association.
    network_timeout_s: float
    #: Longest wait for the rest of a PDU once its header arrived.
    pdu_timeout_s: float
    #: Longest wait for the next PDU while a DIMSE message is half received.
    dimse_timeout_s: float = 60.0
    #: ARTIM once the association ended (Sta13): how long the peer may take to close.
    closing_timeout_s: float = 1.0
    #: Largest data set of a non-streamed request (C-FIND identifier, N-* attribute lists).
    max_request_data_set: int = 1 << 24
    #: Abstract syntaxes whose requestor may take the SCP role too (negotiation.negotiate).
    both_roles: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Ready:
    """A complete non-C-STORE request, answered once the PDU that completed it is consumed."""

    context: pdu.ContextResult
    command: dimse.Command
    handler: Handler
    data_set: bytes | None


@dataclass
class Pending:
    """A DIMSE request whose data set is being received."""

    context: pdu.ContextResult
    command: dimse.Command
    sink: StoreSink | None
    data: bytearray | None


#: DIMSE request → the event its handler is bound to.
REQUEST_EVENT = {
    dimse.C_ECHO_RQ: Evt.C_ECHO,
    dimse.C_STORE_RQ: Evt.C_STORE,
    dimse.C_FIND_RQ: Evt.C_FIND,
    dimse.N_CREATE_RQ: Evt.N_CREATE,
    dimse.N_SET_RQ: Evt.N_SET,
    dimse.N_ACTION_RQ: Evt.N_ACTION,
    dimse.N_EVENT_REPORT_RQ: Evt.N_EVENT_REPORT,
}
