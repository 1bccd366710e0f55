"""Worklist responses → typed `WorklistItem`s (statement Table 18) with the full DICOM JSON.

An entry that cannot be read at all (truncated, a VR against the dictionary) raises
`MalformedEntry` (from `dcmjson`); the caller skips it with a warning and keeps the rest. What
can be kept is kept and flagged: text decoded by a fallback, a malformed sequence, invalid
values (`cinebridge_common.dicom_values`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from cinebridge_common.dicom_values import check_dataset
from cinebridge_common.messages import ValueFlag, WorklistItem
from cinebridge_dicom.dcmjson import MalformedEntry, Note, decode_identifier, key_text
from pydicom.datadict import keyword_for_tag

__all__ = ["MalformedEntry", "decode_entry", "item_from_json", "item_key", "json_text"]

_SPS = "00400100"


def json_text(dataset: dict[str, Any], tag: str) -> str | None:
    """The value of `tag` as text: values joined with '\\', a person name's groups with '='
    (only the first name)."""
    element = dataset.get(tag)
    if not element:
        return None
    values = element.get("Value")
    if not values:
        return None
    value = values[0]
    if len(values) == 1 and type(value) is str:
        return value  # the common case, short-cut
    if isinstance(value, dict):
        if len(value) == 1 and "Alphabetic" in value:
            return str(value["Alphabetic"]).rstrip("=")  # what the join below gives
        groups = [value.get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
        return "=".join(groups).rstrip("=")
    return "\\".join(str(v) for v in element["Value"])


def item_from_json(dataset: dict[str, Any]) -> WorklistItem:
    sps_items = (dataset.get(_SPS) or {}).get("Value") or [{}]
    sps = sps_items[0]
    study_uid, sps_id = json_text(dataset, "0020000D"), json_text(sps, "00400009")
    accession, rp_id = json_text(dataset, "00080050"), json_text(dataset, "00401001")
    patient_id = json_text(dataset, "00100020")
    return WorklistItem(
        item_key=key_of(study_uid, sps_id, accession, rp_id, patient_id),
        patient_name=json_text(dataset, "00100010"),
        patient_id=patient_id,
        patient_birth_date=json_text(dataset, "00100030"),
        patient_sex=json_text(dataset, "00100040"),
        accession_number=accession,
        requested_procedure_id=rp_id,
        requested_procedure_description=json_text(dataset, "00321060"),
        study_instance_uid=study_uid,
        referring_physician_name=json_text(dataset, "00080090"),
        modality=json_text(sps, "00080060"),
        scheduled_station_ae_title=json_text(sps, "00400001"),
        scheduled_procedure_step_start_date=json_text(sps, "00400002"),
        scheduled_procedure_step_start_time=json_text(sps, "00400003"),
        scheduled_procedure_step_id=sps_id,
        scheduled_procedure_step_description=json_text(sps, "00400007"),
        scheduled_performing_physician_name=json_text(sps, "00400006"),
        issuer_of_patient_id=json_text(dataset, "00100021"),
        admission_id=json_text(dataset, "00380010"),
        requested_procedure_priority=json_text(dataset, "00401003"),
        dataset=dataset,
    )


def decode_entry(
    data: bytes, *, implicit: bool, little: bool, fallback_charset: str
) -> WorklistItem:
    """One C-FIND response identifier (raw bytes) → WorklistItem, or MalformedEntry.

    Every value is checked at the door (`cinebridge_common.dicom_values`): the item holds the
    replacements of invalid values, and its `flags` say what was received and what was done."""
    raw, notes = decode_identifier(
        data, implicit=implicit, little=little, fallback_charset=fallback_charset
    )
    dataset, flags = check_dataset(raw)
    noted = [_note_flag(note, raw) for note in notes]
    if any(f.tag == "(0040,0100)" for f in noted):
        flags = [f for f in flags if f.tag != "(0040,0100)"]  # said once: why it is empty
    item = item_from_json(dataset)
    item.flags = noted + flags
    return item


def _note_flag(note: Note, dataset: dict[str, Any]) -> ValueFlag:
    key, problem, action = note
    kept = action.startswith(("decoded", "undecodable"))  # the value shown is the fallback's
    value = (json_text(dataset, key) or "") if kept else ""
    keyword = keyword_for_tag(int(key, 16)) or "private"
    return ValueFlag(
        tag=key_text(key), keyword=keyword, problem=problem, action=action, value=value
    )


def key_of(*parts: str | None) -> str:
    """Stable identity of an entry: the same scheduled step gives the same key on every query
    (Study Instance UID, SPS ID, Accession Number, Requested Procedure ID, Patient ID)."""
    return hashlib.sha256("\x1f".join(p or "" for p in parts).encode()).hexdigest()[:32]


def item_key(item: WorklistItem) -> str:
    return key_of(
        item.study_instance_uid,
        item.scheduled_procedure_step_id,
        item.accession_number,
        item.requested_procedure_id,
        item.patient_id,
    )
