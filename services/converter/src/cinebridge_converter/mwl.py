"""Patient, study and request attributes of an instance: statement Annex 8.1.4 Table 38, §8.1.5.

"Exist" attributes are always written (from the worklist item when there is one and the patient
data was not edited, else from the local study row, else generated); "New" attributes are copied
from the worklist item only, and dropped once the patient data was edited by hand (§8.1.5),
which also regenerates the Study Instance UID to unlink the study from the worklist.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cinebridge_common.dicom_values import check_dataset, valid_value
from cinebridge_common.uids import is_valid_uid, make_uid
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence


@dataclass(frozen=True)
class StudyInfo:
    """The `studies` row the media belongs to."""

    id: str
    study_instance_uid: str
    origin: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician: str
    study_date: str
    study_time: str
    worklist_item: Mapping[str, Any] | None
    edited: bool
    created_at: dt.datetime
    #: The procedure's modality (Table 38 "Exist"); kept after an edit (§8.1.5). "": default.
    modality: str = ""


#: Table 38 "New" attributes copied as they are (keyword in the item = keyword in the instance).
NEW_FLAT = (
    "AdmittingDiagnosesDescription",
    "IssuerOfPatientID",
    "PatientWeight",
    "MedicalAlerts",
    "Allergies",
    "AdditionalPatientHistory",
    "AdmissionID",
    "PatientState",
)
#: "Exist" attributes whose local values are checked before writing (type 2 in the IODs).
_CHECKED = {
    "PatientBirthDate": ("DA", "00100030"),
    "PatientSex": ("CS", "00100040"),
    "StudyDate": ("DA", "00080020"),
    "StudyTime": ("TM", "00080030"),
}
NEW_SEQUENCES = ("ReferencedStudySequence", "ReferencedPatientSequence")
CODE_KEYWORDS = ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning")


def timestamp_id(when: dt.datetime) -> str:
    """Statement Table 30: Study ID / Accession Number "YYYYMMDDHHIISSss" (16 chars, SH)."""
    return when.strftime("%Y%m%d%H%M%S") + f"{when.microsecond // 10000:02d}"


def worklist_dataset(item: Mapping[str, Any] | None) -> Dataset | None:
    """The item as a dataset, every value checked against its VR once more (the item may come
    from an older cache or a client): invalid values are left empty or cut as
    `cinebridge_common.dicom_values` documents, never written as they came."""
    if not item:
        return None
    clean, _ = check_dataset(dict(item))
    return Dataset.from_json(clean)


def study_attributes(study: StudyInfo, *, default_modality: str, uid_root: str) -> Dataset:
    """Patient, General Study, Patient Study and Request Attributes of a study's instances."""
    mwl = worklist_dataset(study.worklist_item)
    use_mwl = mwl is not None and not study.edited
    ds = Dataset()
    local = _local_values(study)
    for keyword, value in local.items():
        mwl_value = _mwl_exist(mwl, keyword) if use_mwl else None
        chosen = mwl_value if mwl_value not in (None, "") else value
        vr, key = _CHECKED.get(keyword, ("", ""))
        if vr and chosen and not valid_value(vr, str(chosen), key):
            chosen = ""  # type 2: empty rather than invalid (a row written before the checks)
        setattr(ds, keyword, chosen)
    ds.StudyInstanceUID = _study_uid(study, mwl, uid_root)
    mwl_modality = _mwl_exist(mwl, "Modality") if use_mwl else None
    ds.Modality = mwl_modality or _valid_modality(study.modality) or default_modality
    if use_mwl and mwl is not None:
        _copy_new(ds, mwl)
    return ds


def _valid_modality(value: str) -> str:
    return value if value and valid_value("CS", value) else ""


