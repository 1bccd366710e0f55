"""A media volume that fills up during a recording (a real, small tmpfs filled to ENOSPC): the
recording ends cleanly and is kept and marked, the operator is told, the service keeps running,
and snapshots work again once space is freed."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import av
import pytest
from cinebridge_common.messages.capture import CaptureStateChanged
from cinebridge_testkit import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SOURCE = "lavfi:testsrc2=size=1280x720:rate=30"


@pytest.fixture
def small_media_volume(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB tmpfs mounted where the capture fixture puts its media store (needs root, as CI
    has; without it the test fails rather than passing untested)."""
    media = tmp_path / "media"
    media.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(media)], check=True)
    try:
        yield media
    finally:
        subprocess.run(["umount", "-l", str(media)], check=False)


def _fill(volume: Path) -> Path:
    """Write a filler file until the volume reports ENOSPC."""
    filler = volume / "filler"
    chunk = b"\0" * (256 << 10)
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


async def test_disk_full_during_a_recording_keeps_it_marked_and_capture_serving(
    small_media_volume: Path, capture_factory: Any, client: Any, db_pool: asyncpg.Pool
) -> None:
    states: list[bytes] = []

    async def on_state(msg: Any) -> None:
        states.append(msg.data)

    await client.bus.subscribe_events(CaptureStateChanged.subject, on_state)
    # No reserve: the recording must meet the full disk itself (ENOSPC), not the early stop.
    proc = capture_factory(
        "or9", [{"name": "cam", "url": SOURCE}], CB_CAPTURE_DISK_RESERVE_BYTES="0"
    )
    await client.wait_signal(proc)
    started = await client.command("or9", "cam", "record_start")
    assert started.ok, started.error

    async def written() -> bool:
        part = small_media_volume / "recordings" / "inprogress"
        return any(p.stat().st_size > 200_000 for p in part.iterdir()) if part.exists() else False

    await wait_for(written, 30, 0.1, what="recording fragments on the volume")
    filler = _fill(small_media_volume)

    async def journal() -> asyncpg.Record | None:
        row = await db_pool.fetchrow(
            "SELECT state, error, media_id FROM capture_recordings WHERE id = $1::uuid",
            started.recording_id,
        )
        return row if row and row["state"] != "recording" and row["media_id"] else None

    row = await wait_for(journal, 60, 0.2, what="the recording ended and registered")
    assert row["state"] == "done" and (row["error"] or "").startswith("disk full"), dict(row)
    media = await db_pool.fetchrow("SELECT * FROM media WHERE id = $1", row["media_id"])
    assert media is not None and media["frames"] > 0
    with av.open(str(small_media_volume / media["rel_path"])) as container:  # kept and playable
        assert sum(1 for p in container.demux(container.streams.video[0]) if p.size) > 0

    # The operator was told: the state event names the reason; a late Stop says what happened.
    details = [CaptureStateChanged.from_bytes(b).detail or "" for b in states]
    assert any(d.startswith("disk full") for d in details), details
    late = await client.command("or9", "cam", "record_stop")
    assert not late.ok and "disk full" in (late.error or ""), late
    # Still full: a snapshot is refused with the reason, nothing half-written is left.
    refused = await client.command("or9", "cam", "snapshot")
    assert not refused.ok and "disk full" in (refused.error or ""), refused
    assert proc.proc is not None and proc.proc.poll() is None, proc.log()

    filler.unlink()  # space is back: the same process serves snapshots again
    snap = await client.command("or9", "cam", "snapshot")
    assert snap.ok, (snap.error, proc.log())
    assert (await client.status("or9")).ok
    assert proc.proc.poll() is None, proc.log()
