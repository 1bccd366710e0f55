"""Real PyAV pipelines, small and short: encoder, crash-safe writer, salvage, ring, snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from cinebridge_capture import pipeline as pipeline_module
from cinebridge_capture.encoding import EncoderSettings, VideoEncoder, recording_format
from cinebridge_capture.pipeline import SourcePipeline
from cinebridge_capture.pipeline_types import NoSignal, PipelineOptions
from cinebridge_capture.preview import PREVIEW_NICE, PreviewWorker
from cinebridge_capture.priority import set_thread_nice
from cinebridge_capture.recorder import RecordingUnreadable, RecordingWriter, probe, salvage
from cinebridge_capture.ring import GopBuffer, PacketRing
from cinebridge_capture.settings import SourceConfig
from cinebridge_capture.snapshot import jpeg_from_frame
from cinebridge_capture.sources import SourceUnavailable, StreamInfo, decode_latest, open_source

pytestmark = pytest.mark.timeout(60)


def pattern(n: int, size: str = "320x240", rate: int = 25) -> list[av.VideoFrame]:
    with av.open(f"testsrc2=size={size}:rate={rate}", format="lavfi") as src:
        frames = []
        for frame in src.decode(video=0):
            frames.append(frame)
            if len(frames) == n:
                return frames
    raise AssertionError("pattern ended")


def info(width: int = 320, height: int = 240, fps: int = 25) -> StreamInfo:
    return StreamInfo("rawvideo", width, height, Fraction(fps), "yuv420p")


def encode_file(path: Path, mode: str, frames: int, fps: int = 25) -> None:
    fmt = recording_format(mode)  # type: ignore[arg-type]
    enc = VideoEncoder(fmt, EncoderSettings(), info(fps=fps))
    writer = RecordingWriter(path, fmt, enc.template, enc.fps, fsync_interval_s=0.5)
    for i, frame in enumerate(pattern(frames, rate=fps)):
        for packet in enc.encode(frame, i):
            writer.write(packet)
    for packet in enc.encode(None):
        writer.write(packet)
    writer.close()
    assert writer.frames == frames
    assert writer.duration_s == pytest.approx(frames / fps, abs=1e-6)


def test_h264_recording_is_high_profile_level_41_with_exact_count(tmp_path: Path) -> None:
    path = tmp_path / "r.mp4"
    encode_file(path, "h264", 50)
    facts = probe(path)
    assert (facts.codec, facts.profile, facts.level) == ("h264", "High", 41)
    assert facts.frames == 50 and facts.duration_s == pytest.approx(2.0, abs=0.05)


def test_mpeg2_recording_is_main_profile_main_level_in_ts(tmp_path: Path) -> None:
    path = tmp_path / "r.ts"
    encode_file(path, "mpeg2-ml", 25)
    facts = probe(path)
    assert (facts.codec, facts.profile, facts.width, facts.height) == (
        "mpeg2video",
        "Main",
        720,
        576,
    )
    assert facts.frames == 25


def test_a_torn_recording_is_salvaged_up_to_its_last_fragment(tmp_path: Path) -> None:
    whole = tmp_path / "whole.mp4"
    encode_file(whole, "h264", 100)  # 4 s, 1 s GOPs/fragments
    torn = tmp_path / "torn.mp4"
    data = whole.read_bytes()
    torn.write_bytes(data[: int(len(data) * 0.6)])  # power cut in the middle of a fragment
    out = tmp_path / "salvaged.mp4"
    salvage(torn, out, recording_format("h264"))
    facts = probe(out)
    assert 25 <= facts.frames < 100
    with av.open(str(out)) as container:  # and it decodes to the end
        assert sum(1 for _ in container.decode(video=0)) == facts.frames


def test_garbage_is_not_a_recording(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(RecordingUnreadable):
        salvage(junk, tmp_path / "out.mp4", recording_format("h264"))
    with pytest.raises(RecordingUnreadable):
        probe(junk)


class FakePacket:
    def __init__(self, key: bool) -> None:
        self.is_keyframe = key


def test_ring_keeps_whole_gops_reaching_back_n_seconds() -> None:
    ring = PacketRing(2.0)
    ring.add(FakePacket(False), 0.0)  # undecodable head: never kept
    packets: list[Any] = []
    for i in range(100):  # 10 fps, keyframe each second
        packet = FakePacket(i % 10 == 0)
        packets.append(packet)
        ring.add(packet, i / 10)
    kept = ring.drain()
    assert kept[0].is_keyframe and kept[-1] is packets[-1]
    assert 2.0 <= (len(kept) - 1) / 10 < 3.0
    assert ring.drain() == []


def test_snapshot_is_baseline_jpeg_and_preview_is_scaled() -> None:
    frame = pattern(1, "1280x720")[0]
    jpeg = jpeg_from_frame(frame, 90)
    assert jpeg[:2] == b"\xff\xd8" and b"\xff\xc0" in jpeg and b"\xff\xc2" not in jpeg
    small = jpeg_from_frame(frame, 70, max_width=320)
    with av.open(__import__("io").BytesIO(small)) as image:
        decoded = next(image.decode(video=0))
    assert (decoded.width, decoded.height) == (320, 180)


def test_missing_sources_are_reported_not_crashed(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable):
        open_source(SourceConfig(name="a", url=f"file://{tmp_path}/missing.mp4"), 1, 1)
    with pytest.raises(SourceUnavailable):
        open_source(SourceConfig(name="b", url="v4l2:///dev/video-missing"), 1, 1)


def wait(check: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_prerecord_puts_the_seconds_before_the_button_into_the_recording(tmp_path: Path) -> None:
    states: list[tuple[str, str, str | None]] = []
    pipeline = SourcePipeline(
        SourceConfig(name="a", url="lavfi:testsrc2=size=320x240:rate=25"),
        PipelineOptions(prerecord_s=2.0),
        "h264",
        lambda *s: states.append(s),
    )
    pipeline.start()
    try:
        wait(lambda: pipeline.signal)
        time.sleep(3.0)  # the ring fills
        pipeline.start_recording("r1", tmp_path / "r1.mp4", "h264")
        time.sleep(1.0)
        finished = pipeline.stop_recording()
    finally:
        pipeline.close()
    assert finished is not None
    # 2 s of pre-record (whole GOPs, so up to one more second) + 1 s after the button.
    assert 2.8 <= finished.duration_s <= 4.3
    assert probe(finished.path).frames == finished.frames
    assert ("recording", "", "r1") in states


def test_looped_file_source_keeps_delivering_and_no_signal_is_reported(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    encode_file(clip, "h264", 10)  # 0.4 s: looped several times below
    pipeline = SourcePipeline(
        SourceConfig(name="a", url=f"file://{clip}?loop=1"),
        PipelineOptions(),
        "h264",
        lambda *s: None,
    )
    pipeline.start()
    try:
        wait(lambda: pipeline.stats.frames_in >= 30)
        assert pipeline.signal and pipeline.latest_frame().width == 320
        # Paced like a live device (25 fps), also while its packets are not decoded.
        before, t0 = pipeline.stats.frames_in, time.monotonic()
        time.sleep(1.0)
        rate = (pipeline.stats.frames_in - before) / (time.monotonic() - t0)
        assert 15 <= rate <= 35, rate
    finally:
        pipeline.close()
    lost = SourcePipeline(
        SourceConfig(name="b", url=f"file://{tmp_path}/missing.mp4"),
        PipelineOptions(signal_timeout_s=0.2),
        "h264",
        lambda *s: None,
    )
    lost.start()
    try:
        wait(lambda: lost.state == "no-signal")
        with pytest.raises(NoSignal):
            lost.latest_frame()
    finally:
        lost.close()


def test_on_demand_decode_of_the_gop_gives_the_current_picture(tmp_path: Path) -> None:
    """Pass-through keeps the packets since the last keyframe; a snapshot decodes them then.
    Each picture has its own grey level, so the decoded one must be the latest packet's."""
    path = tmp_path / "levels.mp4"
    fmt = recording_format("h264")
    enc = VideoEncoder(fmt, EncoderSettings(), info(fps=25))  # a keyframe every 25 pictures
    writer = RecordingWriter(path, fmt, enc.template, enc.fps, fsync_interval_s=5)
    for i in range(60):
        grey = np.full((240, 320), 16 + 4 * i, np.uint8)
        frame = av.VideoFrame.from_ndarray(grey, format="gray").reformat(format="yuv420p")
        for packet in enc.encode(frame, i):
            writer.write(packet)
    for packet in enc.encode(None):
        writer.write(packet)
    writer.close()

    gop = GopBuffer()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        for k, packet in enumerate(packets):
            gop.add(packet)
            if k in (0, 9, 24, 25, 41, 59):
                picture = decode_latest(stream, gop.packets())
                assert picture is not None
                level = float(picture.to_ndarray(format="gray").mean())
                assert abs(level - (16 + 4 * k)) < 1.5, (k, level)
        assert [p.is_keyframe for p in gop.packets()] == [True] + [False] * 9  # from 50 on
        serial, keyframe = gop.keyframe()
        assert serial == 3 and keyframe is packets[50]