def _local_values(study: StudyInfo) -> dict[str, str]:
    stamp = timestamp_id(study.created_at)
    return {
        "PatientName": study.patient_name,
        "PatientID": study.patient_id,
        "PatientBirthDate": study.patient_birth_date,
        "PatientSex": study.patient_sex,
        "StudyDate": study.study_date or study.created_at.strftime("%Y%m%d"),
        "StudyTime": study.study_time or study.created_at.strftime("%H%M%S"),
        "ReferringPhysicianName": study.referring_physician,
        "AccessionNumber": study.accession_number or stamp,
        "StudyID": study.study_id or stamp,
        "StudyDescription": study.study_description,
    }


def _mwl_exist(mwl: Dataset | None, keyword: str) -> Any:
    """The worklist source of a Table 38 "Exist" attribute."""
    if mwl is None:
        return None
    if keyword == "StudyDescription":
        return mwl.get("RequestedProcedureDescription")
    if keyword == "StudyID":
        return mwl.get("RequestedProcedureID")
    if keyword == "Modality":
        step = _first(mwl, "ScheduledProcedureStepSequence")
        return step.get("Modality") if step is not None else None
    if keyword in ("StudyDate", "StudyTime"):
        return None  # the date the procedure step was started: ours, not the schedule's
    return mwl.get(keyword)


def _study_uid(study: StudyInfo, mwl: Dataset | None, uid_root: str) -> str:
    mwl_uid = str(mwl.get("StudyInstanceUID", "")) if mwl is not None else ""
    if study.edited and mwl_uid and study.study_instance_uid == mwl_uid:
        # §8.1.5: an edited study must no longer claim the worklist's study.
        return make_uid("study-edited", study.id, root=uid_root)
    if is_valid_uid(study.study_instance_uid):
        return study.study_instance_uid
    return make_uid("study", study.id, root=uid_root)


def _copy_new(ds: Dataset, mwl: Dataset) -> None:
    for keyword in NEW_FLAT:
        if mwl.get(keyword) not in (None, ""):
            setattr(ds, keyword, mwl.get(keyword))
    for keyword in NEW_SEQUENCES:
        if keyword in mwl and len(mwl[keyword].value):
            setattr(ds, keyword, Sequence([_copy_item(i) for i in mwl[keyword].value]))
    pregnancy = normalise_pregnancy(mwl.get("PregnancyStatus"))
    if pregnancy is not None:
        ds.PregnancyStatus = pregnancy
    description = mwl.get("RequestedProcedureDescription")
    if description:
        ds.ProtocolName = description
    codes = mwl.get("RequestedProcedureCodeSequence")
    if codes:
        ds.ProcedureCodeSequence = Sequence([_code(i) for i in codes])
    request = _request_attributes(mwl)
    if request is not None:
        ds.RequestAttributesSequence = Sequence([request])


def _request_attributes(mwl: Dataset) -> Dataset | None:
    item = Dataset()
    if mwl.get("RequestedProcedureID"):
        item.RequestedProcedureID = mwl.RequestedProcedureID
    if mwl.get("RequestedProcedureDescription"):
        item.RequestedProcedureDescription = mwl.RequestedProcedureDescription
    step = _first(mwl, "ScheduledProcedureStepSequence")
    if step is not None:
        for keyword in ("ScheduledProcedureStepID", "ScheduledProcedureStepDescription"):
            if step.get(keyword):
                setattr(item, keyword, step.get(keyword))
        protocol = step.get("ScheduledProtocolCodeSequence")
        if protocol:
            item.ScheduledProtocolCodeSequence = Sequence([_code(i) for i in protocol])
    return item if len(item) else None


def normalise_pregnancy(value: Any) -> int | None:
    """Statement Table 31: MWL values 1-4 (however written) become 0001-0004; others dropped."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 1 <= number <= 4 else None


def _first(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _code(item: Dataset) -> Dataset:
    code = Dataset()
    for keyword in CODE_KEYWORDS:
        if keyword in item:
            setattr(code, keyword, item.get(keyword))
    return code


def _copy_item(item: Dataset) -> Dataset:
    copy = Dataset()
    for element in item:
        copy.add(element)
    return copy
