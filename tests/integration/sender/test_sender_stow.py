"""STOW-RS destinations end to end (PS3.18 §10.5): the sender as a process delivers to Orthanc's
DICOMweb plugin — a study byte-identical behind basic authentication, the archive down then up,
a rejected instance, a video larger than the sender's memory budget."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import free_port
from cinebridge_common.messages import (
    DestinationListReply,
    DestinationListRequest,
    DestinationReply,
    DestinationUpsert,
    EchoReply,
    EchoRequest,
    ForwardStudy,
)
from cinebridge_testkit import wait_for
from cinebridge_testkit.instances import make_instance, write_large_video
from cinebridge_testkit.relays import TlsRelay
from cinebridge_testkit.sender_harness import SenderHarness, tool, wait_states
from cinebridge_testkit.storage_peers import OrthancPeer

pytestmark = pytest.mark.integration

PASSWORD = "stow-Secret-41"
#: The issue's bound for a sender streaming a 1 GB video (bench/send.py measures the 1 GB case).
RSS_BUDGET = 150 * 1024 * 1024


def orthanc(tmp_path: Path, users: dict[str, str] | None = None) -> OrthancPeer:
    return OrthancPeer(
        tool("Orthanc"),
        tmp_path / "orthanc",
        free_port(),
        free_port(),
        dicomweb=True,
        users=users or {},
    )


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """(certificate, key) of an archive at 127.0.0.1, signed by itself."""
    cert, key = tmp_path / "archive.pem", tmp_path / "archive.key"
    subprocess.run(
        [
            *(tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def archive(peer: OrthancPeer, **extra: object) -> dict[str, object]:
    return {"name": "archive", "kind": "dicomweb", "base_url": peer.dicomweb_url, **extra}


def study(harness: SenderHarness) -> list:
    """A study as the converter makes it: JPEG stills and an MPEG-4 video."""
    study_id = str(uuid.uuid4())
    stills = harness.make(4, kind="jpeg", study_id=study_id)
    video = harness.make(1, kind="video", study_id=study_id, payload_bytes=3_000_000)
    return stills + video


async def test_study_stored_byte_identical_behind_basic_auth(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    peer = orthanc(tmp_path, users={"station": PASSWORD})
    peer.start()
    try:
        # A wrong password first: HTTP 401 is a permanent failure of the whole request (like a
        # rejected association), shown at once instead of retried.
        harness.start(destinations=[archive(peer, auth="basic", username="station", secret="no")])
        msgs = study(harness)
        await harness.announce(bus, msgs)
        await wait_states(db_pool, {"failed-permanent": len(msgs)}, 60, harness)
        errors = await db_pool.fetch("SELECT DISTINCT error FROM delivery_attempts")
        assert [r["error"] for r in errors] == [
            "STOW-RS answered HTTP 401 (authentication refused)"
        ]
        listed = await bus.request(DestinationListRequest(), DestinationListReply, 10)
        (destination,) = listed.destinations
        assert destination.secret is None and destination.secret_set
        echo = await bus.request(EchoRequest(destination_id=destination.id), EchoReply, 20)
        assert not echo.reachable and "401" in (echo.reason or "")
        # The right password (an edit as the settings page makes it), then Forward: stored, and
        # each file read back from Orthanc is the file on disk, byte for byte (meta included).
        fixed = destination.model_copy(update={"secret": PASSWORD})
        saved = await bus.request(DestinationUpsert(destination=fixed), DestinationReply, 10)
        assert saved.ok and saved.destination and saved.destination.secret is None
        # An edit that leaves the secret out keeps the stored one.
        renamed = destination.model_copy(update={"name": "archive-dw"})
        saved = await bus.request(DestinationUpsert(destination=renamed), DestinationReply, 10)
        assert saved.ok and saved.destination and saved.destination.secret_set
        echo = await bus.request(EchoRequest(destination_id=destination.id), EchoReply, 20)
        assert echo.reachable, echo.reason
        forward = ForwardStudy(
            job_key=str(uuid.uuid4()), study_id=msgs[0].study_id, destination_ids=[destination.id]
        )
        await bus.publish(forward, msg_id=forward.job_key)
        await wait_states(db_pool, {"sent": len(msgs)}, 60, harness)
        stored = peer.received()
    finally:
        harness.stop()
        peer.stop()
    assert len(stored) == len(msgs)
    for msg in msgs:
        assert stored[msg.sop_instance_uid] == harness.store.resolve(msg.rel_path).read_bytes()
    assert PASSWORD not in harness.log_text()


async def test_archive_down_then_up_delivers_each_instance_once(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    peer = orthanc(tmp_path)
    harness.start(destinations=[archive(peer)])
    msgs = harness.make(6)
    await harness.announce(bus, msgs)
    try:

        async def backing_off() -> bool:
            failures = await db_pool.fetchval(
                "SELECT failures FROM destination_health h JOIN destinations d"
                " ON d.id = h.destination_id WHERE d.name = 'archive'"
            )
            return bool(failures and failures >= 2)

        await wait_for(backing_off, 60, interval_s=0.2, what="two failed rounds")
        states = await db_pool.fetch("SELECT DISTINCT state FROM deliveries")
        # Retried, never given up (a round may be under way: some rows are "sending").
        assert {r["state"] for r in states} <= {"failed-retrying", "sending"}
        peer.start()
        await wait_states(db_pool, {"sent": len(msgs)}, 90, harness)
        assert peer.instance_count() == len(msgs)
    finally:
        harness.stop()
        peer.stop()
    sent = await db_pool.fetch(
        "SELECT delivery_id, count(*) AS n FROM delivery_attempts WHERE outcome = 'sent'"
        " GROUP BY delivery_id"
    )
    assert len(sent) == len(msgs) and all(r["n"] == 1 for r in sent)
    reasons = await db_pool.fetch(
        "SELECT DISTINCT error FROM delivery_attempts WHERE outcome = 'failed-retrying'"
    )
    assert reasons and all("cannot reach" in r["error"] for r in reasons)


async def test_rejected_instance_takes_the_c_store_failure_rules(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Orthanc refuses an instance without a Series Instance UID: Failed SOP Sequence with
    Failure Reason C000, the others of the request stored. C000 is retried as for C-STORE
    (statement Table 11, policy.py) until the attempts run out, then failed-permanent."""
    peer = orthanc(tmp_path)
    peer.start()
    try:
        study_id = str(uuid.uuid4())
        msgs = harness.make(3, study_id=study_id)
        rel = harness.store.new_relative("dicom", "dcm")
        path = harness.store.resolve(rel)
        ds = make_instance(path, kind="jpeg", seed=9)
        del ds.SeriesInstanceUID
        ds.save_as(path, enforce_file_format=True)
        rejected = harness.created(rel, study_id)
        harness.start(destinations=[archive(peer)], CB_SENDER_MAX_ATTEMPTS="2")
        await harness.announce(bus, [*msgs, rejected])
        await wait_states(db_pool, {"sent": 3, "failed-permanent": 1}, 60, harness)
    finally:
        harness.stop()
        peer.stop()
    rows = await db_pool.fetch(
        """SELECT a.outcome, a.status_code, a.error FROM delivery_attempts a
           JOIN deliveries d ON d.id = a.delivery_id WHERE d.instance_id = $1
           ORDER BY a.attempt""",
        uuid.UUID(rejected.instance_id),
    )
    assert [(r["outcome"], r["status_code"]) for r in rows] == [
        ("failed-retrying", 0xC000),
        ("failed-permanent", 0xC000),
    ]
    assert "C000 error: cannot understand" in rows[0]["error"]
    assert rows[1]["error"].startswith("gave up after 2 attempts")


