"""Storage Commitment Push Model (PS3.4 Annex J) as the tests' peers speak it: the Action and
Event Information they build, and an archive's N-EVENT-REPORT on an association it opens."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_context

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
#: Failure Reason "no such object instance" (PS3.3 C.14.1.1).
NO_SUCH_OBJECT_INSTANCE = 0x0112


def commitment_dataset(
    transaction_uid: str,
    committed: Iterable[tuple[str, str]],
    failed: Iterable[tuple[str, str]] = (),
) -> Dataset:
    """Action Information (Table J.3-1) or Event Information (Table J.3-2): the Transaction
    UID, the (SOP class, SOP instance) pairs in the Referenced SOP Sequence, and those in the
    Failed SOP Sequence with Failure Reason 0112. An empty sequence is left out."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    referenced = [_item(c, i) for c, i in committed]
    missing = [_item(c, i, NO_SUCH_OBJECT_INSTANCE) for c, i in failed]
    if referenced:
        ds.ReferencedSOPSequence = referenced
    if missing:
        ds.FailedSOPSequence = missing
    return ds


def _item(sop_class: str, sop_instance: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if reason is not None:
        item.FailureReason = reason
    return item


def report_on_new_association(
    port: int,
    called_ae: str,
    transaction_uid: str,
    committed: Iterable[tuple[str, str]],
    failed: Iterable[tuple[str, str]] = (),
    calling_ae: str = "ARCHIVE",
    timeout_s: float = 20.0,
) -> int:
    """What an archive does after its N-ACTION-RSP: a new association to the requester as the
    SCP of the SOP class (PS3.4 J.3.3), then the N-EVENT-REPORT (Event Type 1, or 2 with
    failures). The response's status."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    context = build_context(STORAGE_COMMITMENT, [ExplicitVRLittleEndian])
    context.scu_role, context.scp_role = False, True
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae, contexts=[context])
    assert assoc.is_established
    ds = commitment_dataset(transaction_uid, committed, failed)
    event_type = 2 if "FailedSOPSequence" in ds else 1
    try:
        status, _ = assoc.send_n_event_report(
            ds, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
        )
        return int(status.Status)
    finally:
        assoc.release()
