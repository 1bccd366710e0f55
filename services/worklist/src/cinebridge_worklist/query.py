"""C-FIND identifiers for the Modality Worklist (statement Table 18) from the operator's fields.

P keys (Patient ID, Patient's Name, Accession Number, Requested Procedure ID) get a leading and
trailing `*` when the wildcard option is on, and a name of several parts becomes `*last*first*`
(Table 18 "P"); the Scheduled Procedure Step Start Date is exact or a range (PS3.4 C.2.2.2.5);
Modality and Scheduled Station AE Title come from the server's settings (Table 18 "C"); every
other attribute of Table 18 is a zero-length return key (PS3.4 K.2.2.1.2), sequences with one
item holding their own return keys.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

#: Limits of the value representations (PS3.5 Table 6.2-1), checked before anything is sent.
_MAX_LEN = {"PatientID": 64, "PatientName": 64, "AccessionNumber": 16, "RequestedProcedureID": 16}
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


class QueryError(ValueError):
    """The operator's search fields cannot become a valid C-FIND identifier."""


@dataclass(frozen=True)
class SearchFields:
    """What the WORKLIST dialog lets the operator type (statement §4.2.3.3.1.1)."""

    patient_name: str = ""
    patient_id: str = ""
    accession_number: str = ""
    requested_procedure_id: str = ""
    date_from: str = ""
    date_to: str = ""


@dataclass(frozen=True)
class ServerKeys:
    """What comes from the worklist server's settings: the C keys and the options."""

    modality: str = ""
    station_ae: str = ""
    wildcards: bool = True
    character_set: str = "ISO_IR 192"


#: Table 18 return keys of the top level, in tag order (sequences are added separately).
TOP_LEVEL_KEYS = (
    "AccessionNumber",
    "ReferringPhysicianName",
    "AdmittingDiagnosesDescription",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientWeight",
    "MedicalAlerts",
    "Allergies",
    "AdditionalPatientHistory",
    "PregnancyStatus",
    "StudyInstanceUID",
    "RequestingPhysician",
    "RequestingService",
    "RequestedProcedureDescription",
    "AdmissionID",
    "SpecialNeeds",
    "CurrentPatientLocation",
    "PatientState",
    "RequestedProcedureID",
    "RequestedProcedurePriority",
    "PatientTransportArrangements",
    "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest",
    "ConfidentialityConstraintOnPatientDataDescription",
)
REFERENCE_KEYS = ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID")
CODE_KEYS = ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning")
SPS_KEYS = (
    "Modality",
    "RequestedContrastAgent",
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "ScheduledStationName",
    "ScheduledProcedureStepLocation",
    "PreMedication",
    "ScheduledProcedureStepStatus",
)


def _empty_item(keys: tuple[str, ...]) -> Dataset:
    item = Dataset()
    for keyword in keys:
        setattr(item, keyword, None)
    return item


def _clean(value: str, keyword: str) -> str:
    value = value.strip()
    if "\\" in value:
        # A backslash would turn the key into a multi-valued list match (PS3.4 C.2.2.2.3).
        raise QueryError(f"{keyword}: the character '\\' is not allowed")
    if any(ord(ch) < 0x20 for ch in value):
        raise QueryError(f"{keyword}: control characters are not allowed")
    return value


def partial_key(value: str, keyword: str, wildcards: bool) -> str:
    """A P key: empty stays empty (universal match); else `*value*` when wildcards are on."""
    value = _clean(value, keyword)
    if not value:
        return ""
    if wildcards:
        value = "*" + value.strip("*") + "*"
    if len(value) > _MAX_LEN[keyword]:
        raise QueryError(f"{keyword}: longer than {_MAX_LEN[keyword]} characters")
    return value


def name_key(value: str, wildcards: bool) -> str:
    """Patient's Name: parts separated by '^' (or spaces/commas) → `*last*first*` (Table 18 P)."""
    value = _clean(value, "PatientName")
    if not value:
        return ""
    if not wildcards:
        return value
    parts = [part for part in re.split(r"[\^,\s]+", value) if part.strip("*")]
    if not parts:
        return "*"
    pattern = "*" + "*".join(part.strip("*") for part in parts) + "*"
    if len(pattern) > _MAX_LEN["PatientName"]:
        raise QueryError(f"PatientName: longer than {_MAX_LEN['PatientName']} characters")
    return pattern


def normalise_date(value: str, what: str) -> str:
    """YYYYMMDD from `YYYYMMDD` or `YYYY-MM-DD`; raises QueryError for anything else."""
    match = _DATE.match(value.strip())
    if not match:
        raise QueryError(f"{what}: expected YYYYMMDD or YYYY-MM-DD, got {value!r}")
    try:
        dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError as exc:
        raise QueryError(f"{what}: {exc}") from None
    return match[1] + match[2] + match[3]


def date_key(date_from: str, date_to: str) -> str:
    """Exact date when both ends are equal, else a range `A-B`, `A-` or `-B` (PS3.4 C.2.2.2.5)."""
    start = normalise_date(date_from, "date_from") if date_from.strip() else ""
    end = normalise_date(date_to, "date_to") if date_to.strip() else ""
    if start and end:
        if start > end:
            raise QueryError(f"date range is reversed: {start} is after {end}")
        return start if start == end else f"{start}-{end}"
    if start:
        return f"{start}-"
    if end:
        return f"-{end}"
    return ""


def build_identifier(fields: SearchFields, server: ServerKeys) -> Dataset:
    """The C-FIND identifier with every Table 18 attribute, matching keys filled in."""
    ds = Dataset()
    for keyword in TOP_LEVEL_KEYS:
        setattr(ds, keyword, None)
    ds.PatientName = name_key(fields.patient_name, server.wildcards)
    ds.PatientID = partial_key(fields.patient_id, "PatientID", server.wildcards)
    ds.AccessionNumber = partial_key(fields.accession_number, "AccessionNumber", server.wildcards)
    ds.RequestedProcedureID = partial_key(
        fields.requested_procedure_id, "RequestedProcedureID", server.wildcards
    )
    ds.ReferencedStudySequence = Sequence([_empty_item(REFERENCE_KEYS)])
    ds.ReferencedPatientSequence = Sequence([_empty_item(REFERENCE_KEYS)])
    ds.RequestedProcedureCodeSequence = Sequence([_empty_item(CODE_KEYS)])
    sps = _empty_item(SPS_KEYS)
    sps.Modality = _clean(server.modality, "Modality")
    sps.ScheduledStationAETitle = _clean(server.station_ae, "ScheduledStationAETitle")
    sps.ScheduledProcedureStepStartDate = date_key(fields.date_from, fields.date_to)
    sps.ScheduledProtocolCodeSequence = Sequence([_empty_item(CODE_KEYS)])
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    if not _is_ascii(ds):
        # Non-ASCII matching keys need the repertoire declared (PS3.5 6.1.2.3).
        ds.SpecificCharacterSet = server.character_set or "ISO_IR 192"
    return ds


def _is_ascii(ds: Dataset) -> bool:
    values = (ds.PatientName, ds.PatientID, ds.AccessionNumber, ds.RequestedProcedureID)
    return all(str(value).isascii() for value in values)
