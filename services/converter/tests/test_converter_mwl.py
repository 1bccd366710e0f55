"""Statement Table 38 (worklist item -> instance) and the §8.1.5 edit rule."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from cinebridge_converter import mwl
from cinebridge_testkit.media import make_still
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

STUDY_UID = "1.2.826.0.1.3680043.8.498.77"


def code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = value, "99LOCAL"
    item.CodingSchemeVersion, item.CodeMeaning = "1", meaning
    return item


def ref(sop_class: str, uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, uid
    return item


def worklist_item(pregnancy: Any = 1) -> dict[str, Any]:
    """An item with every attribute of statement Table 18."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.AccessionNumber = "ACC-4711"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.AdmittingDiagnosesDescription = "Suspected polyp"
    ds.ReferencedStudySequence = Sequence([ref("1.2.840.10008.3.1.2.3.1", "1.2.3.4.5")])
    # Table 18 prints (0008,1125) for Referenced Patient Sequence; the attribute is (0008,1120).
    ds.ReferencedPatientSequence = Sequence([ref("1.2.840.10008.3.1.2.1.1", "1.2.3.4.6")])
    ds.PatientName = "Müller^Jürgen"
    ds.PatientID = "PID-1"
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientBirthDate = "19700203"
    ds.PatientSex = "M"
    ds.PatientWeight = "81.5"
    ds.MedicalAlerts = "Latex allergy"
    ds.Allergies = "Penicillin"
    ds.AdditionalPatientHistory = "Prior colonoscopy 2020"
    ds.add_new(0x001021C0, "US", pregnancy)
    ds.StudyInstanceUID = STUDY_UID
    ds.RequestingPhysician = "Requester^Rob"
    ds.RequestingService = "GI"
    ds.RequestedProcedureDescription = "Colonoscopy"
    ds.RequestedProcedureCodeSequence = Sequence([code("COL1", "Colonoscopy")])
    ds.AdmissionID = "ADM-9"
    ds.SpecialNeeds = "none"
    ds.CurrentPatientLocation = "Ward 3"
    ds.PatientState = "Sedated"
    step = Dataset()
    step.Modality = "ES"
    step.RequestedContrastAgent = ""
    step.ScheduledStationAETitle = "ROOM1"
    step.ScheduledProcedureStepStartDate = "20261129"
    step.ScheduledProcedureStepStartTime = "0800"
    step.ScheduledPerformingPhysicianName = "Endo^Erik"
    step.ScheduledProcedureStepDescription = "Colonoscopy with biopsy"
    step.ScheduledProtocolCodeSequence = Sequence([code("PROT7", "Biopsy protocol")])
    step.ScheduledProcedureStepID = "SPS-1"
    step.ScheduledStationName = "TOWER1"
    step.ScheduledProcedureStepLocation = "Endo 1"
    step.PreMedication = "none"
    step.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.RequestedProcedureID = "RP-77"
    ds.RequestedProcedurePriority = "ROUTINE"
    ds.PatientTransportArrangements = "bed"
    ds.PlacerOrderNumberImagingServiceRequest = "PL-1"
    ds.FillerOrderNumberImagingServiceRequest = "FI-1"
    ds.ConfidentialityConstraintOnPatientDataDescription = "none"
    return ds.to_json_dict()


@pytest.fixture
def study(base_study: mwl.StudyInfo) -> mwl.StudyInfo:
    return dataclasses.replace(
        base_study,
        origin="worklist",
        study_instance_uid=STUDY_UID,
        worklist_item=worklist_item(),
        patient_name="Müller^Jürgen",
        patient_id="PID-1",
    )


def test_every_mapped_attribute_is_copied(study: mwl.StudyInfo) -> None:
    ds = mwl.study_attributes(study, default_modality="OT", uid_root="")
    # "Exist"
    assert ds.AccessionNumber == "ACC-4711"
    assert ds.ReferringPhysicianName == "Referrer^Rita"
    assert ds.PatientName == "Müller^Jürgen"
    assert (ds.PatientID, ds.PatientBirthDate, ds.PatientSex) == ("PID-1", "19700203", "M")
    assert ds.StudyInstanceUID == STUDY_UID
    assert ds.StudyDescription == "Colonoscopy"
    assert ds.Modality == "ES"
    assert ds.StudyID == "RP-77"
    # "New"
    assert ds.AdmittingDiagnosesDescription == "Suspected polyp"
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.3.4.5"
    assert ds.ReferencedPatientSequence[0].ReferencedSOPInstanceUID == "1.2.3.4.6"
    assert ds.IssuerOfPatientID == "HOSP"
    assert float(ds.PatientWeight) == 81.5
    assert (ds.MedicalAlerts, ds.Allergies) == ("Latex allergy", "Penicillin")
    assert ds.AdditionalPatientHistory == "Prior colonoscopy 2020"
    assert ds.PregnancyStatus == 1
    assert ds.ProtocolName == "Colonoscopy"
    request = ds.RequestAttributesSequence[0]
    assert (request.RequestedProcedureID, request.RequestedProcedureDescription) == (
        "RP-77",
        "Colonoscopy",
    )
    assert request.ScheduledProcedureStepID == "SPS-1"
    assert request.ScheduledProcedureStepDescription == "Colonoscopy with biopsy"
    protocol = request.ScheduledProtocolCodeSequence[0]
    assert (
        protocol.CodeValue,
        protocol.CodingSchemeDesignator,
        protocol.CodingSchemeVersion,
        protocol.CodeMeaning,
    ) == ("PROT7", "99LOCAL", "1", "Biopsy protocol")
    procedure = ds.ProcedureCodeSequence[0]
    assert (procedure.CodeValue, procedure.CodeMeaning) == ("COL1", "Colonoscopy")
    assert (ds.AdmissionID, ds.PatientState) == ("ADM-9", "Sedated")
    # Displayed-only attributes of Table 18 are not copied.
    for keyword in (
        "RequestingPhysician",
        "CurrentPatientLocation",
        "SpecialNeeds",
        "RequestedProcedurePriority",
        "PlacerOrderNumberImagingServiceRequest",
    ):
        assert keyword not in ds


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (1, 1),
        (4, 4),
        ("2", 2),
        ("0003", 3),
        (b"4", 4),
        (0, None),
        (5, None),
        ("x", None),
    ],
)
def test_pregnancy_status_is_normalised(given: Any, expected: int | None) -> None:
    assert mwl.normalise_pregnancy(given) == expected


