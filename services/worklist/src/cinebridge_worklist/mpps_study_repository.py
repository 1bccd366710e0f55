"""Which performed procedure step of a study each study event belongs to (migrations 404, 405):
opening a step, Save, the instances it makes, a failed conversion, discontinuation, and the
relink of a study reconciled with a worklist item.

A COMPLETED or DISCONTINUED step is final (PS3.4 F.7.2.2), so a study may have several steps,
at most one of them open:
- the append case (IHE RAD TF-1 Scheduled Workflow "Append Case", RAD TF-2 4.6.4.1.2.4): media
  captured after the study's step ended open a new step with its own SOP Instance UID and the
  same Scheduled Step Attributes Sequence, and its N-SET lists only what it performed;
- a study linked to a worklist item after its unscheduled step was created: the Scheduled Step
  Attributes Sequence cannot be N-SET (PS3.4 F.7.2, Table F.7.2-1), so that step ends
  DISCONTINUED with (110514, DCM, "Incorrect worklist entry selected") (PS3.16 CID 9300; IHE
  RAD TF-2 4.7.4.1.3) and a step linked to the item follows (docs/mpps.md);
- MPPS enabled in the middle of a study: the Save opens the step, which takes every instance
  the study already has, so it completes whole.

Every event of a study holds the study's transaction-scoped advisory lock first, so a Save, its
instances, a discontinuation and a relink decide one after the other.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

from cinebridge_common.messages import (
    CodedReason,
    ConversionFailed,
    InstanceCreated,
    MediaCaptured,
    StudyChanged,
    StudyDiscontinued,
    StudySaved,
)
from cinebridge_common.replay import LostWork, body_uuid
from cinebridge_common.uids import make_uid

from .mpps_repository import STEP, Conn, Step, announce, as_step, get_step, mpps_server, set_due

#: PS3.16 CID 9300: the reason a step relinked to a worklist item ends with (RAD TF-2 4.7.4.1.3).
INCORRECT_WORKLIST_ENTRY = CodedReason(value="110514", meaning="Incorrect worklist entry selected")


def _key(study_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(study_id)
    except ValueError:
        return None


async def _lock(conn: Conn, key: uuid.UUID) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"mpps:{key}")


async def _open_step(conn: Conn, key: uuid.UUID) -> Step | None:
    row = await conn.fetchrow(STEP + " WHERE study_id = $1 AND final_status IS NULL", key)
    return as_step(row) if row else None


async def _latest(conn: Conn, key: uuid.UUID) -> Step | None:
    row = await conn.fetchrow(STEP + " WHERE study_id = $1 ORDER BY seq DESC LIMIT 1", key)
    return as_step(row) if row else None


async def _media_step(conn: Conn, key: uuid.UUID, media_id: uuid.UUID) -> Step | None:
    """The step whose Save waits for this media item, else the study's open step."""
    row = await conn.fetchrow(
        STEP
        + """ WHERE study_id = $1 AND id IN (SELECT step_id FROM mpps_media
                                                    WHERE media_id = $2 AND outcome IS NULL)
                 ORDER BY seq DESC LIMIT 1""",
        key,
        media_id,
    )
    return as_step(row) if row else await _open_step(conn, key)


async def _new_step(
    conn: Conn, key: uuid.UUID, study_uid: str, started_at: dt.datetime, seq: int
) -> Step | None:
    """A new step (pending-create, its job queued); None when no server has an MPPS SCP."""
    server = await mpps_server(conn, study_uid)
    if server is None:
        return None
    # Derived from the study and its number: whoever opens it, it is one step (one SOP Instance).
    step_id = uuid.uuid5(key, "mpps-step" if seq == 1 else f"mpps-step-{seq}")
    row = await conn.fetchrow(
        """INSERT INTO mpps_steps (id, study_id, server_id, sop_instance_uid, pps_id, started_at,
                                   seq)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING id""",
        step_id,
        key,
        server.id,
        make_uid("cinebridge-mpps", str(step_id)),
        step_id.hex[:16].upper(),  # SH, 16 characters (PS3.5 6.2)
        started_at,
        seq,
    )
    step = await get_step(conn, str(step_id))
    if row is not None and step is not None:
        await announce(conn, step)
    return step


async def _open(conn: Conn, key: uuid.UUID, started_at: dt.datetime) -> Step | None:
    """The study's open step, else a new one: the first, or an append when the latest step
    ended before `started_at` (an event of the ended step read late opens nothing)."""
    study_uid = await conn.fetchval("SELECT study_instance_uid FROM studies WHERE id = $1", key)
    if study_uid is None:
        return None
    if (step := await _open_step(conn, key)) is not None:
        return step
    latest = await _latest(conn, key)
    if latest is not None and (latest.ended_at is None or started_at <= latest.ended_at):
        return latest
    return await _new_step(conn, key, study_uid, started_at, latest.seq + 1 if latest else 1)


