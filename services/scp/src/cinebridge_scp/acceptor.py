"""The Storage and Verification SCP's DIMSE handlers and association policy, on cinebridge_dicom.

The Upper Layer, the PS3.8 state machine and the DIMSE framing are `cinebridge_dicom.acceptor`'s;
this module says what this AE does with them: whom it accepts (called AE, calling AE allow-list,
association limit), where a C-STORE data set goes (a `ReceiveFile` written as its fragments
arrive, then `StoreSink.store_instance` decides the status), and what each association's end
counts in the metrics and logs. The binding table is at the bottom.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from cinebridge_common import commitment as sc
from cinebridge_common.conformance import STATUS_SUCCESS, VERIFICATION_SOP_CLASS
from cinebridge_common.logging import kv
from cinebridge_dicom import dimse, pdu
from cinebridge_dicom.acceptor import AcceptorAssociation, AcceptorPolicy
from cinebridge_dicom.events import Binding, Evt, Rejection, binding_table

from . import metrics
from .commitment import CommitmentService
from .ingest import Command
from .receive import ReceiveConfig, ReceiveFile, file_meta_bytes

log = logging.getLogger(__name__)

VERIFICATION = VERIFICATION_SOP_CLASS[1]


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
    #: Storage Commitment Push Model in both roles (commitment.py); None: not offered.
    commitment: CommitmentService | None = None

    @functools.cached_property
    def policy(self) -> AcceptorPolicy:
        limits = self.limits
        return AcceptorPolicy(
            ae_title=self.ae_title,
            supported=self.supported,
            max_pdu=limits.max_pdu,
            implementation_class_uid=self.implementation_class_uid,
            implementation_version_name=self.implementation_version_name,
            acse_timeout_s=limits.acse_timeout_s,
            network_timeout_s=limits.network_timeout_s,
            pdu_timeout_s=limits.pdu_timeout_s,
            dimse_timeout_s=limits.dimse_timeout_s,
            # An archive reporting on its own association is the SCP of the class (J.3.3).
            both_roles=frozenset([sc.STORAGE_COMMITMENT]),
        )


class Association(AcceptorAssociation):
    """An acceptor association with what this SCP's handlers need to know."""

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        config: AcceptorConfig,
        header: bytes,
        admit: Callable[[], bool],
    ) -> None:
        super().__init__(sock, peer, config.policy, HANDLERS, header)
        self.config = config
        #: Counts this association against the listener's limit; False when at the limit.
        self.admit = admit
        #: C-STORE outcomes on this association, logged when it ends (one line per association
        #: at INFO instead of one per instance).
        self.stored = 0
        self.refused = 0


class ReceivedInstance:
    """A C-STORE data set streamed into a `ReceiveFile`, indexed when complete."""

    def __init__(self, assoc: Association, command: Command, rf: ReceiveFile) -> None:
        self.assoc, self.command, self.file = assoc, command, rf

    def write(self, data: memoryview) -> int:
        return self.file.write(data)

    def finish(self) -> int:
        status = self.assoc.config.ingest.store_instance(self.file, self.command)
        if status == STATUS_SUCCESS:
            self.assoc.stored += 1
        else:
            self.assoc.refused += 1
        return status

    def discard(self) -> None:
        self.file.discard()
        log.warning(
            "partial instance discarded",
            extra=kv(
                association=self.assoc.id, peer=self.assoc.peer, calling_ae=self.assoc.calling_ae
            ),
        )


# ------------------------------------------------------------------ handlers


def handle_requested(assoc: Association, rq: pdu.AssociateRq) -> Rejection | None:
    """Whom this AE accepts (PS3.8 Table 9-21 reasons); then the association limit."""
    cfg = assoc.config
    if cfg.require_called_ae and rq.called_ae != cfg.ae_title and not _reporting(cfg, rq):
        return Rejection(1, 1, 7, "called AE title not recognised")
    if not rq.calling_ae:
        return Rejection(1, 1, 3, "calling AE title empty")
    allowed = cfg.allowed_calling_ae_titles
    if allowed and rq.calling_ae not in allowed:
        return Rejection(1, 1, 3, "calling AE title not in allow-list")
    assoc.admitted = assoc.admit()
    if not assoc.admitted:
        return Rejection(2, 3, 2, "too many associations")  # transient, local limit exceeded
    return None


def _reporting(cfg: AcceptorConfig, rq: pdu.AssociateRq) -> bool:
    """An archive bringing a Storage Commitment report (PS3.4 J.3.3) addresses the AE title it
    knows the station by: the sender's calling AE title, which need not be this AE's. Such an
    association (Storage Commitment, perhaps Verification, nothing else) is accepted whatever
    its called AE title; the calling AE allow-list still applies."""
    if cfg.commitment is None:
        return False
    offered = {cx.abstract_syntax for cx in rq.contexts}
    return sc.STORAGE_COMMITMENT in offered and offered <= {sc.STORAGE_COMMITMENT, VERIFICATION}


