"""The sender as association requestor against the PS3.8 9.2 state machine (Table 9-10).

A scripted raw acceptor (`cinebridge_testkit.rawpeer`) answers the sender's C-STORE
association with whatever PDU a case needs: in Sta5 (awaiting A-ASSOCIATE-AC), in Sta6 while a
data set is being sent or its C-STORE-RSP awaited, in Sta7 (awaiting A-RELEASE-RP), a release
collision, and silence (ARTIM / the sender's time-outs). Each case asserts what the standard
names (A-ABORT or the transport closed, no crash) and what the service owes its user: the
instance hit by the abort is reported for a retry ("failed-retrying"), and a later association
delivers it. One end-to-end case runs the whole sender service over the bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cinebridge_common.bus import Bus

# The station's C-STORE requestor, today in the sender service: the one place to re-point.
from cinebridge_sender.scu import AssociationFailed, Item, ItemResult, Peer, Timeouts, send_batch
from cinebridge_testkit.instances import make_instance
from cinebridge_testkit.rawpeer import (
    ABORT,
    ASSOCIATE_RQ,
    P_DATA,
    RELEASE_RP,
    RELEASE_RP_PDU,
    RELEASE_RQ,
    RELEASE_RQ_PDU,
    Message,
    RawAcceptor,
    RawConnection,
    abort_pdu,
    associate_ac,
    parse_contexts,
    pdu,
)
from cinebridge_testkit.sender_harness import SenderHarness, wait_states

pytestmark = pytest.mark.integration

STORE_RSP = 0x8001
#: Short enough for the silent-peer cases, long enough that load never fakes a silence.
TIMEOUTS = Timeouts(connect_s=10.0, acse_s=10.0, dimse_s=10.0, network_s=10.0)


def items(tmp_path: Path, count: int = 2, payload: int = 200_000) -> list[Item]:
    out = []
    for n in range(count):
        path = tmp_path / f"i{n}.dcm"
        ds = make_instance(path, kind="raw", payload_bytes=payload, seed=n)
        out.append(
            Item(
                str(n),
                path,
                str(ds.SOPClassUID),
                str(ds.SOPInstanceUID),
                str(ds.file_meta.TransferSyntaxUID),
            )
        )
    return out


def send(port: int, batch: list[Item]) -> list[ItemResult] | AssociationFailed:
    try:
        return send_batch(Peer("RAWSCP", "127.0.0.1", port), batch, TIMEOUTS)
    except AssociationFailed as exc:
        return exc


def store_ok(conn: RawConnection, count: int) -> None:
    for _ in range(count):
        msg = conn.read_message()
        assert isinstance(msg, Message), msg
        conn.respond(msg, STORE_RSP, 0x0000)


def serve_then_release(conn: RawConnection) -> None:
    """A well-behaved acceptor: accept, answer every C-STORE, answer the release."""
    assert conn.accept()
    while True:
        msg = conn.read_message()
        if isinstance(msg, Message):
            conn.respond(msg, STORE_RSP, 0x0000)
            continue
        if msg is not None and msg[0] == RELEASE_RQ:
            conn.send(RELEASE_RP_PDU)
        return


def ended_with_abort_or_close(conn: RawConnection) -> bool:
    """After the requestor saw the bad PDU: an A-ABORT (or nothing), then the transport closed."""
    got = conn.read_pdu(30.0)
    return (got is None or got[0] == ABORT) and conn.closed_by_peer(30.0)


def run_case(tmp_path: Path, *scripts: Callable[[RawConnection], None]) -> Any:
    batch = items(tmp_path)
    with RawAcceptor(*scripts) as peer:
        outcome = send(peer.port, batch)
        assert peer.finished(len(scripts))
        assert peer.errors == [], peer.errors
    return outcome


# ------------------------------------------------------------------ Sta5: awaiting A-ASSOCIATE-AC
# Evt3 is the only good answer; Evt6/Evt10/Evt12/Evt13/Evt19 are AA-8 (A-ABORT, close) and
# Evt16 (A-ABORT) is AA-3 (close). The batch is not sent and is retried later (transient).
STA5 = [
    ("P-DATA-TF", P_DATA),
    ("A-ASSOCIATE-RQ", ASSOCIATE_RQ),
    ("A-RELEASE-RQ", RELEASE_RQ),
    ("A-RELEASE-RP", RELEASE_RP),
    ("A-ABORT", ABORT),
    ("unknown type 0x09", 0x09),
]


@pytest.mark.parametrize(("name", "kind"), STA5, ids=[c[0] for c in STA5])
async def test_sta5_unexpected_pdu_fails_the_association_transiently(
    tmp_path: Path, name: str, kind: int
) -> None:
    seen: list[bool] = []

    def script(conn: RawConnection) -> None:
        first = conn.read_pdu()
        assert first is not None and first[0] == ASSOCIATE_RQ
        conn.send(pdu(kind, first[1] if kind == ASSOCIATE_RQ else bytes(4)))
        seen.append(ended_with_abort_or_close(conn))

    outcome = await asyncio.to_thread(run_case, tmp_path, script)
    assert isinstance(outcome, AssociationFailed) and outcome.transient, outcome
    assert seen == [True]


async def test_sta5_silent_acceptor_expires(tmp_path: Path) -> None:
    """No A-ASSOCIATE-AC: the requestor's ARTIM (its ACSE time-out) ends the attempt."""

    def script(conn: RawConnection) -> None:
        assert conn.read_pdu() is not None
        assert conn.closed_by_peer(60.0)

    outcome = await asyncio.to_thread(run_case, tmp_path, script)
    assert isinstance(outcome, AssociationFailed) and outcome.transient