def test_a_gop_too_long_to_decode_on_demand_is_flagged() -> None:
    gop = GopBuffer(limit=10)
    gop.add(FakePacket(True))
    for _ in range(12):
        gop.add(FakePacket(False))
    assert gop.overflowed and gop.packets() == []
    gop.add(FakePacket(True))
    assert len(gop.packets()) == 1


def _nice_of(thread: threading.Thread) -> int:
    assert thread.native_id is not None
    return os.getpriority(os.PRIO_PROCESS, thread.native_id)


def _may_raise_priority() -> bool:
    allowed: list[bool] = []
    probe_thread = threading.Thread(target=lambda: allowed.append(set_thread_nice(-3)))
    probe_thread.start()
    probe_thread.join()
    return allowed[0]


@contextlib.contextmanager
def previewed_pattern(thread_nice: int, thumbnail_interval_s: float) -> Iterator[PreviewWorker]:
    """A small test-pattern pipeline with its preview worker, both running, signal present."""
    pipeline = SourcePipeline(
        SourceConfig(name="a", url="lavfi:testsrc2=size=160x120:rate=10"),
        PipelineOptions(thread_nice=thread_nice),
        "h264",
        lambda *s: None,
    )
    worker = PreviewWorker({"a": pipeline}, 5.0, 80, 70, thumbnail_interval_s)
    pipeline.start()
    worker.start()
    try:
        wait(lambda: pipeline.signal)
        yield worker
    finally:
        worker.close()
        pipeline.close()


