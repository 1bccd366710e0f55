"""De-identification (PS3.15 Annex E) of the station's own objects, seeded with the patient's
identifying values everywhere a real object may carry them: top level, nested sequences,
private elements, descriptors, the file meta."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cinebridge_converter.deidentify import (
    DUMMY_DATE,
    Deidentifier,
    DeidOptions,
    burned_in_warning,
    clean_text,
)
from cinebridge_testkit.media import make_still, make_video
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset

from .conftest import STUDY

PATIENT = dataclasses.replace(
    STUDY,
    patient_name="Quarrington^Philomena",
    patient_id="PID-7788-99",
    patient_birth_date="19610213",
    accession_number="ACC445566",
    study_description="Colonoscopy Quarrington",
    study_date="20261129",
)
INSTITUTION = "Saint Ursula Infirmary"


def _seeded(run_convert: Callable[..., Any], tmp_path: Path, kind: str = "snapshot") -> Dataset:
    """A station object (VL Endoscopic) with the patient's values put where archives keep them."""
    src = make_still(tmp_path / "s.jpg") if kind == "snapshot" else make_video(tmp_path / "v.mp4")
    [built] = run_convert(src, kind, iod="vl", study=PATIENT)
    ds: FileDataset = dcmread(built.temp)
    ds.InstitutionName = INSTITUTION
    ds.OtherPatientIDs = "PID-7788-99"
    request = Dataset()
    request.AccessionNumber = PATIENT.accession_number
    request.RequestedProcedureDescription = "Colonoscopy for Philomena Quarrington"
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = ds.StudyInstanceUID
    request.ReferencedStudySequence = [ref]
    ds.RequestAttributesSequence = [request]
    block = ds.private_block(0x0019, "CINEBRIDGE TEST", create=True)
    block.add_new(0x01, "LO", PATIENT.patient_id)
    block.add_new(0x02, "LO", "Quarrington")
    return ds


def _seeded_values(ds: Dataset) -> list[str]:
    return [
        PATIENT.patient_name,
        "Quarrington",
        "Philomena",
        PATIENT.patient_id,
        PATIENT.patient_birth_date,
        PATIENT.accession_number,
        INSTITUTION,
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
    ]


def _leaks(ds: Dataset, seeded: list[str]) -> list[str]:
    """Every element of every nesting level, private ones and the file meta included."""
    found: list[str] = []

    def visit(_: Dataset, elem: Any) -> None:
        if elem.VR in ("OB", "OW", "SQ", "UN"):
            return
        text = str(elem.value).lower()
        found.extend(f"{elem.tag} {v}" for v in seeded if v.lower() in text)

    ds.walk(visit)
    ds.file_meta.walk(visit)
    return found


@pytest.mark.parametrize(
    "options",
    [DeidOptions(), DeidOptions(retain_dates=True), DeidOptions(clean_descriptors=True)],
    ids=["basic", "modified-dates", "clean-descriptors"],
)
def test_no_seeded_value_survives(
    run_convert: Callable[..., Any], tmp_path: Path, options: DeidOptions
) -> None:
    ds = _seeded(run_convert, tmp_path)
    seeded = _seeded_values(ds)
    assert len(_leaks(ds, seeded)) >= 10, "the seeding itself is found before"
    Deidentifier(options, seed="export-1").apply(ds)
    assert _leaks(ds, seeded) == []
    assert ds.PatientIdentityRemoved == "YES"
    codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100"
    assert ("113105" in codes) is options.clean_descriptors
    assert ("113107" in codes) is options.retain_dates
    assert all(c.CodingSchemeDesignator == "DCM" for c in ds.DeidentificationMethodCodeSequence)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert not [e for e in ds if e.tag.is_private]
    assert ds.PatientBirthDate == ""


def test_dates_are_replaced_or_shifted(run_convert: Callable[..., Any], tmp_path: Path) -> None:
    removed = _seeded(run_convert, tmp_path)
    Deidentifier(DeidOptions(), seed="a").apply(removed)
    assert removed.StudyDate == DUMMY_DATE and removed.ContentDate == DUMMY_DATE
    assert removed.LongitudinalTemporalInformationModified == "REMOVED"
    shifted = _seeded(run_convert, tmp_path)
    Deidentifier(DeidOptions(retain_dates=True), seed="a").apply(shifted)
    assert shifted.StudyDate not in (DUMMY_DATE, PATIENT.study_date)
    assert shifted.LongitudinalTemporalInformationModified == "MODIFIED"


def test_descriptors_removed_or_cleaned(run_convert: Callable[..., Any], tmp_path: Path) -> None:
    basic = _seeded(run_convert, tmp_path)
    Deidentifier(DeidOptions(), seed="a").apply(basic)
    assert "StudyDescription" not in basic
    assert "RequestedProcedureDescription" not in basic.RequestAttributesSequence[0]
    clean = _seeded(run_convert, tmp_path)
    Deidentifier(DeidOptions(clean_descriptors=True), seed="a").apply(clean)
    assert clean.StudyDescription == "Colonoscopy"
    assert clean.RequestAttributesSequence[0].RequestedProcedureDescription == "Colonoscopy for"
    assert clean_text("Doe^Jane follow-up", ["Doe", "Jane"]) == "follow-up"


def test_uids_consistent_within_an_export_only(
    run_convert: Callable[..., Any], tmp_path: Path
) -> None:
    still, video = _seeded(run_convert, tmp_path), _seeded(run_convert, tmp_path, "recording")
    original = str(still.StudyInstanceUID)
    assert video.StudyInstanceUID == original
    one = Deidentifier(DeidOptions(), seed="export-1")
    one.apply(still)
    one.apply(video)
    assert still.StudyInstanceUID == video.StudyInstanceUID != original
    ref = still.RequestAttributesSequence[0].ReferencedStudySequence[0]
    assert ref.ReferencedSOPInstanceUID == still.StudyInstanceUID, "references follow"
    assert still.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.1", "class UIDs are kept"
    other = _seeded(run_convert, tmp_path)
    Deidentifier(DeidOptions(), seed="export-2").apply(other)
    assert other.StudyInstanceUID not in (original, still.StudyInstanceUID)


def test_burned_in_warning(run_convert: Callable[..., Any], tmp_path: Path) -> None:
    ds = _seeded(run_convert, tmp_path)
    ds.BurnedInAnnotation = "NO"
    assert burned_in_warning(ds, []) is None
    ds.SeriesDescription = "tower-1"
    assert "overlays" in (burned_in_warning(ds, ["tower-1"]) or "")
    ds.BurnedInAnnotation = "YES"
    assert "YES" in (burned_in_warning(ds, []) or "")
    del ds.BurnedInAnnotation
    assert "not NO" in (burned_in_warning(ds, []) or "")
