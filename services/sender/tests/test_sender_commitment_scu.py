"""Storage Commitment SCU (PS3.4 Annex J) against in-process pynetdicom SCPs: a report on the
same association (success, failures, and sent before the N-ACTION-RSP), no report within the
wait, an archive without the SOP class."""

from __future__ import annotations

import threading

from cinebridge_common import commitment as sc
from cinebridge_sender import commitment, scu
from cinebridge_testkit.storage_peers import CommitmentScp, ScriptedScp
from pydicom.uid import generate_uid

TIMEOUTS = scu.Timeouts(connect_s=10, acse_s=10, dimse_s=10, network_s=10)
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def refs(n: int) -> list[sc.Reference]:
    return [sc.Reference(SC_CLASS, generate_uid()) for _ in range(n)]


def peer(port: int, ae: str) -> scu.Peer:
    return scu.Peer(ae_title=ae, host="127.0.0.1", port=port, calling_ae_title="CINEBRIDGE")


def test_report_on_the_same_association_lists_every_instance_committed() -> None:
    wanted = refs(3)
    uid = generate_uid()
    with CommitmentScp() as scp:
        outcome = commitment.request(peer(scp.port, scp.ae_title), TIMEOUTS, uid, wanted, 20.0)
    assert outcome.kind == "reported"
    assert outcome.report is not None
    assert outcome.report.transaction_uid == uid
    assert {r.sop_instance_uid for r in outcome.report.committed} == {
        r.sop_instance_uid for r in wanted
    }
    assert outcome.report.failed == []
    # What the archive was asked (PS3.4 Table J.3-1): the Transaction UID and every reference.
    asked = scp.requests[0]
    assert asked.TransactionUID == uid
    assert [i.ReferencedSOPInstanceUID for i in asked.ReferencedSOPSequence] == [
        r.sop_instance_uid for r in wanted
    ]
    assert scp.reports_answered == [0x0000]


def test_failed_sop_sequence_comes_back_with_its_reason() -> None:
    wanted = refs(3)
    with CommitmentScp(fail={wanted[1].sop_instance_uid}) as scp:
        outcome = commitment.request(
            peer(scp.port, scp.ae_title), TIMEOUTS, generate_uid(), wanted, 20.0
        )
    assert outcome.report is not None
    assert outcome.report.event_type == sc.EVENT_FAILURES
    assert outcome.report.failed == [
        sc.Failure(SC_CLASS, wanted[1].sop_instance_uid, sc.NO_SUCH_OBJECT_INSTANCE)
    ]
    assert len(outcome.report.committed) == 2


def test_a_report_before_the_action_response_is_answered_and_both_complete() -> None:
    wanted = refs(2)
    uid = generate_uid()
    with CommitmentScp(report_first=True, fail={wanted[0].sop_instance_uid}) as scp:
        outcome = commitment.request(peer(scp.port, scp.ae_title), TIMEOUTS, uid, wanted, 20.0)
        # The archive's N-EVENT-REPORT was answered 0000 before it sent its N-ACTION-RSP.
        assert scp.reports_answered == [0x0000]
    assert (outcome.kind, outcome.status) == ("reported", 0x0000)
    assert outcome.report is not None and outcome.report.transaction_uid == uid
    assert [r.sop_instance_uid for r in outcome.report.committed] == [wanted[1].sop_instance_uid]
    assert outcome.report.failed == [
        sc.Failure(SC_CLASS, wanted[0].sop_instance_uid, sc.NO_SUCH_OBJECT_INSTANCE)
    ]
    assert len(scp.requests) == 1


def test_no_report_within_the_wait_leaves_the_request_open() -> None:
    with CommitmentScp(report=False) as scp:
        outcome = commitment.request(
            peer(scp.port, scp.ae_title), TIMEOUTS, generate_uid(), refs(2), 1.0
        )
    assert outcome.kind == "requested"
    assert outcome.report is None
    assert len(scp.requests) == 1


def test_a_report_elsewhere_ends_the_wait() -> None:
    answered = threading.Event()
    answered.set()
    with CommitmentScp(report=False) as scp:
        outcome = commitment.request(
            peer(scp.port, scp.ae_title), TIMEOUTS, generate_uid(), refs(1), 600.0, answered
        )
    assert outcome.kind == "requested"


def test_an_archive_without_storage_commitment_is_unsupported() -> None:
    with ScriptedScp() as scp:
        outcome = commitment.request(
            peer(scp.port, scp.ae_title), TIMEOUTS, generate_uid(), refs(1), 5.0
        )
    assert outcome.kind == "unsupported"
    assert "Storage Commitment" in outcome.reason


def test_action_and_event_information_round_trip_in_both_syntaxes() -> None:
    wanted = refs(2)
    for syntax in sc.TRANSFER_SYNTAXES:
        uid, back = sc.parse_action(sc.action_information("1.2.3", wanted, syntax), syntax)
        assert (uid, back) == ("1.2.3", wanted)
        report = sc.Report(
            "1.2.3", [wanted[0]], [sc.Failure(SC_CLASS, wanted[1].sop_instance_uid, 0x0112)]
        )
        assert sc.parse_report(sc.event_information(report, syntax), syntax) == report
