"""The study catalog's RPCs (cb.rpc.capture.catalog.*), answered by real capture processes over
real NATS and PostgreSQL: capture owns `studies` and `media` (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from cinebridge_common.messages import (
    CatalogAddMedia,
    CatalogAddMediaReply,
    CatalogDeleteMedia,
    CatalogDeleteMediaReply,
    CatalogReconcile,
    CatalogReconcileReply,
    MediaCaptured,
    SetRoomStudy,
    SetRoomStudyReply,
    StudyChanged,
    StudySaved,
    WorklistItem,
)
from cinebridge_testkit import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SMALL = "lavfi:testsrc2=size=320x240:rate=10"


def item(uid: str, accession: str) -> WorklistItem:
    return WorklistItem(
        study_instance_uid=uid,
        patient_name="DOE^JANE",
        patient_id="PID7",
        patient_birth_date="19700101",
        patient_sex="F",
        accession_number=accession,
        requested_procedure_id="RP7",
        requested_procedure_description="Colonoscopy",
        referring_physician_name="WHO^DOCTOR",
        modality="ES",
        dataset={
            "0020000D": {"vr": "UI", "Value": [uid]},
            "00080050": {"vr": "SH", "Value": [accession]},
        },
    )


async def unscheduled_study(client: Any, room: str) -> str:
    """A snapshot without a patient: capture makes an unscheduled study (statement §4.1.3)."""
    reply = await client.command(room, "endo", "snapshot")
    assert reply.ok, reply.error
    return str(reply.study_id)


async def reconcile(client: Any, study_id: str, it: WorklistItem) -> CatalogReconcileReply:
    msg = CatalogReconcile(study_id=study_id, item=it, by="nurse")
    return await client.bus.request(msg, CatalogReconcileReply, 10)


async def test_reconcile_gives_an_unscheduled_study_the_worklist_item(
    capture_factory: Any, client: Any, db_pool: asyncpg.Pool
) -> None:
    await client.wait_signal(capture_factory("or1", [{"name": "endo", "url": SMALL}]))
    events: asyncio.Queue[StudyChanged] = asyncio.Queue()

    async def on_event(msg: Any) -> None:
        await events.put(StudyChanged.from_bytes(msg.data))

    await client.bus.subscribe_events(StudyChanged.subject, on_event)
    study_id = await unscheduled_study(client, "or1")
    before = await db_pool.fetchrow("SELECT * FROM studies WHERE id = $1", uuid.UUID(study_id))
    assert before["origin"] == "unscheduled"

    reply = await reconcile(client, study_id, item("1.2.826.0.1.3680043.10.7", "ACC7"))
    assert reply.ok, reply.error
    assert reply.study_instance_uid == "1.2.826.0.1.3680043.10.7"
    assert reply.previous_study_instance_uid == before["study_instance_uid"]
    row = await db_pool.fetchrow("SELECT * FROM studies WHERE id = $1", uuid.UUID(study_id))
    assert (row["study_instance_uid"], row["origin"]) == ("1.2.826.0.1.3680043.10.7", "worklist")
    assert (row["patient_name"], row["patient_id"], row["patient_sex"]) == ("DOE^JANE", "PID7", "F")
    assert row["accession_number"] == "ACC7"
    assert row["study_id"] == "RP7"  # Table 38: Study ID ← Requested Procedure ID
    assert (row["study_description"], row["modality"]) == ("Colonoscopy", "ES")
    stored = row["worklist_item"]
    assert (json.loads(stored) if isinstance(stored, str) else stored)["00080050"]["Value"] == [
        "ACC7"
    ]
    event = await asyncio.wait_for(events.get(), 15)
    assert (event.study_id, event.change, event.by) == (study_id, "reconciled", "nurse")

    # The same item again is answered the same; another item is refused (linked already).
    again = await reconcile(client, study_id, item("1.2.826.0.1.3680043.10.7", "ACC7"))
    assert again.ok and again.previous_study_instance_uid == "1.2.826.0.1.3680043.10.7"
    other = await reconcile(client, study_id, item("1.2.826.0.1.3680043.10.8", "ACC8"))
    assert not other.ok and "already linked" in (other.error or "")


async def test_reconcile_refusals_leave_the_catalog_unchanged(
    capture_factory: Any, client: Any, db_pool: asyncpg.Pool
) -> None:
    await client.wait_signal(capture_factory("or1", [{"name": "endo", "url": SMALL}]))
    first = await unscheduled_study(client, "or1")
    assert (await reconcile(client, first, item("1.2.826.0.1.3680043.10.9", "A9"))).ok
    # A second study of the room: it may not take a UID another study holds.
    left = await client.bus.request(SetRoomStudy(room="or1", study_id=None), SetRoomStudyReply, 10)
    assert left.ok, left.error
    second = await unscheduled_study(client, "or1")
    assert second != first
    taken = await reconcile(client, second, item("1.2.826.0.1.3680043.10.9", "A9"))
    assert not taken.ok and "already has Study Instance UID" in (taken.error or "")
    missing = await reconcile(client, str(uuid.uuid4()), item("1.2.826.0.1.3680043.10.10", "A10"))
    assert not missing.ok and "does not exist" in (missing.error or "")
    bad_uid = await reconcile(client, second, item("not a uid", "A11"))
    assert not bad_uid.ok and "no valid Study Instance UID" in (bad_uid.error or "")
    row = await db_pool.fetchrow("SELECT * FROM studies WHERE id = $1", uuid.UUID(second))
    assert (row["origin"], row["patient_name"]) == ("unscheduled", "")


async def test_the_catalog_answers_while_any_room_runs(
    capture_factory: Any, client: Any, db_pool: asyncpg.Pool
) -> None:
    or1 = capture_factory("or1", [{"name": "endo", "url": SMALL}])
    await client.wait_signal(or1)
    await client.wait_signal(capture_factory("or2", [{"name": "endo", "url": SMALL}]))
    study_id = await unscheduled_study(client, "or2")
    or1.kill()

    async def answered() -> CatalogReconcileReply | None:
        # The server drops the killed process's subscription once it sees the socket close; a
        # request routed to it before then times out and is asked again.
        try:
            return await reconcile(client, study_id, item("1.2.826.0.1.3680043.10.12", "A12"))
        except Exception:
            return None

    reply = await wait_for(answered, 60, 0.5, what="the catalog answered by room or2")
    assert reply.ok, reply.error
    row = await db_pool.fetchrow("SELECT origin FROM studies WHERE id = $1", uuid.UUID(study_id))
    assert row["origin"] == "worklist"


async def test_delete_media_marks_the_item_deleted_once(
    capture_factory: Any, client: Any, db_pool: asyncpg.Pool
) -> None:
    await client.wait_signal(capture_factory("or1", [{"name": "endo", "url": SMALL}]))
    shot = await client.command("or1", "endo", "snapshot")
    assert shot.ok, shot.error

    async def delete(media_id: str) -> CatalogDeleteMediaReply:
        msg = CatalogDeleteMedia(media_id=media_id, by="nurse")
        return await client.bus.request(msg, CatalogDeleteMediaReply, 10)

    first = await delete(str(shot.media_id))
    assert first.ok and first.deleted and first.study_id == shot.study_id, first
    state = await db_pool.fetchval(
        "SELECT state FROM media WHERE id = $1", uuid.UUID(shot.media_id)
    )
    assert state == "deleted"
    again = await delete(str(shot.media_id))
    assert again.ok and not again.deleted
    unknown = await delete(str(uuid.uuid4()))
    assert unknown.ok and not unknown.deleted
    malformed = await delete("not-a-uuid")
    assert not malformed.ok and "not a UUID" in (malformed.error or "")


async def test_a_saved_study_is_recorded_from_the_durable_event(
    capture_factory: Any, client: Any, db_pool: asyncpg.Pool
) -> None:
    """The gateway announces a Save with cb.evt.study.saved (through its outbox, with the
    convert jobs); capture's catalog records the state, also for a Save made while no room ran."""
    proc = capture_factory("or1", [{"name": "endo", "url": SMALL}])
    await client.wait_signal(proc)
    first = await unscheduled_study(client, "or1")
    proc.stop()
    await client.bus.publish(StudySaved(study_id=first, by="nurse"), msg_id=f"saved-{first}")
    await client.bus.publish(StudySaved(study_id=str(uuid.uuid4())), msg_id="saved-unknown")

    async def saved() -> bool:
        state = await db_pool.fetchval("SELECT state FROM studies WHERE id = $1", uuid.UUID(first))
        return state == "saved"

    assert await db_pool.fetchval("SELECT state FROM studies WHERE id = $1", uuid.UUID(first)) == (
        "open"
    )
    await client.wait_signal(capture_factory("or2", [{"name": "endo", "url": SMALL}]))
    await wait_for(saved, 30, what="the catalog to record the saved state")