async def test_video_larger_than_the_memory_budget_is_streamed(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """A 320 MB video (twice the 150 MB budget; the 1 GB case runs in bench/send.py) crosses the
    sender in 1 MB pieces: its peak resident memory stays under the budget."""
    peer = orthanc(tmp_path)
    peer.start()
    try:
        rel = harness.store.new_relative("dicom", "dcm")
        write_large_video(harness.store.resolve(rel), 320 * 1024 * 1024)
        msg = harness.created(rel, str(uuid.uuid4()))
        harness.start(
            destinations=[archive(peer)],
            CB_SENDER_DIMSE_TIMEOUT_S="300",
            CB_SENDER_NETWORK_TIMEOUT_S="120",
        )
        await harness.announce(bus, [msg])
        await wait_states(db_pool, {"sent": 1}, 300, harness)
        peak = harness.peak_rss()
        size, digest = peer.file_digest(msg.sop_instance_uid)
    finally:
        harness.stop()
        peer.stop()
    print(f"sender peak RSS {peak / 1e6:.1f} MB for a {msg.size / 1e6:.0f} MB video")
    assert (size, digest) == (msg.size, msg.sha256)
    assert peak < RSS_BUDGET


async def test_https_archive_verified_with_the_destinations_ca_file(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """An https archive with a certificate of its own: stored when the destination names the CA
    file (or turns verification off); an unverified certificate is failed-permanent, shown."""
    cert, key = self_signed(tmp_path)
    peer = orthanc(tmp_path)
    peer.start()
    relay = TlsRelay(peer.http_port, cert, key)
    try:
        url = f"https://127.0.0.1:{relay.port}/dicom-web"
        harness.start(
            destinations=[
                {"name": "trusted", "kind": "dicomweb", "base_url": url, "ca_file": str(cert)},
                {"name": "unverified", "kind": "dicomweb", "base_url": url},
                {"name": "unchecked", "kind": "dicomweb", "base_url": url, "tls_verify": False},
            ]
        )
        msgs = harness.make(2)
        await harness.announce(bus, msgs)
        await wait_states(db_pool, {"sent": 4, "failed-permanent": 2}, 60, harness)
        listed = await bus.request(DestinationListRequest(), DestinationListReply, 10)
        by_name = {d.name: d for d in listed.destinations}
        trusted = await bus.request(
            EchoRequest(destination_id=by_name["trusted"].id), EchoReply, 20
        )
        unverified = await bus.request(
            EchoRequest(destination_id=by_name["unverified"].id), EchoReply, 20
        )
        assert peer.instance_count() == len(msgs)
    finally:
        harness.stop()
        relay.close()
        peer.stop()
    assert trusted.reachable, trusted.reason
    assert not unverified.reachable and "certificate" in (unverified.reason or "")
    rows = await db_pool.fetch(
        """SELECT dst.name, d.state, d.last_error FROM deliveries d
           JOIN destinations dst ON dst.id = d.destination_id"""
    )
    for row in rows:
        if row["name"] == "unverified":
            assert row["state"] == "failed-permanent"
            assert "certificate was not verified" in row["last_error"]
        else:
            assert row["state"] == "sent"