# ------------------------------------------------------------------ Sta6: association established
STA6 = [
    ("A-ABORT", abort_pdu(2, 0)),
    ("A-ASSOCIATE-RQ", None),
    ("A-ASSOCIATE-AC", b"ac"),
    ("A-RELEASE-RP", RELEASE_RP_PDU),
    ("unknown type 0x0C", pdu(0x0C, bytes(4))),
]


@pytest.mark.parametrize(("name", "data"), STA6, ids=[c[0] for c in STA6])
async def test_sta6_pdu_instead_of_a_store_response_means_retry(
    tmp_path: Path, name: str, data: bytes | None
) -> None:
    """The first C-STORE is answered, then the acceptor sends this PDU instead of the second
    response: the second instance is reported for a retry and the transport ends."""
    seen: list[bool] = []

    def script(conn: RawConnection) -> None:
        first = conn.read_pdu()
        assert first is not None and first[0] == ASSOCIATE_RQ
        conn.send(associate_ac(first[1], parse_contexts(first[1])))
        conn.contexts = {cx.context_id: cx for cx in parse_contexts(first[1])}
        store_ok(conn, 1)
        assert isinstance(conn.read_message(), Message)
        if data is None:
            conn.send(pdu(ASSOCIATE_RQ, first[1]))
        elif data == b"ac":
            conn.send(associate_ac(first[1], parse_contexts(first[1])))
        else:
            conn.send(data)
        seen.append(ended_with_abort_or_close(conn))

    outcome = await asyncio.to_thread(run_case, tmp_path, script)
    assert not isinstance(outcome, AssociationFailed), outcome
    assert [r.outcome for r in outcome] == ["sent", "failed-retrying"], outcome
    assert seen == [True]


