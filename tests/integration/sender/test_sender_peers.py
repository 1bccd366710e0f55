"""The sender service end to end: DCMTK storescp and Orthanc receive every instance byte for byte;
Table 11 per status; Echo, destination management, Forward and retry over the bus."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import free_port
from cinebridge_common.messages import (
    Destination,
    DestinationDelete,
    DestinationListReply,
    DestinationListRequest,
    DestinationReply,
    DestinationUpsert,
    EchoReply,
    EchoRequest,
    ForwardStudy,
    RetryDelivery,
    RetryDeliveryReply,
)
from cinebridge_sender import scu
from cinebridge_testkit import wait_for
from cinebridge_testkit.instances import dataset_bytes, dataset_bytes_of, make_instance
from cinebridge_testkit.sender_harness import SenderHarness, tool, wait_states
from cinebridge_testkit.storage_peers import DcmtkStorescp, OrthancPeer, ScriptedScp
from pynetdicom.dsutils import split_dataset

pytestmark = pytest.mark.integration


def study(harness: SenderHarness) -> list:
    """A study as the converter makes it: JPEG stills and an MPEG-4 video."""
    study_id = str(uuid.uuid4())
    stills = harness.make(4, kind="jpeg", study_id=study_id)
    video = harness.make(1, kind="video", study_id=study_id, payload_bytes=3_000_000)
    return stills + video


async def test_storescp_and_orthanc_receive_the_study_byte_identical(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    storescp = DcmtkStorescp(tool("storescp"), tmp_path / "storescp" / "out", free_port())
    orthanc = OrthancPeer(tool("Orthanc"), tmp_path / "orthanc", free_port(), free_port())
    storescp.start()
    orthanc.start()
    try:
        harness.start(
            destinations=[
                {
                    "name": "dcmtk",
                    "ae_title": "STORESCP",
                    "host": "127.0.0.1",
                    "port": storescp.port,
                },
                {
                    "name": "orthanc",
                    "ae_title": "ORTHANC",
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                },
            ]
        )
        msgs = study(harness)
        await harness.announce(bus, msgs)
        await wait_states(db_pool, {"sent": 2 * len(msgs)}, 60, harness)
        at_dcmtk = storescp.received()
        at_orthanc = orthanc.received()
    finally:
        storescp.stop()
        orthanc.stop()
    for msg in msgs:
        original = dataset_bytes(harness.store.resolve(msg.rel_path))
        assert dataset_bytes(at_dcmtk[msg.sop_instance_uid]) == original
        assert dataset_bytes_of(at_orthanc[msg.sop_instance_uid]) == original
    assert len(at_dcmtk) == len(at_orthanc) == len(msgs)
    attempts = await db_pool.fetchval("SELECT count(*) FROM delivery_attempts")
    assert attempts == 2 * len(msgs)


async def test_table_11_each_status_gets_its_documented_behaviour(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool
) -> None:
    codes = [0x0000, 0xB000, 0xB006, 0xB007, 0xA700, 0x0122, 0xC000]
    msgs = harness.make(len(codes))
    by_uid = {m.sop_instance_uid: c for m, c in zip(msgs, codes, strict=True)}
    # First answer as scripted; A700 and C000 are transient, so their retry gets 0000.
    with ScriptedScp(script=lambda uid, n: by_uid[uid] if n == 1 else 0x0000) as scp:
        harness.start(
            destinations=[
                {"name": "t11", "ae_title": scp.ae_title, "host": "127.0.0.1", "port": scp.port}
            ]
        )
        await harness.announce(bus, msgs)
        await wait_states(db_pool, {"sent": 3, "warning": 3, "failed-permanent": 1}, 30, harness)
    rows = await db_pool.fetch(
        """SELECT i.sop_instance_uid, a.attempt, a.outcome, a.status_code, a.error
           FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
           JOIN outgoing_instances i ON i.id = d.instance_id ORDER BY a.attempt"""
    )
    history: dict[int, list[tuple[str, int | None]]] = {}
    for row in rows:
        history.setdefault(by_uid[row["sop_instance_uid"]], []).append(
            (row["outcome"], row["status_code"])
        )
    assert history[0x0000] == [("sent", 0x0000)]
    for warning in (0xB000, 0xB006, 0xB007):
        assert history[warning] == [("warning", warning)]  # stored; the warning is recorded
    assert history[0xA700] == [("failed-retrying", 0xA700), ("sent", 0x0000)]
    assert history[0xC000] == [("failed-retrying", 0xC000), ("sent", 0x0000)]
    assert history[0x0122] == [("failed-permanent", 0x0122)]  # one try, shown, no retry
    assert scp.seen[next(u for u, c in by_uid.items() if c == 0x0122)] == 1


async def test_echo_destinations_forward_and_retry_over_the_bus(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool
) -> None:
    with ScriptedScp() as scp, ScriptedScp(ae_title="SECOND") as second:
        harness.start(
            destinations=[
                {"name": "main", "ae_title": scp.ae_title, "host": "127.0.0.1", "port": scp.port}
            ]
        )
        listed = await wait_for(
            lambda: _destinations(bus), 120, interval_s=0.2, what="sender answering RPC"
        )
        main = listed[0]
        echo = await bus.request(EchoRequest(destination_id=main.id), EchoReply, 15)
        assert echo.reachable and echo.rtt_ms is not None and echo.rtt_ms < 10_000
        down = await bus.request(
            EchoRequest(ae_title="NONE", host="127.0.0.1", port=free_port(), timeout_s=2),
            EchoReply,
            15,
        )
        assert not down.reachable and down.reason and "cannot connect" in down.reason

        added = await bus.request(
            DestinationUpsert(
                destination=Destination(
                    name="second",
                    ae_title="SECOND",
                    host="127.0.0.1",
                    port=second.port,
                    auto_send=False,
                )
            ),
            DestinationReply,
            10,
        )
        assert added.ok and added.destination and added.destination.id

        msgs = harness.make(3)
        await harness.announce(bus, msgs)
        await wait_states(db_pool, {"sent": 3}, 20, harness)
        assert not second.received  # not auto-send

        forward = ForwardStudy(
            job_key="fwd-1",
            study_id=msgs[0].study_id,
            destination_ids=[added.destination.id, main.id or ""],
        )
        await bus.publish(forward, msg_id="fwd-1")
        await bus.publish(forward, msg_id="fwd-1-again")  # the same request twice
        await wait_states(db_pool, {"sent": 6}, 20, harness)
        assert set(second.received) == {m.sop_instance_uid for m in msgs}
        assert all(n == 2 for n in scp.seen.values())  # once auto, once forwarded; not twice
        assert all(n == 1 for n in second.seen.values())

        one = await db_pool.fetchval("SELECT id FROM deliveries LIMIT 1")
        retried = await bus.request(RetryDelivery(delivery_id=str(one)), RetryDeliveryReply, 10)
        assert retried.ok and retried.state == "queued"
        await wait_for(
            lambda: _attempts(db_pool, one, 2), 20, interval_s=0.2, what="retried delivery"
        )

        gone = await bus.request(
            DestinationDelete(destination_id=added.destination.id), DestinationReply, 10
        )
        assert gone.ok
        assert [d.name for d in await _destinations(bus)] == ["main"]


async def _destinations(bus: Bus) -> list[Destination]:
    try:
        reply = await bus.request(DestinationListRequest(), DestinationListReply, 2)
    except Exception:
        return []
    return reply.destinations


async def _attempts(pool: asyncpg.Pool, delivery_id: object, n: int) -> bool:
    got = await pool.fetchval(
        "SELECT count(*) FROM delivery_attempts WHERE delivery_id = $1 AND outcome = 'sent'",
        delivery_id,
    )
    return bool(got >= n)


def test_storescp_without_the_compressed_syntax_gets_an_abort(tmp_path: Path) -> None:
    """Statement §4.2.2.3.1.3: a destination that marks the compressed context unsupported gets
    the instances it can take, then an A-ABORT (not an A-RELEASE); the refused one fails."""
    storescp = DcmtkStorescp(
        tool("storescp"),
        tmp_path / "storescp" / "out",
        free_port(),
        extra_args=("-v",),
        accept_compressed=False,  # uncompressed syntaxes only, as storescp does by default
    )
    items = []
    for name, kind in (("still", "jpeg"), ("raw", "raw")):
        path = tmp_path / f"{name}.dcm"
        make_instance(path, kind=kind)
        meta, _ = split_dataset(path)
        items.append(
            scu.Item(
                key=name,
                path=path,
                sop_class_uid=str(meta.MediaStorageSOPClassUID),
                sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
                transfer_syntax_uid=str(meta.TransferSyntaxUID),
            )
        )
    storescp.start()
    log = tmp_path / "storescp" / f"storescp-{storescp.port}.log"
    try:
        peer = scu.Peer(ae_title="STORESCP", host="127.0.0.1", port=storescp.port)
        results = scu.send_batch(peer, items, scu.Timeouts())
        deadline = time.monotonic() + 30  # storescp logs the ending after we have moved on
        ended = ("Association Aborted", "Association Release")
        while not any(e in log.read_text() for e in ended) and time.monotonic() < deadline:
            time.sleep(0.1)
        received = storescp.received()
    finally:
        storescp.stop()
    text = log.read_text()
    assert [r.outcome for r in results] == ["failed-permanent", "sent"], results
    assert set(received) == {items[1].sop_instance_uid}
    assert "Association Aborted" in text, text
    assert "Association Release" not in text, text


def test_sender_to_dcmtk_storescp_over_mutual_tls(tmp_path: Path) -> None:
    """PS3.15 B.9: DCMTK's storescp (+tls, BCP 195, client certificate required) receives from
    the sender's TLS context (its CA bundle, certificate and key settings); without our
    certificate the association never starts."""
    from cinebridge_sender.batches import tls_context
    from cinebridge_sender.settings import SenderSettings
    from cinebridge_testkit.certs import make_pki

    pki = make_pki(tmp_path / "pki")
    storescp = DcmtkStorescp(
        tool("storescp"),
        tmp_path / "storescp" / "out",
        free_port(),
        extra_args=("+tls", str(pki.server.private_key), str(pki.server.certificate),
                    "+cf", str(pki.ca), "--require-peer-cert"),
    )  # fmt: skip
    path = tmp_path / "a.dcm"
    meta = make_instance(path).file_meta
    item = scu.Item(
        key="a",
        path=path,
        sop_class_uid=str(meta.MediaStorageSOPClassUID),
        sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
    )
    ours = SenderSettings(
        sender_tls_ca_file=pki.ca,
        sender_tls_cert_file=pki.client.certificate,
        sender_tls_key_file=pki.client.private_key,
    )
    storescp.start()
    try:
        anonymous = scu.Peer(
            "STORESCP",
            "127.0.0.1",
            storescp.port,
            tls=tls_context(SenderSettings(sender_tls_ca_file=pki.ca)),
        )
        with pytest.raises(scu.AssociationFailed):
            scu.send_batch(anonymous, [item], scu.Timeouts())
        assert storescp.received() == {}
        peer = scu.Peer("STORESCP", "127.0.0.1", storescp.port, tls=tls_context(ours))
        assert [r.outcome for r in scu.send_batch(peer, [item], scu.Timeouts())] == ["sent"]
        received = storescp.received()
    finally:
        storescp.stop()
    assert set(received) == {item.sop_instance_uid}
    assert received[item.sop_instance_uid].read_bytes().endswith(dataset_bytes(path))
