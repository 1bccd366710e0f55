"""Modality Performed Procedure Step attribute lists (PS3.4 F.7.2, Table F.7.2-1) and what an
N-CREATE/N-SET status means for the step (PS3.4 F.7.2.1.2, F.7.2.2.2; PS3.7 10.1.5, 10.1.1).

Pure: datasets in, datasets out; no network, no database. Every Type 1 and Type 2 attribute of
Table F.7.2-1 is written (Type 2 zero length when there is no value); the scheduled case copies
the worklist item (IHE RAD TF-2 4.6.4.1.2.3), the unscheduled case sends one Scheduled Step
Attributes Sequence item holding only our Study Instance UID (IHE RAD TF-2 4.6.4.1.2.4).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydicom.dataset import Dataset

#: Modality Performed Procedure Step SOP Class (PS3.4 F.7.1, PS3.6 Annex A).
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
#: SOP classes the converter or a handed-in file may make that are not images: they go to the
#: Referenced Non-Image Composite SOP Instance Sequence (0040,0220) instead of (0008,1140).
NON_IMAGE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
        "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA
        "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    }
)


@dataclass(frozen=True)
class StepFacts:
    """What the station knows of the step when the N-CREATE leaves."""

    pps_id: str
    started_at: dt.datetime
    station_ae: str
    station_name: str
    location: str
    character_set: str


@dataclass(frozen=True)
class PerformedInstance:
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    series_description: str


def _da(when: dt.datetime) -> str:
    # DA/TM carry the station's local time (PS3.5 6.2 without an offset).
    return when.astimezone().strftime("%Y%m%d")


def _tm(when: dt.datetime) -> str:
    return when.astimezone().strftime("%H%M%S")


def _first(ds: Dataset | None, keyword: str) -> Any:
    value = getattr(ds, keyword, None) if ds is not None else None
    return value if value not in (None, "") else ""


def _sequence(ds: Dataset | None, keyword: str) -> list[Dataset]:
    value = getattr(ds, keyword, None) if ds is not None else None
    return [Dataset(item) for item in value] if value else []


def worklist_dataset(item_json: dict[str, Any] | None) -> Dataset | None:
    """The worklist item (DICOM JSON, PS3.18 F.2) the study was started from, or None."""
    if not item_json:
        return None
    return Dataset.from_json(item_json)


def _sps(item: Dataset | None) -> Dataset | None:
    """The worklist item's (first) Scheduled Procedure Step Sequence item."""
    steps = _sequence(item, "ScheduledProcedureStepSequence")
    return steps[0] if steps else None


def _scheduled_step(study: dict[str, Any], item: Dataset | None) -> Dataset:
    """One Scheduled Step Attributes Sequence item (Table F.7.2-1, all Type 1/2 keys)."""
    sps = _sps(item)
    ssa = Dataset()
    ssa.StudyInstanceUID = study["study_instance_uid"]
    ssa.ReferencedStudySequence = _sequence(item, "ReferencedStudySequence")
    # Unscheduled (IHE RAD TF-2 4.6.4.1.2.4): the accession number the operator typed, if any.
    ssa.AccessionNumber = study.get("accession_number") or ""
    ssa.RequestedProcedureID = _first(item, "RequestedProcedureID")
    ssa.RequestedProcedureDescription = _first(item, "RequestedProcedureDescription")
    ssa.ScheduledProcedureStepID = _first(sps, "ScheduledProcedureStepID")
    ssa.ScheduledProcedureStepDescription = _first(sps, "ScheduledProcedureStepDescription")
    ssa.ScheduledProtocolCodeSequence = _sequence(sps, "ScheduledProtocolCodeSequence")
    return ssa


def performed_description(study: dict[str, Any], item: Dataset | None) -> str:
    """What was done, in words: the scheduled step's, else the requested procedure's, else
    the study's description (IHE RAD TF-2 4.6.4.1.2.3.2)."""
    sps = _sps(item)
    return str(
        _first(sps, "ScheduledProcedureStepDescription")
        or _first(item, "RequestedProcedureDescription")
        or study.get("study_description")
        or ""
    )[:64]


