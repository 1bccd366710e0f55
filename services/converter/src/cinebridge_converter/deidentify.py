"""De-identification of a study's instances per PS3.15 Annex E (Basic Application Level
Confidentiality Profile), with the Clean Descriptors (E.3.5) and Retain Longitudinal Temporal
Information with Modified Dates (E.3.6) options.

dicognito (docs/dicom.md, "De-identified export") replaces names, identifiers, addresses,
institutions and every instance UID with dummies, consistent within one `Deidentifier`; this
module adds what the profile asks beyond it: private attributes removed (E.1-1 "X" for private
tags unless Retain Safe Private), descriptors removed or cleaned, dates shifted or replaced,
patient characteristics removed, and the De-identification Method attributes (PS3.3 C.7.1.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from dicognito.anonymizer import Anonymizer
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

#: PS3.16 CID 7050 "De-identification Method" codes (scheme DCM).
BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_DESCRIPTORS = ("113105", "Clean Descriptors Option")
MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")

#: Free-text descriptors that PS3.15 Table E.1-1 removes ("X") in the Basic Profile and keeps,
#: cleaned ("C"), with the Clean Descriptors Option.
DESCRIPTORS = (
    "StudyDescription",
    "SeriesDescription",
    "ImageComments",
    "PatientComments",
    "AdditionalPatientHistory",
    "AdmittingDiagnosesDescription",
    "RequestedProcedureDescription",
    "PerformedProcedureStepDescription",
    "ScheduledProcedureStepDescription",
    "ProtocolName",
    "DerivationDescription",
    "AcquisitionComments",
    "StudyComments",
    "ReasonForTheRequestedProcedure",
    "RequestedContrastAgent",
    "InterpretationText",
    "VisitComments",
)
#: Removed in the Basic Profile unless Retain Patient Characteristics applies (not offered).
REMOVED = (
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
    "PatientAddress",
    "OtherPatientNames",
    "PatientMotherBirthName",
    "MedicalAlerts",
    "Allergies",
    "PregnancyStatus",
    "SmokingStatus",
    "IssuerOfPatientID",
    "PatientBirthTime",
    "InstitutionAddress",
    "DeviceSerialNumber",
    "StationName",
)
#: Emptied (Table E.1-1 "Z": zero length); the picture's subject stays a patient.
EMPTIED = ("PatientBirthDate", "PatientSex")
#: Replacement date and time when dates are not retained (Table E.1-1 "D": a dummy value of
#: the VR, so Type 1 dates stay present).
DUMMY_DATE, DUMMY_TIME = "19000101", "000000"
_DATE_VRS = {"DA": DUMMY_DATE, "TM": DUMMY_TIME, "DT": DUMMY_DATE + DUMMY_TIME}


@dataclass(frozen=True)
class DeidOptions:
    #: E.3.6: keep the order of events with dates shifted by one offset (dicognito's shift).
    retain_dates: bool = False
    #: E.3.5: keep descriptors after removing the patient's identifying values from them.
    clean_descriptors: bool = False


class Deidentifier:
    """One per export: every instance of the export gets the same replacement for the same
    original value (UIDs stay consistent within the export), and another export gets others."""

    def __init__(self, options: DeidOptions, seed: str) -> None:
        self.options = options
        self._anonymizer = Anonymizer(seed=seed)

    def apply(self, ds: Dataset) -> None:
        """De-identify `ds` (with its file meta) in place."""
        identifying = identifying_values(ds)
        ds.remove_private_tags()  # recursive: nested sequences too
        for keyword in REMOVED:
            _delete_everywhere(ds, keyword)
        for keyword in DESCRIPTORS:
            if self.options.clean_descriptors:
                _clean_everywhere(ds, keyword, identifying)
            else:
                _delete_everywhere(ds, keyword)
        self._anonymizer.anonymize(ds)
        for keyword in EMPTIED:
            if keyword in ds:
                ds[keyword].value = ""
        if not self.options.retain_dates:
            ds.walk(_dummy_dates)
        _method(ds, self.options)


def identifying_values(ds: Dataset) -> list[str]:
    """The patient's name components, IDs, birth date and accession: what a cleaned descriptor
    must not contain."""
    values: list[str] = []
    name = str(ds.get("PatientName", "") or "")
    values += [part for part in [name, *re.split(r"[\^=]", name)] if len(part) > 1]
    for keyword in ("PatientID", "PatientBirthDate", "AccessionNumber", "OtherPatientIDs"):
        value = ds.get(keyword)
        if value:
            values.append(str(value))
    return values


def clean_text(text: str, identifying: Iterable[str]) -> str:
    for value in sorted(identifying, key=len, reverse=True):
        text = re.sub(re.escape(value), "", text, flags=re.IGNORECASE)
    text = re.sub(r"(?<!\w)[\^=]+|[\^=]+(?!\w)", "", text)  # separators of a removed name
    return re.sub(r"\s{2,}", " ", text).strip()


def _each_dataset(ds: Dataset) -> Iterable[Dataset]:
    yield ds
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _each_dataset(item)


def _delete_everywhere(ds: Dataset, keyword: str) -> None:
    for item in _each_dataset(ds):
        if keyword in item:
            del item[keyword]


def _clean_everywhere(ds: Dataset, keyword: str, identifying: list[str]) -> None:
    for item in _each_dataset(ds):
        if keyword in item and isinstance(item[keyword].value, str):
            item[keyword].value = clean_text(item[keyword].value, identifying)


def _dummy_dates(_: Dataset, elem: DataElement) -> None:
    if elem.VR in _DATE_VRS and elem.value not in (None, ""):
        elem.value = _DATE_VRS[elem.VR]


def _method(ds: Dataset, options: DeidOptions) -> None:
    """Patient Identity Removed and the De-identification Method (PS3.3 C.7.1.1, Table
    C.7-1; PS3.15 E.1.1 step 3) and whether dates were kept (Longitudinal Temporal
    Information Modified, PS3.3 C.7.2.1)."""
    codes = [BASIC_PROFILE]
    if options.clean_descriptors:
        codes.append(CLEAN_DESCRIPTORS)
    if options.retain_dates:
        codes.append(MODIFIED_DATES)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = [meaning for _, meaning in codes]  # LO, VM 1-n
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if options.retain_dates else "REMOVED"


def burned_in_warning(ds: Dataset, overlay_sources: Iterable[str]) -> str | None:
    """Why this instance's pictures may show the patient's data, or None.

    Burned In Annotation YES, or absent (General Image Module, Type 3: the device did not say),
    or a series from a source the station knows overlays patient data (a tower's OSD)."""
    burned = str(ds.get("BurnedInAnnotation", "") or "").upper()
    series = str(ds.get("SeriesDescription", "") or "")
    if series and series in set(overlay_sources):
        return f"source {series!r} overlays patient data on its picture"
    if burned == "YES":
        return "Burned In Annotation is YES: the picture may show patient data"
    if burned != "NO" and "PixelData" in ds:
        return "Burned In Annotation is not NO: the picture may show patient data"
    return None
