"""Crash recovery: recordings journalled as in progress are salvaged and registered at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from cinebridge_common.logging import kv

from . import repository as repo
from .encoding import Mode, recording_format
from .outcomes import RecordingMeta
from .recorder import RecordingUnreadable, salvage
from .room import Room

log = logging.getLogger(__name__)


async def recover_recordings(room: Room) -> int:
    """Register every recording this room left in progress; returns how many were registered.

    The salvaged file holds every fragment that reached the disk (with the default 1 s fragments
    and 2 s fsync interval: all but the last seconds). A recording whose file was already moved
    into place before the crash is registered from there.
    """
    registered = 0
    for rec in await repo.open_recordings(room.pool, room.name):
        fmt = recording_format(_mode(rec.mode))
        meta = RecordingMeta(rec.id, rec.study_id, rec.part_path, fmt)
        part = room.store.resolve(rec.part_path)
        final = room.store.resolve(rec.final_path) if rec.final_path else None
        try:
            if final is not None and final.exists() and not part.exists():
                source = final
            elif part.exists():
                source = room.store.temp_path("." + fmt.ext)
                await asyncio.to_thread(salvage, part, source, fmt)
            else:
                raise RecordingUnreadable("the recording file is missing")
            # Stopped but not yet registered: the file was complete and keeps its media id.
            event = await room.outcomes.commit_recording(
                rec.source,
                meta,
                source,
                rec.passthrough,
                rec.planned_media_id or uuid.uuid4(),
                recovered=rec.planned_media_id is None,
            )
        except RecordingUnreadable as exc:
            log.warning(
                "recording not recoverable", extra=kv(recording_id=str(rec.id), reason=str(exc))
            )
            await repo.finish_recording(room.pool, rec.id, None, "empty", str(exc))
        else:
            registered += 1
            log.info(
                "recording recovered",
                extra=kv(
                    recording_id=str(rec.id),
                    media_id=event.media_id,
                    frames=event.frames,
                    duration_s=event.duration_s,
                ),
            )
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    return registered


def _mode(value: str) -> Mode:
    return value if value in ("h264", "mpeg2-ml", "mpeg2-hl") else "h264"  # type: ignore[return-value]
