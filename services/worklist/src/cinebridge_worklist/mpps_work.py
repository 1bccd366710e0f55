"""One request of a performed procedure step: build the attribute list, send it, decide what
the answer means for the step (PS3.4 F.7.2, IHE RAD-6/RAD-7), record it."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, cast

from cinebridge_common.logging import kv
from cinebridge_common.messages.worklist import MppsState
from cinebridge_common.station import StationSettings, load_station_settings
from cinebridge_common.supervise import backoff_delay
from cinebridge_dicom import dimse
from pydicom.dataset import Dataset

from . import metrics, mpps, mpps_scu, scu
from . import mpps_queue_repository as mpps_queue
from . import mpps_repository as repo
from . import mpps_study_repository as mpps_study
from .lookup import Deps

log = logging.getLogger(__name__)


async def perform(step: repo.Step, deps: Deps) -> MppsState | None:
    """Send what the claimed step owes (N-CREATE first, N-SET only after it succeeded) and
    record the answer; returns the state now stored (None: the lease was lost meanwhile)."""
    operation: mpps.Operation = "set" if step.created else "create"
    server = await repo.server(deps.pool, step.server_id)
    study = await repo.study_row(deps.pool, step.study_id)
    if server is None or study is None or not server.mpps_enabled:
        why = "the study is gone" if study is None else f"no MPPS SCP on server {step.server_id}"
        return await _record(deps, step, operation, "failed", None, why)
    station = await load_station_settings(deps.pool)
    peer = scu.Peer(
        host=server.mpps_host or server.host,
        port=server.mpps_port or server.port,
        called_ae=server.mpps_ae or server.called_ae,
        calling_ae=server.calling_ae or station.local_ae_title,
    )
    if step.scheduled is False:
        # The step left unscheduled: it ends as it began, whatever the study was linked to
        # since (the Scheduled Step Attributes Sequence is not N-SET-able, PS3.4 F.7.2).
        study = {**study, "worklist_item": None}
    ds, field = await _attributes(step, study, station, peer, deps)
    scheduled = bool(study.get("worklist_item"))
    await mpps_queue.mark_sent(deps.pool, step.id, operation, scheduled)
    timeout = deps.settings.worklist_mpps_timeout_s
    answer = await asyncio.to_thread(mpps_scu.send, peer, field, step.sop_instance_uid, ds, timeout)
    if answer.status is None:
        verdict: mpps.Verdict = "retry" if answer.transient else "failed"
        text = f"N-{operation.upper()} not answered: {answer.comment}"
    else:
        verdict, text = mpps.classify(
            operation,
            answer.status,
            error_id=answer.error_id,
            comment=answer.comment,
            sent_before=step.set_sent if step.created else step.create_sent,
        )
    metrics.MPPS_REQUESTS.labels(server.id, operation, verdict).inc()
    state = await _record(deps, step, operation, verdict, answer.status, text)
    if operation == "create" and not scheduled:
        # Reconciled while this unscheduled N-CREATE was on its way (RAD TF-2 4.7.4.1.3).
        async with deps.pool.acquire() as conn, conn.transaction():
            await mpps_study.relink(conn, str(step.study_id), dt.datetime.now(dt.UTC))
    return state


async def _attributes(
    step: repo.Step, study: dict[str, Any], station: StationSettings, peer: scu.Peer, deps: Deps
) -> tuple[Dataset, int]:
    """The N-CREATE attribute list of a step not yet created, else its final N-SET."""
    if not step.created:
        facts = mpps.StepFacts(
            pps_id=step.pps_id,
            started_at=step.started_at,
            station_ae=peer.calling_ae,
            station_name=station.station_name,
            location=study.get("room") or "",
            character_set=station.character_set,
        )
        return mpps.n_create(study, facts), dimse.N_CREATE_RQ
    # Claimed as pending-set (or retrying one): the study's end is recorded (_set_due).
    assert step.final_status in ("COMPLETED", "DISCONTINUED") and step.ended_at is not None
    ds = mpps.n_set(
        study,
        cast(mpps.FinalStatus, step.final_status),
        step.ended_at,
        await repo.performed_instances(deps.pool, step.id),
        operator=step.operator,
        reason=step.reason,
        character_set=station.character_set,
    )
    return ds, dimse.N_SET_RQ


def next_state(
    step: repo.Step, operation: mpps.Operation, verdict: mpps.Verdict, max_attempts: int
) -> MppsState:
    """After N-CREATE: in progress, or straight on to the N-SET when the study already ended;
    after N-SET: the final status; a transient failure retries until `max_attempts`."""
    if verdict in ("done", "warning"):
        if operation == "set":
            return "completed" if step.final_status == "COMPLETED" else "discontinued"
        return "pending-set" if step.final_status else "in-progress"
    if verdict == "retry" and step.attempts + 1 < max_attempts:
        return "failed-retrying"
    return "failed"


async def _record(
    deps: Deps,
    step: repo.Step,
    operation: mpps.Operation,
    verdict: mpps.Verdict,
    status: int | None,
    text: str,
) -> MppsState | None:
    settings = deps.settings
    state = next_state(step, operation, verdict, settings.worklist_mpps_max_attempts)
    created = step.created or (operation == "create" and verdict in ("done", "warning"))
    retry_in = (
        backoff_delay(
            step.attempts + 1,
            settings.worklist_mpps_backoff_s,
            settings.worklist_mpps_backoff_cap_s,
        )
        if state == "failed-retrying"
        else 0.0
    )
    error = None if verdict == "done" else text
    stored = await mpps_queue.record_answer(
        deps.pool,
        step,
        deps.owner,
        state=state,
        created=created,
        status=status,
        error=error,
        retry_in_s=retry_in,
    )
    level = logging.INFO if verdict in ("done", "warning") else logging.WARNING
    log.log(
        level,
        "mpps request done",
        extra=kv(
            step=step.id,
            study=step.study_id,
            operation=operation,
            outcome=verdict,
            state=state,
            detail=text,
        ),
    )
    return stored.state if stored is not None else None
