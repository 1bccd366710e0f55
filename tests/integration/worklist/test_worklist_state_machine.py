"""The worklist's C-FIND requestor against the PS3.8 9.2 state machine (Table 9-10).

A scripted raw acceptor (`cinebridge_testkit.rawpeer`) answers the Modality Worklist
association and sends any PDU a case needs: in Sta5 (awaiting A-ASSOCIATE-AC), in Sta6 between
pending C-FIND responses, an A-ABORT mid answer, a release collision, and silence. Each case
asserts the standard's action seen from the wire (A-ABORT or the transport closed) and what the
query reports: never an exception, entries received before an abort kept and flagged
incomplete, a complete answer kept whatever happens during the release.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from cinebridge_testkit.rawpeer import (
    ABORT,
    ASSOCIATE_RQ,
    RELEASE_RP_PDU,
    RELEASE_RQ,
    RELEASE_RQ_PDU,
    Message,
    RawAcceptor,
    RawConnection,
    abort_pdu,
    pdu,
)

# The station's C-FIND requestor, today in the worklist service: the one place to re-point.
from cinebridge_worklist.query import SearchFields, ServerKeys, build_identifier
from cinebridge_worklist.scu import FindLimits, FindResult, Peer, find_worklist
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

pytestmark = pytest.mark.integration

FIND_RSP = 0x8020
PENDING, SUCCESS = 0xFF00, 0x0000
IMPLICIT_LE = "1.2.840.10008.1.2"
#: Short enough for the silent-peer cases, long enough that load never fakes a silence.
LIMITS = FindLimits(timeout_s=10.0, connect_timeout_s=10.0, cancel_grace_s=1.0)


def entry(n: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = f"Doe^Patient{n}"
    ds.PatientID = f"PID{n:05d}"
    ds.AccessionNumber = f"ACC{n}"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1452.{n + 1}"
    ds.RequestedProcedureID = f"RP{n}"
    sps = Dataset()
    sps.Modality = "ES"
    sps.ScheduledStationAETitle = "ROOM1"
    sps.ScheduledProcedureStepStartDate = "20261207"
    sps.ScheduledProcedureStepStartTime = "080000"
    sps.ScheduledProcedureStepID = f"SPS{n}"
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def encoded(ds: Dataset, transfer_syntax: str) -> bytes:
    out = DicomBytesIO()
    out.is_little_endian = transfer_syntax != "1.2.840.10008.1.2.2"
    out.is_implicit_VR = transfer_syntax == IMPLICIT_LE
    write_dataset(out, ds)
    return out.getvalue()


def answer(conn: RawConnection, count: int) -> Message:
    """Read the C-FIND-RQ and send `count` pending responses; return the request."""
    msg = conn.read_message()
    assert isinstance(msg, Message), msg
    ts = conn.contexts[msg.context_id].transfer_syntaxes[0]
    for n in range(count):
        conn.respond(msg, FIND_RSP, PENDING, encoded(entry(n), ts))
    return msg


def ended_with_abort_or_close(conn: RawConnection) -> bool:
    got = conn.read_pdu(30.0)
    while got is not None and got[0] not in (ABORT,):
        got = conn.read_pdu(30.0)  # a C-CANCEL or A-RELEASE-RQ may come first
    return conn.closed_by_peer(30.0)


def query(port: int) -> FindResult:
    identifier = build_identifier(SearchFields(), ServerKeys(modality="ES"))
    return find_worklist(Peer("127.0.0.1", port, "RAWRIS", "ROOM1"), identifier, LIMITS, "")


def run_case(*scripts: Callable[[RawConnection], None]) -> FindResult:
    with RawAcceptor(*scripts) as peer:
        result = query(peer.port)
        assert peer.finished(len(scripts))
        assert peer.errors == [], peer.errors
    return result


# ------------------------------------------------------------------ Sta5
STA5 = [("P-DATA-TF", 0x04), ("A-RELEASE-RQ", RELEASE_RQ), ("A-ABORT", ABORT), ("0x0B", 0x0B)]


@pytest.mark.parametrize(("name", "kind"), STA5, ids=[c[0] for c in STA5])
async def test_sta5_unexpected_pdu_reports_the_server_unreachable(name: str, kind: int) -> None:
    seen: list[bool] = []

    def script(conn: RawConnection) -> None:
        first = conn.read_pdu()
        assert first is not None and first[0] == ASSOCIATE_RQ
        conn.send(pdu(kind, bytes(4)))
        got = conn.read_pdu(30.0)
        seen.append((got is None or got[0] == ABORT) and conn.closed_by_peer(30.0))

    result = await asyncio.to_thread(run_case, script)
    assert result.outcome == "unreachable" and result.items == []
    assert seen == [True]


async def test_sta5_silent_acceptor_expires() -> None:
    def script(conn: RawConnection) -> None:
        assert conn.read_pdu() is not None
        assert conn.closed_by_peer(60.0)

    result = await asyncio.to_thread(run_case, script)
    assert result.outcome == "unreachable"


# ------------------------------------------------------------------ Sta6
STA6 = [
    ("A-ABORT", abort_pdu(2, 0)),
    ("A-ASSOCIATE-RQ", pdu(ASSOCIATE_RQ, bytes(68))),
    ("A-RELEASE-RP", RELEASE_RP_PDU),
    ("unknown type 0x0D", pdu(0x0D, bytes(4))),
]


@pytest.mark.parametrize(("name", "data"), STA6, ids=[c[0] for c in STA6])
async def test_sta6_pdu_mid_answer_keeps_what_arrived_flagged(name: str, data: bytes) -> None:
    seen: list[bool] = []

    def script(conn: RawConnection) -> None:
        assert conn.accept()
        answer(conn, 2)
        conn.send(data)
        seen.append(ended_with_abort_or_close(conn))

    result = await asyncio.to_thread(run_case, script)
    assert result.incomplete and result.outcome in ("partial", "failed"), result
    assert sorted(item.patient_id or "" for item in result.items) == ["PID00000", "PID00001"]
    assert seen == [True]


async def test_sta6_silent_acceptor_times_out() -> None:
    def script(conn: RawConnection) -> None:
        assert conn.accept()
        answer(conn, 1)
        assert conn.closed_by_peer(60.0)

    result = await asyncio.to_thread(run_case, script)
    assert result.outcome == "timeout" and len(result.items) == 1


# ------------------------------------------------------------------ Sta7 and release collision


def complete(conn: RawConnection) -> Message:
    assert conn.accept()
    msg = answer(conn, 3)
    conn.respond(msg, FIND_RSP, SUCCESS)
    return msg


async def test_release_collision_requestor_side() -> None:
    """Both ends send A-RELEASE-RQ (Evt12 in Sta7, AR-8): the answer stands, nothing hangs."""

    def script(conn: RawConnection) -> None:
        complete(conn)
        conn.send(RELEASE_RQ_PDU)
        got = conn.read_pdu()
        while got is not None and got[0] != RELEASE_RQ:
            got = conn.read_pdu()
        assert got is not None
        conn.send(RELEASE_RP_PDU)
        assert conn.closed_by_peer(30.0)

    result = await asyncio.to_thread(run_case, script)
    assert result.outcome == "complete" and len(result.items) == 3


@pytest.mark.parametrize("reply", ["abort", "silence"])
async def test_sta7_abort_or_silence_after_the_answer_keeps_it(reply: str) -> None:
    def script(conn: RawConnection) -> None:
        complete(conn)
        rq = conn.read_pdu()
        assert rq is not None and rq[0] == RELEASE_RQ
        if reply == "abort":
            conn.send(abort_pdu(0, 0))
        assert conn.closed_by_peer(60.0)

    result = await asyncio.to_thread(run_case, script)
    assert result.outcome == "complete" and len(result.items) == 3


async def test_the_next_query_after_an_abort_is_served() -> None:
    def aborted(conn: RawConnection) -> None:
        assert conn.accept()
        answer(conn, 1)
        conn.send(abort_pdu(0, 0))
        conn.closed_by_peer(30.0)

    def good(conn: RawConnection) -> None:
        complete(conn)
        rq = conn.read_pdu()
        assert rq is not None and rq[0] == RELEASE_RQ
        conn.send(RELEASE_RP_PDU)

    def run() -> tuple[Any, Any]:
        with RawAcceptor(aborted, good) as peer:
            first, second = query(peer.port), query(peer.port)
            assert peer.finished(2)
            assert peer.errors == [], peer.errors
        return first, second

    first, second = await asyncio.to_thread(run)
    assert first.incomplete and len(first.items) == 1
    assert second.outcome == "complete" and len(second.items) == 3


async def test_pynetdicom_acceptor_aborting_mid_answer() -> None:
    """pynetdicom (the reference peer) as the worklist SCP aborts after two pending responses:
    the two entries are kept and flagged incomplete. (DCMTK wlmscpfs dying mid answer is
    test_worklist_faults.py.)"""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import ModalityWorklistInformationFind

    def on_find(event: Any) -> Any:
        for n in range(2):
            yield PENDING, entry(n)
        event.assoc.abort()
        yield PENDING, entry(2)

    ae = AE(ae_title="RAWRIS")
    ae.add_supported_context(ModalityWorklistInformationFind)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)]
    )
    try:
        result = await asyncio.to_thread(query, server.server_address[1])
    finally:
        server.shutdown()
    assert result.incomplete
    assert sorted(item.patient_id or "" for item in result.items) == ["PID00000", "PID00001"]
