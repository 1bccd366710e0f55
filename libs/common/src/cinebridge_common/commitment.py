"""Storage Commitment Push Model data sets (PS3.4 Annex J), shared by the sender and the SCP.

N-ACTION-RQ Action Information (Table J.3-1) and N-EVENT-REPORT-RQ Event Information
(Tables J.3-2, J.3-3), encoded and decoded with pydicom in the transfer syntax of the
presentation context they travel on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Final

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from .conformance import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

#: Storage Commitment Push Model SOP Class and its well-known instance (PS3.4 J.3.5, J.3.6).
STORAGE_COMMITMENT: Final = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE: Final = "1.2.840.10008.1.20.1.1"
#: Transfer syntaxes offered and accepted for it, preferred first.
TRANSFER_SYNTAXES: Final = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
#: Action Type ID "Request Storage Commitment" (PS3.4 Table J.3-1).
ACTION_REQUEST: Final = 1
#: Event Type IDs (PS3.4 Table J.3-2): every instance committed / failures present.
EVENT_SUCCESS: Final = 1
EVENT_FAILURES: Final = 2
#: Failure Reason (0008,1197) values (PS3.3 C.14.1.1).
PROCESSING_FAILURE: Final = 0x0110
NO_SUCH_OBJECT_INSTANCE: Final = 0x0112
RESOURCE_LIMITATION: Final = 0x0213
REFERENCED_SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
CLASS_INSTANCE_CONFLICT: Final = 0x0119
DUPLICATE_TRANSACTION_UID: Final = 0x0131


class MalformedCommitment(ValueError):
    """An Action or Event Information that does not follow PS3.4 J.3."""


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Failure:
    sop_class_uid: str
    sop_instance_uid: str
    reason: int


@dataclass
class Report:
    """The result of one transaction: committed references and failures (Table J.3-2)."""

    transaction_uid: str
    committed: list[Reference] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @property
    def event_type(self) -> int:
        return EVENT_FAILURES if self.failed else EVENT_SUCCESS


def _encode(ds: Dataset, transfer_syntax: str) -> bytes:
    out = DicomBytesIO()
    out.is_little_endian = True
    out.is_implicit_VR = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    write_dataset(out, ds)
    return out.getvalue()


def _decode(data: bytes, transfer_syntax: str) -> Dataset:
    try:
        return read_dataset(
            BytesIO(data), transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN, is_little_endian=True
        )
    except Exception as exc:  # pydicom raises many kinds on garbage
        raise MalformedCommitment(f"undecodable data set: {exc}") from exc


def _ref(reference: Reference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = reference.sop_class_uid
    item.ReferencedSOPInstanceUID = reference.sop_instance_uid
    return item


def action_information(
    transaction_uid: str, references: Sequence[Reference], transfer_syntax: str
) -> bytes:
    """N-ACTION-RQ Action Information: Transaction UID and Referenced SOP Sequence (J.3-1)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.ReferencedSOPSequence = [_ref(r) for r in references]
    return _encode(ds, transfer_syntax)


def parse_action(data: bytes, transfer_syntax: str) -> tuple[str, list[Reference]]:
    ds = _decode(data, transfer_syntax)
    uid = str(ds.get("TransactionUID", "") or "")
    if not uid:
        raise MalformedCommitment("Action Information without Transaction UID")
    refs = [
        Reference(
            str(i.get("ReferencedSOPClassUID", "")), str(i.get("ReferencedSOPInstanceUID", ""))
        )
        for i in ds.get("ReferencedSOPSequence", [])
    ]
    if not refs:
        raise MalformedCommitment("Action Information without Referenced SOP Sequence")
    return uid, refs


def event_information(report: Report, transfer_syntax: str) -> bytes:
    """N-EVENT-REPORT-RQ Event Information (Tables J.3-2, J.3-3): the Referenced SOP Sequence
    of what is committed, the Failed SOP Sequence with a Failure Reason per instance."""
    ds = Dataset()
    ds.TransactionUID = report.transaction_uid
    if report.committed:
        ds.ReferencedSOPSequence = [_ref(r) for r in report.committed]
    if report.failed:
        failed = []
        for f in report.failed:
            item = _ref(Reference(f.sop_class_uid, f.sop_instance_uid))
            item.FailureReason = f.reason
            failed.append(item)
        ds.FailedSOPSequence = failed
    return _encode(ds, transfer_syntax)


def parse_report(data: bytes, transfer_syntax: str) -> Report:
    ds = _decode(data, transfer_syntax)
    uid = str(ds.get("TransactionUID", "") or "")
    if not uid:
        raise MalformedCommitment("Event Information without Transaction UID")
    report = Report(uid)
    for i in ds.get("ReferencedSOPSequence", []):
        report.committed.append(
            Reference(
                str(i.get("ReferencedSOPClassUID", "")), str(i.get("ReferencedSOPInstanceUID", ""))
            )
        )
    for i in ds.get("FailedSOPSequence", []):
        reason = i.get("FailureReason", PROCESSING_FAILURE)
        report.failed.append(
            Failure(
                str(i.get("ReferencedSOPClassUID", "")),
                str(i.get("ReferencedSOPInstanceUID", "")),
                int(reason) if reason is not None else PROCESSING_FAILURE,
            )
        )
    return report