async def test_sta6_abort_mid_data_set_means_retry_and_next_association_delivers(
    tmp_path: Path,
) -> None:
    """An A-ABORT while the data set is still arriving: the instance is not delivered, the
    requestor closes, and the same batch sent again on a new association is delivered."""
    batch = items(tmp_path, count=1, payload=3_000_000)
    received: list[str] = []

    def abort_mid(conn: RawConnection) -> None:
        assert conn.accept()
        got = conn.read_pdu()
        assert got is not None and got[0] == P_DATA
        conn.send(abort_pdu(0, 0))
        assert conn.closed_by_peer(30.0)

    def good(conn: RawConnection) -> None:
        assert conn.accept()
        msg = conn.read_message()
        assert isinstance(msg, Message)
        received.append(str(msg.command.AffectedSOPInstanceUID))
        conn.respond(msg, STORE_RSP, 0x0000)
        rq = conn.read_pdu()
        assert rq is not None and rq[0] == RELEASE_RQ
        conn.send(RELEASE_RP_PDU)

    def run() -> tuple[Any, Any]:
        with RawAcceptor(abort_mid, good) as peer:
            first = send(peer.port, batch)
            second = send(peer.port, batch)
            assert peer.finished(2)
            assert peer.errors == [], peer.errors
        return first, second

    first, second = await asyncio.to_thread(run)
    assert [r.outcome for r in first] == ["failed-retrying"]
    assert [r.outcome for r in second] == ["sent"]
    assert received == [batch[0].sop_instance_uid]


async def test_sta6_silent_acceptor_times_out_and_means_retry(tmp_path: Path) -> None:
    def script(conn: RawConnection) -> None:
        assert conn.accept()
        assert isinstance(conn.read_message(), Message)
        assert conn.closed_by_peer(60.0)  # never answers: the DIMSE time-out ends it

    outcome = await asyncio.to_thread(run_case, tmp_path, script)
    assert [r.outcome for r in outcome] == ["failed-retrying", "failed-retrying"]


# ------------------------------------------------------------------ Sta7: awaiting A-RELEASE-RP


async def test_sta7_abort_instead_of_release_rp_keeps_the_deliveries(tmp_path: Path) -> None:
    """Evt16 in Sta7 is AA-3: close. Both instances were answered before, so both count."""

    def script(conn: RawConnection) -> None:
        assert conn.accept()
        store_ok(conn, 2)
        rq = conn.read_pdu()
        assert rq is not None and rq[0] == RELEASE_RQ
        conn.send(abort_pdu(0, 0))
        assert conn.closed_by_peer(30.0)

    outcome = await asyncio.to_thread(run_case, tmp_path, script)
    assert [r.outcome for r in outcome] == ["sent", "sent"]


async def test_sta7_acceptor_that_never_answers_the_release(tmp_path: Path) -> None:
    """ARTIM in Sta7: the requestor does not wait forever for A-RELEASE-RP."""

    def script(conn: RawConnection) -> None:
        assert conn.accept()
        store_ok(conn, 2)
        rq = conn.read_pdu()
        assert rq is not None and rq[0] == RELEASE_RQ
        assert conn.closed_by_peer(60.0)

    outcome = await asyncio.to_thread(run_case, tmp_path, script)
    assert [r.outcome for r in outcome] == ["sent", "sent"]


async def test_release_collision_requestor_side(tmp_path: Path) -> None:
    """Both ends send A-RELEASE-RQ at once (PS3.8 Table 9-10, Evt12 in Sta7, AR-8): the
    requestor goes to Sta9; the deliveries stand, nothing hangs and the transport closes. The
    acceptor here answers the requestor's A-RELEASE-RQ with A-RELEASE-RP (its AR-10 then AR-4
    path), so a requestor that completes AR-9 or one that closes on the collision both end."""

    def script(conn: RawConnection) -> None:
        assert conn.accept()
        store_ok(conn, 2)
        conn.send(RELEASE_RQ_PDU)  # ours, crossing the requestor's on the wire
        rq = conn.read_pdu()
        assert rq is not None and rq[0] == RELEASE_RQ
        conn.send(RELEASE_RP_PDU)
        assert conn.closed_by_peer(30.0)

    outcome = await asyncio.to_thread(run_case, tmp_path, script)
    assert [r.outcome for r in outcome] == ["sent", "sent"]


# ------------------------------------------------------------------ the service end to end