async def ensure_step(conn: Conn, study_id: str, started_at: dt.datetime) -> Step | None:
    """A capture or the study's start: the step it belongs to, opened if needed; None when the
    study is unknown or no worklist server has an MPPS SCP."""
    if (key := _key(study_id)) is None:
        return None
    await _lock(conn, key)
    return await _open(conn, key, started_at)


async def record_saved(
    conn: Conn, study_id: str, media: list[str], saved_at: dt.datetime, by: str | None
) -> Step | None:
    """Save: these media are being converted; the step completes when each is done. Media an
    earlier step reported are left out (a Save converts only what is new). Without an open
    step (MPPS enabled after the captures, or an append saved without a capture event), the
    Save opens one, started when the study was."""
    if (key := _key(study_id)) is None:
        return None
    await _lock(conn, key)
    reported = {
        r["media_id"]
        for r in await conn.fetch(
            """SELECT m.media_id FROM mpps_media m JOIN mpps_steps s ON s.id = m.step_id
               WHERE s.study_id = $1 AND s.final_status IS NOT NULL AND m.outcome = 'converted'""",
            key,
        )
    }
    new = [m for m in map(uuid.UUID, media) if m not in reported]
    step = await _open_step(conn, key)
    if step is None:
        latest = await _latest(conn, key)
        if not new:
            return latest  # nothing new: what was saved is reported already
        # The first step began with the study; an append with this Save (a Save of the ended
        # step read late is older than its end, and opens nothing).
        started = await conn.fetchval("SELECT created_at FROM studies WHERE id = $1", key)
        step = await _open(conn, key, saved_at if latest is not None else started or saved_at)
        if step is None or step.final_status is not None:
            return step
    await conn.execute(
        """UPDATE mpps_steps SET saved_at = coalesce(saved_at, $2), operator = $3,
               updated_at = now() WHERE id = $1""",
        step.id,
        saved_at,
        (by or "")[:64],
    )
    await conn.executemany(
        """INSERT INTO mpps_media (step_id, media_id) VALUES ($1, $2)
           ON CONFLICT (step_id, media_id) DO NOTHING""",
        [(step.id, m) for m in new],
    )
    await _adopt(conn, key, step.id)
    return await _maybe_complete(conn, step)


async def _adopt(conn: Conn, key: uuid.UUID, step_id: uuid.UUID) -> None:
    """The study's instances that no step took yet (made before this step existed) are this
    step's; a media item saved here whose instances are all in is converted already."""
    await conn.execute(
        "UPDATE mpps_instances SET step_id = $2 WHERE study_id = $1 AND step_id IS NULL",
        key,
        step_id,
    )
    await conn.execute(
        """UPDATE mpps_media m SET parts = x.parts, outcome = 'converted'
           FROM (SELECT media_id, max(parts) AS parts, count(*) AS n FROM mpps_instances
                 WHERE step_id = $1 GROUP BY media_id) x
           WHERE m.step_id = $1 AND m.media_id = x.media_id AND m.outcome IS NULL
             AND x.n >= x.parts""",
        step_id,
    )


async def record_instance(conn: Conn, msg: InstanceCreated) -> Step | None:
    """An instance of the study, kept whether or not a step has begun (see `_adopt`)."""
    if (key := _key(msg.study_id)) is None or not msg.series_instance_uid:
        return None
    await _lock(conn, key)
    if not await conn.fetchval("SELECT 1 FROM studies WHERE id = $1", key):
        return None
    media_id = uuid.UUID(msg.media_id)
    step = await _media_step(conn, key, media_id)
    await conn.execute(
        """INSERT INTO mpps_instances (sop_instance_uid, step_id, media_id, sop_class_uid,
                                       series_instance_uid, series_description, study_id, parts)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (sop_instance_uid) DO NOTHING""",
        msg.sop_instance_uid,
        step.id if step is not None else None,
        media_id,
        msg.sop_class_uid,
        msg.series_instance_uid,
        msg.series_description or "",
        key,
        msg.parts,
    )
    if step is None:
        return None
    # A recording split into `parts` instances is converted once every part is here.
    await conn.execute(
        """INSERT INTO mpps_media (step_id, media_id, parts, outcome)
           SELECT $1, $2, $3::int, CASE WHEN count(*) >= $3::int THEN 'converted' END
           FROM mpps_instances WHERE step_id = $1 AND media_id = $2
           ON CONFLICT (step_id, media_id) DO UPDATE
               SET parts = EXCLUDED.parts, outcome = EXCLUDED.outcome""",
        step.id,
        media_id,
        msg.parts,
    )
    return await _maybe_complete(conn, step)


