"""The SCP as association acceptor against the PS3.8 9.2 state machine (Table 9-10).

A raw socket peer drives every transition a remote node can cause: each PDU in the states
reachable from the wire (Sta2 awaiting A-ASSOCIATE-RQ, Sta6 established, Sta6 with a C-STORE
half received), an A-ABORT in each, and ARTIM expiry (a silent connection). Each case asserts
what Table 9-10 names (AA-1/AA-8: an A-ABORT PDU then the transport closed; AA-2/AA-3: the
transport closed, no PDU; AR-2/AR-4: A-RELEASE-RP) and that the next association is served.
Release collision is not reachable on this side: the station's acceptor never sends
A-RELEASE-RQ (the requestor's collision is in tests/integration/sender). DCMTK and pynetdicom
drive the cases their options allow (abort after association, abort mid-transfer).
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
from typing import Any

import pytest
from cinebridge_testkit import require_tool
from pynetdicom import AE

pytestmark = pytest.mark.integration

CT = "1.2.840.10008.5.1.4.1.1.2"
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA = 0x01, 0x02, 0x03, 0x04
RELEASE_RQ, RELEASE_RP, ABORT = 0x05, 0x06, 0x07
#: PS3.8 Table 9-26, A-ABORT reason when the source is the service provider (2).
UNRECOGNISED_PDU, UNEXPECTED_PDU = 1, 2
REASONS = {0, 1, 2, 4, 5, 6}


def _outcome(peer: Any, wait_s: float = 10.0) -> tuple[int, bytes] | None:
    """The PDU the SCP answered (None if none) after which it must close the transport."""
    peer.sock.settimeout(wait_s)
    reply = peer.read_pdu()
    assert peer.closed_by_peer(wait_s), "the SCP kept the transport open"
    return reply  # type: ignore[no-any-return]


def _assert_abort(reply: tuple[int, bytes] | None, reason: int | None = None) -> None:
    """An A-ABORT PDU (PS3.8 9.3.8): 4 bytes, source 0 (user) or 2 (provider), a known reason."""
    assert reply is not None, "no A-ABORT before the close"
    kind, body = reply
    assert kind == ABORT, f"PDU 0x{kind:02X} instead of A-ABORT"
    assert len(body) == 4
    source, why = body[2], body[3]
    assert source in (0, 2), source
    if source == 2:
        assert why in REASONS, why
        if reason is not None:
            assert why == reason, (why, reason)


def _echo_ok(scp: Any) -> None:
    assert scp.echo(timeout_s=30.0) == 0, "the next association was not served"


def _sta2(raw: Any, port: int, data: bytes) -> tuple[int, bytes] | None:
    peer = raw.Peer(port, timeout_s=10.0)
    try:
        peer.send(data)
        return _outcome(peer)
    finally:
        peer.close()


def _sta6(raw: Any, port: int, *chunks: bytes) -> tuple[int, bytes] | None:
    peer = raw.Peer(port, timeout_s=10.0)
    try:
        reply = peer.associate()
        assert reply is not None and reply[0] == ASSOCIATE_AC
        for chunk in chunks:
            peer.send(chunk)
        return _outcome(peer)
    finally:
        peer.close()


def _associate_ac_body(raw: Any) -> bytes:
    return raw.associate_rq()[6:]


# Sta2 (transport connection open, awaiting A-ASSOCIATE-RQ): Evt4/Evt10/Evt12/Evt13/Evt19 are
# AA-1 (A-ABORT, then Sta13 and the transport closed); Evt16 (A-ABORT) is AA-2 (close).
STA2_UNEXPECTED = [
    ("A-ASSOCIATE-AC", ASSOCIATE_AC),
    ("A-ASSOCIATE-RJ", ASSOCIATE_RJ),
    ("P-DATA-TF", P_DATA),
    ("A-RELEASE-RQ", RELEASE_RQ),
    ("A-RELEASE-RP", RELEASE_RP),
    ("unknown type 0x08", 0x08),
    ("unknown type 0x00", 0x00),
    ("unknown type 0xFF", 0xFF),
]


@pytest.mark.parametrize(("name", "kind"), STA2_UNEXPECTED, ids=[c[0] for c in STA2_UNEXPECTED])
async def test_sta2_unexpected_pdu_is_aborted(scp: Any, raw: Any, name: str, kind: int) -> None:
    body = _associate_ac_body(raw) if kind == ASSOCIATE_AC else bytes(4)
    reply = await asyncio.to_thread(_sta2, raw, scp.port, raw.pdu(kind, body))
    _assert_abort(reply)
    await asyncio.to_thread(_echo_ok, scp)


async def test_sta2_a_abort_closes_without_answering(scp: Any, raw: Any) -> None:
    reply = await asyncio.to_thread(_sta2, raw, scp.port, raw.pdu(ABORT, bytes(4)))
    assert reply is None or reply[0] == ABORT  # AA-2 closes; an A-ABORT back is harmless
    await asyncio.to_thread(_echo_ok, scp)


async def test_sta2_artim_expiry_closes_a_silent_connection(scp_factory: Any, raw: Any) -> None:
    """Evt18 (ARTIM expired) in Sta2 is AA-2: close the transport. The ARTIM period here is the
    SCP's association timeout (CB_SCP_ACSE_TIMEOUT_S)."""
    async with scp_factory(scp_acse_timeout_s=3.0) as scp:

        def silent() -> bool:
            peer = raw.Peer(scp.port, timeout_s=30.0)
            try:
                return peer.closed_by_peer(30.0)
            finally:
                peer.close()

        assert await asyncio.to_thread(silent), "a silent connection was never closed"
        await asyncio.to_thread(_echo_ok, scp)


