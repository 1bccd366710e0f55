"""Recovery at start against a real PostgreSQL: journalled recordings are registered once."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import av
import pytest
from cinebridge_capture.encoding import EncoderSettings, VideoEncoder, recording_format
from cinebridge_capture.recorder import RecordingWriter
from cinebridge_capture.recovery import recover_recordings
from cinebridge_capture.repository import (
    OpenRecording,
    open_recording,
    plan_media,
    study_for_capture,
)
from cinebridge_capture.room import Room
from cinebridge_capture.settings import CaptureSettings, SourceConfig
from cinebridge_capture.sources import StreamInfo
from cinebridge_common.messages.base import Message
from cinebridge_common.store import MediaStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def write_clip(path: Path, frames: int) -> None:
    fmt = recording_format("h264")
    from fractions import Fraction

    enc = VideoEncoder(
        fmt, EncoderSettings(), StreamInfo("rawvideo", 320, 240, Fraction(25), "yuv420p")
    )
    writer = RecordingWriter(path, fmt, enc.template, enc.fps, fsync_interval_s=1)
    with av.open("testsrc2=size=320x240:rate=25", format="lavfi") as src:
        for i, frame in enumerate(src.decode(video=0)):
            for packet in enc.encode(frame, i):
                writer.write(packet)
            if i + 1 == frames:
                break
    for packet in enc.encode(None):
        writer.write(packet)
    writer.close()


async def test_stopped_but_unregistered_keeps_its_media_id_and_lost_files_close_empty(
    db_pool: asyncpg.Pool, media_store: MediaStore
) -> None:
    settings = CaptureSettings(
        capture_room="rec1", capture_sources=[SourceConfig(name="cam", url="lavfi:testsrc2")]
    )
    sent: list[Message] = []

    async def emit(msg: Message) -> None:
        sent.append(msg)

    room = Room(settings, db_pool, media_store, emit)
    study_id, created = await study_for_capture(db_pool, "rec1", None, "")
    assert created
    stopped, lost, media_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for rec_id in (stopped, lost):
        part = f"recordings/inprogress/{rec_id.hex}.mp4"
        await open_recording(
            db_pool, OpenRecording(rec_id, "rec1", "cam", study_id, "h264", False, part)
        )
    path = media_store.resolve(f"recordings/inprogress/{stopped.hex}.mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_clip(path, 50)
    await plan_media(db_pool, stopped, media_id)  # "Stop" answered with this id, then a crash

    assert await recover_recordings(room) == 1
    row = await db_pool.fetchrow("SELECT * FROM media WHERE id = $1", media_id)
    assert row is not None and not row["recovered"] and row["frames"] == 50
    assert row["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert media_store.resolve(row["rel_path"]).exists() and not path.exists()
    states = dict(await db_pool.fetch("SELECT id, state FROM capture_recordings"))
    assert states == {stopped: "done", lost: "empty"}
    outbox = await db_pool.fetchval(
        "SELECT count(*) FROM outbox WHERE msg_id = $1", f"media-{media_id}"
    )
    assert outbox == 1
    assert await recover_recordings(room) == 0  # nothing left to do: idempotent
