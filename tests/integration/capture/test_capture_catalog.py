"""The study catalog's RPCs (cb.rpc.capture.catalog.*), answered by real capture processes over
real NATS and PostgreSQL: capture owns `studies` and `media` (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any

import asyncpg
import pytest
from cinebridge_common.messages import (
    CatalogAddMedia,
    CatalogAddMediaReply,
    CatalogCreateStudy,
    CatalogCreateStudyReply,
    CatalogDeleteMedia,
    CatalogDeleteMediaReply,
    CatalogDropEmptyStudy,
    CatalogDropEmptyStudyReply,
    CatalogEditStudy,
    CatalogEditStudyReply,
    CatalogReconcile,
    CatalogReconcileReply,
    ConversionFailed,
    ConversionProgressed,
    InstanceCreated,
    MediaCaptured,
    NewStudyRecord,
    SetRoomStudy,
    SetRoomStudyReply,
    StudyChanged,
    StudySaved,
    WorklistItem,
)
from cinebridge_common.messages.base import Event
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


T0 = dt.datetime(2026, 1, 1, 8, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def created(media_id: str, study_id: str, seconds: float) -> InstanceCreated:
    uid = f"2.25.{uuid.uuid4().int}"
    return InstanceCreated(
        instance_id=str(uuid.uuid4()),
        media_id=media_id,
        study_id=study_id,
        sop_instance_uid=uid,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        transfer_syntax_uid="1.2.840.10008.1.2.4.50",
        rel_path=f"dicom/{uid}.dcm",
        size=1,
        sha256="0" * 64,
        occurred_at=at(seconds),
    )


def failed(media_id: str, study_id: str, seconds: float, reason: str) -> ConversionFailed:
    return ConversionFailed(
        media_id=media_id, study_id=study_id, reason=reason, occurred_at=at(seconds)
    )


def progressed(media_id: str, study_id: str, seconds: float) -> ConversionProgressed:
    return ConversionProgressed(
        media_id=media_id, study_id=study_id, fraction=0.5, stage="write", occurred_at=at(seconds)
    )


#: The catalog's durable consumer of each converter event.
DURABLES = {
    InstanceCreated: "capture-catalog-instance-created",
    ConversionFailed: "capture-catalog-conversion-failed",
    ConversionProgressed: "capture-catalog-conversion-progressed",
}


async def applied(client: Any, event: Event) -> None:
    """Publish `event` and wait until the catalog's consumer of it acknowledged it: handled,
    whatever it changed (what makes "an older event changed nothing" a check)."""
    ack = await client.bus.publish(event, msg_id=f"test-{uuid.uuid4().hex}")
    durable = DURABLES[type(event)]

    async def past() -> bool:
        info = await client.bus.js.consumer_info("CB_EVENTS", durable)
        return info.ack_floor.stream_seq >= ack.seq

    await wait_for(past, 30, 0.1, what=f"{durable} to handle stream message {ack.seq}")


async def media_state(db_pool: asyncpg.Pool, media_id: str) -> tuple[str, str | None]:
    row = await db_pool.fetchrow(
        "SELECT state, error FROM media WHERE id = $1", uuid.UUID(media_id)
    )
    return row["state"], row["error"]


async def test_conversion_outcomes_set_the_media_state_newest_first(
    capture_factory: Any, client: Any, db_pool: asyncpg.Pool
) -> None:
    """The converter announces its outcomes; the catalog sets media.state from them. The three
    events arrive on three consumers in no fixed order, so the newest event wins."""
    await client.wait_signal(capture_factory("or1", [{"name": "endo", "url": SMALL}]))
    shots = [await client.command("or1", "endo", "snapshot") for _ in range(2)]
    assert all(s.ok for s in shots), [s.error for s in shots]
    one, two = (str(s.media_id) for s in shots)
    study = str(shots[0].study_id)
    assert await media_state(db_pool, one) == ("captured", None)

    await applied(client, progressed(one, study, 10))
    assert await media_state(db_pool, one) == ("converting", None)
    await applied(client, failed(one, study, 5, "an earlier attempt"))
    assert await media_state(db_pool, one) == ("converting", None)  # older: changed nothing
    await applied(client, created(one, study, 20))
    assert await media_state(db_pool, one) == ("converted", None)
    await applied(client, progressed(one, study, 30))  # another conversion of a converted item
    await applied(client, failed(one, study, 15, "a twin that lost"))
    assert await media_state(db_pool, one) == ("converted", None)

    await applied(client, failed(two, study, 10, "no video stream"))
    assert await media_state(db_pool, two) == ("failed", "no video stream")
    await applied(client, progressed(two, study, 20))  # Save asked again after the failure
    assert await media_state(db_pool, two) == ("converting", None)
    await applied(client, created(two, study, 30))
    assert await media_state(db_pool, two) == ("converted", None)

    # A deleted item stays deleted; an instance handed in by `cinebridge send` has no media.
    deleted = await client.bus.request(
        CatalogDeleteMedia(media_id=one, by="nurse"), CatalogDeleteMediaReply, 10
    )
    assert deleted.ok and deleted.deleted, deleted
    await applied(client, created(one, study, 40))
    await applied(client, failed(one, study, 40, "late"))
    assert await media_state(db_pool, one) == ("deleted", None)
    await applied(client, created("", "", 40))
    unknown = str(uuid.uuid4())
    await applied(client, created(unknown, study, 40))
    assert await db_pool.fetchval("SELECT 1 FROM media WHERE id = $1", uuid.UUID(unknown)) is None


async def test_outcomes_announced_while_no_room_runs_are_applied_when_one_starts(
    capture_factory: Any, client: Any, db_pool: asyncpg.Pool
) -> None:
    proc = capture_factory("or1", [{"name": "endo", "url": SMALL}])
    await client.wait_signal(proc)
    shots = [await client.command("or1", "endo", "snapshot") for _ in range(2)]
    assert all(s.ok for s in shots), [s.error for s in shots]
    proc.stop()
    good, bad = (str(s.media_id) for s in shots)
    study = str(shots[0].study_id)
    now = (dt.datetime.now(dt.UTC) - T0).total_seconds()
    await client.bus.publish(created(good, study, now), msg_id=f"test-created-{good}")
    await client.bus.publish(failed(bad, study, now, "truncated"), msg_id=f"test-failed-{bad}")
    assert await media_state(db_pool, good) == ("captured", None)
    await client.wait_signal(capture_factory("or2", [{"name": "endo", "url": SMALL}]))

    async def settled() -> bool:
        states = [await media_state(db_pool, m) for m in (good, bad)]
        return states == [("converted", None), ("failed", "truncated")]

    await wait_for(settled, 30, what="the outcomes applied by the room that started")


async def test_studies_are_created_edited_and_dropped_by_the_catalog(
    capture_factory: Any, client: Any, db_pool: asyncpg.Pool
) -> None:
    """The gateway's study forms, edits (statement §8.1.5) and the removal of a study a room
    did not take, as the catalog's RPCs: each change with its StudyChanged, in one transaction."""
    await client.wait_signal(capture_factory("or1", [{"name": "endo", "url": SMALL}]))
    changes: list[StudyChanged] = []

    async def on_change(msg: Any) -> None:
        changes.append(StudyChanged.from_bytes(msg.data))

    await client.bus.subscribe_events(StudyChanged.subject, on_change)
    study_id = str(uuid.uuid4())
    record = NewStudyRecord(
        id=study_id,
        study_instance_uid="1.2.826.0.1.3680043.10.20",
        origin="worklist",
        room="or1",
        patient_name="DOE^JANE",
        patient_id="PID20",
        modality="ES",
        worklist_item={"00080050": {"vr": "SH", "Value": ["A20"]}},
    )

    async def create(study: NewStudyRecord) -> CatalogCreateStudyReply:
        msg = CatalogCreateStudy(study=study, by="nurse")
        return await client.bus.request(msg, CatalogCreateStudyReply, 10)

    for _ in range(2):  # asked again with the same id: answered the same, one row
        made = await create(record)
        assert made.ok and made.study_id == study_id, made
    row = await db_pool.fetchrow("SELECT * FROM studies WHERE id = $1", uuid.UUID(study_id))
    assert (row["origin"], row["patient_name"], row["modality"], row["state"]) == (
        "worklist",
        "DOE^JANE",
        "ES",
        "open",
    )
    twin = await create(record.model_copy(update={"id": str(uuid.uuid4())}))
    assert not twin.ok and twin.conflict, twin
    bad = await create(
        record.model_copy(update={"id": str(uuid.uuid4()), "study_instance_uid": "x"})
    )
    assert not bad.ok and not bad.conflict and "not a valid" in (bad.error or "")

    async def edit(changes: dict[str, Any], read_at: dt.datetime) -> CatalogEditStudyReply:
        msg = CatalogEditStudy(study_id=study_id, changes=changes, read_at=read_at, by="nurse")
        return await client.bus.request(msg, CatalogEditStudyReply, 10)

    # §8.1.5 as the gateway computes it: a new UID unlinks the study, the worklist data goes.
    unlink = {
        "patient_name": "DOE^JANET",
        "study_instance_uid": "1.2.826.0.1.3680043.10.21",
        "worklist_item": None,
        "edited": True,
    }
    read_at = row["updated_at"]
    done = await edit(unlink, read_at)
    assert done.ok and done.found and not done.stale, done
    row = await db_pool.fetchrow("SELECT * FROM studies WHERE id = $1", uuid.UUID(study_id))
    assert (row["patient_name"], row["study_instance_uid"], row["edited"]) == (
        "DOE^JANET",
        "1.2.826.0.1.3680043.10.21",
        True,
    )
    assert row["worklist_item"] is None and row["modality"] == "ES"
    stale = await edit({"patient_id": "OTHER"}, read_at)  # computed from the row before
    assert stale.ok and stale.stale, stale
    assert await db_pool.fetchval(
        "SELECT patient_id FROM studies WHERE id = $1", uuid.UUID(study_id)
    ) == ("PID20")
    refused = await edit({"origin": "form"}, row["updated_at"])
    assert not refused.ok and "not an editable" in (refused.error or "")
    unknown = CatalogEditStudy(
        study_id=str(uuid.uuid4()), changes={"patient_id": "X"}, read_at=read_at
    )
    assert not (await client.bus.request(unknown, CatalogEditStudyReply, 10)).found

    async def drop(target: str) -> CatalogDropEmptyStudyReply:
        msg = CatalogDropEmptyStudy(study_id=target, by="nurse")
        return await client.bus.request(msg, CatalogDropEmptyStudyReply, 10)

    holding = await unscheduled_study(client, "or1")  # a snapshot is attached to it
    assert not (await drop(holding)).dropped
    assert (await drop(study_id)).dropped
    assert not (await drop(study_id)).dropped  # gone already
    assert (
        await db_pool.fetchval("SELECT 1 FROM studies WHERE id = $1", uuid.UUID(study_id)) is None
    )
    assert await db_pool.fetchval("SELECT 1 FROM studies WHERE id = $1", uuid.UUID(holding))

    async def announced() -> bool:
        return [c.change for c in changes if c.study_id == study_id] == ["created", "edited"]

    await wait_for(announced, 15, what="StudyChanged for the creation and the edit")