def handle_rejected(assoc: Association, rq: pdu.AssociateRq, rejection: Rejection) -> None:
    log.warning(
        "association rejected",
        extra=kv(
            association=assoc.id,
            peer=assoc.peer,
            calling_ae=rq.calling_ae,
            called_ae=rq.called_ae,
            result=rejection.result,
            source=rejection.source,
            reason=rejection.reason,
            why=rejection.why,
        ),
    )
    metrics.rejected(rejection.why)


def handle_accepted(assoc: Association, rq: pdu.AssociateRq) -> None:
    metrics.ASSOCIATIONS_ACCEPTED.inc()
    log.info(
        "association accepted",
        extra=kv(
            association=assoc.id,
            peer=assoc.peer,
            calling_ae=rq.calling_ae,
            contexts=len(assoc.contexts),
        ),
    )


def handle_echo(assoc: Association, context: pdu.ContextResult, rq: dimse.Command) -> int:
    metrics.ECHOES.inc()
    return STATUS_SUCCESS


def handle_store(
    assoc: Association, context: pdu.ContextResult, rq: dimse.Command
) -> ReceivedInstance:
    """Open the file the data set streams into, file meta first (PS3.10 7.1)."""
    command = Command(
        sop_class_uid=rq.sop_class_uid,
        sop_instance_uid=rq.sop_instance_uid,
        calling_ae=assoc.calling_ae,
        source_address=assoc.peer,
        association=assoc.id,
    )
    cfg = assoc.config
    rf = ReceiveFile(cfg.receive)
    if command.sop_class_uid != context.abstract_syntax:
        rf.refuse("SOP Class UID of the command differs from its presentation context")
    rf.write(
        file_meta_bytes(
            command.sop_class_uid,
            command.sop_instance_uid,
            context.transfer_syntax,
            cfg.implementation_class_uid,
            cfg.implementation_version_name,
            assoc.calling_ae,
        )
    )
    return ReceivedInstance(assoc, command, rf)


#: N-ACTION / N-EVENT-REPORT statuses (PS3.7 10.1.4.1.10, 10.1.1.1.8; Annex C).
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_NO_SUCH_SOP_CLASS = 0x0118
STATUS_NO_SUCH_ACTION = 0x0123
STATUS_NO_SUCH_EVENT = 0x0113
STATUS_INVALID_ARGUMENT = 0x0115

Answers = Iterator[tuple[int, bytes | None]]


def handle_n_action(
    assoc: Association, context: pdu.ContextResult, rq: dimse.Command, data: bytes | None
) -> Answers:
    """Storage Commitment request (PS3.4 J.3.2): answered from the index, the N-ACTION-RSP
    first, then the N-EVENT-REPORT (J.3.3) here, or on a new association from the SCP's table
    of owed reports (stored before the response)."""
    service = assoc.config.commitment
    if service is None or context.abstract_syntax != sc.STORAGE_COMMITMENT:
        yield STATUS_NO_SUCH_SOP_CLASS, None
        return
    if dimse.command_us(rq.elements, dimse.ACTION_TYPE_ID) != sc.ACTION_REQUEST:
        yield STATUS_NO_SUCH_ACTION, None
        return
    try:
        uid, refs = sc.parse_action(data or b"", context.transfer_syntax)
        report = service.answer(uid, refs)
    except sc.MalformedCommitment as exc:
        log.warning("commitment request refused", extra=kv(association=assoc.id, reason=str(exc)))
        yield STATUS_INVALID_ARGUMENT, None
        return
    except Exception as exc:  # the index is unreachable: the requester asks again later
        log.warning("commitment lookup failed", extra=kv(association=assoc.id, error=repr(exc)))
        yield STATUS_PROCESSING_FAILURE, None
        return
    to = service.report_to(assoc.calling_ae)
    owed = None
    if to is not None:
        try:  # stored before the N-ACTION-RSP, so that a restart does not lose it (J.3.3)
            owed = service.report_later(to, report)
        except Exception as exc:
            log.warning(
                "commitment report not stored", extra=kv(association=assoc.id, error=repr(exc))
            )
            yield STATUS_PROCESSING_FAILURE, None
            return
    metrics.COMMITMENT_REQUESTS.labels("committed" if not report.failed else "failures").inc()
    yield STATUS_SUCCESS, None
    log.info(
        "commitment requested",
        extra=kv(
            association=assoc.id,
            calling_ae=assoc.calling_ae,
            transaction=uid,
            committed=len(report.committed),
            failed=len(report.failed),
            report="new association" if to else "same association",
        ),
    )
    if owed is not None:
        service.due(owed)
        return
    assoc.send_request(
        context,
        dimse.N_EVENT_REPORT_RQ,
        sc.STORAGE_COMMITMENT_INSTANCE,
        sc.event_information(report, context.transfer_syntax),
        report.event_type,
    )


