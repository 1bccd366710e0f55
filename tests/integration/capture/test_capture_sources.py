"""Network sources that change under a recording, made here with FFmpeg and sent over UDP."""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import av
import pytest
from cinebridge_common.embedded import free_port
from cinebridge_testkit import require_tool, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class FileSender:
    """FFmpeg sending an MPEG-TS file over UDP at its own pace, looped, packets copied."""

    def __init__(self) -> None:
        self.url = f"udp://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None

    def play(self, path: Path) -> None:
        """Send `path` instead of what was sent so far, on the same address: to the receiver it
        is the same stream going on (no reconnect), with what `path` holds."""
        self.stop()
        self.proc = subprocess.Popen(
            [
                require_tool("ffmpeg"),
                "-nostdin",
                "-loglevel",
                "error",
                "-re",
                "-stream_loop",
                "-1",
                "-i",
                str(path),
                "-c",
                "copy",
                "-f",
                "mpegts",
                f"{self.url}?pkt_size=1316",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture
def sender() -> Iterator[FileSender]:
    found = FileSender()
    yield found
    found.stop()


def h264_ts(path: Path, size: str) -> Path:
    subprocess.run(
        [
            require_tool("ffmpeg"),
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=30",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-profile:v",
            "high",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "mpegts",
            str(path),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    return path


def picture_sizes(path: Path) -> set[tuple[int, int]]:
    with av.open(str(path)) as container:
        return {(f.width, f.height) for f in container.decode(video=0)}


async def test_a_resolution_change_mid_stream_ends_the_recording_with_its_reason(
    capture_factory: Any, client: Any, db_pool: asyncpg.Pool, tmp_path: Path, sender: FileSender
) -> None:
    """An encoder reconfigured from 720p to 360p on the same UDP stream, no drop-out: the
    pass-through recording ends at the change with what it had, every picture at its stated
    size, the reason on its journal; the room records the new size next."""
    hd, small = h264_ts(tmp_path / "hd.ts", "1280x720"), h264_ts(tmp_path / "small.ts", "640x360")
    sender.play(hd)
    # Signal time-out far above the sender's switch-over: the stream never looks lost.
    proc = capture_factory(
        "or10", [{"name": "cam", "url": sender.url}], CB_CAPTURE_SIGNAL_TIMEOUT_MS="8000"
    )
    await client.wait_signal(proc)
    first = await client.command("or10", "cam", "record_start")
    assert first.ok, first.error
    await asyncio.sleep(3)
    sender.play(small)

    async def ended() -> asyncpg.Record | None:
        row = await db_pool.fetchrow(
            "SELECT state, error, media_id FROM capture_recordings WHERE id = $1::uuid",
            first.recording_id,
        )
        return row if row is not None and row["state"] != "recording" else None

    journal = await wait_for(ended, 120, 0.2, what="the recording ended by the change")
    assert journal["state"] == "done"
    assert "changed its picture size" in journal["error"]
    media = await db_pool.fetchrow("SELECT * FROM media WHERE id = $1", journal["media_id"])
    assert (media["width"], media["height"]) == (1280, 720)
    assert picture_sizes(tmp_path / "media" / media["rel_path"]) == {(1280, 720)}

    status = await client.status("or10")  # the room is usable: the source goes on at 360p
    assert status.ok and status.sources[0].signal
    again = await client.command("or10", "cam", "record_start")
    assert again.ok, again.error
    await asyncio.sleep(2)
    stopped = await client.command("or10", "cam", "record_stop")
    assert stopped.ok, stopped.error

    async def second() -> asyncpg.Record | None:
        return await db_pool.fetchrow(
            "SELECT m.* FROM media m JOIN capture_recordings r ON r.media_id = m.id"
            " WHERE r.id = $1::uuid",
            again.recording_id,
        )

    row = await wait_for(second, 60, 0.2, what="the second recording registered")
    assert (row["width"], row["height"]) == (640, 360)
    assert picture_sizes(tmp_path / "media" / row["rel_path"]) == {(640, 360)}


async def test_a_file_source_deleted_during_a_recording_ends_it_with_what_was_captured(
    capture_factory: Any, client: Any, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """A file source removed while recording: it plays out what was open, then cannot be
    reopened; the recording ends after the drop-out limit with its frames and the reason, the
    room reports no signal, and records again once the file is back."""
    clip = h264_ts(tmp_path / "clip.ts", "640x360")
    source = tmp_path / "source.ts"
    source.write_bytes(clip.read_bytes())
    proc = capture_factory(
        "or11",
        [{"name": "cam", "url": f"file://{source}"}],
        CB_CAPTURE_SIGNAL_TIMEOUT_MS="1000",
        CB_CAPTURE_DROPOUT_MAX_S="2",
    )
    await client.wait_signal(proc)
    first = await client.command("or11", "cam", "record_start")
    assert first.ok, first.error
    source.unlink()

    async def ended() -> asyncpg.Record | None:
        row = await db_pool.fetchrow(
            "SELECT state, error, media_id FROM capture_recordings WHERE id = $1::uuid",
            first.recording_id,
        )
        return row if row is not None and row["state"] != "recording" else None

    journal = await wait_for(ended, 120, 0.2, what="the recording ended by the lost source")
    assert (journal["state"], journal["error"]) == ("done", "source lost for too long")
    media = await db_pool.fetchrow("SELECT * FROM media WHERE id = $1", journal["media_id"])
    assert media["frames"] > 0
    assert picture_sizes(tmp_path / "media" / media["rel_path"]) == {(640, 360)}
    status = await client.status("or11")
    assert status.ok and status.sources[0].state == "no-signal"

    source.write_bytes(clip.read_bytes())  # the file is back: the room records again
    await client.wait_signal(proc)
    again = await client.command("or11", "cam", "record_start")
    assert again.ok, again.error
    await asyncio.sleep(2)
    stopped = await client.command("or11", "cam", "record_stop")
    assert stopped.ok, stopped.error


def corrupted(path: Path) -> Path:
    """The middle 8 KB of an MPEG-TS file overwritten with noise (TS sync bytes kept, so the
    demuxer stays in step and hands the damaged packets on, as a lossy network does)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2 // 188 * 188
    noise = random.Random(7).randbytes(8192)
    for i in range(middle, middle + 8192):
        data[i] = 0x47 if (i % 188) == 0 else noise[i - middle]
    path.write_bytes(bytes(data))
    return path


async def test_corrupt_packets_mid_stream_are_recorded_and_the_recording_goes_on(
    capture_factory: Any, client: Any, db_pool: asyncpg.Pool, tmp_path: Path, sender: FileSender
) -> None:
    """Damaged packets in a network stream: the pass-through recording keeps going, ends when
    asked, and its file decodes at one picture size from start to end."""
    sender.play(corrupted(h264_ts(tmp_path / "damaged.ts", "640x360")))
    proc = capture_factory("or12", [{"name": "cam", "url": sender.url}])
    await client.wait_signal(proc)
    started = await client.command("or12", "cam", "record_start")
    assert started.ok, started.error
    await asyncio.sleep(5)  # the 2 s file loops: its damaged middle passes at least twice
    stopped = await client.command("or12", "cam", "record_stop")
    assert stopped.ok, stopped.error

    async def registered() -> asyncpg.Record | None:
        return await db_pool.fetchrow(
            "SELECT m.*, r.error FROM media m JOIN capture_recordings r ON r.media_id = m.id"
            " WHERE r.id = $1::uuid",
            started.recording_id,
        )

    row = await wait_for(registered, 60, 0.2, what="the recording registered")
    assert row["error"] is None and row["frames"] > 0
    assert picture_sizes(tmp_path / "media" / row["rel_path"]) == {(640, 360)}
