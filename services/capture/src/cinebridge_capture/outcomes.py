"""How a room's stopped recordings end: the file closed, probed, hashed and registered in the
background, and each source's last outcome (stopping, done, empty, failed) for the room status.

A stop answers at once (an encoder far behind on a loaded box, or an hours-long recording,
takes longer than an RPC may wait); what follows lands here and in a state event for the screens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from cinebridge_common.logging import kv
from cinebridge_common.messages.capture import MediaCaptured, RecordingOutcome
from cinebridge_common.store import MediaStore, sha256_file

from . import metrics
from . import repository as repo
from .encoding import RecordingFormat
from .pipeline import SourcePipeline
from .pipeline_types import FinishedRecording
from .recorder import DISK_FULL_ERRNOS, describe_write_error, probe

log = logging.getLogger(__name__)

#: A finished recording whose registration hits a full disk is retried this often, this far
#: apart (10 min in all); past that, the next start of the service registers it (recovery).
REGISTER_DISK_FULL_TRIES = 120
REGISTER_DISK_FULL_WAIT_S = 5.0
CLOSE_REGISTER_WAIT_S = 60.0
NO_FRAME = "the recording held no frame"

#: (source, state, detail, recording id): the room's state event for its screens.
EmitState = Callable[[str, str, str, str | None], None]


@dataclass(frozen=True)
class RecordingMeta:
    recording_id: uuid.UUID
    study_id: uuid.UUID
    part_rel: str
    fmt: RecordingFormat


class RecordingOutcomes:
    """The stopped recordings of one room, from the stop to their registration."""

    def __init__(
        self,
        room: str,
        pool: asyncpg.Pool,
        store: MediaStore,
        pipelines: Mapping[str, SourcePipeline],
        emit_state: EmitState,
    ) -> None:
        self.room, self.pool, self.store = room, pool, store
        self.pipelines = pipelines
        self.emit_state = emit_state
        #: How each source's last stopped recording ended (the room status shows it).
        self.last: dict[str, RecordingOutcome] = {}
        #: Why each source's last recording ended without the operator asking (disk full...).
        self.ended: dict[str, str] = {}
        self._finishing: dict[str, asyncio.Task[None]] = {}
        self._registrations: set[asyncio.Task[None]] = set()

    def begin(self, source: str, meta: RecordingMeta, reason: str | None) -> None:
        """The source was told to stop: finish its recording in the background."""
        self.last[source] = RecordingOutcome(
            recording_id=str(meta.recording_id), study_id=str(meta.study_id), state="stopping"
        )
        self._finishing[source] = asyncio.create_task(self._finish(source, meta, reason))

    def stopping(self, source: str) -> bool:
        """A stopped recording of this source is still being finished."""
        return source in self._finishing

    async def wait_stopped(self, source: str) -> None:
        """Wait until the source's stopped recording is closed (registering may go on)."""
        task = self._finishing.get(source)
        if task is not None:
            await asyncio.shield(task)

    async def close(self) -> None:
        """Every stopped recording closed; registrations given CLOSE_REGISTER_WAIT_S."""
        for name in list(self._finishing):
            with contextlib.suppress(Exception):
                await self.wait_stopped(name)
        if self._registrations:
            # One waiting for disk space is left to the next start (its journal row says so).
            _, waiting = await asyncio.wait(self._registrations, timeout=CLOSE_REGISTER_WAIT_S)
            for task in waiting:
                task.cancel()
            await asyncio.gather(*self._registrations, return_exceptions=True)

    async def _finish(self, source: str, meta: RecordingMeta, reason: str | None) -> None:
        try:
            finished = await asyncio.to_thread(self.pipelines[source].stop_recording, reason)
            if finished is not None and finished.reason and reason != "service stopping":
                self.ended[source] = finished.reason
            if finished is None or finished.frames == 0:
                await repo.finish_recording(self.pool, meta.recording_id, None, "empty")
                self._settle(source, meta, "empty", detail=NO_FRAME)
                return
            media_id = uuid.uuid4()
            await repo.plan_media(self.pool, meta.recording_id, media_id)
        except Exception as exc:
            # The journal still says "recording": the next start salvages the file.
            log.exception(
                "stopping the recording failed", extra=kv(recording_id=str(meta.recording_id))
            )
            self._settle(source, meta, "failed", detail=f"the recording was not finished: {exc}")
            return
        finally:
            self._finishing.pop(source, None)
        task = asyncio.create_task(self._register(source, meta, finished, media_id))
        self._registrations.add(task)
        task.add_done_callback(self._registrations.discard)

    def _settle(
        self,
        source: str,
        meta: RecordingMeta,
        state: str,
        event: MediaCaptured | None = None,
        detail: str | None = None,
    ) -> None:
        """Record how a stopped recording ended and tell the screens (a state event)."""
        outcome = RecordingOutcome(
            recording_id=str(meta.recording_id),
            study_id=str(meta.study_id),
            state=state,  # type: ignore[arg-type]
            media_id=event.media_id if event else None,
            frames=event.frames if event else None,
            duration_s=event.duration_s if event else None,
            detail=detail,
        )
        current = self.last.get(source)
        if current is None or current.recording_id == outcome.recording_id:
            self.last[source] = outcome
        pipeline = self.pipelines[source]
        self.emit_state(
            source,
            "idle" if pipeline.signal else "no-signal",
            f"recording {state}" + (f": {detail}" if detail else ""),
            str(meta.recording_id),
        )

    async def _register(
        self, source: str, meta: RecordingMeta, finished: FinishedRecording, media_id: uuid.UUID
    ) -> None:
        try:
            event = await self._commit_when_room(source, meta, finished, media_id)
        except Exception as exc:
            # The journal still says "recording": the next start registers it under media_id.
            log.exception(
                "registering recording failed", extra=kv(recording_id=str(meta.recording_id))
            )
            self._settle(
                source,
                meta,
                "failed",
                detail="the file is kept and registered at the next start of the capture "
                f"service: {describe_write_error(exc) if isinstance(exc, OSError) else exc}",
            )
            return
        self._settle(source, meta, "done", event=event, detail=finished.reason)
        log.info(
            "recording registered",
            extra=kv(
                room=self.room,
                source=source,
                media_id=event.media_id,
                frames=event.frames,
                duration_s=event.duration_s,
                reason=finished.reason or "requested",
            ),
        )

    async def _commit_when_room(
        self, source: str, meta: RecordingMeta, finished: FinishedRecording, media_id: uuid.UUID
    ) -> MediaCaptured:
        """Register a finished recording; a full disk (the final directory cannot be made) is
        waited out for a while, since the operator is told to free space."""
        for attempt in range(REGISTER_DISK_FULL_TRIES):
            try:
                return await self.commit_recording(
                    source,
                    meta,
                    finished.path,
                    finished.passthrough,
                    media_id,
                    recovered=False,
                    ended=finished.reason,
                )
            except OSError as exc:
                if exc.errno not in DISK_FULL_ERRNOS or attempt == REGISTER_DISK_FULL_TRIES - 1:
                    raise
                log.warning(
                    "recording waits for disk space to be registered",
                    extra=kv(recording_id=str(meta.recording_id), error=describe_write_error(exc)),
                )
                await asyncio.sleep(REGISTER_DISK_FULL_WAIT_S)
        raise AssertionError("unreachable")

    async def commit_recording(
        self,
        source: str,
        meta: RecordingMeta,
        path: Path,
        passthrough: bool,
        media_id: uuid.UUID,
        *,
        recovered: bool,
        ended: str | None = None,
    ) -> MediaCaptured:
        """Move a complete file into place and register it (media row + event, one commit)."""
        facts = await asyncio.to_thread(probe, path)
        sha = await asyncio.to_thread(sha256_file, path)
        size = (await asyncio.to_thread(path.stat)).st_size
        final_rel = self.store.new_relative("recordings", meta.fmt.ext)
        await repo.set_final_path(self.pool, meta.recording_id, final_rel)
        await asyncio.to_thread(self.store.commit_temp, path, final_rel)
        event = MediaCaptured(
            media_id=str(media_id),
            study_id=str(meta.study_id),
            room=self.room,
            source=source,
            kind="recording",
            rel_path=final_rel,
            size=size,
            sha256=sha,
            mime=meta.fmt.mime,
            width=facts.width,
            height=facts.height,
            frames=facts.frames,
            duration_s=round(facts.duration_s, 3),
            fps=facts.fps,
            codec=facts.codec,
            recovered=recovered,
        )
        state = "recovered" if recovered else "done"
        # Why it ended early (disk full, maximum duration, source lost) stays on the journal.
        await repo.finish_recording(
            self.pool, meta.recording_id, event, state, error=ended, passthrough=passthrough
        )
        metrics.RECORDED_SECONDS.labels(self.room, source).inc(facts.duration_s)
        return event
