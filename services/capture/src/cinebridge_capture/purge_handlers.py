"""Bus handlers of the local purge policy (docs/purge.md): the hold of a study (a catalog RPC in
the queue group `capture-catalog`) and the converter's report that a study's DICOM files are
gone. Tables at the bottom, bound in app.py beside the catalog's."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from cinebridge_common.consumers import Delivery
from cinebridge_common.logging import kv
from cinebridge_common.messages.base import Event, Reply, Request
from cinebridge_common.messages.purge import (
    CatalogHoldStudy,
    CatalogHoldStudyReply,
    InstancesPurged,
)

from . import purge_repository as repo
from .purge import PurgeDeps, finish_study

log = logging.getLogger(__name__)


async def handle_catalog_hold(req: CatalogHoldStudy, deps: PurgeDeps) -> CatalogHoldStudyReply:
    try:
        study_id = uuid.UUID(req.study_id)
    except ValueError:
        return CatalogHoldStudyReply(
            ok=False, error=f"study id {req.study_id[:40]!r} is not a UUID"
        )
    hold = await repo.set_held(deps.pool, study_id, req.held, req.by)
    if not hold.found:
        return CatalogHoldStudyReply(ok=False, error=f"study {req.study_id} does not exist")
    log.info("study hold", extra=kv(study=req.study_id, held=hold.held, by=req.by or ""))
    return CatalogHoldStudyReply(study_id=req.study_id, held=hold.held, purged=hold.purged)


async def handle_instances_purged(msg: InstancesPurged, _d: Delivery, deps: PurgeDeps) -> None:
    """The converter's half of a purge is done; the study is marked purged once capture's half
    is too (else the planner's next run finishes it)."""
    try:
        study_id = uuid.UUID(msg.study_id)
    except ValueError:
        log.warning("purged study id is not a UUID", extra=kv(study=msg.study_id[:40]))
        return  # acked: a redelivery would not make it one
    if not await repo.dicom_removed(deps.pool, study_id, msg.instances, msg.bytes):
        log.warning("DICOM files purged for a study with no purge", extra=kv(study=msg.study_id))
        return
    await finish_study(deps.pool, study_id)


PurgeRpcHandler = Callable[[Any, PurgeDeps], Awaitable[Reply]]
PurgeEventHandler = Callable[[Any, Delivery, PurgeDeps], Awaitable[None]]

#: (request type, handler): served in the catalog's queue group.
PURGE_RPC: list[tuple[type[Request], PurgeRpcHandler]] = [
    (CatalogHoldStudy, handle_catalog_hold),
]
#: (durable consumer on CB_EVENTS, event type, handler), shared by every capture process.
PURGE_CONSUMERS: list[tuple[str, type[Event], PurgeEventHandler]] = [
    ("capture-purge-instances-purged", InstancesPurged, handle_instances_purged),
]