async def record_media_failed(
    conn: Conn, study_id: str, media_id: str, at: dt.datetime
) -> Step | None:
    """A media item that could not be converted; read before its Save, it opens the step the
    Save will find (so the Save does not wait for it)."""
    if (key := _key(study_id)) is None:
        return None
    await _lock(conn, key)
    media = uuid.UUID(media_id)
    step = await _media_step(conn, key, media) or await _open(conn, key, at)
    if step is None:
        return None
    await conn.execute(
        """INSERT INTO mpps_media (step_id, media_id, outcome) VALUES ($1, $2, 'failed')
           ON CONFLICT (step_id, media_id) DO UPDATE SET outcome = 'failed'""",
        step.id,
        media,
    )
    return await _maybe_complete(conn, step)


async def _maybe_complete(conn: Conn, step: Step) -> Step:
    """COMPLETED once saved and every media item of the Save is converted or failed; the
    N-SET is due now if the N-CREATE went through, else right after it."""
    row = await conn.fetchrow(
        """UPDATE mpps_steps SET final_status = 'COMPLETED', ended_at = saved_at,
               updated_at = now()
           WHERE id = $1 AND saved_at IS NOT NULL AND final_status IS NULL
             AND NOT EXISTS (SELECT 1 FROM mpps_media
                             WHERE step_id = $1 AND outcome IS NULL)
           RETURNING id""",
        step.id,
    )
    if row is None:
        return step
    return await set_due(conn, step.id)


async def _end(conn: Conn, step: Step, reason: CodedReason, at: dt.datetime) -> Step:
    await conn.execute(
        """UPDATE mpps_steps SET final_status = 'DISCONTINUED', reason = $2, ended_at = $3,
               updated_at = now() WHERE id = $1""",
        step.id,
        json.dumps(reason.model_dump()),
        at,
    )
    return await set_due(conn, step.id)


async def discontinue(
    conn: Conn, study_id: str, reason: CodedReason, at: dt.datetime
) -> Step | None:
    """DISCONTINUED with a CID 9300 reason; a step already ending keeps its end."""
    if (key := _key(study_id)) is None:
        return None
    await _lock(conn, key)
    step = await _open_step(conn, key)
    return await _end(conn, step, reason, at) if step is not None else await _latest(conn, key)


async def relink(conn: Conn, study_id: str, at: dt.datetime) -> Step | None:
    """The study now carries a worklist item, but its open step left unscheduled: that step
    ends DISCONTINUED (110514) and a step linked to the item takes over what the study still
    owes (its Save and the media not converted yet). A step whose N-CREATE has not left
    needs nothing: it is built from the study when it leaves. Returns the new step."""
    if (key := _key(study_id)) is None:
        return None
    await _lock(conn, key)
    step = await _open_step(conn, key)
    if step is None or not step.create_sent or step.scheduled is not False:
        return None
    row = await conn.fetchrow(
        "SELECT study_instance_uid, worklist_item IS NOT NULL AS linked FROM studies WHERE id = $1",
        key,
    )
    if row is None or not row["linked"]:
        return None
    saved_at = await conn.fetchval("SELECT saved_at FROM mpps_steps WHERE id = $1", step.id)
    await _end(conn, step, INCORRECT_WORKLIST_ENTRY, at)
    new = await _new_step(conn, key, row["study_instance_uid"], at, step.seq + 1)
    if new is None:
        return None
    # Instances already made carry the old step's Study Instance UID and stay listed there.
    await conn.execute(
        "UPDATE mpps_media SET step_id = $2 WHERE step_id = $1 AND outcome IS NULL",
        step.id,
        new.id,
    )
    await conn.execute(
        "UPDATE mpps_steps SET saved_at = $2, operator = $3 WHERE id = $1",
        new.id,
        saved_at,
        step.operator,
    )
    return await _maybe_complete(conn, new) if saved_at is not None else new


# -- events lost with NATS's JetStream store (cinebridge_common.replay) -----------------------
# Each condition is true once the handler's effect is recorded, or when it would do nothing.
# Every look-up is by a key with an index: `studies.id`, `mpps_steps (study_id, seq)`,
# `mpps_media (step_id, media_id)`, `mpps_instances.sop_instance_uid`, `mpps_steps.id`.
_STUDY = body_uuid("study_id")
_AT = "(body->>'occurred_at')::timestamptz"
#: The study is gone (its steps went with it) or the id is not one: nothing is owed.
_NO_STUDY = f"NOT EXISTS (SELECT 1 FROM studies st WHERE st.id = {_STUDY})"
#: No worklist server has an MPPS SCP: no step can be opened (`mpps_server`).
_NO_MPPS_SCP = "NOT EXISTS (SELECT 1 FROM worklist_servers w WHERE w.enabled AND w.mpps_enabled)"
#: A step that an event of `occurred_at` belongs to: open, or ended at or after it (`_open`).
_STEP_COVERS = f"""EXISTS (SELECT 1 FROM mpps_steps s WHERE s.study_id = {_STUDY}
    AND (s.final_status IS NULL OR s.ended_at IS NULL OR s.ended_at >= {_AT}))"""
