"""MPPS SCU against an in-process pynetdicom MPPS SCP: every attribute of the N-CREATE and the
final N-SET checked against PS3.4 Table F.7.2-1's Type 1/2 requirements; scheduled and
unscheduled (IHE RAD TF-2 4.6.4.1.2.4) cases; COMPLETED and DISCONTINUED (CID 9300); what each
answer status means for the step."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from cinebridge_common.procedure_codes import DISCONTINUATION_REASONS
from cinebridge_dicom import dimse
from cinebridge_testkit.mpps_table import (
    N_CREATE_TYPES,
    N_SET_FINAL_TYPES,
    N_SET_NOT_ALLOWED,
    request_errors,
    type_errors,
)
from cinebridge_testkit.worklist_peers import FakeMpps
from cinebridge_worklist import mpps, mpps_scu, scu
from pydicom.dataset import Dataset
from pydicom.sr._concepts_dict import concepts


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def worklist_item() -> dict[str, Any]:
    """A worklist entry as the C-FIND answer gives it (DICOM JSON, PS3.18 F.2)."""
    item = Dataset()
    item.PatientName = "Müller^Hans"
    item.PatientID = "PID-7"
    item.IssuerOfPatientID = "HOSP"
    item.AccessionNumber = "ACC-42"
    item.RequestedProcedureID = "RP-9"
    item.RequestedProcedureDescription = "Colonoscopy"
    item.RequestedProcedureCodeSequence = [code("45378", "CPT", "Colonoscopy")]
    item.StudyInstanceUID = "1.2.826.0.1.3680043.10.1351.1"
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.1351.2"
    item.ReferencedStudySequence = [ref]
    sps = Dataset()
    sps.Modality = "ES"
    sps.ScheduledProcedureStepID = "SPS-3"
    sps.ScheduledProcedureStepDescription = "Colonoscopy with biopsy"
    sps.ScheduledProtocolCodeSequence = [code("P1", "99LOCAL", "Screening colonoscopy")]
    item.ScheduledProcedureStepSequence = [sps]
    return item.to_json_dict()


SCHEDULED = {
    "study_instance_uid": "1.2.826.0.1.3680043.10.1351.1",
    "patient_name": "Müller^Hans",
    "patient_id": "PID-7",
    "patient_birth_date": "19600102",
    "patient_sex": "M",
    "accession_number": "ACC-42",
    "study_id": "RP-9",
    "study_description": "Colonoscopy",
    "modality": "ES",
    "room": "ROOM1",
    "worklist_item": worklist_item(),
}
UNSCHEDULED = {
    "study_instance_uid": "2.25.1234567890",
    "patient_name": "Doe^Jane",
    "patient_id": "P2",
    "patient_birth_date": "",
    "patient_sex": "",
    "accession_number": "",
    "study_id": "",
    "study_description": "",
    "modality": "",
    "room": "ROOM2",
    "worklist_item": None,
}
STARTED = dt.datetime(2026, 3, 4, 10, 20, 30, tzinfo=dt.UTC)
FACTS = mpps.StepFacts("A1B2C3D4E5F6A7B8", STARTED, "SPACS", "CINEBRIDGE", "ROOM1", "ISO_IR 192")
INSTANCES = [
    mpps.PerformedInstance("1.2.840.10008.5.1.4.1.1.77.1.1", "2.25.11", "2.25.100", "scope"),
    mpps.PerformedInstance("1.2.840.10008.5.1.4.1.1.77.1.1", "2.25.12", "2.25.100", "scope"),
    mpps.PerformedInstance("1.2.840.10008.5.1.4.1.1.77.1.1.1", "2.25.13", "2.25.200", "room"),
]


@pytest.fixture
def scp() -> Iterator[FakeMpps]:
    with FakeMpps() as peer:
        yield peer


def peer_of(scp: FakeMpps) -> scu.Peer:
    return scu.Peer("127.0.0.1", scp.port, "FAKEMPPS", "SPACS")


def test_scheduled_n_create_carries_the_worklist_item(scp: FakeMpps) -> None:
    ds = mpps.n_create(SCHEDULED, FACTS)
    answer = mpps_scu.send(peer_of(scp), dimse.N_CREATE_RQ, "2.25.77", ds, 10)
    assert answer.status == 0x0000
    (got,) = scp.requests
    assert (got.operation, got.sop_instance_uid) == ("N-CREATE", "2.25.77")
    received = got.dataset
    assert type_errors(received, N_CREATE_TYPES) == []
    (ssa,) = received.ScheduledStepAttributesSequence
    assert ssa.StudyInstanceUID == SCHEDULED["study_instance_uid"]
    assert ssa.AccessionNumber == "ACC-42"
    assert ssa.RequestedProcedureID == "RP-9"
    assert ssa.RequestedProcedureDescription == "Colonoscopy"
    assert ssa.ScheduledProcedureStepID == "SPS-3"
    assert ssa.ScheduledProcedureStepDescription == "Colonoscopy with biopsy"
    assert ssa.ScheduledProtocolCodeSequence[0].CodeValue == "P1"
    assert (
        ssa.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.826.0.1.3680043.10.1351.2"
    )
    assert str(received.PatientName) == "Müller^Hans"  # decoded by the declared ISO_IR 192
    assert received.SpecificCharacterSet == "ISO_IR 192"
    assert (received.PatientID, received.PatientBirthDate, received.PatientSex) == (
        "PID-7",
        "19600102",
        "M",
    )
    assert received.IssuerOfPatientID == "HOSP"
    assert received.PerformedProcedureStepStatus == "IN PROGRESS"
    assert received.PerformedProcedureStepID == "A1B2C3D4E5F6A7B8"
    assert (received.PerformedStationAETitle, received.PerformedStationName) == (
        "SPACS",
        "CINEBRIDGE",
    )
    assert received.PerformedLocation == "ROOM1"
    local = STARTED.astimezone()
    assert received.PerformedProcedureStepStartDate == local.strftime("%Y%m%d")
    assert received.PerformedProcedureStepStartTime == local.strftime("%H%M%S")
    assert received.PerformedProcedureStepDescription == "Colonoscopy with biopsy"
    assert received.ProcedureCodeSequence[0].CodeValue == "45378"
    assert (received.Modality, received.StudyID) == ("ES", "RP-9")
    assert received.PerformedProcedureStepEndDate == ""
    assert received.PerformedSeriesSequence == []


def test_unscheduled_n_create_has_an_empty_scheduled_step(scp: FakeMpps) -> None:
    """IHE RAD TF-2 4.6.4.1.2.4: one item, our own Study Instance UID, the rest zero length."""
    ds = mpps.n_create(UNSCHEDULED, FACTS)
    assert mpps_scu.send(peer_of(scp), dimse.N_CREATE_RQ, "2.25.78", ds, 10).status == 0
    received = scp.requests[0].dataset
    assert type_errors(received, N_CREATE_TYPES) == []
    (ssa,) = received.ScheduledStepAttributesSequence
    assert ssa.StudyInstanceUID == "2.25.1234567890"
    for keyword in (
        "AccessionNumber",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
        "ScheduledProcedureStepID",
        "ScheduledProcedureStepDescription",
    ):
        assert ssa[keyword].value in ("", None), keyword
    assert ssa.ReferencedStudySequence == [] and ssa.ScheduledProtocolCodeSequence == []
    assert received.ProcedureCodeSequence == [] and received.ReferencedPatientSequence == []
    assert received.Modality == "OT"
    assert "SpecificCharacterSet" not in received  # Type 1C: plain ASCII needs none


def test_completed_n_set_lists_every_series_and_instance(scp: FakeMpps) -> None:
    assert (
        mpps_scu.send(
            peer_of(scp), dimse.N_CREATE_RQ, "2.25.79", mpps.n_create(SCHEDULED, FACTS), 10
        ).status
        == 0
    )
    ended = STARTED + dt.timedelta(minutes=25)
    ds = mpps.n_set(SCHEDULED, "COMPLETED", ended, INSTANCES, operator="nurse1")
    answer = mpps_scu.send(peer_of(scp), dimse.N_SET_RQ, "2.25.79", ds, 10)
    assert answer.status == 0x0000
    received = scp.requests[1].dataset
    assert scp.requests[1].operation == "N-SET"
    assert type_errors(received, N_SET_FINAL_TYPES) == []
    assert [k for k in N_SET_NOT_ALLOWED if k in received] == []
    assert received.PerformedProcedureStepStatus == "COMPLETED"
    assert received.PerformedProcedureStepEndTime == ended.astimezone().strftime("%H%M%S")
    assert received.PerformedProtocolCodeSequence[0].CodeValue == "P1"
    listed = {
        series.SeriesInstanceUID: sorted(
            r.ReferencedSOPInstanceUID for r in series.ReferencedImageSequence
        )
        for series in received.PerformedSeriesSequence
    }
    assert listed == {"2.25.100": ["2.25.11", "2.25.12"], "2.25.200": ["2.25.13"]}
    first = received.PerformedSeriesSequence[0]
    assert first.ProtocolName == "Colonoscopy with biopsy"
    assert (first.SeriesDescription, str(first.OperatorsName)) == ("scope", "nurse1")
    assert first.ReferencedNonImageCompositeSOPInstanceSequence == []
    # A step that is final cannot be set again (PS3.4 F.7.2.2.2): the SCP says so.
    again = mpps_scu.send(peer_of(scp), dimse.N_SET_RQ, "2.25.79", ds, 10)
    assert (again.status, again.error_id) == (0x0110, mpps.NO_LONGER_UPDATABLE)


def test_discontinued_n_set_carries_the_cid_9300_reason(scp: FakeMpps) -> None:
    mpps_scu.send(peer_of(scp), dimse.N_CREATE_RQ, "2.25.80", mpps.n_create(UNSCHEDULED, FACTS), 10)
    reason = {"value": "110505", "scheme": "DCM", "meaning": DISCONTINUATION_REASONS["110505"]}
    ds = mpps.n_set(UNSCHEDULED, "DISCONTINUED", STARTED, [], reason=reason)
    assert mpps_scu.send(peer_of(scp), dimse.N_SET_RQ, "2.25.80", ds, 10).status == 0
    received = scp.requests[1].dataset
    assert type_errors(received, N_SET_FINAL_TYPES) == []
    assert received.PerformedProcedureStepStatus == "DISCONTINUED"
    (why,) = received.PerformedProcedureStepDiscontinuationReasonCodeSequence
    assert (why.CodeValue, why.CodingSchemeDesignator, why.CodeMeaning) == (
        "110505",
        "DCM",
        "Patient refused to continue procedure",
    )
    assert received.PerformedSeriesSequence == []


def test_type_checker_finds_what_is_missing() -> None:
    """The table check itself can fail: a list without its Type 1 values is caught."""
    ds = mpps.n_create(UNSCHEDULED, FACTS)
    del ds.PerformedProcedureStepID
    ds.Modality = ""
    ds.ScheduledStepAttributesSequence[0].StudyInstanceUID = ""
    assert type_errors(ds, N_CREATE_TYPES) == [
        "ScheduledStepAttributesSequence>StudyInstanceUID (Type 1) empty",
        "PerformedProcedureStepID (Type 1) missing",
        "Modality (Type 1) empty",
    ]


def test_request_check_finds_what_an_n_set_must_not_carry() -> None:
    """The per-request check the integration tests run can fail too: an N-SET that is not
    final, misses its end time or carries an attribute only an N-CREATE may hold."""
    ds = mpps.n_set(UNSCHEDULED, "COMPLETED", STARTED, INSTANCES[:1])
    assert request_errors("N-SET", ds) == []
    assert request_errors("N-CREATE", mpps.n_create(UNSCHEDULED, FACTS)) == []
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    del ds.PerformedProcedureStepEndTime
    ds.PatientID = "P2"
    assert request_errors("N-SET", ds) == [
        "PerformedProcedureStepEndTime (Type 1) missing",
        "PatientID not allowed in N-SET",
        "PerformedProcedureStepStatus is not final",
    ]


def test_unreachable_scp_is_a_transient_answer() -> None:
    with FakeMpps() as gone:
        port = gone.port
    answer = mpps_scu.send(
        scu.Peer("127.0.0.1", port, "X", "SPACS"),
        dimse.N_CREATE_RQ,
        "2.25.1",
        mpps.n_create(UNSCHEDULED, FACTS),
        5,
    )
    assert answer.status is None and answer.transient


def test_failure_status_and_comment_reach_the_step(scp: FakeMpps) -> None:
    scp.statuses = [0x0120]
    answer = mpps_scu.send(
        peer_of(scp), dimse.N_CREATE_RQ, "2.25.81", mpps.n_create(UNSCHEDULED, FACTS), 10
    )
    assert answer.status == 0x0120
    assert mpps.classify("create", 0x0120)[0] == "failed"


@pytest.mark.parametrize(
    ("operation", "status", "error_id", "sent_before", "verdict"),
    [
        ("create", 0x0000, None, False, "done"),
        ("create", 0x0110, None, False, "retry"),  # processing failure: the RIS may recover
        ("create", 0x0213, None, False, "retry"),
        ("create", 0x0106, None, False, "failed"),  # invalid attribute value
        ("create", 0x0120, None, False, "failed"),  # missing attribute
        ("create", 0x0121, None, False, "failed"),
        ("create", 0x0116, None, False, "warning"),  # PS3.7: a warning, the step exists
        ("create", 0x0107, None, False, "warning"),
        ("create", 0x0111, None, True, "done"),  # our own earlier N-CREATE arrived
        ("create", 0x0111, None, False, "failed"),
        ("set", 0x0110, 0xA710, True, "done"),  # our own earlier N-SET made it final
        ("set", 0x0110, 0xA710, False, "failed"),  # final already: never set again
        ("set", 0x0110, None, False, "retry"),
        ("set", 0xC123, None, False, "failed"),
    ],
)
def test_status_verdicts(
    operation: mpps.Operation, status: int, error_id: int | None, sent_before: bool, verdict: str
) -> None:
    got, text = mpps.classify(operation, status, error_id=error_id, sent_before=sent_before)
    assert got == verdict
    assert f"0x{status:04X}" in text


def test_cid_9300_matches_the_standard_dictionary() -> None:
    """Every code the station offers is in CID 9300 with its meaning (pydicom's PS3.16 data)."""
    known = {
        value: (meaning, cids)
        for by_name in concepts["DCM"].values()
        for value, (meaning, cids) in by_name.items()
    }
    for value, meaning in DISCONTINUATION_REASONS.items():
        assert known[value][0] == meaning
        assert 9300 in known[value][1]
    in_cid = {v for v, (_m, cids) in known.items() if 9300 in cids}
    assert in_cid == set(DISCONTINUATION_REASONS)