async def test_sta2_half_sent_associate_rq_expires(scp_factory: Any, raw: Any) -> None:
    """ARTIM also bounds an A-ASSOCIATE-RQ that stops half way (Sta2, then silence)."""
    async with scp_factory(scp_acse_timeout_s=3.0) as scp:

        def half() -> bool:
            peer = raw.Peer(scp.port, timeout_s=30.0)
            try:
                rq = raw.associate_rq()
                peer.send(rq[: len(rq) // 2])
                peer.read_pdu()  # an A-ABORT may come first
                return peer.closed_by_peer(30.0)
            finally:
                peer.close()

        assert await asyncio.to_thread(half)
        await asyncio.to_thread(_echo_ok, scp)


# Sta6 (association established): Evt3/Evt4/Evt6/Evt13 are AA-8 (A-ABORT with the
# service-provider source, reason "unexpected PDU"), Evt19 (unrecognised PDU) is AA-8 with
# reason "unrecognised PDU"; Evt16 (A-ABORT) is AA-3 (close, nothing sent).
STA6_UNEXPECTED = [
    ("A-ASSOCIATE-RQ", ASSOCIATE_RQ, UNEXPECTED_PDU),
    ("A-ASSOCIATE-AC", ASSOCIATE_AC, UNEXPECTED_PDU),
    ("A-ASSOCIATE-RJ", ASSOCIATE_RJ, UNEXPECTED_PDU),
    ("A-RELEASE-RP", RELEASE_RP, UNEXPECTED_PDU),
    ("unknown type 0x08", 0x08, UNRECOGNISED_PDU),
    ("unknown type 0x7F", 0x7F, UNRECOGNISED_PDU),
]


@pytest.mark.parametrize(
    ("name", "kind", "reason"), STA6_UNEXPECTED, ids=[c[0] for c in STA6_UNEXPECTED]
)
async def test_sta6_unexpected_pdu_is_aborted(
    scp: Any, raw: Any, name: str, kind: int, reason: int
) -> None:
    if kind == ASSOCIATE_RQ:
        data = raw.associate_rq()
    elif kind == ASSOCIATE_AC:
        data = raw.pdu(kind, _associate_ac_body(raw))
    else:
        data = raw.pdu(kind, bytes(4))
    reply = await asyncio.to_thread(_sta6, raw, scp.port, data)
    _assert_abort(reply, reason)
    await asyncio.to_thread(_echo_ok, scp)


async def test_sta6_a_abort_closes_without_answering(scp: Any, raw: Any) -> None:
    reply = await asyncio.to_thread(_sta6, raw, scp.port, raw.pdu(ABORT, bytes(4)))
    assert reply is None, f"answered an A-ABORT with PDU 0x{reply[0]:02X}"
    await asyncio.to_thread(_echo_ok, scp)


async def test_sta6_release_is_answered_then_closed(scp: Any, raw: Any) -> None:
    """Evt12 in Sta6 is AR-2 then AR-4: A-RELEASE-RP, and the acceptor's transport closes."""
    reply = await asyncio.to_thread(_sta6, raw, scp.port, raw.pdu(RELEASE_RQ, bytes(4)))
    assert reply is not None and reply == (RELEASE_RP, bytes(4))
    await asyncio.to_thread(_echo_ok, scp)


# A C-STORE whose data set is half received is still Sta6 for the Upper Layer; every case must
# also leave nothing stored (the partial file is dropped).
MID_STORE = [
    ("A-ABORT", ABORT, None),
    ("A-ASSOCIATE-RQ", ASSOCIATE_RQ, UNEXPECTED_PDU),
    ("A-RELEASE-RP", RELEASE_RP, UNEXPECTED_PDU),
    ("unknown type 0x0A", 0x0A, UNRECOGNISED_PDU),
]


@pytest.mark.parametrize(("name", "kind", "reason"), MID_STORE, ids=[c[0] for c in MID_STORE])
async def test_mid_store_pdu_drops_the_instance(
    scp: Any, raw: Any, name: str, kind: int, reason: int | None
) -> None:
    data = raw.associate_rq() if kind == ASSOCIATE_RQ else raw.pdu(kind, bytes(4))
    half = raw.store_rq(CT, "1.2.826.0.1.3680043.10.1.1") + raw.p_data(3, 0, bytes(1000))
    reply = await asyncio.to_thread(_sta6, raw, scp.port, half, data)
    if reason is None:
        assert reply is None, f"answered an A-ABORT with PDU 0x{reply[0]:02X}"
    else:
        _assert_abort(reply, reason)
    await asyncio.to_thread(_echo_ok, scp)
    assert (await scp.rows())["instances"] == 0 and scp.stored_files() == []


async def test_sta6_idle_association_is_ended(scp_factory: Any, raw: Any) -> None:
    """An established association that stays silent past the network timeout is aborted."""
    async with scp_factory(scp_network_timeout_s=3.0) as scp:

        def idle() -> tuple[int, bytes] | None:
            peer = raw.Peer(scp.port, timeout_s=30.0)
            try:
                assert peer.associate()[0] == ASSOCIATE_AC
                return _outcome(peer, 30.0)
            finally:
                peer.close()

        reply = await asyncio.to_thread(idle)
        assert reply is None or reply[0] == ABORT
        await asyncio.to_thread(_echo_ok, scp)


async def test_sta13_peer_that_never_closes_after_release(scp: Any, raw: Any) -> None:
    """After A-RELEASE-RP the acceptor (Sta13) closes the transport itself: a requestor that
    keeps its end open and silent (or sends more PDUs, Evt3-Evt19 in Sta13: AA-6/AA-7) must not
    hold the association."""

    def linger() -> tuple[bool, tuple[int, bytes] | None]:
        peer = raw.Peer(scp.port, timeout_s=30.0)
        try:
            assert peer.associate()[0] == ASSOCIATE_AC
            peer.send(raw.pdu(RELEASE_RQ, bytes(4)))
            reply = peer.read_pdu()
            try:
                peer.send(raw.echo_rq())  # a PDU after the release: to be ignored
            except OSError:
                pass
            return peer.closed_by_peer(30.0), reply
        finally:
            peer.close()

    closed, reply = await asyncio.to_thread(linger)
    assert reply == (RELEASE_RP, bytes(4))
    assert closed
    await asyncio.to_thread(_echo_ok, scp)


async def test_dimse_then_abort_then_next_association(scp: Any, raw: Any) -> None:
    """A C-ECHO answered in Sta6, then A-ABORT from the peer: the SCP closes and serves on."""

    def run() -> tuple[int, bytes] | None:
        peer = raw.Peer(scp.port, timeout_s=10.0)
        try:
            assert peer.associate()[0] == ASSOCIATE_AC
            peer.send(raw.echo_rq())
            rsp = peer.read_pdu()
            assert rsp is not None and rsp[0] == P_DATA
            peer.send(raw.pdu(ABORT, bytes(4)))
            return _outcome(peer)
        finally:
            peer.close()

    assert await asyncio.to_thread(run) is None
    await asyncio.to_thread(_echo_ok, scp)


# ---------------------------------------------------------------- outside peers drive the cases


async def test_dcmtk_echoscu_abort_instead_of_release(scp: Any) -> None:
    exe = require_tool("echoscu")
    proc = await asyncio.to_thread(
        subprocess.run,
        [exe, "--abort", "-aec", scp.ae_title, "127.0.0.1", str(scp.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    await asyncio.to_thread(_echo_ok, scp)


async def test_dcmtk_storescu_abort_after_store_keeps_the_stored_instance(
    scp: Any, dicom: Any, tmp_path: Any
) -> None:
    """storescu --abort: the C-STORE was answered before the A-ABORT, so the instance stays."""
    exe = require_tool("storescu")
    path = dicom.make_ct(tmp_path / "ct.dcm", size=32)
    proc = await asyncio.to_thread(
        subprocess.run,
        [exe, "--abort", "-aec", scp.ae_title, "127.0.0.1", str(scp.port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    await asyncio.to_thread(_echo_ok, scp)
    assert (await scp.rows())["instances"] == 1


async def test_pynetdicom_abort_mid_association_and_again_mid_transfer(
    scp: Any, dicom: Any, tmp_path: Any
) -> None:
    """pynetdicom (the reference peer) aborts right after association, then cuts a C-STORE
    data set half way with an A-ABORT (a raw P-DATA it sends itself)."""
    path = dicom.make_ct(tmp_path / "ct.dcm", size=128)

    def run() -> None:
        ae = AE(ae_title="PYABORT")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(CT, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", scp.port, ae_title=scp.ae_title)
        assert assoc.is_established
        assoc.abort()
        assert assoc.is_aborted
        assoc = ae.associate("127.0.0.1", scp.port, ae_title=scp.ae_title)
        assert assoc.is_established
        context_id = assoc.accepted_contexts[0].context_id
        sock = assoc.dul.socket.socket  # type: ignore[union-attr]
        command = dicom_store_command(CT, "1.2.826.0.1.3680043.10.1.2")
        sock.sendall(p_data_pdu(context_id, 0x03, command))
        sock.sendall(p_data_pdu(context_id, 0x00, bytes(path.stat().st_size // 2)))
        assoc.abort()
        assert assoc.is_aborted

    await asyncio.to_thread(run)
    await asyncio.to_thread(_echo_ok, scp)
    for _ in range(200):
        if not scp.temp_files():
            break
        await asyncio.sleep(0.05)
    assert (await scp.rows())["instances"] == 0 and scp.stored_files() == []
    assert scp.temp_files() == []


def dicom_store_command(sop_class: str, sop_instance: str) -> bytes:
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = Dataset()
    ds.AffectedSOPClassUID = sop_class
    ds.CommandField = 0x0001
    ds.MessageID = 1
    ds.Priority = 0
    ds.CommandDataSetType = 0x0000
    ds.AffectedSOPInstanceUID = sop_instance
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, ds)
    raw = out.getvalue()
    return struct.pack("<HHLL", 0, 0, 4, len(raw)) + raw


def p_data_pdu(context_id: int, control: int, data: bytes) -> bytes:
    pdv = struct.pack(">LBB", len(data) + 2, context_id, control) + data
    return struct.pack(">BBL", P_DATA, 0, len(pdv)) + pdv
