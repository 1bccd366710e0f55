"""Storage Commitment Push Model on the station's SCP (PS3.4 Annex J), in both roles.

SCP role: a modality that stored here asks (N-ACTION) whether we keep its instances; the answer
comes from the index, because an instance has a row only once its file is fsync'd and the row
committed (ingest.py). The N-EVENT-REPORT goes on the same association right after the
N-ACTION-RSP, or, for a peer configured with `report: "new"`, on a new association to the
peer's address (the SCP proposes the SCP role for the SOP class, J.3.3 and PS3.7 D.3.3.4).
A report owed on a new association is stored in the SCP's own table before the N-ACTION-RSP
and sent from there (reports.py), so a restart between the two does not lose it.

SCU role (for the sender): an archive reports on a new association it opens to this AE; the
report is published to JetStream (`CommitmentReported`) before it is answered 0000, so the
sender consumes it whenever it runs. No NATS or SQL here: the composition root gives callables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from cinebridge_common import commitment as sc
from cinebridge_common.logging import kv
from cinebridge_dicom import dimse, requestor
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)


class CommitmentPeer(BaseModel):
    """A modality that may ask this SCP for commitment, by its calling AE title."""

    ae_title: str = Field(min_length=1, max_length=16)
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    #: Where the N-EVENT-REPORT goes: on the association of the N-ACTION, or on a new one to
    #: host:port (for requesters that release at once).
    report: Literal["same", "new"] = "same"


#: SOP Instance UIDs → SOP Class UID of those in the index.
Lookup = Callable[[Sequence[str]], dict[str, str]]
#: Publishes a report received for the sender (durable); False when it could not.
Publish = Callable[[sc.Report, str], bool]
#: Stores a report owed on a new association (durable, raises when it cannot); its row id.
Owe = Callable[["ReportTo", sc.Report], int]
#: Makes a stored report due at once (after its N-ACTION-RSP went out).
Due = Callable[[int], None]


@dataclass(frozen=True)
class ReportTo:
    """Where and as whom to send a report on a new association."""

    ae_title: str
    host: str
    port: int
    calling_ae: str
    implementation_class_uid: str
    implementation_version_name: str


class CommitmentService:
    def __init__(
        self,
        lookup: Lookup,
        publish: Publish,
        peers: Sequence[CommitmentPeer],
        ae_title: str,
        implementation: tuple[str, str],
        owe: Owe,
        due: Due,
    ) -> None:
        self.lookup_uids = lookup
        self.publish = publish
        self.owe = owe
        self.due = due
        self.peers = {p.ae_title: p for p in peers}
        self.ae_title = ae_title
        self.implementation = implementation

    def answer(self, transaction_uid: str, references: Sequence[sc.Reference]) -> sc.Report:
        """Committed: in the index under the same SOP class. Else Failed SOP Sequence with
        0112 (no such object instance) or 0119 (class/instance conflict), PS3.3 C.14.1.1."""
        known = self.lookup_uids([r.sop_instance_uid for r in references])
        report = sc.Report(transaction_uid)
        for ref in references:
            stored_class = known.get(ref.sop_instance_uid)
            if stored_class is None:
                reason = sc.NO_SUCH_OBJECT_INSTANCE
            elif stored_class != ref.sop_class_uid:
                reason = sc.CLASS_INSTANCE_CONFLICT
            else:
                report.committed.append(ref)
                continue
            report.failed.append(sc.Failure(ref.sop_class_uid, ref.sop_instance_uid, reason))
        return report

    def report_to(self, calling_ae: str) -> ReportTo | None:
        """The address of a new association for this requester's report; None: the same one."""
        peer = self.peers.get(calling_ae)
        if peer is None or peer.report == "same" or not peer.host or not peer.port:
            return None
        uid, version = self.implementation
        return ReportTo(peer.ae_title, peer.host, peer.port, self.ae_title, uid, version)

    def report_later(self, to: ReportTo, report: sc.Report) -> int:
        """Store the report owed to `to` before the N-ACTION-RSP (raises when it cannot, and
        the request is then refused 0110); `due(id)` once the response went out."""
        return self.owe(to, report)


def send_report(to: ReportTo, report: sc.Report, dimse_s: float = 30.0) -> int | None:
    """One N-EVENT-REPORT on a new association, proposing the SCP role for the SOP class
    (PS3.4 J.3.3): the response status (None: a response without one). Raises
    `requestor.AssociationError` when the requester cannot be reached or breaks off."""
    settings = requestor.Settings(
        calling_ae=to.calling_ae,
        called_ae=to.ae_title,
        implementation_class_uid=to.implementation_class_uid,
        implementation_version_name=to.implementation_version_name,
        network_s=dimse_s,
        dimse_s=dimse_s,
    )
    contexts = [(sc.STORAGE_COMMITMENT, list(sc.TRANSFER_SYNTAXES))]
    roles = {sc.STORAGE_COMMITMENT: (0, 1)}
    assoc = requestor.Association.request(to.host, to.port, settings, contexts, roles)
    try:
        context = assoc.context_for(sc.STORAGE_COMMITMENT)
        if context is None:  # accepted but not this class: Rejected by request() already
            raise requestor.Rejected("Storage Commitment not accepted", transient=False)
        rsp = assoc.send_n(
            context,
            dimse.N_EVENT_REPORT_RQ,
            sc.STORAGE_COMMITMENT_INSTANCE,
            sc.event_information(report, context.transfer_syntax),
            type_id=report.event_type,
        )
    finally:
        assoc.release()
    log.info(
        "commitment report sent",
        extra=kv(transaction=report.transaction_uid, peer=to.ae_title, status=rsp.status),
    )
    return rsp.status
