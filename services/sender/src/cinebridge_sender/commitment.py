"""Storage Commitment Push Model SCU (PS3.4 Annex J, IHE RAD-10): one N-ACTION per transaction,
and the N-EVENT-REPORT when the archive sends it on the same association.

Blocking, for a worker thread (as `scu.py`). The association proposes the Storage Commitment
context and Verification: an archive that accepts the association but not Storage Commitment
does not support it (PS3.4 J.3.1), which is "not committed (unsupported)", never a failed
delivery. After an N-ACTION-RSP 0000 the association stays open for a bounded wait, because an
archive may report on it (J.3.3); most open a new association to the station's SCP instead,
which reaches the sender as `CommitmentReported`, and `answered` ends the wait early. J.3.3
does not order the N-ACTION-RSP and an N-EVENT-REPORT on the same association: a report that
comes first is answered and kept while the response is still awaited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cinebridge_common import commitment as sc
from cinebridge_common import conformance
from cinebridge_dicom import dimse, requestor

from .scu import AssociationFailed, Peer, Timeouts, _settings

#: Longest piece of the wait on the association between checks of `answered`.
_SLICE_S = 0.25

Kind = Literal["requested", "reported", "unsupported", "refused"]


@dataclass(frozen=True)
class Outcome:
    """What one N-ACTION came to: `requested` (0000, no report yet), `reported` (0000 and the
    report on the same association), `unsupported` (SOP class not accepted), `refused` (an
    N-ACTION-RSP failure status: asked again later)."""

    kind: Kind
    report: sc.Report | None = None
    status: int | None = None
    reason: str = ""


def contexts() -> list[tuple[str, list[str]]]:
    return [
        (sc.STORAGE_COMMITMENT, list(sc.TRANSFER_SYNTAXES)),
        (requestor.VERIFICATION, [conformance.IMPLICIT_VR_LITTLE_ENDIAN]),
    ]


def request(
    peer: Peer,
    timeouts: Timeouts,
    transaction_uid: str,
    references: Sequence[sc.Reference],
    wait_s: float,
    answered: threading.Event | None = None,
) -> Outcome:
    """Send the N-ACTION "Request Storage Commitment" (Action Type ID 1) of one transaction.
    Raises `AssociationFailed` when the archive cannot be reached or breaks the association
    before the N-ACTION-RSP."""
    try:
        assoc = requestor.Association.request(
            peer.host, peer.port, _settings(peer, timeouts), contexts()
        )
    except requestor.AssociationError as exc:
        raise AssociationFailed(exc.reason, transient=exc.transient) from exc
    try:
        context = assoc.context_for(sc.STORAGE_COMMITMENT)
        if context is None:
            assoc.release()
            return Outcome(
                "unsupported", reason=f"{peer.ae_title} does not accept Storage Commitment"
            )
        data = sc.action_information(transaction_uid, references, context.transfer_syntax)
        status, report = _send_action(assoc, context, data)
        if status != 0x0000:
            assoc.release()
            why = "no status" if status is None else f"N-ACTION-RSP status {status:04X}"
            return Outcome("refused", status=status, reason=why)
        if report is None:
            report = _await_report(assoc, context, wait_s, answered)
    except requestor.AssociationError as exc:
        assoc.abort()
        raise AssociationFailed(exc.reason, transient=True) from exc
    assoc.release()
    if report is None:
        return Outcome("requested", status=0)
    return Outcome("reported", report=report, status=0)


def _send_action(
    assoc: requestor.Association, context: requestor.Context, data: bytes
) -> tuple[int | None, sc.Report | None]:
    """The N-ACTION-RQ, then its N-ACTION-RSP's status, and the report if the archive sent its
    N-EVENT-REPORT first (answered at once, PS3.4 J.3.3). Any other message aborts (PS3.7
    9.3.1.2: Message ID Being Responded To)."""
    mid = assoc.next_message_id()
    command = dimse.request(
        dimse.N_ACTION_RQ,
        mid,
        context.abstract_syntax,
        sc.STORAGE_COMMITMENT_INSTANCE,
        has_data_set=True,
        type_id=sc.ACTION_REQUEST,
    )
    assoc.send_message(context, command, data)
    deadline = time.monotonic() + (assoc.settings.dimse_s or 1e9)
    report = None
    while True:
        message = assoc.receive(deadline)
        if message.field == dimse.N_EVENT_REPORT_RQ and report is None:
            report = _answer_report(assoc, context, message)
            continue
        if message.field != dimse.N_ACTION_RSP or message.command.message_id != mid:
            assoc.abort()
            raise requestor.Aborted(
                f"{assoc.where} sent 0x{message.field:04X} answering message "
                f"{message.command.message_id}, not the N-ACTION-RSP to {mid}: aborted"
            )
        return message.status, report


def _answer_report(
    assoc: requestor.Association, context: requestor.Context, message: requestor.Message
) -> sc.Report | None:
    """Answer an N-EVENT-REPORT-RQ received on this association: the report, or None when it
    cannot be read (0110 Processing failure, PS3.7 Annex C: the archive may send it again)."""
    try:
        report = sc.parse_report(message.dataset or b"", context.transfer_syntax)
    except sc.MalformedCommitment:
        assoc.send_message(context, dimse.response_to(message.command, 0x0110))
        return None
    assoc.send_message(context, dimse.response_to(message.command, 0x0000))
    return report


def _await_report(
    assoc: requestor.Association,
    context: requestor.Context,
    wait_s: float,
    answered: threading.Event | None,
) -> sc.Report | None:
    """The N-EVENT-REPORT on this association within `wait_s`, answered 0000 (PS3.4 J.3.3.1);
    None when the wait ends first, the report came elsewhere, or the archive closes."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if answered is not None and answered.is_set():
            return None
        try:
            message = assoc.receive(min(deadline, time.monotonic() + _SLICE_S))
        except requestor.Expired:
            continue
        except requestor.Aborted:
            return None  # the archive released or aborted: its report comes another way
        if message.field != dimse.N_EVENT_REPORT_RQ:
            assoc.abort()
            raise requestor.Aborted(f"unexpected DIMSE 0x{message.field:04X} after N-ACTION")
        return _answer_report(assoc, context, message)
    return None