def test_recording_threads_run_above_preview_threads() -> None:
    """On a loaded box the encoder must win the CPU (frames dropped otherwise), and preview
    work must yield to it."""
    with previewed_pattern(-3, 1.0) as worker:
        worker.request_thumbnail("a")
        wait(lambda: worker.thumbnails["a"].seq > 0)
        expected = -3 if _may_raise_priority() else 0  # -3 needs CAP_SYS_NICE
        assert [_nice_of(t) for t in worker.pipelines["a"]._threads] == [expected, expected]
        assert _nice_of(worker._thread) == PREVIEW_NICE


def test_thumbnails_are_made_when_asked_for_and_reused_within_the_interval() -> None:
    """A room nobody looks at spends nothing on pictures: no thumbnail without a request, one
    decode per interval however often a dashboard polls, a fresh one after the interval."""
    with previewed_pattern(0, 0.6) as worker:
        time.sleep(1.2)
        assert worker.thumbnails["a"].seq == 0  # nobody asked
        first = asyncio.run(worker.thumbnail("a"))
        assert first[:2] == b"\xff\xd8" and worker.thumbnails["a"].seq == 1
        assert asyncio.run(worker.thumbnail("a")) == first  # within the interval: reused
        assert worker.thumbnails["a"].seq == 1
        time.sleep(0.7)
        fresh = asyncio.run(worker.thumbnail("a"))
        assert worker.thumbnails["a"].seq == 2 and fresh != first  # the pattern moved on
    # Without a signal (past the interval, nothing fresh comes) the last picture is served.
    time.sleep(0.7)
    assert asyncio.run(worker.thumbnail("a")) == fresh