def _modality(study: dict[str, Any], item: Dataset | None) -> str:
    sps = _sps(item)
    # Type 1: the study's (worklist or edit), else the scheduled one, else "OT" (PS3.3 C.7.3.1.1.1).
    return str(study.get("modality") or _first(sps, "Modality") or "OT")


def n_create(study: dict[str, Any], facts: StepFacts) -> Dataset:
    """The N-CREATE attribute list: PPS IN PROGRESS (RAD-6)."""
    item = worklist_dataset(study.get("worklist_item"))
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = [_scheduled_step(study, item)]
    ds.PatientName = study.get("patient_name") or ""
    ds.PatientID = study.get("patient_id") or ""
    ds.PatientBirthDate = study.get("patient_birth_date") or ""
    ds.PatientSex = study.get("patient_sex") or ""
    ds.ReferencedPatientSequence = _sequence(item, "ReferencedPatientSequence")
    if issuer := _first(item, "IssuerOfPatientID"):
        ds.IssuerOfPatientID = issuer
    ds.PerformedProcedureStepID = facts.pps_id
    ds.PerformedStationAETitle = facts.station_ae
    ds.PerformedStationName = facts.station_name[:16]
    ds.PerformedLocation = facts.location[:16]
    ds.PerformedProcedureStepStartDate = _da(facts.started_at)
    ds.PerformedProcedureStepStartTime = _tm(facts.started_at)
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = performed_description(study, item)
    ds.PerformedProcedureTypeDescription = ""
    # IHE RAD TF-2 4.6.4.1.2.3.2: Procedure Code Sequence from the Requested Procedure Code.
    ds.ProcedureCodeSequence = _sequence(item, "RequestedProcedureCodeSequence")
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = _modality(study, item)
    ds.StudyID = (study.get("study_id") or "")[:16]
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    _character_set(ds, facts.character_set)
    return ds


def _character_set(ds: Dataset, charset: str) -> None:
    """(0008,0005) is Type 1C: present only when a value needs more than the default repertoire."""
    if charset and any(not v.isascii() for v in _texts(ds)):
        ds.SpecificCharacterSet = charset


def _texts(ds: Dataset) -> list[str]:
    out: list[str] = []
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                out.extend(_texts(item))
        elif isinstance(element.value, str):
            out.append(element.value)
        elif element.VR == "PN" and element.value is not None:
            out.append(str(element.value))
    return out


def _performed_series(
    instances: Sequence[PerformedInstance], protocol: str, operator: str
) -> list[Dataset]:
    """Performed Series Sequence (Table F.7.2-1): one item per series, every instance listed."""
    by_series: dict[str, list[PerformedInstance]] = {}
    for instance in instances:
        by_series.setdefault(instance.series_instance_uid, []).append(instance)
    items = []
    for series_uid, members in by_series.items():
        series = Dataset()
        series.PerformingPhysicianName = ""
        # Type 1: what was done; the series' source name when nothing was scheduled.
        series.ProtocolName = (protocol or members[0].series_description or "VIDEO CAPTURE")[:64]
        series.OperatorsName = operator[:64]
        series.SeriesInstanceUID = series_uid
        series.SeriesDescription = members[0].series_description[:64]
        series.RetrieveAETitle = ""
        series.ReferencedImageSequence = [
            _reference(m) for m in members if m.sop_class_uid not in NON_IMAGE_SOP_CLASSES
        ]
        series.ReferencedNonImageCompositeSOPInstanceSequence = [
            _reference(m) for m in members if m.sop_class_uid in NON_IMAGE_SOP_CLASSES
        ]
        items.append(series)
    return items


def _reference(instance: PerformedInstance) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = instance.sop_class_uid
    ref.ReferencedSOPInstanceUID = instance.sop_instance_uid
    return ref


FinalStatus = Literal["COMPLETED", "DISCONTINUED"]


