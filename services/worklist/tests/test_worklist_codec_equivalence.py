"""The worklist's DICOM-JSON codec equals pydicom's `Dataset.to_json_dict` on generated entries.

Hypothesis builds worklist items (PS3.4 Table K.6-1 attributes, the Scheduled Procedure Step
Sequence with its code sequences, and a few elements of the other VRs the codec reads) with
empty values, multiple values and text in every Specific Character Set of statement section 6,
encodes each in the three transfer syntaxes of statement Table 15, and checks that the codec's
output for the bytes equals what pydicom makes of the same bytes (PS3.18 F.2).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

# The codec under test, today in the worklist service: the one place to re-point.
from cinebridge_dicom.dcmjson import identifier_to_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

SYNTAXES = [(True, True), (False, True), (False, False)]
ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ASCII_TEXT = ASCII_UPPER + "abcdefghijklmnopqrstuvwxyz -.,()"


def _single_byte(codec: str) -> str:
    out = []
    for code in range(0xA0, 0x100):
        try:
            char = bytes([code]).decode(codec)
        except UnicodeDecodeError:
            continue
        if char.isprintable() and not char.isspace():
            out.append(char)
    return "".join(out)


def _not_latin_1(chars: str) -> str:
    """Without the characters Latin-1 also has. pydicom encodes "ISO 2022 IR 6" (value 1) as
    Latin-1, so such a character (e.g. "§", 0xFD in ISO 8859-5) is written as its Latin-1 byte
    with no escape sequence, which is not ISO 2022 IR 6 (ASCII) and which pydicom itself then
    reads back as the G1 set's character at that byte: not a value the codec can be compared on.
    """
    out = []
    for char in chars:
        try:
            char.encode("latin_1")
        except UnicodeEncodeError:
            out.append(char)
    return "".join(out)


#: Statement section 6 character sets → the characters generated text may use beyond ASCII.
CHARSETS: dict[tuple[str, ...], str] = {
    (): "",
    ("ISO_IR 100",): _single_byte("latin_1"),
    ("ISO_IR 101",): _single_byte("iso8859_2"),
    ("ISO_IR 109",): _single_byte("iso8859_3"),
    ("ISO_IR 110",): _single_byte("iso8859_4"),
    ("ISO_IR 148",): _single_byte("iso8859_9"),
    ("ISO_IR 144",): _single_byte("iso8859_5"),
    ("ISO_IR 127",): "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    ("ISO_IR 126",): _single_byte("iso8859_7"),
    ("ISO_IR 138",): "אבגדהוזחטיכלמנסעפצקרשת",
    ("ISO_IR 166",): "กขคงจฉชซญดตถทนบปผพฟมยรลวศสหอฮ",
    ("ISO_IR 13",): "ｱｲｳｴｵｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄ",
    ("ISO 2022 IR 6", "ISO 2022 IR 100"): _single_byte("latin_1"),
    ("ISO 2022 IR 6", "ISO 2022 IR 144"): _not_latin_1(_single_byte("iso8859_5")),
    ("ISO 2022 IR 6", "ISO 2022 IR 126"): _not_latin_1(_single_byte("iso8859_7")),
    ("", "ISO 2022 IR 87"): "山田太郎花子東京病院内視鏡検査",
    ("", "ISO 2022 IR 149"): "홍길동김철수서울병원",
    ("", "ISO 2022 IR 58"): "王小东北京医院内镜检查",
    ("GB18030",): "王小东北京医院内镜检查",
    ("ISO_IR 192",): "ÄÖÜßéèçñ山田太郎王小东ΑΒΓабвгאבג😀",
}


def _text(extra: str, max_size: int) -> st.SearchStrategy[str]:
    """A value that survives encoding as it is: no backslash, no edge spaces."""
    return st.text(ASCII_TEXT + extra, max_size=max_size).map(str.strip)


def _ascii(alphabet: str, max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=1, max_size=max_size)


def _values(vr: str, extra: str) -> st.SearchStrategy[Any]:
    """Values pydicom writes for this VR: one, several, or empty."""
    single: st.SearchStrategy[Any]
    if vr == "PN":
        name = _text(extra, 12).map(lambda s: s.replace("=", "").replace("^", ""))
        single = st.builds(lambda f, g: f"{f}^{g}".strip("^"), name, name)
        if extra and not extra.isascii() and any(ord(c) > 0x2E80 for c in extra):
            single = st.builds(lambda a, i: f"{a}={i}", single, single)
        return st.one_of(st.just(""), single)
    if vr in ("LT", "ST", "UT"):
        return st.one_of(st.just(""), _text(extra, 60))
    if vr in ("LO", "SH"):
        single = _text(extra, 8 if vr == "SH" else 20).filter(bool)
    elif vr == "CS":
        single = _ascii(ASCII_UPPER + "_", 16)
    elif vr == "AE":
        single = _ascii(ASCII_UPPER, 16)
    elif vr == "AS":
        single = st.builds(lambda n, u: f"{n:03d}{u}", st.integers(0, 999), st.sampled_from("DWMY"))
    elif vr == "DA":
        single = st.dates(dt.date(1900, 1, 1), dt.date(2099, 12, 31)).map(
            lambda d: d.strftime("%Y%m%d")
        )
    elif vr == "TM":
        single = st.times().map(lambda t: t.strftime("%H%M%S"))
    elif vr == "DT":
        single = st.datetimes(dt.datetime(1950, 1, 1), dt.datetime(2099, 1, 1)).map(
            lambda d: d.strftime("%Y%m%d%H%M%S")
        )
    elif vr == "UI":
        single = st.lists(st.integers(1, 99999), min_size=1, max_size=6).map(
            lambda parts: "1.2.826.0.1.3680043." + ".".join(map(str, parts))
        )
    elif vr == "DS":
        single = st.integers(-(10**6), 10**6).map(lambda n: f"{n / 100:.2f}")
    elif vr == "IS":
        single = st.integers(-(2**31), 2**31 - 1).map(str)
    elif vr in ("US", "SS", "UL", "SL"):
        bits = {"US": (0, 2**16 - 1), "SS": (-(2**15), 2**15 - 1), "UL": (0, 2**32 - 1)}
        low, high = bits.get(vr, (-(2**31), 2**31 - 1))
        single = st.integers(low, high)
    elif vr == "FL":
        single = st.floats(width=32, allow_nan=False, allow_infinity=False)
    elif vr == "FD":
        single = st.floats(allow_nan=False, allow_infinity=False)
    elif vr == "AT":
        single = st.sampled_from([0x00100010, 0x00181063, 0x00400100])
    else:
        raise AssertionError(vr)
    return st.one_of(st.none(), single, st.lists(single, min_size=2, max_size=3))


#: Top-level attributes of a worklist item (PS3.4 Table K.6-1) and a few of the codec's other VRs.
TOP = [
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "PatientComments",
    "MedicalAlerts",
    "Allergies",
    "PregnancyStatus",
    "AdditionalPatientHistory",
    "EthnicGroup",
    "AdmissionID",
    "CurrentPatientLocation",
    "AccessionNumber",
    "ReferringPhysicianName",
    "RequestingPhysician",
    "RequestedProcedureDescription",
    "RequestedProcedureID",
    "RequestedProcedurePriority",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ImagingServiceRequestComments",
    "InstitutionName",
    "NamesOfIntendedRecipientsOfResults",
    "DateTime",
    "TextValue",
    "RecommendedDisplayFrameRateInFloat",
    "EffectiveEchoTime",
    "SimpleFrameList",
    "TagAngleSecondAxis",
    "ReferencePixelX0",
    "InstanceNumber",
    "FrameIncrementPointer",
]
SPS = [
    "Modality",
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "ScheduledStationName",
    "ScheduledProcedureStepLocation",
    "ScheduledProcedureStepStatus",
    "CommentsOnTheScheduledProcedureStep",
    "PreMedication",
    "RequestedContrastAgent",
]
CODE = ["CodeValue", "CodingSchemeDesignator", "CodeMeaning"]


def _items(keywords: list[str], extra: str, nested: bool) -> st.SearchStrategy[Dataset]:
    @st.composite
    def item(draw: st.DrawFn) -> Dataset:
        ds = Dataset()
        for keyword in draw(st.lists(st.sampled_from(keywords), unique=True, max_size=10)):
            setattr(ds, keyword, draw(_values(dictionary_VR(keyword), extra)))
        if nested:
            codes = draw(st.lists(_items(CODE, extra, nested=False), max_size=2))
            ds.ScheduledProtocolCodeSequence = Sequence(codes)
        return ds

    return item()


@st.composite
def worklist_items(draw: st.DrawFn) -> Dataset:
    charset, extra = draw(st.sampled_from(sorted(CHARSETS.items())))
    ds = draw(_items(TOP, extra, nested=False))
    if charset:
        ds.SpecificCharacterSet = list(charset) if len(charset) > 1 else charset[0]
    steps = draw(st.lists(_items(SPS, extra, nested=True), max_size=2))
    ds.ScheduledProcedureStepSequence = Sequence(steps)
    codes = draw(st.lists(_items(CODE, extra, nested=False), max_size=2))
    ds.RequestedProcedureCodeSequence = Sequence(codes)
    if draw(st.booleans()):
        ds.ReferencedStudySequence = Sequence([])
    return ds


def _empty_sequences_without_value(json: dict[str, Any]) -> dict[str, Any]:
    """PS3.18 F.2.5: an empty attribute is an object with no "Value"; pydicom writes an empty
    sequence as "Value": [] (the codec follows the standard; this is the one difference)."""
    out: dict[str, Any] = {}
    for key, element in json.items():
        element = dict(element)
        if element.get("vr") == "SQ":
            items = [_empty_sequences_without_value(i) for i in element.get("Value", [])]
            element.pop("Value", None)
            if items:
                element["Value"] = items
        out[key] = element
    return out


def _encode(ds: Dataset, implicit: bool, little: bool) -> bytes:
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = little, implicit
    write_dataset(out, ds)
    return out.getvalue()


def test_every_keyword_is_in_the_dictionary() -> None:
    for keyword in TOP + SPS + CODE:
        assert tag_for_keyword(keyword) is not None, keyword


@pytest.mark.parametrize(("implicit", "little"), SYNTAXES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ds=worklist_items())
def test_codec_equals_pydicom_json(ds: Dataset, implicit: bool, little: bool) -> None:
    data = _encode(ds, implicit, little)
    expected = _empty_sequences_without_value(
        read_dataset(DicomBytesIO(data), implicit, little).to_json_dict()
    )
    ours = identifier_to_json(data, implicit=implicit, little=little, fallback_charset="")
    assert ours == expected


@pytest.mark.parametrize(
    "name", ["Doe^John", "=Yamada^Tarou", "Doe^John==", "Doe==Phon", "A=B=C", "Doe\\=Kim", "=", ""]
)
def test_person_name_groups_equal_pydicom_json(name: str) -> None:
    """Component groups of a Person Name (PS3.5 6.2.1): an empty group before a present one is
    kept, trailing empty groups are not, as pydicom writes them (PS3.18 F.2.2)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = name
    data = _encode(ds, False, True)
    expected = read_dataset(DicomBytesIO(data), False, True).to_json_dict()
    assert identifier_to_json(data, implicit=False, little=True, fallback_charset="") == expected
