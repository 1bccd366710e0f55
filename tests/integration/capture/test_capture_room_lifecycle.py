"""Stop answers at once while the encoder is far behind: the recording is finished in the
background and its outcome (frames, duration, media id, or why nothing was kept) reaches the room
status. The room runs in this process on the test's PostgreSQL, so the encoder can be held up at
will (the starved encoder of a loaded box)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from cinebridge_capture import pipeline as pipeline_module
from cinebridge_capture.encoding import VideoEncoder
from cinebridge_capture.handlers import (
    Deps,
    handle_capture_command,
    handle_capture_status,
)
from cinebridge_capture.room import Room
from cinebridge_capture.settings import CaptureSettings
from cinebridge_common.messages.base import Message
from cinebridge_common.messages.capture import (
    CaptureCommand,
    CaptureStateChanged,
    CaptureStatusRequest,
    SourceStatus,
)
from cinebridge_common.store import MediaStore
from cinebridge_testkit import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOM = "or-stop"


class HeldEncoder:
    """Every frame the encoder takes waits for `gate` once `hold` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hold = threading.Event()
        self.gate = threading.Event()
        self.waiting = threading.Event()
        real = VideoEncoder.encode

        def encode(encoder: VideoEncoder, frame: Any, pts: int | None = None) -> list[Any]:
            if frame is not None and self.hold.is_set():
                self.waiting.set()
                self.gate.wait(120)
            return real(encoder, frame, pts)

        monkeypatch.setattr(VideoEncoder, "encode", encode)


@pytest.fixture
async def room(
    db_pool: asyncpg.Pool, media_store: MediaStore, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Room, list[CaptureStateChanged]]]:
    events: list[CaptureStateChanged] = []

    async def emit(msg: Message) -> None:
        if isinstance(msg, CaptureStateChanged):
            events.append(msg)

    # A stall bound longer than the test holds the encoder: the stop must not give up on it.
    monkeypatch.setattr(pipeline_module, "FLUSH_STALL_S", 180.0)
    settings = CaptureSettings(
        capture_room=ROOM,
        capture_sources=[{"name": "cam", "url": "lavfi:testsrc2=size=320x240:rate=25"}],
        media_root=media_store.root,
        capture_disk_reserve_bytes=1 << 20,
        capture_encoder_queue_s=10.0,
        capture_prerecord_s=0,
    )
    room = Room(settings, db_pool, media_store, emit)
    await room.start()
    try:
        yield room, events
    finally:
        await room.close()


async def signal(room: Room) -> bool:
    return room.pipelines["cam"].signal


async def source(room: Room) -> SourceStatus:
    reply = await handle_capture_status(CaptureStatusRequest(room=ROOM), Deps(room, None))
    return reply.sources[0]


async def test_stop_answers_while_the_encoder_is_held_and_the_outcome_reaches_the_status(
    room: tuple[Room, list[CaptureStateChanged]],
    db_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    the_room, events = room
    held = HeldEncoder(monkeypatch)
    deps = Deps(the_room, None)
    await wait_for(lambda: signal(the_room), 120, 0.1, what="the test pattern")
    started = await handle_capture_command(
        CaptureCommand(room=ROOM, source="cam", action="record_start"), deps
    )
    assert started.ok, started.error
    held.hold.set()
    await asyncio.to_thread(held.waiting.wait, 60)
    assert held.waiting.is_set(), "the encoder never took a frame to hold"
    # The encoder is held: frames pile up behind it, and Stop must answer regardless.
    stop = asyncio.ensure_future(
        handle_capture_command(CaptureCommand(room=ROOM, source="cam", action="record_stop"), deps)
    )
    done, _ = await asyncio.wait({stop}, timeout=60)
    try:
        assert done, "Stop waited for the held encoder"
        reply = stop.result()
        assert reply.ok and reply.stopping, reply
        assert reply.recording_id == started.recording_id
        assert reply.study_id == started.study_id
        assert not held.gate.is_set()  # answered while the encoder was still held
        status = await source(the_room)
        assert status.state == "stopping"
        assert status.last_recording is not None
        assert status.last_recording.state == "stopping"
        assert status.last_recording.recording_id == started.recording_id
        # A new recording waits for the old one to be finished: refused with the reason.
        again = await handle_capture_command(
            CaptureCommand(room=ROOM, source="cam", action="record_start"), deps
        )
        assert not again.ok and "still being finished" in (again.error or "")
    finally:
        held.gate.set()
        held.hold.clear()
        await asyncio.gather(stop, return_exceptions=True)

    async def settled() -> SourceStatus | None:
        s = await source(the_room)
        last = s.last_recording
        return s if last and last.state != "stopping" else None

    final = await wait_for(settled, 120, 0.2, what="the recording's outcome in the status")
    last = final.last_recording
    assert last is not None
    assert last.state == "done", last
    assert final.state == "idle"
    assert last.frames and last.frames > 0 and last.duration_s and last.duration_s > 0
    row = await db_pool.fetchrow(
        "SELECT study_id::text, frames FROM media WHERE id = $1::uuid", last.media_id
    )
    assert row is not None and row["study_id"] == started.study_id
    assert row["frames"] == last.frames
    assert [e.state for e in events if e.recording_id == started.recording_id][-1] == "idle"
    assert any(e.state == "stopping" for e in events)


async def test_a_recording_without_a_frame_says_so_in_the_status(
    room: tuple[Room, list[CaptureStateChanged]],
    db_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    the_room, _ = room
    held = HeldEncoder(monkeypatch)
    held.hold.set()  # not one frame reaches the file before the stop
    deps = Deps(the_room, None)
    await wait_for(lambda: signal(the_room), 120, 0.1, what="the test pattern")
    # The stop gives up on an encoder that makes no progress at all (FLUSH_STALL_S).
    monkeypatch.setattr(pipeline_module, "FLUSH_STALL_S", 1.0)
    started = await handle_capture_command(
        CaptureCommand(room=ROOM, source="cam", action="record_start"), deps
    )
    assert started.ok, started.error
    await asyncio.to_thread(held.waiting.wait, 60)
    reply = await handle_capture_command(
        CaptureCommand(room=ROOM, source="cam", action="record_stop"), deps
    )
    assert reply.ok and reply.stopping, reply

    async def settled() -> SourceStatus | None:
        s = await source(the_room)
        last = s.last_recording
        return s if last and last.state != "stopping" else None

    try:
        final = await wait_for(settled, 120, 0.2, what="the recording's outcome in the status")
    finally:
        held.gate.set()
    last = final.last_recording
    assert last is not None
    assert (last.state, last.detail, last.media_id) == (
        "empty",
        "the recording held no frame",
        None,
    )
    state = await db_pool.fetchval(
        "SELECT state FROM capture_recordings WHERE id = $1::uuid", started.recording_id
    )
    assert state == "empty"
