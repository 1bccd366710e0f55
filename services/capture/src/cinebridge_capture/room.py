"""The room: its source pipelines, its current study, and the snapshot/record/stop commands.

Every capture ends the same way: the file is durable in the media store, then its `media` row
and its `MediaCaptured` event commit in one transaction (outbox). Pipeline work (JPEG, muxing,
file moves, hashing) runs in worker threads; this module only orchestrates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from cinebridge_common.logging import kv
from cinebridge_common.messages.base import Message
from cinebridge_common.messages.capture import (
    CaptureStateChanged,
    MediaCaptured,
    RecordingOutcome,
    RoomStudyChanged,
)
from cinebridge_common.station import load_station_settings
from cinebridge_common.store import MediaStore, sha256_file

from . import metrics
from . import repository as repo
from .encoding import EncoderSettings, Mode, RecordingFormat, mode_for, recording_format
from .pipeline import SourcePipeline
from .pipeline_types import AlreadyRecording, FinishedRecording, NoSignal, PipelineOptions
from .priority import set_thread_nice
from .recorder import DISK_FULL_ERRNOS, describe_write_error, probe
from .settings import CaptureSettings, KeyAction
from .snapshot import jpeg_from_frame

log = logging.getLogger(__name__)

#: A finished recording whose registration hits a full disk is retried this often, this far
#: apart (10 min in all); past that, the next start of the service registers it (recovery).
REGISTER_DISK_FULL_TRIES = 120
REGISTER_DISK_FULL_WAIT_S = 5.0
CLOSE_REGISTER_WAIT_S = 60.0
NO_FRAME = "the recording held no frame"

Emit = Callable[[Message], Coroutine[Any, Any, None]]


class CaptureRefused(RuntimeError):
    """A command that cannot be carried out now (unknown source, not recording, low disk...)."""


@dataclass(frozen=True)
class RecordingMeta:
    recording_id: uuid.UUID
    study_id: uuid.UUID
    part_rel: str
    fmt: RecordingFormat


def pipeline_options(settings: CaptureSettings) -> PipelineOptions:
    return PipelineOptions(
        encoder=EncoderSettings(
            encoder=settings.capture_encoder,
            preset=settings.capture_x264_preset,
            tune=settings.capture_x264_tune,
            x264_params=settings.capture_x264_params,
            crf=settings.capture_crf,
            threads=settings.capture_encoder_threads,
            gop_s=settings.capture_gop_s,
        ),
        passthrough=settings.capture_passthrough,
        passthrough_decode=settings.capture_passthrough_decode,
        prerecord_s=settings.capture_prerecord_s,
        thread_nice=settings.capture_thread_nice,
        queue_s=settings.capture_encoder_queue_s,
        signal_timeout_s=settings.capture_signal_timeout_ms / 1000,
        open_timeout_s=settings.capture_open_timeout_s,
        reconnect_max_s=settings.capture_reconnect_max_s,
        fsync_interval_s=settings.capture_fsync_interval_s,
    )


class Room:
    def __init__(
        self, settings: CaptureSettings, pool: asyncpg.Pool, store: MediaStore, emit: Emit
    ) -> None:
        self.settings = settings
        self.name = settings.capture_room
        self.pool = pool
        self.store = store
        self.emit = emit
        self.loop = asyncio.get_running_loop()
        options = pipeline_options(settings)
        self.pipelines = {
            s.name: SourcePipeline(s, options, "h264", self._state_callback(s.name))
            for s in settings.capture_sources
        }
        # Snapshot pictures are decoded and compressed here, at the recording threads' priority
        # (brief bursts), not in the default executor behind database or file work.
        self._snapshots = ThreadPoolExecutor(
            max_workers=2,
            thread_name_prefix="snapshot",
            initializer=set_thread_nice,
            initargs=(settings.capture_thread_nice,),
        )
        self.active: dict[str, RecordingMeta] = {}
        #: How each source's last stopped recording ended (the room status shows it).
        self.last: dict[str, RecordingOutcome] = {}
        self._finishing: dict[str, asyncio.Task[None]] = {}
        #: Why each source's last recording ended without the operator asking (disk full...).
        self.ended: dict[str, str] = {}
        self._locks = {name: asyncio.Lock() for name in self.pipelines}
        self._tasks: set[asyncio.Task[None]] = set()
        self._registrations: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        mode = await self.video_mode()
        for pipeline in self.pipelines.values():
            pipeline.mode = mode
            pipeline.start()

    async def close(self) -> None:
        for name in list(self.active):
            with contextlib.suppress(Exception):
                await self.record_stop(name, reason="service stopping")
        # Every stopped recording is closed before the pipelines go (its registration may wait).
        for name in list(self._finishing):
            with contextlib.suppress(Exception):
                await self.wait_stopped(name)
        if self._registrations:
            # One waiting for disk space is left to the next start (its journal row says so).
            _, waiting = await asyncio.wait(self._registrations, timeout=CLOSE_REGISTER_WAIT_S)
            for task in waiting:
                task.cancel()
            await asyncio.gather(*self._registrations, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(p.close) for p in self.pipelines.values()))
        self._snapshots.shutdown(wait=False)

    async def video_mode(self) -> Mode:
        station = await load_station_settings(self.pool)
        return mode_for(self.settings.capture_video_mode, station.video_transfer_syntax)

    def disk_free(self) -> int:
        return shutil.disk_usage(self.store.root).free

    # -- commands --------------------------------------------------------------------------
    def pipeline(self, source: str) -> SourcePipeline:
        pipeline = self.pipelines.get(source)
        if pipeline is None:
            raise CaptureRefused(f"room {self.name} has no source {source!r}")
        return pipeline

    async def snapshot(self, source: str, study: uuid.UUID | None) -> MediaCaptured:
        started = time.perf_counter()
        picture = self.pipeline(source).picture_now()  # the moment of the request
        rel = self.store.new_relative("media", "jpg")
        # The picture is decoded (pass-through: from the GOP so far), made a JPEG and fsync'd
        # in the snapshot thread while the study is looked up (or created).
        written = asyncio.ensure_future(
            self.loop.run_in_executor(self._snapshots, self._write_jpeg, picture, rel)
        )
        try:
            study_id = await self._study_for_capture(study)
        except BaseException:
            await asyncio.gather(written, return_exceptions=True)
            await asyncio.to_thread(self.store.delete, rel)
            raise
        try:
            sha, size, (width, height) = await written
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            # Nothing half-written stays (the store writes a temporary file, then renames).
            raise CaptureRefused(f"snapshot not stored: {describe_write_error(exc)}") from exc
        stored = time.perf_counter()
        event = MediaCaptured(
            media_id=str(uuid.uuid4()),
            study_id=str(study_id),
            room=self.name,
            source=source,
            kind="snapshot",
            rel_path=rel,
            size=size,
            sha256=sha,
            mime="image/jpeg",
            width=width,
            height=height,
            codec="jpeg",
        )
        await repo.register_snapshot(self.pool, event)
        done = time.perf_counter()
        metrics.SNAPSHOT_SECONDS.labels(self.name).observe(done - started)
        log.info(
            "snapshot",
            extra=kv(
                room=self.name,
                source=source,
                media_id=event.media_id,
                file_ms=round((stored - started) * 1000),
                total_ms=round((done - started) * 1000),
            ),
        )
        return event

    def _write_jpeg(self, picture: Callable[[], Any], rel: str) -> tuple[str, int, tuple[int, int]]:
        frame = picture()
        jpeg = jpeg_from_frame(frame, self.settings.capture_jpeg_quality)
        return self.store.write_bytes(rel, jpeg), len(jpeg), (frame.width, frame.height)

    async def record_start(self, source: str, study: uuid.UUID | None) -> RecordingMeta:
        pipeline = self.pipeline(source)
        async with self._locks[source]:
            self.ended.pop(source, None)
            if source in self.active:
                raise CaptureRefused(f"source {source} is already recording")
            if self.stopping(source):
                raise CaptureRefused(
                    f"the last recording of {source} is still being finished; "
                    "record again in a moment"
                )
            free = self.disk_free()
            if free < self.settings.capture_disk_reserve_bytes:
                raise CaptureRefused(
                    f"disk free {free} B is below the reserve "
                    f"{self.settings.capture_disk_reserve_bytes} B"
                )
            if not pipeline.signal:
                raise NoSignal(f"source {source} has no signal")
            study_id = await self._study_for_capture(study)
            mode = await self.video_mode()
            fmt = recording_format(mode)
            recording_id = uuid.uuid4()
            part_rel = f"recordings/inprogress/{recording_id.hex}.{fmt.ext}"
            part = self.store.resolve(part_rel)
            part.parent.mkdir(parents=True, exist_ok=True)
            # Journal first: a crash after this leaves a row that recovery salvages.
            await repo.open_recording(
                self.pool,
                repo.OpenRecording(
                    recording_id, self.name, source, study_id, mode, False, part_rel
                ),
            )
            try:
                await asyncio.to_thread(pipeline.start_recording, str(recording_id), part, mode)
            except Exception as exc:
                await repo.finish_recording(self.pool, recording_id, None, "failed", repr(exc))
                raise
            meta = RecordingMeta(recording_id, study_id, part_rel, fmt)
            self.active[source] = meta
        log.info(
            "recording started",
            extra=kv(room=self.name, source=source, recording_id=str(recording_id), mode=mode),
        )
        return meta

    async def record_stop(self, source: str, reason: str | None = None) -> RecordingMeta:
        """Stop and answer at once: the frames still queued for the encoder, closing the file,
        probing, hashing and registering it follow in the background (an encoder far behind on
        a loaded box, or an hours-long recording, takes longer than an RPC may wait). The
        outcome lands in `last[source]` and its events: the room status shows it."""
        self.pipeline(source)
        async with self._locks[source]:
            meta = self.active.pop(source, None)
            if meta is None:
                ended = self.ended.get(source)
                raise CaptureRefused(
                    f"source {source} is not recording"
                    + (f" (the last recording ended early: {ended})" if ended else "")
                )
            self.last[source] = RecordingOutcome(
                recording_id=str(meta.recording_id), study_id=str(meta.study_id), state="stopping"
            )
            task = asyncio.create_task(self._finish(source, meta, reason))
            self._finishing[source] = task
        self._emit_state(source, "stopping", reason or "", str(meta.recording_id))
        return meta

    def stopping(self, source: str) -> bool:
        """A stopped recording of this source is still being finished."""
        return source in self._finishing

    async def wait_stopped(self, source: str) -> None:
        """Wait until the source's stopped recording is closed (registering may go on)."""
        task = self._finishing.get(source)
        if task is not None:
            await asyncio.shield(task)

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
        self._emit_state(
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
                room=self.name,
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
            room=self.name,
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
        metrics.RECORDED_SECONDS.labels(self.name, source).inc(facts.duration_s)
        return event

    def press(self, key: KeyAction) -> None:
        """Called on the event loop for each mapped key press."""
        task = asyncio.create_task(self.on_key(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_key(self, key: KeyAction) -> None:
        """A recording key was pressed: same commands as the bus, on the room's current study."""
        try:
            if key.action == "snapshot":
                await self.snapshot(key.source, None)
            elif key.action == "record_start" or (
                key.action == "record_toggle" and key.source not in self.active
            ):
                await self.record_start(key.source, None)
            else:
                await self.record_stop(key.source)
        except (
            CaptureRefused,
            NoSignal,
            AlreadyRecording,
            repo.StudyNotFound,
            repo.StudyPurged,
        ) as exc:
            log.warning(
                "recording key refused",
                extra=kv(room=self.name, source=key.source, action=key.action, reason=str(exc)),
            )
        except Exception:
            # No caller to answer: log it; the operator sees no new media and the status.
            log.exception("recording key failed", extra=kv(room=self.name, source=key.source))

    async def _study_for_capture(self, requested: uuid.UUID | None) -> uuid.UUID:
        study_id, created = await repo.study_for_capture(
            self.pool, self.name, requested, self.settings.org_uid_root
        )
        if created or requested is not None:
            self._announce_study(study_id)
        return study_id

    async def set_study(self, study: uuid.UUID | None) -> None:
        async with self.pool.acquire() as conn:
            await repo.set_room_study(conn, self.name, study)
        self._announce_study(study)

    def _announce_study(self, study: uuid.UUID | None) -> None:
        """Tell every screen of the room (a live event: the next one supersedes it)."""
        msg = RoomStudyChanged(room=self.name, study_id=str(study) if study else None)
        task = asyncio.create_task(self.emit(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def current_study(self) -> uuid.UUID | None:
        async with self.pool.acquire() as conn:
            return await repo.room_study(conn, self.name)

    # -- state events from pipeline threads ------------------------------------------------
    def _state_callback(self, source: str) -> Callable[[str, str, str | None], None]:
        def on_state(state: str, detail: str, recording_id: str | None) -> None:
            self.loop.call_soon_threadsafe(self._emit_state, source, state, detail, recording_id)

        return on_state

    def _emit_state(self, source: str, state: str, detail: str, recording_id: str | None) -> None:
        msg = CaptureStateChanged(
            room=self.name,
            source=source,
            state=state,  # type: ignore[arg-type]
            detail=detail or None,
            recording_id=recording_id,
        )
        log.info(
            "source state",
            extra=kv(room=self.name, source=source, state=state, detail=detail or None),
        )
        task = asyncio.create_task(self.emit(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def redact_url(url: str) -> str:
    """Network source URLs may carry credentials (rtsp://user:pass@cam): never show them."""
    return re.sub(r"//[^/@]*@", "//***@", url)
