"""RPC handlers of the study catalog (`cb.rpc.capture.catalog.*`): what other services ask of
`studies` and `media`, which capture owns. Every capture process answers them, in one queue
group, so the catalog answers while any room runs. The subscription table is at the bottom."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from cinebridge_common.consumers import ConsumerSpec, Delivery
from cinebridge_common.logging import kv
from cinebridge_common.messages.base import Event, Reply, Request
from cinebridge_common.messages.capture import (
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
)
from cinebridge_common.messages.converter import (
    ConversionFailed,
    ConversionProgressed,
    InstanceCreated,
)
from cinebridge_common.messages.gateway import StudySaved

from . import catalog_repository as catalog
from .repository import StudyNotFound

log = logging.getLogger(__name__)

#: The queue group of every capture process's catalog subscription.
QUEUE = "capture-catalog"


@dataclass(frozen=True)
class CatalogDeps:
    pool: asyncpg.Pool


async def handle_catalog_reconcile(
    req: CatalogReconcile, deps: CatalogDeps
) -> CatalogReconcileReply:
    try:
        done = await catalog.reconcile_study(deps.pool, req.study_id, req.item, req.by or "capture")
    except catalog.ReconcileError as exc:
        # A domain refusal, not a fault: the operator sees why (unknown study, UID taken ...).
        return CatalogReconcileReply(ok=False, error=str(exc), study_id=req.study_id)
    return CatalogReconcileReply(
        study_id=done.study_id,
        study_instance_uid=done.study_instance_uid,
        previous_study_instance_uid=done.previous_study_instance_uid,
    )


async def handle_catalog_delete_media(
    req: CatalogDeleteMedia, deps: CatalogDeps
) -> CatalogDeleteMediaReply:
    try:
        media_id = uuid.UUID(req.media_id)
    except ValueError:
        return CatalogDeleteMediaReply(
            ok=False, error=f"media id {req.media_id[:40]!r} is not a UUID"
        )
    study = await catalog.delete_media(deps.pool, media_id)
    return CatalogDeleteMediaReply(
        deleted=study is not None, study_id=str(study) if study else None
    )


async def handle_catalog_add_media(req: CatalogAddMedia, deps: CatalogDeps) -> CatalogAddMediaReply:
    try:
        await catalog.add_media(deps.pool, req.media)
    except (StudyNotFound, ValueError) as exc:
        return CatalogAddMediaReply(ok=False, error=str(exc))
    return CatalogAddMediaReply(media_id=req.media.media_id)


async def handle_catalog_create_study(
    req: CatalogCreateStudy, deps: CatalogDeps
) -> CatalogCreateStudyReply:
    try:
        uuid.UUID(req.study.id)
        await catalog.create_study(deps.pool, req.study, req.by or "capture")
    except catalog.StudyConflict as exc:
        return CatalogCreateStudyReply(ok=False, error=str(exc), conflict=True)
    except ValueError as exc:
        return CatalogCreateStudyReply(ok=False, error=str(exc))
    return CatalogCreateStudyReply(study_id=req.study.id)


async def handle_catalog_edit_study(
    req: CatalogEditStudy, deps: CatalogDeps
) -> CatalogEditStudyReply:
    try:
        study_id = uuid.UUID(req.study_id)
        done = await catalog.edit_study(
            deps.pool, study_id, req.changes, req.read_at, req.by or "capture"
        )
    except ValueError as exc:  # StudyConflict among them: the asker shows why
        return CatalogEditStudyReply(ok=False, error=str(exc))
    return CatalogEditStudyReply(found=done.found, stale=done.stale)


async def handle_catalog_drop_empty_study(
    req: CatalogDropEmptyStudy, deps: CatalogDeps
) -> CatalogDropEmptyStudyReply:
    try:
        study_id = uuid.UUID(req.study_id)
    except ValueError:
        return CatalogDropEmptyStudyReply(ok=False, error=f"{req.study_id[:40]!r} is not a UUID")
    return CatalogDropEmptyStudyReply(dropped=await catalog.drop_empty_study(deps.pool, study_id))


async def handle_study_saved(msg: StudySaved, _d: Delivery, deps: CatalogDeps) -> None:
    """A durable event, so a Save made while no room ran is recorded when one starts."""
    try:
        study_id = uuid.UUID(msg.study_id)
    except ValueError:
        log.warning("saved study id is not a UUID", extra=kv(study=msg.study_id[:40]))
        return  # acked: a redelivery would not make it one
    if not await catalog.mark_saved(deps.pool, study_id):
        log.warning("saved study is not in the catalog", extra=kv(study=msg.study_id))


def _media_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None  # an instance handed in by `cinebridge send` belongs to no media item


async def handle_instance_created(msg: InstanceCreated, _d: Delivery, deps: CatalogDeps) -> None:
    """The converter committed the item's instances: it is converted. Every part of a recording
    is committed and announced in one transaction, so any part's event says so."""
    if (media_id := _media_id(msg.media_id)) is not None:
        await catalog.record_conversion(deps.pool, media_id, "converted", None, msg.occurred_at)


async def handle_conversion_failed(msg: ConversionFailed, _d: Delivery, deps: CatalogDeps) -> None:
    if (media_id := _media_id(msg.media_id)) is not None:
        await catalog.record_conversion(deps.pool, media_id, "failed", msg.reason, msg.occurred_at)


async def handle_conversion_progressed(
    msg: ConversionProgressed, _d: Delivery, deps: CatalogDeps
) -> None:
    """The item is being converted; only its first report changes the row (the state
    machine has no step between the first and the outcome)."""
    if (media_id := _media_id(msg.media_id)) is not None:
        await catalog.record_conversion(deps.pool, media_id, "converting", None, msg.occurred_at)


CatalogHandler = Callable[[Any, CatalogDeps], Awaitable[Reply]]

#: (request type, handler); each is served on its own subject in the queue group QUEUE.
CATALOG_HANDLERS: list[tuple[type[Request], CatalogHandler]] = [
    (CatalogReconcile, handle_catalog_reconcile),
    (CatalogDeleteMedia, handle_catalog_delete_media),
    (CatalogAddMedia, handle_catalog_add_media),
    (CatalogCreateStudy, handle_catalog_create_study),
    (CatalogEditStudy, handle_catalog_edit_study),
    (CatalogDropEmptyStudy, handle_catalog_drop_empty_study),
]

EventHandler = Callable[[Any, Delivery, CatalogDeps], Awaitable[None]]

#: (durable consumer on CB_EVENTS, event type, handler): events other services publish for the
#: catalog to apply. Every capture process runs the same durable, so each event is applied once.
#: The converter's outcomes set `media.state` (its events carry when they occurred: the three
#: durables run apart, and an older event never overrides a newer one).
CATALOG_CONSUMERS: list[tuple[str, type[Event], EventHandler]] = [
    ("capture-catalog-study-saved", StudySaved, handle_study_saved),
    ("capture-catalog-instance-created", InstanceCreated, handle_instance_created),
    ("capture-catalog-conversion-failed", ConversionFailed, handle_conversion_failed),
    ("capture-catalog-conversion-progressed", ConversionProgressed, handle_conversion_progressed),
]

#: Progress is only worth its moment: a consumer created after it (a new station, an upgrade)
#: starts with the next report rather than the stream's week of them; the outcomes are kept.
_NEW_ONLY = {"capture-catalog-conversion-progressed"}


def consumer_spec(durable: str, subject: str) -> ConsumerSpec:
    return ConsumerSpec(
        stream="CB_EVENTS",
        durable=durable,
        filter_subject=subject,
        deliver_new_only=durable in _NEW_ONLY,
    )
