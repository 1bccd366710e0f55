"""PS3.4 Table F.7.2-1 (Modality Performed Procedure Step SOP Class) as data, and the check of
an N-CREATE or final N-SET attribute list against it: what the MPPS SCP of the tests verifies of
every request the station sends."""

from __future__ import annotations

from pydicom.dataset import Dataset

# PS3.4 Table F.7.2-1, N-CREATE column: (path, type). A path is keywords joined by ">"; a
# sequence's item attributes are checked in every item. Type 1: present with a value; Type 2:
# present, may be zero length. Type 3 attributes are not listed.
N_CREATE_TYPES: list[tuple[str, str]] = [
    ("ScheduledStepAttributesSequence", "1"),
    ("ScheduledStepAttributesSequence>StudyInstanceUID", "1"),
    ("ScheduledStepAttributesSequence>ReferencedStudySequence", "2"),
    ("ScheduledStepAttributesSequence>AccessionNumber", "2"),
    ("ScheduledStepAttributesSequence>RequestedProcedureID", "2"),
    ("ScheduledStepAttributesSequence>RequestedProcedureDescription", "2"),
    ("ScheduledStepAttributesSequence>ScheduledProcedureStepID", "2"),
    ("ScheduledStepAttributesSequence>ScheduledProcedureStepDescription", "2"),
    ("ScheduledStepAttributesSequence>ScheduledProtocolCodeSequence", "2"),
    ("PatientName", "2"),
    ("PatientID", "2"),
    ("PatientBirthDate", "2"),
    ("PatientSex", "2"),
    ("ReferencedPatientSequence", "2"),
    ("PerformedProcedureStepID", "1"),
    ("PerformedStationAETitle", "1"),
    ("PerformedStationName", "2"),
    ("PerformedLocation", "2"),
    ("PerformedProcedureStepStartDate", "1"),
    ("PerformedProcedureStepStartTime", "1"),
    ("PerformedProcedureStepStatus", "1"),
    ("PerformedProcedureStepDescription", "2"),
    ("PerformedProcedureTypeDescription", "2"),
    ("ProcedureCodeSequence", "2"),
    ("PerformedProcedureStepEndDate", "2"),
    ("PerformedProcedureStepEndTime", "2"),
    ("Modality", "1"),
    ("StudyID", "2"),
    ("PerformedProtocolCodeSequence", "2"),
    ("PerformedSeriesSequence", "2"),
]
#: Attributes the SCU must not send in an N-SET (Table F.7.2-1 N-SET column "Not allowed").
N_SET_NOT_ALLOWED = [
    "ScheduledStepAttributesSequence",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PerformedProcedureStepID",
    "PerformedStationAETitle",
    "PerformedStationName",
    "PerformedLocation",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "Modality",
    "StudyID",
]
# The final N-SET (COMPLETED or DISCONTINUED): Table F.7.2-1 "Final State" requirements, with
# the N-SET column's Type 1/2 of the Performed Series Sequence items.
N_SET_FINAL_TYPES: list[tuple[str, str]] = [
    ("PerformedProcedureStepStatus", "1"),
    ("PerformedProcedureStepEndDate", "1"),
    ("PerformedProcedureStepEndTime", "1"),
    ("PerformedSeriesSequence>PerformingPhysicianName", "2"),
    ("PerformedSeriesSequence>ProtocolName", "1"),
    ("PerformedSeriesSequence>OperatorsName", "2"),
    ("PerformedSeriesSequence>SeriesInstanceUID", "1"),
    ("PerformedSeriesSequence>SeriesDescription", "2"),
    ("PerformedSeriesSequence>RetrieveAETitle", "2"),
    ("PerformedSeriesSequence>ReferencedImageSequence", "2"),
    ("PerformedSeriesSequence>ReferencedImageSequence>ReferencedSOPClassUID", "1"),
    ("PerformedSeriesSequence>ReferencedImageSequence>ReferencedSOPInstanceUID", "1"),
    ("PerformedSeriesSequence>ReferencedNonImageCompositeSOPInstanceSequence", "2"),
]


def type_errors(ds: Dataset, table: list[tuple[str, str]]) -> list[str]:
    """Every breach of the table in `ds`: missing Type 1/2 attributes, empty Type 1 ones."""
    errors = []
    for path, kind in table:
        *parents, keyword = path.split(">")
        holders = [ds]
        for parent in parents:
            holders = [item for h in holders for item in (getattr(h, parent, None) or [])]
        for holder in holders:
            if keyword not in holder:
                errors.append(f"{path} (Type {kind}) missing")
            elif kind == "1" and holder[keyword].value in (None, "", []):
                errors.append(f"{path} (Type 1) empty")
    return errors


def request_errors(operation: str, ds: Dataset) -> list[str]:
    """Every breach of Table F.7.2-1 in one request: an N-CREATE against its column, an N-SET
    (every one the station sends is final) against the final-state requirements and the
    attributes an N-SET must not carry."""
    if operation == "N-CREATE":
        return type_errors(ds, N_CREATE_TYPES)
    errors = type_errors(ds, N_SET_FINAL_TYPES)
    errors += [f"{keyword} not allowed in N-SET" for keyword in N_SET_NOT_ALLOWED if keyword in ds]
    if ds.get("PerformedProcedureStepStatus") not in ("COMPLETED", "DISCONTINUED"):
        errors.append("PerformedProcedureStepStatus is not final")
    return errors
