"""Matching cached entries locally with the same keys a live query sends (PS3.4 C.2.2.2).

Used only for the offline cache: when the server is unreachable, today's cached entries are
filtered here so the operator sees what the server would have answered to the same search.
Semantics follow the standard (not one server's quirks): zero-length key = universal; `*`/`?`
wild cards; Person Name case-insensitive (C.2.2.2.1 allows it, Orthanc does it); dates exact
or a range; a non-universal key fails on an empty value (K.2.2.1.1.1).
"""

from __future__ import annotations

import re
from functools import lru_cache

from cinebridge_common.messages import WorklistItem
from pydicom.dataset import Dataset


@lru_cache(maxsize=256)
def _pattern(key: str, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in key)
    flags = (re.IGNORECASE | re.DOTALL) if ignore_case else re.DOTALL
    return re.compile(f"^{regex}$", flags)


def matches_key(key: str, value: str | None, *, ignore_case: bool = False) -> bool:
    if not key:
        return True
    if key == "*":
        return True  # K.2.2.1.1.1 note 1: a lone '*' also returns entities with empty values
    if not value:
        return False
    return bool(_pattern(key, ignore_case).match(value))


def matches_date(key: str, value: str | None) -> bool:
    if not key:
        return True
    if not value:
        return False
    if "-" not in key:
        return value == key
    start, _, end = key.partition("-")
    return (not start or value >= start) and (not end or value <= end)


def matches(item: WorklistItem, identifier: Dataset) -> bool:
    """Whether `item` answers the C-FIND `identifier` built by `query.build_identifier`."""
    sps = identifier.ScheduledProcedureStepSequence[0]
    return (
        matches_key(str(identifier.PatientName or ""), item.patient_name, ignore_case=True)
        and matches_key(str(identifier.PatientID or ""), item.patient_id)
        and matches_key(str(identifier.AccessionNumber or ""), item.accession_number)
        and matches_key(str(identifier.RequestedProcedureID or ""), item.requested_procedure_id)
        and matches_key(str(sps.Modality or ""), item.modality)
        and matches_key(str(sps.ScheduledStationAETitle or ""), item.scheduled_station_ae_title)
        and matches_date(
            str(sps.ScheduledProcedureStepStartDate or ""),
            item.scheduled_procedure_step_start_date,
        )
    )
