"""Study rules without I/O: patient data validation (VR limits), the three ways a study begins
(statement §4.1.3: form, worklist, local search) and the edit rule of statement §8.1.5."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any, Literal

from cinebridge_common.dicom_values import valid_value
from cinebridge_common.messages import WorklistItem
from cinebridge_common.uids import is_valid_uid, make_uid
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

#: PS3.5 6.2: backslash is the value delimiter and control characters are not allowed in
#: PN/LO/SH; refusing them here keeps them out of every dataset built later.
_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


def _no_delimiters(value: str) -> str:
    if _FORBIDDEN.search(value):
        raise ValueError("must not contain a backslash or control characters")
    return value.strip()


def _dicom_date(value: str) -> str:
    """DA (PS3.5 6.2): YYYYMMDD; YYYY-MM-DD is accepted from HTML date inputs."""
    text = value.strip().replace("-", "")
    if not text:
        return ""
    try:
        dt.datetime.strptime(text, "%Y%m%d")  # noqa: DTZ007 - a calendar date, no time zone
    except ValueError:
        raise ValueError("must be a date as YYYYMMDD or YYYY-MM-DD") from None
    return text


def _modality(value: str) -> str:
    """(0008,0060) Modality, a CS (PS3.5 6.2: upper case, digits, space, underscore, 16 at most)."""
    text = value.strip()
    if text and not valid_value("CS", text, "00080060"):
        raise ValueError("must be a code string (A-Z, 0-9, space, underscore; 16 at most)")
    return text


PersonName = Annotated[str, Field(max_length=64), AfterValidator(_no_delimiters)]
LongString = Annotated[str, Field(max_length=64), AfterValidator(_no_delimiters)]
ShortString = Annotated[str, Field(max_length=16), AfterValidator(_no_delimiters)]
DicomDate = Annotated[str, Field(max_length=10), AfterValidator(_dicom_date)]
Modality = Annotated[str, Field(max_length=16), AfterValidator(_modality)]


class PatientData(BaseModel):
    """The PATIENT dialog (statement §4.1.3) and the editable attributes of Table 37."""

    model_config = ConfigDict(extra="forbid")

    patient_name: PersonName = ""
    patient_id: LongString = ""
    patient_birth_date: DicomDate = ""
    patient_sex: Literal["", "M", "F", "O"] = ""
    accession_number: ShortString = ""
    study_description: LongString = ""
    referring_physician: PersonName = ""
    #: (0008,0060) of the instances; empty: the converter's default (statement Table 38).
    modality: Modality = ""


class PatientEdit(BaseModel):
    """A partial edit: only the fields present change."""

    model_config = ConfigDict(extra="forbid")

    patient_name: PersonName | None = None
    patient_id: LongString | None = None
    patient_birth_date: DicomDate | None = None
    patient_sex: Literal["", "M", "F", "O"] | None = None
    accession_number: ShortString | None = None
    study_description: LongString | None = None
    referring_physician: PersonName | None = None
    #: (0008,0060) of the instances; kept from the worklist unless changed here (§8.1.5).
    modality: Modality | None = None


def _now_parts(now: dt.datetime) -> dict[str, str]:
    local = now.astimezone()
    return {"study_date": local.strftime("%Y%m%d"), "study_time": local.strftime("%H%M%S")}


def new_study_from_form(
    data: PatientData, room: str | None, org_root: str, now: dt.datetime
) -> dict[str, Any]:
    study_id = uuid.uuid4()
    return {
        "id": study_id,
        "study_instance_uid": make_uid("study", str(study_id), root=org_root),
        "origin": "form",
        "room": room,
        **data.model_dump(),
        **_now_parts(now),
    }


def _clip(value: str | None, limit: int) -> str:
    return _FORBIDDEN.sub(" ", value or "").strip()[:limit]


def _valid(vr: str, value: str | None, key: str) -> str:
    """The item's value when it is valid for its VR (the item may come from a client)."""
    return value if value and valid_value(vr, value, key) else ""