def handle_n_event_report(
    assoc: Association, context: pdu.ContextResult, rq: dimse.Command, data: bytes | None
) -> Answers:
    """An archive's Storage Commitment result for the sender (PS3.4 J.3.3): answered 0000 only
    once it is stored in JetStream, so it is never lost while the sender is down."""
    service = assoc.config.commitment
    if service is None or context.abstract_syntax != sc.STORAGE_COMMITMENT:
        yield STATUS_NO_SUCH_SOP_CLASS, None
        return
    if dimse.command_us(rq.elements, dimse.EVENT_TYPE_ID) not in (
        sc.EVENT_SUCCESS,
        sc.EVENT_FAILURES,
    ):
        yield STATUS_NO_SUCH_EVENT, None
        return
    try:
        report = sc.parse_report(data or b"", context.transfer_syntax)
    except sc.MalformedCommitment as exc:
        log.warning("commitment report refused", extra=kv(association=assoc.id, reason=str(exc)))
        yield STATUS_INVALID_ARGUMENT, None
        return
    stored = service.publish(report, assoc.calling_ae)
    metrics.COMMITMENT_REPORTS.labels("stored" if stored else "failed").inc()
    log.info(
        "commitment report received",
        extra=kv(
            association=assoc.id,
            calling_ae=assoc.calling_ae,
            transaction=report.transaction_uid,
            committed=len(report.committed),
            failed=len(report.failed),
            stored=stored,
        ),
    )
    yield (STATUS_SUCCESS if stored else STATUS_PROCESSING_FAILURE), None


def handle_response(assoc: Association, context: pdu.ContextResult, rsp: dimse.Command) -> None:
    log.info(
        "commitment report answered",
        extra=kv(association=assoc.id, calling_ae=assoc.calling_ae, status=rsp.status),
    )


def handle_released(assoc: Association) -> None:
    metrics.ASSOCIATIONS_ENDED.labels("released").inc()  # counted before the peer knows
    log.info(
        "association released",
        extra=kv(association=assoc.id, peer=assoc.peer, stored=assoc.stored, refused=assoc.refused),
    )


def handle_aborted(assoc: Association, body: object) -> None:
    metrics.ASSOCIATIONS_ENDED.labels("peer_abort").inc()
    log.info(
        "association aborted by the peer",
        extra=kv(association=assoc.id, peer=assoc.peer, stored=assoc.stored, refused=assoc.refused),
    )


def _aborting(assoc: Association, how: str, message: str, why: str) -> None:
    metrics.ASSOCIATIONS_ENDED.labels(how).inc()
    log.warning(
        message,
        extra=kv(
            association=assoc.id,
            peer=assoc.peer,
            calling_ae=assoc.calling_ae,
            reason=why,
            stored=assoc.stored,
            refused=assoc.refused,
        ),
    )


def handle_protocol_error(assoc: Association, why: str) -> None:
    _aborting(assoc, "protocol_error", "protocol error, aborting", why)


def handle_timeout(assoc: Association, why: str) -> None:
    _aborting(assoc, "timeout", "peer too slow or idle, aborting", why)


def handle_conn_closed(assoc: Association, why: str, mid_message: bool) -> None:
    metrics.ASSOCIATIONS_ENDED.labels("closed").inc()
    level = logging.WARNING if mid_message else logging.INFO
    log.log(
        level,
        "connection closed",
        extra=kv(
            association=assoc.id,
            peer=assoc.peer,
            reason=why,
            stored=assoc.stored,
            refused=assoc.refused,
        ),
    )


BINDINGS: list[Binding] = [
    (Evt.REQUESTED, handle_requested),
    (Evt.REJECTED, handle_rejected),
    (Evt.ACCEPTED, handle_accepted),
    (Evt.C_ECHO, handle_echo),
    (Evt.C_STORE, handle_store),
    (Evt.N_ACTION, handle_n_action),
    (Evt.N_EVENT_REPORT, handle_n_event_report),
    (Evt.RESPONSE, handle_response),
    (Evt.RELEASED, handle_released),
    (Evt.ABORTED, handle_aborted),
    (Evt.PROTOCOL_ERROR, handle_protocol_error),
    (Evt.TIMEOUT, handle_timeout),
    (Evt.CONN_CLOSED, handle_conn_closed),
]
HANDLERS = binding_table(BINDINGS)
