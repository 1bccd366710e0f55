"""Query building: Table 18 keys, P-key wildcards, `*last*first*`, dates, C keys."""

from __future__ import annotations

import pytest
from cinebridge_worklist.query import (
    QueryError,
    SearchFields,
    ServerKeys,
    build_identifier,
    date_key,
    name_key,
    partial_key,
)
from pydicom.datadict import tag_for_keyword

#: Every tag of statement Table 18, top level (the statement's (0008,1125) is a typo for
#: Referenced Patient Sequence (0008,1120), which Table 38 also uses).
TABLE_18_TOP = {
    0x00080050,
    0x00080090,
    0x00081080,
    0x00081110,
    0x00081120,
    0x00100010,
    0x00100020,
    0x00100021,
    0x00100030,
    0x00100040,
    0x00101030,
    0x00102000,
    0x00102110,
    0x001021B0,
    0x001021C0,
    0x0020000D,
    0x00321032,
    0x00321033,
    0x00321060,
    0x00321064,
    0x00380010,
    0x00380050,
    0x00380300,
    0x00380500,
    0x00400100,
    0x00401001,
    0x00401003,
    0x00401004,
    0x00402016,
    0x00402017,
    0x00403001,
}
TABLE_18_SPS = {
    0x00080060,
    0x00321070,
    0x00400001,
    0x00400002,
    0x00400003,
    0x00400006,
    0x00400007,
    0x00400008,
    0x00400009,
    0x00400010,
    0x00400011,
    0x00400012,
    0x00400020,
}
CODE = {0x00080100, 0x00080102, 0x00080103, 0x00080104}
REFERENCE = {0x00081150, 0x00081155}


def test_every_table_18_attribute_is_requested_with_its_sequence_items() -> None:
    ds = build_identifier(SearchFields(), ServerKeys())
    assert {int(elem.tag) for elem in ds} == TABLE_18_TOP
    assert all(elem.VR == "SQ" or elem.value in ("", None) for elem in ds)
    sps = ds.ScheduledProcedureStepSequence
    assert len(sps) == 1
    assert {int(elem.tag) for elem in sps[0]} == TABLE_18_SPS
    assert {int(e.tag) for e in sps[0].ScheduledProtocolCodeSequence[0]} == CODE
    assert {int(e.tag) for e in ds.RequestedProcedureCodeSequence[0]} == CODE
    assert {int(e.tag) for e in ds.ReferencedStudySequence[0]} == REFERENCE
    assert {int(e.tag) for e in ds.ReferencedPatientSequence[0]} == REFERENCE
    assert "SpecificCharacterSet" not in ds  # all keys ASCII: no repertoire declared


def test_p_keys_get_leading_and_trailing_wildcards_when_the_option_is_on() -> None:
    fields = SearchFields(patient_id="123", accession_number="A7", requested_procedure_id="RP")
    on = build_identifier(fields, ServerKeys(wildcards=True))
    assert (on.PatientID, on.AccessionNumber, on.RequestedProcedureID) == ("*123*", "*A7*", "*RP*")
    off = build_identifier(fields, ServerKeys(wildcards=False))
    assert (off.PatientID, off.AccessionNumber, off.RequestedProcedureID) == ("123", "A7", "RP")


@pytest.mark.parametrize(
    ("typed", "wildcards", "expected"),
    [
        ("doe", True, "*doe*"),
        ("DOE^JOHN", True, "*DOE*JOHN*"),
        ("Doe John", True, "*Doe*John*"),
        ("Doe, John", True, "*Doe*John*"),
        ("DOE^JOHN^PAUL", True, "*DOE*JOHN*PAUL*"),
        ("*doe*", True, "*doe*"),
        ("DOE^JOHN", False, "DOE^JOHN"),
        ("  ", True, ""),
        ("", False, ""),
    ],
)
def test_patient_name_pattern(typed: str, wildcards: bool, expected: str) -> None:
    assert name_key(typed, wildcards) == expected


def test_empty_fields_stay_zero_length_universal_keys() -> None:
    ds = build_identifier(SearchFields(), ServerKeys(wildcards=True))
    assert ds.PatientName == "" and ds.PatientID == "" and ds.AccessionNumber == ""
    sps = ds.ScheduledProcedureStepSequence[0]
    assert sps.ScheduledProcedureStepStartDate == "" and sps.Modality == ""


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("20261129", "20261129", "20261129"),
        ("2026-11-29", "", "20261129-"),
        ("", "2026-11-30", "-20261130"),
        ("20261101", "20261130", "20261101-20261130"),
        ("", "", ""),
    ],
)
def test_scheduled_date_exact_or_range(start: str, end: str, expected: str) -> None:
    assert date_key(start, end) == expected


@pytest.mark.parametrize(
    ("start", "end"),
    [("20261130", "20261101"), ("2026-13-01", ""), ("yesterday", ""), ("", "2026-02-30")],
)
def test_bad_dates_are_refused(start: str, end: str) -> None:
    with pytest.raises(QueryError):
        date_key(start, end)


def test_c_keys_come_from_the_server_settings() -> None:
    ds = build_identifier(SearchFields(), ServerKeys(modality="ES", station_ae="ROOM1"))
    sps = ds.ScheduledProcedureStepSequence[0]
    assert (sps.Modality, sps.ScheduledStationAETitle) == ("ES", "ROOM1")


def test_backslash_and_overlong_values_are_refused() -> None:
    with pytest.raises(QueryError, match="not allowed"):
        partial_key("A\\B", "PatientID", True)
    with pytest.raises(QueryError, match="longer"):
        partial_key("X" * 20, "AccessionNumber", False)
    with pytest.raises(QueryError, match="control"):
        name_key("DOE\x07", True)


def test_non_ascii_keys_declare_the_configured_character_set() -> None:
    ds = build_identifier(
        SearchFields(patient_name="Müller"), ServerKeys(character_set="ISO_IR 100")
    )
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    assert ds.PatientName == "*Müller*"
    assert tag_for_keyword("SpecificCharacterSet") == 0x00080005