_MEDIA_IDS = (
    "CASE WHEN jsonb_typeof(body->'media_ids') = 'array' THEN body->'media_ids' ELSE '[]' END"
)
#: Save: a step of the study was saved and every media item of the Save is listed in one; or,
#: with no MPPS SCP and no open step, no step to record it in.
_SAVE_RECORDED = f"""{_NO_STUDY}
    OR (EXISTS (SELECT 1 FROM mpps_steps s WHERE s.study_id = {_STUDY} AND s.saved_at IS NOT NULL)
        AND NOT EXISTS (
            SELECT 1 FROM jsonb_array_elements_text({_MEDIA_IDS}) AS saved(media_id)
            WHERE NOT EXISTS (SELECT 1 FROM mpps_media mm JOIN mpps_steps s ON s.id = mm.step_id
                              WHERE s.study_id = {_STUDY}
                                AND mm.media_id::text = lower(saved.media_id))))
    OR ({_NO_MPPS_SCP} AND NOT EXISTS (SELECT 1 FROM mpps_steps s WHERE s.study_id = {_STUDY}
                                       AND s.final_status IS NULL))"""
#: A failed conversion is listed as failed in a step of the study; or no step could take it.
_FAILURE_RECORDED = f"""{_NO_STUDY}
    OR EXISTS (SELECT 1 FROM mpps_media mm JOIN mpps_steps s ON s.id = mm.step_id
               WHERE s.study_id = {_STUDY} AND mm.media_id = {body_uuid("media_id")}
                 AND mm.outcome = 'failed')
    OR ({_NO_MPPS_SCP} AND NOT {_STEP_COVERS}
        AND NOT EXISTS (SELECT 1 FROM mpps_media mm JOIN mpps_steps s ON s.id = mm.step_id
                        WHERE s.study_id = {_STUDY} AND mm.media_id = {body_uuid("media_id")}
                          AND mm.outcome IS NULL))"""
#: "created" opens the step under the trigger "study-start" (done once the study has one; under
#: "first-capture" such an event is published again to a handler that does nothing, since the
#: trigger lives in the gateway's settings, which may not exist yet); "reconciled" is done once
#: no open step that left unscheduled remains on a study linked to a worklist item (`relink`).
_CHANGE_APPLIED = f"""CASE body->>'change'
    WHEN 'created' THEN {_NO_STUDY} OR {_NO_MPPS_SCP}
        OR EXISTS (SELECT 1 FROM mpps_steps s WHERE s.study_id = {_STUDY})
    WHEN 'reconciled' THEN NOT EXISTS (
        SELECT 1 FROM mpps_steps s JOIN studies st ON st.id = s.study_id
        WHERE s.study_id = {_STUDY} AND s.final_status IS NULL AND s.create_sent
          AND s.scheduled IS FALSE AND st.worklist_item IS NOT NULL)
    ELSE true END"""

#: The MPPS events the worklist consumes (handlers.CONSUMERS), lost with the store.
LOST_WORK = [
    LostWork(
        stream="CB_EVENTS",
        subject=MediaCaptured.subject,
        done=f"{_NO_STUDY} OR {_STEP_COVERS} OR {_NO_MPPS_SCP}",
    ),
    LostWork(stream="CB_EVENTS", subject=StudyChanged.subject, done=_CHANGE_APPLIED),
    LostWork(stream="CB_EVENTS", subject=StudySaved.subject, done=_SAVE_RECORDED),
    LostWork(
        stream="CB_EVENTS",
        subject=InstanceCreated.subject,
        done=f"""{_NO_STUDY} OR coalesce(body->>'series_instance_uid', '') = ''
                 OR EXISTS (SELECT 1 FROM mpps_instances i
                            WHERE i.sop_instance_uid = body->>'sop_instance_uid')""",
    ),
    LostWork(stream="CB_EVENTS", subject=ConversionFailed.subject, done=_FAILURE_RECORDED),
    LostWork(
        stream="CB_EVENTS",
        subject=StudyDiscontinued.subject,
        # Ends the study's open step; one opened after the event (an append) is not its own.
        done=f"""NOT EXISTS (SELECT 1 FROM mpps_steps s WHERE s.study_id = {_STUDY}
                             AND s.final_status IS NULL AND s.started_at <= {_AT})""",
    ),
]