def test_file_source_passes_packets_without_dts_through(tmp_path: Path) -> None:
    """Matroska gives the first packets of an H.264 stream with B-frames no DTS: they are media,
    not the end of the input, and the first of them is the key frame."""
    path = tmp_path / "bframes.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"bf": "2", "g": "25"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i, frame in enumerate(pattern(12)):
            frame.pts = i
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    with av.open(str(path)) as check:
        assert any(p.dts is None and p.size for p in check.demux(video=0))
    source = open_source(SourceConfig(name="mkv", url=f"file://{path}"), 5, 5)
    packets = []
    try:
        with pytest.raises(SourceUnavailable, match="ended"):
            for item in source.items():
                if item.packet is not None:
                    packets.append(item.packet)
    finally:
        source.close()
    assert len(packets) == 12
    assert packets[0].is_keyframe


def _record_behind_a_slow_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pause: Callable[[], object]
) -> tuple[SourcePipeline, int, Any]:
    """Record one second while every frame the encoder takes is held up by `pause` (the
    starved encoder of a loaded machine); return the pipeline, the frames waiting for the
    encoder when Stop is pressed, and what the stop finished."""
    real_encode = VideoEncoder.encode

    def slow_encode(self: VideoEncoder, frame: Any, pts: int | None = None) -> list[Any]:
        if frame is not None:
            pause()
        return real_encode(self, frame, pts)

    monkeypatch.setattr(VideoEncoder, "encode", slow_encode)
    pipeline = SourcePipeline(
        SourceConfig(name="a", url="lavfi:testsrc2=size=320x240:rate=25"),
        PipelineOptions(queue_s=30.0),
        "h264",
        lambda *s: None,
    )
    pipeline.start()
    try:
        wait(lambda: pipeline.signal)
        pipeline.start_recording("r1", tmp_path / "r1.mp4", "h264")
        wait(lambda: pipeline._queue.qsize() >= 10)
        backlog = pipeline._queue.qsize()
        finished = pipeline.stop_recording()
        return pipeline, backlog, finished
    finally:
        pipeline.close()


def test_stop_waits_for_every_frame_queued_while_the_encoder_progresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stall bound far shorter than the backlog takes to encode (10+ frames at 0.1 s each):
    # the stop must wait for the backlog because the encoder keeps taking frames.
    monkeypatch.setattr(pipeline_module, "FLUSH_STALL_S", 0.5)
    pipeline, backlog, finished = _record_behind_a_slow_encoder(
        tmp_path, monkeypatch, lambda: time.sleep(0.1)
    )
    assert backlog >= 10
    assert finished is not None
    assert pipeline._queue.qsize() == 0  # the stop came back only after the whole backlog
    # Every frame queued before Stop is in the file (at least the backlog counted at Stop).
    assert finished.frames >= backlog
    assert probe(finished.path).frames == finished.frames


def test_stop_gives_up_on_an_encoder_that_makes_no_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "FLUSH_STALL_S", 0.5)
    hung = threading.Event()
    started = time.monotonic()
    pipeline, backlog, _finished = _record_behind_a_slow_encoder(
        tmp_path, monkeypatch, lambda: hung.wait(30)
    )
    took = time.monotonic() - started
    hung.set()
    assert backlog >= 10
    assert pipeline._queue.qsize() > 0  # the stop did not wait for the hung encoder
    assert took < 25  # generous: the hung encoder would hold it 30 s