def n_set(
    study: dict[str, Any],
    status: FinalStatus,
    ended_at: dt.datetime,
    instances: Sequence[PerformedInstance],
    *,
    operator: str = "",
    reason: dict[str, str] | None = None,
    character_set: str = "",
) -> Dataset:
    """The final N-SET (RAD-7): status, end date/time, what was performed (F.7.2.2)."""
    item = worklist_dataset(study.get("worklist_item"))
    sps = _sps(item)
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = _da(ended_at)
    ds.PerformedProcedureStepEndTime = _tm(ended_at)
    # Performed as scheduled: the scheduled protocol is the performed one (IHE RAD TF-2
    # 4.7.4.1.3.1); empty for an unscheduled study.
    ds.PerformedProtocolCodeSequence = _sequence(sps, "ScheduledProtocolCodeSequence")
    protocol = performed_description(study, item)
    ds.PerformedSeriesSequence = _performed_series(instances, protocol, operator)
    if status == "DISCONTINUED" and reason:
        code = Dataset()
        code.CodeValue = reason["value"]
        code.CodingSchemeDesignator = reason.get("scheme", "DCM")
        code.CodeMeaning = reason["meaning"]
        ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = [code]
    _character_set(ds, character_set)
    return ds


# -- statuses ---------------------------------------------------------------------------------

Verdict = Literal["done", "warning", "retry", "failed"]
Operation = Literal["create", "set"]

#: PS3.7 10.1.5.1.6 / 10.1.1.1.8 and PS3.4 F.7.2.1.2 / F.7.2.2.2: status → (verdict, text).
#: 0110 is a processing failure the SCP may recover from (retried), except the N-SET Error ID
#: A710 "Performed Procedure Step Object may no longer be updated" (F.7.2.2.2), which is final;
#: 0213 resource limitation is retried; the others say the request itself is wrong, and sending
#: the same request again would get the same answer.
STATUS_TABLE: dict[int, tuple[Verdict, str]] = {
    0x0000: ("done", "success"),
    0x0107: ("warning", "attribute list error (unsupported attributes ignored)"),
    0x0116: ("warning", "attribute value out of range"),
    0x0110: ("retry", "processing failure"),
    0x0213: ("retry", "resource limitation"),
    0x0106: ("failed", "invalid attribute value"),
    0x0111: ("failed", "duplicate SOP instance"),
    0x0112: ("failed", "no such SOP instance"),
    0x0117: ("failed", "invalid object instance"),
    0x0118: ("failed", "no such SOP class"),
    0x0119: ("failed", "class-instance conflict"),
    0x0120: ("failed", "missing attribute"),
    0x0121: ("failed", "missing attribute value"),
    0x0122: ("failed", "SOP class not supported"),
    0x0124: ("failed", "refused: not authorised"),
    0x0210: ("failed", "duplicate invocation"),
    0x0211: ("failed", "unrecognised operation"),
    0x0212: ("failed", "mistyped argument"),
}
#: Error ID (0000,0903) of a 0110 N-SET answer: the step is final already (F.7.2.2.2).
NO_LONGER_UPDATABLE = 0xA710


def classify(
    operation: Operation,
    status: int,
    *,
    error_id: int | None = None,
    comment: str = "",
    sent_before: bool = False,
) -> tuple[Verdict, str]:
    """What one answer means. `sent_before`: this request left once already (a retry after a
    lost answer or a crash), so "it exists" / "it is final" is our own earlier success."""
    verdict, text = STATUS_TABLE.get(status, ("failed", "unrecognised status"))
    if operation == "create" and status == 0x0111 and sent_before:
        verdict, text = "done", "created by an earlier attempt (duplicate SOP instance)"
    if operation == "set" and status == 0x0110 and error_id == NO_LONGER_UPDATABLE:
        if sent_before:
            verdict, text = "done", "set by an earlier attempt (may no longer be updated)"
        else:
            verdict, text = "failed", "the step may no longer be updated (final already)"
    message = f"N-{operation.upper()} 0x{status:04X} {text}"
    if comment:
        message += f": {comment}"
    return verdict, message