def new_study_from_worklist(
    item: WorklistItem, room: str | None, org_root: str, now: dt.datetime
) -> dict[str, Any]:
    """Scheduled case (statement Tables 30, 38): UID, accession, IDs copied from the MWL item."""
    study_id = uuid.uuid4()
    uid = item.study_instance_uid or ""
    if not is_valid_uid(uid):
        # An item without (or with a malformed) Study Instance UID still starts a study.
        uid = make_uid("study", str(study_id), root=org_root)
    return {
        "id": study_id,
        "study_instance_uid": uid,
        "origin": "worklist",
        "room": room,
        "patient_name": _clip(item.patient_name, 64),
        "patient_id": _clip(item.patient_id, 64),
        "patient_birth_date": _valid("DA", item.patient_birth_date, "00100030"),
        "patient_sex": _valid("CS", item.patient_sex, "00100040"),
        # Table 38 "Exist" (0008,0060): stays when an edit unlinks the study (§8.1.5).
        "modality": _valid("CS", item.modality, "00080060"),
        "accession_number": _clip(item.accession_number, 16),
        # Table 30: Study ID from (0040,1001) Requested Procedure ID, description from (0032,1060).
        "study_id": _clip(item.requested_procedure_id, 16),
        "study_description": _clip(item.requested_procedure_description, 64),
        "referring_physician": _clip(item.referring_physician_name, 64),
        # The item's full dataset as DICOM JSON (PS3.18 F.2): the converter maps it (Table 38).
        "worklist_item": item.dataset or None,
        **_now_parts(now),
    }


def new_study_from_local(
    source: dict[str, Any], room: str | None, org_root: str, now: dt.datetime
) -> dict[str, Any]:
    """LOCAL dialog: a new study for a patient of an earlier study (new UID, no worklist data)."""
    study_id = uuid.uuid4()
    patient = {
        key: source.get(key) or ""
        for key in ("patient_name", "patient_id", "patient_birth_date", "patient_sex")
    }
    return {
        "id": study_id,
        "study_instance_uid": make_uid("study", str(study_id), root=org_root),
        "origin": "local",
        "room": room,
        **patient,
        **_now_parts(now),
    }


def new_unscheduled_study(room: str | None, org_root: str, now: dt.datetime) -> dict[str, Any]:
    """An unscheduled study (patient data later, statement §4.1.3), identified like the one a
    capture makes: Study ID and Accession Number are the timestamp `YYYYMMDDHHIISSss` (Table 30,
    16 characters = SH maximum)."""
    study_id = uuid.uuid4()
    local = now.astimezone()
    stamp = f"{local:%Y%m%d%H%M%S}{local.microsecond // 10000:02d}"
    return {
        "id": study_id,
        "study_instance_uid": make_uid("study", str(study_id), root=org_root),
        "origin": "unscheduled",
        "room": room,
        "study_id": stamp,
        "accession_number": stamp,
        **_now_parts(now),
    }


def display_name(name: str) -> str:
    """A DICOM PN (`FAMILY^Given^Middle^Prefix^Suffix`) as people read it: "FAMILY, Given"."""
    parts = [p.strip() for p in (name or "").split("=")[0].split("^")]
    family, given = [*parts, "", ""][:2]
    rest = " ".join(p for p in parts[2:] if p)
    given = " ".join(p for p in (given, rest) if p)
    return f"{family}, {given}" if family and given else family or given


def apply_edit(study: dict[str, Any], edit: PatientEdit, org_root: str) -> dict[str, Any]:
    """The column changes of a manual edit.

    Statement §8.1.5: after a manual edit of a study imported from the worklist the instances
    lose the "New" MWL attributes (`edited` tells the converter) and the Study Instance UID is
    regenerated to unlink the study from the MWL; "Exist" attributes keep their edited values.
    """
    changes: dict[str, Any] = {
        key: value
        for key, value in edit.model_dump(exclude_none=True).items()
        if value != study.get(key)
    }
    if not changes:
        return {}
    if study.get("origin") == "worklist" and not study.get("edited"):
        changes["study_instance_uid"] = make_uid("study", str(study["id"]), "edited", root=org_root)
        # The worklist data goes (the instances lose the "New" attributes); the "Exist" ones
        # stay in the row, the procedure's modality among them.
        changes["worklist_item"] = None
    changes["edited"] = True
    return changes
