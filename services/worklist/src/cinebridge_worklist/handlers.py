"""RPC handlers of the worklist service and the MPPS SCU's event and job handlers; the
subscription tables are at the bottom of each part."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cinebridge_common.bus import Delivery, Retry
from cinebridge_common.dicom_values import check_dataset
from cinebridge_common.messages import (
    ConversionFailed,
    InstanceCreated,
    MediaCaptured,
    Message,
    MppsRetry,
    MppsRetryReply,
    MppsStepDue,
    Reply,
    Request,
    StudyChanged,
    StudyDiscontinued,
    StudySaved,
    WorklistCheckItem,
    WorklistCheckItemReply,
    WorklistConformance,
    WorklistEcho,
    WorklistEchoReply,
    WorklistQuery,
    WorklistQueryReply,
    WorklistServerDelete,
    WorklistServersList,
    WorklistServersReply,
    WorklistServerUpsert,
)
from cinebridge_common.station import load_station_settings

from . import metrics, mpps_work, statement
from . import mpps_queue_repository as mpps_queue
from . import mpps_repository as mpps_repo
from . import mpps_study_repository as mpps_study
from .items import item_from_json
from .lookup import Deps, echo_server, query_worklist


async def handle_worklist_query(req: WorklistQuery, deps: Deps) -> WorklistQueryReply:
    started = time.perf_counter()
    reply = await query_worklist(req, deps)
    metrics.observe_query(reply, time.perf_counter() - started)
    return reply


async def handle_worklist_echo(req: WorklistEcho, deps: Deps) -> WorklistEchoReply:
    return await echo_server(req.server_id, deps)


async def handle_servers_list(req: WorklistServersList, deps: Deps) -> WorklistServersReply:
    return WorklistServersReply(servers=await deps.repo.list_servers())


async def handle_server_upsert(req: WorklistServerUpsert, deps: Deps) -> WorklistServersReply:
    await deps.repo.upsert_server(req.server, req.by)
    return WorklistServersReply(servers=await deps.repo.list_servers())


async def handle_server_delete(req: WorklistServerDelete, deps: Deps) -> WorklistServersReply:
    # Deleting also drops the server's cached entries (ON DELETE CASCADE).
    found = await deps.repo.delete_server(req.server_id)
    servers = await deps.repo.list_servers()
    if not found:
        return WorklistServersReply(
            ok=False, error=f"no worklist server {req.server_id!r}", servers=servers
        )
    return WorklistServersReply(servers=servers)


async def handle_check_item(req: WorklistCheckItem, _deps: Deps) -> WorklistCheckItemReply:
    """The item as the door would have made it from its dataset: a client may send back any
    values, and the study catalog stores them (statement Table 38 mapping)."""
    item = req.item
    checked = item_from_json(check_dataset(item.dataset)[0]) if item.dataset else item
    return WorklistCheckItemReply(item=checked)


async def handle_conformance(_req: WorklistConformance, deps: Deps) -> Reply:
    servers = await deps.repo.list_servers()
    station = await load_station_settings(deps.pool)
    return statement.describe(servers, station, deps.settings)


async def handle_mpps_retry(req: MppsRetry, deps: Deps) -> MppsRetryReply:
    async with deps.pool.acquire() as conn, conn.transaction():
        step = await mpps_repo.retry_now(conn, req.study_id)
    if step is None:
        return MppsRetryReply(ok=False, error=f"study {req.study_id} has no procedure step")
    if step.state not in ("pending-create", "pending-set"):
        return MppsRetryReply(ok=False, error=f"the step is {step.state}: nothing to retry")
    return MppsRetryReply(state=step.state)


Handler = Callable[[Any, Deps], Awaitable[Reply]]

#: Request type → handler, and how many requests it answers at once: queries and echoes wait
#: on outside servers for up to their time limit, so one room's slow RIS must not hold up
#: another room's search. app.py serves each on its subject (queue group "worklist").
RPC_HANDLERS: list[tuple[type[Request], Handler, int]] = [
    (WorklistQuery, handle_worklist_query, 4),
    (WorklistEcho, handle_worklist_echo, 4),
    (WorklistServersList, handle_servers_list, 1),
    (WorklistServerUpsert, handle_server_upsert, 1),
    (WorklistServerDelete, handle_server_delete, 1),
    (WorklistCheckItem, handle_check_item, 1),
    (WorklistConformance, handle_conformance, 1),
    (MppsRetry, handle_mpps_retry, 1),
]


# -- Modality Performed Procedure Step (PS3.4 Annex F; IHE RAD-6, RAD-7) ----------------------


async def handle_media_captured(msg: MediaCaptured, _d: Delivery, deps: Deps) -> None:
    """The first snapshot or recording of a study, or the first after its step ended (the
    append case): a step is created IN PROGRESS."""
    async with deps.pool.acquire() as conn, conn.transaction():
        await mpps_study.ensure_step(conn, msg.study_id, msg.occurred_at)


async def handle_study_changed(msg: StudyChanged, _d: Delivery, deps: Deps) -> None:
    """With the station's `mpps_trigger` "study-start", a started study creates its step; a
    study reconciled with a worklist item relinks its unscheduled step (RAD TF-2 4.7.4.1.3)."""
    if msg.change == "reconciled":
        async with deps.pool.acquire() as conn, conn.transaction():
            await mpps_study.relink(conn, msg.study_id, msg.occurred_at)
        return
    if msg.change != "created":
        return
    if (await load_station_settings(deps.pool)).mpps_trigger != "study-start":
        return
    async with deps.pool.acquire() as conn, conn.transaction():
        await mpps_study.ensure_step(conn, msg.study_id, msg.occurred_at)


async def handle_study_saved(msg: StudySaved, _d: Delivery, deps: Deps) -> None:
    async with deps.pool.acquire() as conn, conn.transaction():
        await mpps_study.record_saved(conn, msg.study_id, msg.media_ids, msg.occurred_at, msg.by)


async def handle_instance_created(msg: InstanceCreated, _d: Delivery, deps: Deps) -> None:
    if not msg.study_id:
        return  # handed in by `cinebridge send`: no study of the station's, no procedure
    async with deps.pool.acquire() as conn, conn.transaction():
        await mpps_study.record_instance(conn, msg)


async def handle_conversion_failed(msg: ConversionFailed, _d: Delivery, deps: Deps) -> None:
    async with deps.pool.acquire() as conn, conn.transaction():
        await mpps_study.record_media_failed(conn, msg.study_id, msg.media_id, msg.occurred_at)


async def handle_study_discontinued(msg: StudyDiscontinued, _d: Delivery, deps: Deps) -> None:
    async with deps.pool.acquire() as conn, conn.transaction():
        await mpps_study.discontinue(conn, msg.study_id, msg.reason, msg.occurred_at)


async def handle_mpps_step_due(msg: MppsStepDue, delivery: Delivery, deps: Deps) -> None:
    """Load, check it is due, claim, send, decide retry: the shape of the sender's deliveries."""
    step = await mpps_repo.get_step(deps.pool, msg.step_id)
    if step is None or step.state not in mpps_repo.DUE:
        return  # done, failed for good, or waiting for the study to end: nothing is owed
    wait = (step.next_attempt_at - dt.datetime.now(dt.UTC)).total_seconds()
    if wait > 0:
        raise Retry("not due yet", delay=wait)
    lease = deps.settings.worklist_mpps_lease_s
    claimed = await mpps_queue.claim(deps.pool, step.id, deps.owner, lease)
    if claimed is None:
        raise Retry("held elsewhere", delay=min(lease, 30.0))
    async with delivery.working():
        state = await mpps_work.perform(claimed, deps)
    if state == "failed-retrying":
        again = await mpps_repo.get_step(deps.pool, msg.step_id)
        delay = (again.next_attempt_at - dt.datetime.now(dt.UTC)).total_seconds() if again else 1
        raise Retry("transient MPPS failure", delay=max(delay, 0.1))


JobHandler = Callable[[Any, Delivery, Deps], Awaitable[None]]

#: (stream, durable, message, handler): the durable consumers of the MPPS SCU. Events are
#: read from when each consumer is first made (a station that enables MPPS does not replay
#: the history of its studies); the job is paced by `mpps_steps.next_attempt_at`.
CONSUMERS: list[tuple[str, str, type[Message], JobHandler]] = [
    ("CB_EVENTS", "worklist-mpps-media-captured", MediaCaptured, handle_media_captured),
    ("CB_EVENTS", "worklist-mpps-study-changed", StudyChanged, handle_study_changed),
    ("CB_EVENTS", "worklist-mpps-study-saved", StudySaved, handle_study_saved),
    ("CB_EVENTS", "worklist-mpps-instance-created", InstanceCreated, handle_instance_created),
    ("CB_EVENTS", "worklist-mpps-conversion-failed", ConversionFailed, handle_conversion_failed),
    ("CB_EVENTS", "worklist-mpps-discontinued", StudyDiscontinued, handle_study_discontinued),
    ("CB_JOBS", "worklist-mpps", MppsStepDue, handle_mpps_step_due),
]