def destination(port: int) -> list[dict[str, Any]]:
    return [{"name": "raw", "ae_title": "RAWSCP", "host": "127.0.0.1", "port": port}]


async def test_service_retries_a_delivery_that_met_an_abort(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool
) -> None:
    """The first association is aborted by the peer mid data set; the service retries on its
    own and the instance is delivered once."""
    received: list[str] = []

    def abort_mid(conn: RawConnection) -> None:
        assert conn.accept()
        got = conn.read_pdu()
        assert got is not None and got[0] == P_DATA
        conn.send(abort_pdu(0, 0))
        conn.closed_by_peer(30.0)

    def good(conn: RawConnection) -> None:
        if not conn.accept():
            return
        while True:
            msg = conn.read_message()
            if not isinstance(msg, Message):
                if msg is not None and msg[0] == RELEASE_RQ:
                    conn.send(RELEASE_RP_PDU)
                return
            received.append(str(msg.command.AffectedSOPInstanceUID))
            conn.respond(msg, STORE_RSP, 0x0000)

    with RawAcceptor(abort_mid, good) as peer:
        harness.start(destinations=destination(peer.port))
        msgs = harness.make(1, kind="video", payload_bytes=2_000_000)
        await harness.announce(bus, msgs)
        await wait_states(db_pool, {"sent": 1}, 60, harness)
        assert peer.errors == [], peer.errors
    assert received == [msgs[0].sop_instance_uid]
    first = await db_pool.fetchrow("SELECT * FROM delivery_attempts WHERE attempt = 1")
    assert first["outcome"] == "failed-retrying"


# ------------------------------------------------------------------ outside acceptors drive it


@pytest.mark.parametrize("when", ["--abort-during", "--abort-after"])
async def test_dcmtk_storescp_aborting_means_retry(tmp_path: Path, when: str) -> None:
    """DCMTK storescp sends A-ABORT during the data set or after it, before its C-STORE-RSP:
    every instance of the batch is left for a retry, and a storescp that behaves takes them."""
    from cinebridge_common.embedded import free_port
    from cinebridge_testkit import require_tool
    from cinebridge_testkit.storage_peers import DcmtkStorescp

    batch = items(tmp_path)
    exe = require_tool("storescp")
    aborting = DcmtkStorescp(exe, tmp_path / "abort" / "out", free_port(), extra_args=(when,))
    aborting.start()
    try:
        first = await asyncio.to_thread(send, aborting.port, batch)
    finally:
        aborting.stop()
    assert not isinstance(first, AssociationFailed), first
    assert [r.outcome for r in first] == ["failed-retrying", "failed-retrying"]
    good = DcmtkStorescp(exe, tmp_path / "good" / "out", free_port())
    good.start()
    try:
        second = await asyncio.to_thread(send, good.port, batch)
        received = good.received()
    finally:
        good.stop()
    assert not isinstance(second, AssociationFailed), second
    assert [r.outcome for r in second] == ["sent", "sent"]
    assert set(received) == {item.sop_instance_uid for item in batch}


async def test_pynetdicom_acceptor_aborting_in_its_store_handler(tmp_path: Path) -> None:
    """pynetdicom (the reference peer) aborts from its C-STORE handler after the first
    instance: the first is delivered, the second left for a retry."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import SecondaryCaptureImageStorage

    batch = items(tmp_path)
    seen: list[str] = []

    def on_store(event: Any) -> int:
        seen.append(str(event.request.AffectedSOPInstanceUID))
        if len(seen) == 2:
            event.assoc.abort()
        return 0x0000

    ae = AE(ae_title="RAWSCP")
    ae.add_supported_context(SecondaryCaptureImageStorage, [batch[0].transfer_syntax_uid])
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        port = server.server_address[1]
        outcome = await asyncio.to_thread(send, port, batch)
    finally:
        server.shutdown()
    assert not isinstance(outcome, AssociationFailed), outcome
    assert [r.outcome for r in outcome] == ["sent", "failed-retrying"]
