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
from typing import Any

import asyncpg
from cinebridge_common.logging import kv
from cinebridge_common.messages.base import Message
from cinebridge_common.messages.capture import (
    CaptureStateChanged,
    MediaCaptured,
    RoomStudyChanged,
)
from cinebridge_common.station import load_station_settings
from cinebridge_common.store import MediaStore

from . import metrics
from . import repository as repo
from .encoding import EncoderSettings, Mode, mode_for, recording_format
from .outcomes import RecordingMeta, RecordingOutcomes
from .pipeline import SourcePipeline
from .pipeline_types import AlreadyRecording, NoSignal, PipelineOptions
from .priority import set_thread_nice
from .recorder import DISK_FULL_ERRNOS, describe_write_error
from .settings import CaptureSettings, KeyAction
from .snapshot import jpeg_from_frame

log = logging.getLogger(__name__)

Emit = Callable[[Message], Coroutine[Any, Any, None]]


class CaptureRefused(RuntimeError):
    """A command that cannot be carried out now (unknown source, not recording, low disk...)."""


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
        self.outcomes = RecordingOutcomes(self.name, pool, store, self.pipelines, self._emit_state)
        #: How each source's last stopped recording ended (the room status shows it).
        self.last = self.outcomes.last
        #: Why each source's last recording ended without the operator asking (disk full...).
        self.ended = self.outcomes.ended
        self._locks = {name: asyncio.Lock() for name in self.pipelines}
        self._tasks: set[asyncio.Task[None]] = set()

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
        await self.outcomes.close()
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
            self.outcomes.begin(source, meta, reason)
        self._emit_state(source, "stopping", reason or "", str(meta.recording_id))
        return meta

    def stopping(self, source: str) -> bool:
        """A stopped recording of this source is still being finished."""
        return self.outcomes.stopping(source)

    async def wait_stopped(self, source: str) -> None:
        """Wait until the source's stopped recording is closed (registering may go on)."""
        await self.outcomes.wait_stopped(source)

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