def test_edit_drops_new_keeps_exist_and_unlinks_the_study(study: mwl.StudyInfo) -> None:
    edited = dataclasses.replace(
        study, edited=True, patient_name="Mueller^Juergen", patient_birth_date="19700302"
    )
    ds = mwl.study_attributes(edited, default_modality="OT", uid_root="")
    assert ds.PatientName == "Mueller^Juergen"  # the edited "Exist" values
    assert ds.PatientBirthDate == "19700302"
    assert ds.StudyInstanceUID != STUDY_UID  # regenerated: no longer the worklist's study
    assert (
        ds.StudyInstanceUID
        == mwl.study_attributes(edited, default_modality="OT", uid_root="").StudyInstanceUID
    )  # deterministically
    for keyword in (
        *mwl.NEW_FLAT,
        *mwl.NEW_SEQUENCES,
        "PregnancyStatus",
        "ProtocolName",
        "RequestAttributesSequence",
        "ProcedureCodeSequence",
    ):
        assert keyword not in ds, keyword


def test_unscheduled_study_gets_timestamps(base_study: mwl.StudyInfo) -> None:
    ds = mwl.study_attributes(base_study, default_modality="OT", uid_root="")
    assert ds.AccessionNumber == ds.StudyID == "2026112908153025"  # YYYYMMDDHHIISSss
    assert ds.Modality == "OT"
    assert "RequestAttributesSequence" not in ds


def test_instance_with_full_worklist_passes_dciodvfy(
    tmp_path: Path, run_convert: Any, tools: Any, study: mwl.StudyInfo
) -> None:
    source = make_still(tmp_path / "s.jpg", width=320, height=240)
    for iod in ("sc", "vl"):
        [built] = run_convert(source, kind="snapshot", iod=iod, study=study)
        ds = dcmread(built.temp)
        assert ds.RequestAttributesSequence[0].ScheduledProcedureStepID == "SPS-1"
        assert ds.PatientName == "Müller^Jürgen" and ds.SpecificCharacterSet == "ISO_IR 192"
        errors, warnings = tools.dciodvfy(built.temp)
        assert errors == []
        # Laterality: statement Table 32 (conformance-notes.md). 99LOCAL: the RIS's private
        # coding scheme (PS3.16 8.2 allows "99" schemes), copied as the worklist gave it.
        assert all("<Laterality>" in w or "<99LOCAL>" in w for w in warnings), warnings


def test_after_an_edit_the_modality_stays_the_procedures(study: mwl.StudyInfo) -> None:
    # The edit removed the worklist item (§8.1.5); the row keeps the procedure's modality.
    edited = dataclasses.replace(study, edited=True, worklist_item=None, modality="ES")
    assert mwl.study_attributes(edited, default_modality="OT", uid_root="").Modality == "ES"
    changed = dataclasses.replace(edited, modality="XC")  # the operator changed it
    assert mwl.study_attributes(changed, default_modality="OT", uid_root="").Modality == "XC"
    none = dataclasses.replace(edited, modality="")
    assert mwl.study_attributes(none, default_modality="OT", uid_root="").Modality == "OT"


def test_invalid_worklist_values_are_not_written(study: mwl.StudyInfo) -> None:
    assert study.worklist_item is not None
    item = {
        **study.worklist_item,
        "00100040": {"vr": "CS", "Value": ["FEMALEXXXXXXXXXXX"]},
        "00100030": {"vr": "DA", "Value": ["1980-13-45"]},
    }
    # A row written before the checks, or an item from a client: neither value is written.
    bad = dataclasses.replace(
        study, worklist_item=item, patient_sex="X", patient_birth_date="1980-13-45"
    )
    ds = mwl.study_attributes(bad, default_modality="OT", uid_root="")
    assert ds.PatientSex == "" and ds.PatientBirthDate == ""
