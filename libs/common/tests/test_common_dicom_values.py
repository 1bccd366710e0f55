"""Worklist values checked at the door: each VR rule, its replacement and its flag."""

from __future__ import annotations

from typing import Any

import pytest
from cinebridge_common.dicom_values import check_dataset

SPS = {"vr": "SQ", "Value": [{"00080060": {"vr": "CS", "Value": ["ES"]}}]}


def one(key: str, vr: str, value: Any) -> tuple[dict[str, Any], list[Any]]:
    clean, flags = check_dataset({key: {"vr": vr, "Value": [value]}, "00400100": SPS})
    return clean[key], flags


@pytest.mark.parametrize(
    ("key", "vr", "value"),
    [
        ("00100030", "DA", "1980-13-45"),
        ("00100030", "DA", "19801345"),
        ("00100030", "DA", "20230229"),
        ("00400003", "TM", "25:00"),
        ("00400003", "TM", "246000"),
        ("0040A030", "DT", "20231301120000"),
        ("00100040", "CS", "MALEXXXXXXXXXXXXX"),
        ("00100040", "CS", "male"),
        ("0020000D", "UI", "1.2.03.abc"),
        ("0020000D", "UI", "1." + "2" * 70),
        ("00101010", "AS", "45 years"),
        ("00400001", "AE", "A" * 17),
        ("00100020", "LO", "P" * 65),
        ("00080050", "SH", "A" * 17),
    ],
)
def test_invalid_values_are_left_empty_and_flagged(key: str, vr: str, value: str) -> None:
    element, flags = one(key, vr, value)
    assert element == {"vr": vr}
    assert len(flags) == 1 and flags[0].action == "left empty" and flags[0].value == value
    assert flags[0].tag == f"({key[:4]},{key[4:]})" and flags[0].keyword


@pytest.mark.parametrize(
    ("key", "vr", "value"),
    [
        ("00100030", "DA", "19800229"),
        ("00400003", "TM", "0930"),
        ("00400003", "TM", "093000.123456"),
        ("0040A030", "DT", "20231231235959.1+0100"),
        ("00100040", "CS", "M"),
        ("0020000D", "UI", "1.2.840.10008.5.1.4.31"),
        ("00101010", "AS", "045Y"),
        ("00100020", "LO", "P" * 64),
        ("00400400", "LT", "line one\r\nline two\tend"),
        ("00100010", "PN", {"Alphabetic": "A^B^C^D^E", "Ideographic": "山田^太郎"}),
    ],
)
def test_valid_values_pass_untouched(key: str, vr: str, value: Any) -> None:
    element, flags = one(key, vr, value)
    assert element == {"vr": vr, "Value": [value]} and flags == []


def test_long_names_and_descriptions_are_cut_identifiers_are_not() -> None:
    name = {"Alphabetic": "A" * 70 + "^B"}
    element, flags = one("00100010", "PN", name)
    assert element["Value"][0]["Alphabetic"] == "A" * 64
    assert flags[0].action == "cut to 64 characters"
    element, flags = one("00321060", "LO", "D" * 80)
    assert element["Value"] == ["D" * 64] and flags[0].action == "cut to 64 characters"
    element, flags = one("00100010", "PN", {"Alphabetic": "A^B^C^D^E^F^G"})
    assert element["Value"][0]["Alphabetic"] == "A^B^C^D^E" and flags[0].action == "cut to 5"
    element, flags = one("00321060", "LO", "a\x07b")
    assert element["Value"] == ["a b"] and flags[0].action == "replaced by spaces"


AE_OK = {"vr": "AE", "Value": ["STATION1"]}


def test_nested_values_are_checked_with_their_path() -> None:
    sps = {"vr": "SQ", "Value": [{"00400002": {"vr": "DA", "Value": ["2023-01-01"]}}]}
    clean, flags = check_dataset({"00400100": sps})
    assert clean["00400100"]["Value"][0]["00400002"] == {"vr": "DA"}
    assert [f.tag for f in flags] == ["(0040,0100)>(0040,0002)"]


def test_the_entry_given_is_never_changed() -> None:
    """Replacements go into a copy (made on the first one); a valid entry comes back as is."""
    import copy

    step = {"00400002": {"vr": "DA", "Value": ["2023-01-01"]}, "00400001": AE_OK}
    bad = {"00100020": {"vr": "LO", "Value": ["P1"]}, "00400100": {"vr": "SQ", "Value": [step]}}
    before = copy.deepcopy(bad)
    clean, _ = check_dataset(bad)
    assert bad == before and clean is not bad
    assert clean["00400100"]["Value"][0] == {"00400002": {"vr": "DA"}, "00400001": AE_OK}
    good = copy.deepcopy(clean)
    again, flags = check_dataset(good)
    assert again is good and again == clean and flags == []


def test_a_missing_procedure_step_is_flagged() -> None:
    _, flags = check_dataset({"00100020": {"vr": "LO", "Value": ["P1"]}, "00400100": {"vr": "SQ"}})
    assert [f.keyword for f in flags] == ["ScheduledProcedureStepSequence"]
