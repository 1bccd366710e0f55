"""The converter's half of a purge (docs/purge.md): remove the DICOM files it wrote for a study
capture started to purge (capture asked the sender first: every destination requiring
commitment committed it), mark the instances, report `cb.evt.instances.purged`."""

from __future__ import annotations

import asyncio
import logging
import uuid

from cinebridge_common.bus import Delivery, Poison
from cinebridge_common.logging import kv
from cinebridge_common.messages.purge import PurgeStudyFiles
from cinebridge_common.store import UnsafePath

from . import purge_repository as repo
from .jobs import ConverterDeps

log = logging.getLogger(__name__)


async def handle_purge_study(msg: PurgeStudyFiles, _d: Delivery, deps: ConverterDeps) -> None:
    """Idempotent: a repeated job finds only what is left, and reports the same totals."""
    try:
        study_id = uuid.UUID(msg.study_id)
    except ValueError as exc:
        raise Poison(f"study id {msg.study_id[:40]!r} is not a UUID") from exc
    files = await repo.unpurged_files(deps.pool, study_id, msg.started_at)
    for item in files:
        try:
            await asyncio.to_thread(deps.store.delete, item.rel_path)
        except UnsafePath:
            # Never a file of the store: nothing of it to remove; the row is marked all the same.
            log.warning("instance path outside the store", extra=kv(instance=item.instance_id))
    event = await repo.mark_purged(deps.pool, study_id, files)
    log.info(
        "study DICOM files purged",
        extra=kv(study=msg.study_id, removed=len(files), instances=event.instances),
    )