async def test_add_media_registers_an_uploaded_file_once(
    capture_factory: Any, client: Any, db_pool: asyncpg.Pool
) -> None:
    await client.wait_signal(capture_factory("or1", [{"name": "endo", "url": SMALL}]))
    study_id = await unscheduled_study(client, "or1")
    captured: list[bytes] = []

    async def on_media(msg: Any) -> None:
        captured.append(msg.data)

    await client.bus.subscribe_events(MediaCaptured.subject, on_media)
    media = MediaCaptured(
        media_id=str(uuid.uuid4()),
        study_id=study_id,
        room="or1",
        source="upload",
        kind="snapshot",
        rel_path="media/2026/01/01/upload.jpg",
        size=3,
        sha256="0" * 64,
        mime="image/jpeg",
        width=2,
        height=2,
    )

    async def add(event: MediaCaptured) -> CatalogAddMediaReply:
        return await client.bus.request(CatalogAddMedia(media=event), CatalogAddMediaReply, 10)

    for _ in range(2):  # asked again with the same media id: answered the same, one row
        reply = await add(media)
        assert reply.ok and reply.media_id == media.media_id, reply
    rows = await db_pool.fetch("SELECT * FROM media WHERE id = $1", uuid.UUID(media.media_id))
    assert [(r["study_id"], r["source"], r["state"]) for r in rows] == [
        (uuid.UUID(study_id), "upload", "captured")
    ]

    async def announced() -> bool:
        return any(MediaCaptured.from_bytes(d).media_id == media.media_id for d in captured)

    await wait_for(announced, 15, what="MediaCaptured of the added media")
    elsewhere = media.model_copy(
        update={"media_id": str(uuid.uuid4()), "study_id": str(uuid.uuid4())}
    )
    refused = await add(elsewhere)
    assert not refused.ok and "does not exist" in (refused.error or "")
