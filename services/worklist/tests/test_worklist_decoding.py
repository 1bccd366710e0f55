"""The strict response reader (dcmjson) and the offline cache's local matching."""

from __future__ import annotations

import pytest
from cinebridge_common.messages import WorklistItem
from cinebridge_dicom import dcmjson
from cinebridge_dicom.dcmjson import MalformedEntry, decode_identifier, identifier_to_json
from cinebridge_worklist.matching import matches
from cinebridge_worklist.query import SearchFields, ServerKeys, build_identifier
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import dsutils


def encode(ds: Dataset, *, implicit: bool = False, little: bool = True) -> bytes:
    data = dsutils.encode(ds, implicit, little)
    assert data is not None
    return data


def sample() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "MÜLLER^JÜRGEN"
    ds.PatientID = "P1"
    ds.OtherPatientIDs = ["A", "B"]
    ds.PatientWeight = "70"
    ds.PregnancyStatus = 4
    item = Dataset()
    item.CodeValue = "C1"
    ds.RequestedProcedureCodeSequence = Sequence([item, Dataset()])
    return ds


@pytest.mark.parametrize(("implicit", "little"), [(True, True), (False, True), (False, False)])
def test_reads_the_three_table_15_syntaxes_to_dicom_json(implicit: bool, little: bool) -> None:
    data = encode(sample(), implicit=implicit, little=little)
    out = identifier_to_json(data, implicit=implicit, little=little, fallback_charset="")
    assert out["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "MÜLLER^JÜRGEN"}]}
    assert out["00101000"]["Value"] == ["A", "B"]
    assert out["00101030"]["Value"] == [70]
    assert out["001021C0"]["Value"] == [4]
    seq = out["00321064"]["Value"]
    assert seq[0]["00080100"]["Value"] == ["C1"] and seq[1] == {}


def test_matches_pydicom_json_for_the_same_dataset() -> None:
    ds = sample()
    ours = identifier_to_json(encode(ds), implicit=False, little=True, fallback_charset="")
    assert ours == ds.to_json_dict()


def test_truncated_streams_and_runaway_nesting_are_malformed() -> None:
    data = encode(sample())
    with pytest.raises(MalformedEntry, match=r"truncated|runs past"):
        identifier_to_json(data[:-3], implicit=False, little=True, fallback_charset="")
    deep = Dataset()
    inner = deep
    for _ in range(12):
        child = Dataset()
        inner.ReferencedStudySequence = Sequence([child])
        inner = child
    deep.PatientID = "P1"
    # Over-nested: the top-level sequence is dropped with a note, the rest of the entry kept.
    out, notes = decode_identifier(encode(deep), implicit=False, little=True, fallback_charset="")
    assert out["00081110"] == {"vr": "SQ"} and out["00100020"]["Value"] == ["P1"]
    assert [(key, action) for key, _, action in notes] == [("00081110", "sequence dropped")]
    assert "deeper" in notes[0][1]


def test_unknown_configured_character_set_is_reported() -> None:
    ds = Dataset()
    ds.PatientID = "P1"
    with pytest.raises(MalformedEntry, match="configured"):
        identifier_to_json(encode(ds), implicit=False, little=True, fallback_charset="LATIN-9")


def cached(**fields: str) -> WorklistItem:
    base = {
        "patient_name": "DOE^JOHN",
        "patient_id": "PID001",
        "accession_number": "ACC001",
        "requested_procedure_id": "RP001",
        "modality": "ES",
        "scheduled_station_ae_title": "ROOM1",
        "scheduled_procedure_step_start_date": "20261129",
    }
    return WorklistItem(**{**base, **fields})


@pytest.mark.parametrize(
    ("fields", "keys", "expected"),
    [
        (SearchFields(), ServerKeys(), True),
        (SearchFields(patient_name="doe john"), ServerKeys(), True),  # PN case-insensitive
        (SearchFields(patient_name="john doe"), ServerKeys(), False),  # order matters
        (SearchFields(patient_id="ID00"), ServerKeys(), True),
        (SearchFields(patient_id="ID00"), ServerKeys(wildcards=False), False),
        (SearchFields(accession_number="ACC001"), ServerKeys(wildcards=False), True),
        (SearchFields(date_from="20261128", date_to="20261130"), ServerKeys(), True),
        (SearchFields(date_from="20261130"), ServerKeys(), False),
        (SearchFields(), ServerKeys(modality="US"), False),
        (SearchFields(), ServerKeys(modality="ES", station_ae="ROOM1"), True),
        (SearchFields(), ServerKeys(station_ae="ROOM2"), False),
    ],
)
def test_cached_entries_match_like_the_query(
    fields: SearchFields, keys: ServerKeys, expected: bool
) -> None:
    assert matches(cached(), build_identifier(fields, keys)) is expected


def test_a_non_universal_key_fails_on_an_empty_value() -> None:
    identifier = build_identifier(SearchFields(accession_number="A"), ServerKeys())
    assert not matches(cached(accession_number=""), identifier)


def test_iso_2022_japanese_names_decode_like_pydicom() -> None:
    # PS3.5 H.3.1 example: ISO 2022 IR 87 (JIS X 0208) with escape sequences per component.
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    data = encode(ds)
    assert b"\x1b$B" in data  # really escaped on the wire
    ours = identifier_to_json(data, implicit=False, little=True, fallback_charset="ISO_IR 192")
    assert ours["00100010"]["Value"][0] == {
        "Alphabetic": "Yamada^Tarou",
        "Ideographic": "山田^太郎",
        "Phonetic": "やまだ^たろう",
    }


@pytest.mark.parametrize(("implicit", "little"), [(True, True), (False, True), (False, False)])
def test_the_header_cache_stays_bounded_and_never_changes_a_result(
    implicit: bool, little: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encode(sample(), implicit=implicit, little=little)
    expected = identifier_to_json(data, implicit=implicit, little=little, fallback_charset="")
    cache: dict[bytes, object] = {}
    monkeypatch.setitem(dcmjson._HEADERS, (implicit, little), cache)
    monkeypatch.setattr(dcmjson, "_MAX_CACHED_HEADERS", 3)
    for _ in range(3):  # cold, then warm, then after being emptied
        assert (
            identifier_to_json(data, implicit=implicit, little=little, fallback_charset="")
            == expected
        )
        assert 0 < len(cache) <= 3
    assert expected == sample().to_json_dict()


def test_a_wrong_vr_is_refused_every_time_not_only_before_caching() -> None:
    ds = Dataset()
    ds.PatientID = "P1"
    good = encode(ds)
    bad = good.replace(b"LO", b"US", 1)  # (0010,0020) Patient ID as US
    for _ in range(2):
        identifier_to_json(good, implicit=False, little=True, fallback_charset="")
        with pytest.raises(MalformedEntry, match=r"\(0010,0020\) has VR US"):
            identifier_to_json(bad, implicit=False, little=True, fallback_charset="")
