"""One source's capture pipeline: reader thread, encoder thread, pre-record ring, recording.

The reader thread opens the source (reopening it with backoff after a drop-out), keeps the
latest frame for snapshots and preview, and hands frames to the encoder thread through a bounded
queue (a full queue drops the frame and counts it, so a slow encoder never stalls the source) or,
for a pass-through recording, writes the source's own packets. A source recorded by pass-through
is not decoded continuously (pictures.py: snapshots and thumbnails decode the packets kept since
the last keyframe on demand), and the reader decodes live only while someone watches the preview.
No asyncio and no NATS here: the room controller calls in from worker threads and is told about
state changes by a callback.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from cinebridge_common.logging import kv

from .encoding import (
    Mode,
    SlotClock,
    VideoEncoder,
    passthrough_ok,
    recording_format,
)
from .pictures import Pictures
from .pipeline_types import (
    ActiveRecording,
    AlreadyRecording,
    FinishedRecording,
    NoSignal,
    PipelineOptions,
    SourceStats,
    StateCallback,
)
from .priority import receive_threads, renice, set_thread_nice
from .recorder import RecordingWriter, describe_write_error
from .ring import PacketRing
from .settings import SourceConfig
from .sources import (
    Captured,
    Decode,
    FrameSource,
    SourceUnavailable,
    StreamInfo,
    is_network,
    open_source,
)

log = logging.getLogger(__name__)


#: A stop waits for the encoder to reach it as long as the encoder takes a queued item at
#: least this often.
FLUSH_STALL_S = 10.0


@dataclass
class _Flush:
    done: threading.Event
    final: bool


class SourcePipeline:
    def __init__(
        self, config: SourceConfig, options: PipelineOptions, mode: Mode, on_state: StateCallback
    ) -> None:
        self.config = config
        self.options = options
        self.mode = mode
        self.on_state = on_state
        self.stats = SourceStats()
        self.state = "starting"
        self.detail = ""
        self.info: StreamInfo | None = None
        self._lock = threading.RLock()
        self._pictures = Pictures(config.name)
        #: Set by the preview worker: someone watches the live preview of this source.
        self.preview_watched = False
        self._seen: float | None = None  # monotonic time of the last frame or packet
        #: FFmpeg's receive threads of the open source (they share the reader's priority).
        self._source_threads: set[int] = set()
        self._rec: ActiveRecording | None = None
        self._passthrough = False
        self._ring = PacketRing(options.prerecord_s) if options.prerecord_s > 0 else None
        # Bounded by `_queue_full()` in seconds of the source's rate, not by a fixed count.
        self._queue: queue.Queue[Captured | _Flush | None] = queue.Queue()
        self._taken = 0  # items the encoder took from the queue (its progress, for a stop)
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._read_loop, name=f"read-{config.name}", daemon=True),
            threading.Thread(target=self._encode_loop, name=f"enc-{config.name}", daemon=True),
        ]

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=2)
        for thread in self._threads:
            thread.join(timeout=self.options.open_timeout_s + 3)

    # -- what the room asks ------------------------------------------------------------
    @property
    def signal(self) -> bool:
        seen = self._seen
        return seen is not None and time.monotonic() - seen < self.options.signal_timeout_s

    def no_signal_for(self) -> float:
        """Seconds since the source last delivered anything (0 while it delivers)."""
        seen = self._seen
        if seen is None:
            return 0.0
        age = time.monotonic() - seen
        return age if age >= self.options.signal_timeout_s else 0.0

    def latest_frame(self) -> av.VideoFrame:
        """The current picture (decoded on demand for a pass-through source: may take a GOP's
        worth of decoding, so call it from a worker thread)."""
        return self.picture_now()()

    def picture_now(self) -> Callable[[], av.VideoFrame]:
        """Fixes the current picture now (cheap) and returns how to get it (maybe expensive:
        run it in a worker thread): a snapshot shows the moment it was asked for."""
        if not self.signal:
            raise NoSignal(f"source {self.config.name} has no signal")
        return self._pictures.now(self.info)

    def preview_frame(self) -> av.VideoFrame:
        """A recent picture for the live preview or the thumbnail, as cheaply as it comes: the
        reader's latest while it decodes, else the current GOP's keyframe (decoded once)."""
        if not self.signal:
            raise NoSignal(f"source {self.config.name} has no signal")
        return self._pictures.preview(self.info)

    @property
    def recording(self) -> ActiveRecording | None:
        return self._rec

    def start_recording(self, recording_id: str, path: Path, mode: Mode) -> ActiveRecording:
        with self._lock:
            if self._rec is not None:
                raise AlreadyRecording(f"source {self.config.name} is already recording")
            if self.info is None or not self.signal:
                raise NoSignal(f"source {self.config.name} has no signal")
            if mode != self.mode:
                self.mode = mode
                self._passthrough = self._can_pass_through(self.info)
                if self._ring is not None:
                    self._ring.clear()
            self._rec = ActiveRecording(
                recording_id, path, mode, self._passthrough, time.monotonic()
            )
        self._set_state("recording", "", recording_id)
        return self._rec

    def stop_recording(self, reason: str | None = None) -> FinishedRecording | None:
        """Finish the recording (queued frames included); None when no frame was written."""
        with self._lock:
            rec = self._rec
            if rec is None:
                return None
            rec.stopping = True
        if not rec.passthrough:
            done = threading.Event()
            self._queue.put(_Flush(done, final=self._ring is None))
            if not self._wait_for_encoder(done):
                log.warning(
                    "encoder made no progress: the frames still queued are left out",
                    extra=kv(source=self.config.name, queued=self._queue.qsize()),
                )
        with self._lock:
            self._rec = None
        self._set_state("idle" if self.signal else "no-signal", reason or "", None)
        if rec.writer is None:
            with contextlib.suppress(FileNotFoundError):
                rec.path.unlink()
            return None
        failed = rec.writer.close()
        w = rec.writer
        reason = reason or rec.broken or (describe_write_error(failed) if failed else None)
        if failed is not None:
            log.warning(
                "recording cut short by a write error; what was written is kept",
                extra=kv(source=self.config.name, error=describe_write_error(failed)),
            )
        return FinishedRecording(
            rec.recording_id,
            rec.path,
            rec.mode,
            rec.passthrough,
            w.frames,
            w.duration_s,
            w.width,
            w.height,
            float(w.fps),
            reason,
        )

    def _wait_for_encoder(self, done: threading.Event) -> bool:
        """Wait until the encoder has reached the flush queued at a stop. The frames queued
        before it belong to the recording, and a starved encoder may be many seconds behind
        (up to `queue_s` of frames, each slow to encode on a loaded machine): wait as long as it
        keeps taking items from the queue, and give up only after `FLUSH_STALL_S` without any
        progress (a hung encoder must not hang the stop)."""
        taken = self._taken
        while not done.wait(timeout=FLUSH_STALL_S):
            if self._taken == taken:
                return False
            taken = self._taken
        return True

    # -- reader thread -----------------------------------------------------------------
    def _read_loop(self) -> None:
        # The reader and FFmpeg's UDP receive thread (started by the open) must share one
        # priority: when only one of them is raised they preempt each other at every datagram
        # (~5x the context switches: +10% CPU for a pass-through recording, +7% for a
        # re-encoded one). Both run at -10 while the reader decodes for re-encoding, and at
        # normal priority while it passes packets through (~1% of a core, with FFmpeg's 1 MB
        # receive FIFO for slack). See `_pump`.
        network = is_network(self.config.url)
        backoff = 0.5
        while not self._stopping.is_set():
            set_thread_nice(self.options.thread_nice)
            before = receive_threads() if network else set()
            try:
                source = open_source(
                    self.config, self.options.open_timeout_s, self.options.signal_timeout_s
                )
                self._source_threads = receive_threads() - before if network else set()
            except SourceUnavailable as exc:
                self._set_state("no-signal", str(exc), self._rec_id())
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.options.reconnect_max_s)
                continue
            backoff = 0.5
            self._on_open(source.info)
            try:
                self._pump(source)
            except SourceUnavailable as exc:
                if not self._stopping.is_set():
                    log.warning("source lost", extra=kv(source=self.config.name, reason=str(exc)))
                    self._set_state("no-signal", str(exc), self._rec_id())
            except Exception as exc:
                log.exception("source failed", extra=kv(source=self.config.name))
                self._set_state("error", repr(exc), self._rec_id())
                self._stopping.wait(backoff)
            finally:
                source.close()
            self.stats.reconnects += 1

    def _on_open(self, info: StreamInfo) -> None:
        with self._lock:
            self._pictures.clear()
            previous, self.info = self.info, info
            passthrough, self._passthrough = self._passthrough, self._can_pass_through(info)
            if self._ring is not None and (self._passthrough or passthrough):
                # The source's own packets before a reopen have another clock (or the ring
                # holds the other producer's packets): start the buffer afresh.
                self._ring.clear()
            rec = self._rec
            if rec is not None and rec.passthrough and rec.writer is not None:
                if previous is not None and _same_stream(previous, info):
                    rec.writer.new_segment()
                else:
                    rec.broken = "source stream changed during the recording"
        log.info(
            "source open",
            extra=kv(
                source=self.config.name,
                codec=info.codec,
                width=info.width,
                height=info.height,
                fps=str(info.fps),
                passthrough=self._passthrough,
            ),
        )

    def _can_pass_through(self, info: StreamInfo) -> bool:
        return self.options.passthrough and passthrough_ok(self.mode, info)

    def _reader_nice(self) -> int:
        """The reader's (and its receive threads') niceness: raised while it decodes for a
        recording, normal while it only passes packets through (see `_read_loop`)."""
        return max(self.options.thread_nice, 0) if self._passthrough else self.options.thread_nice

    def _pump(self, source: FrameSource) -> None:
        announced = False
        compressed = source.info.template is not None
        source.decode = self._pictures.decoding = self._decode_wanted(compressed)
        passthrough: bool | None = None
        for item in source.items():
            if self._stopping.is_set():
                return
            if self._passthrough is not passthrough:  # opened, or the station's mode changed
                passthrough = self._passthrough
                set_thread_nice(self._reader_nice())
                renice(self._source_threads, self._reader_nice())
            self._seen = item.t
            if item.packet is not None:
                self._pictures.add_packet(item.packet)
                if self._passthrough:
                    self._on_source_packet(item)
            # Input rate: the source's packets (pictures it sent), decoded or not.
            if item.packet is not None if compressed else item.frame is not None:
                self.stats.frames_in += 1
                self.stats.fps_in.tick(item.t)
                if not announced:
                    announced = True
                    rec_id = self._rec_id()
                    self._set_state("recording" if rec_id else "idle", "", rec_id)
            decoding = self._decode_wanted(compressed)
            if decoding != self._pictures.decoding:
                if decoding == "none":
                    # No longer current: the preview falls back to keyframes.
                    self._pictures.latest = None
                source.decode = self._pictures.decoding = decoding
            if item.frame is None:
                continue
            self._pictures.latest = item.frame
            if self._encoding_wanted():
                if self._queue_full():
                    self.stats.dropped += 1
                else:
                    self._queue.put_nowait(item)
                    self.stats.queue_peak = max(self.stats.queue_peak, self._queue.qsize())

    def _decode_wanted(self, compressed: bool) -> Decode:
        """How much of the source the reader decodes: pictures are needed for every frame when
        re-encoding; a pass-through source only for a watched preview (snapshots and thumbnails
        decode on demand from the GOP buffer)."""
        if not compressed or not self._passthrough or self.options.passthrough_decode == "all":
            return "all"
        if self._pictures.gop.overflowed:
            return "all"  # keyframes too sparse to decode a GOP on demand
        if not self.preview_watched:
            return "none"
        return "keyframes" if self.options.passthrough_decode == "keyframes" else "nonref"

    def _queue_full(self) -> bool:
        fps = float(self.info.fps) if self.info is not None else 30.0
        return self._queue.qsize() >= max(2, round(self.options.queue_s * fps))

    def _encoding_wanted(self) -> bool:
        if self._passthrough:
            return False
        rec = self._rec
        return self._ring is not None or (rec is not None and not rec.stopping)

    def _on_source_packet(self, item: Captured) -> None:
        with self._lock:
            rec = self._rec
            if rec is not None and rec.passthrough and rec.broken is None:
                assert self.info is not None
                # A new picture size in-band ends the recording before it (sequence.py).
                rec.broken = rec.sequence.changed(item.packet)
                if rec.broken is None:
                    self._write(rec, item.packet, self.info.template, self.info.fps)
            elif self._ring is not None:
                self._ring.add(item.packet, item.t)

    def _write(self, rec: ActiveRecording, packet: Any, template: Any, fps: Any) -> None:
        if rec.writer is None:
            fmt = recording_format(rec.mode)
            rec.writer = RecordingWriter(
                rec.path, fmt, template, fps, self.options.fsync_interval_s
            )
            for old in self._ring.drain() if self._ring is not None else []:
                rec.writer.write(old)
        if rec.writer.write(packet) and not rec.passthrough:
            self.stats.frames_encoded += 1
        if rec.writer.failed is not None and rec.broken is None:
            # The room's supervisor ends the recording with this reason; what was written stays.
            rec.broken = describe_write_error(rec.writer.failed)

    # -- encoder thread ----------------------------------------------------------------
    def _encode_loop(self) -> None:
        set_thread_nice(self.options.thread_nice)  # x264's own threads inherit it
        encoder: VideoEncoder | None = None
        clock: SlotClock | None = None
        while True:
            item = self._queue.get()
            self._taken += 1
            if item is None:
                return
            if isinstance(item, _Flush):
                if encoder is not None and item.final:
                    self._route(encoder, encoder.encode(None), time.monotonic())
                    encoder = None
                item.done.set()
                continue
            try:
                encoder, clock = self._encode_one(encoder, clock, item)
            except Exception as exc:
                # Keep the thread alive: the recording is marked broken and ended by the room.
                log.exception("encoding failed", extra=kv(source=self.config.name))
                encoder = None
                with self._lock:
                    if self._rec is not None:
                        self._rec.broken = f"encoding failed: {exc!r}"

    def _encode_one(
        self, encoder: VideoEncoder | None, clock: SlotClock | None, item: Captured
    ) -> tuple[VideoEncoder, SlotClock]:
        assert item.frame is not None
        if encoder is None or clock is None or encoder.mode != self.mode:
            assert self.info is not None
            encoder = VideoEncoder(recording_format(self.mode), self.options.encoder, self.info)
            clock = SlotClock(encoder.fps, item.t)
            if self._ring is not None:
                self._ring.clear()
        pts = clock.slot(item.t, item.media_t)
        if pts is not None:
            self._route(encoder, encoder.encode(item.frame, pts), item.t)
        return encoder, clock

    def _route(self, encoder: VideoEncoder, packets: list[Any], t: float) -> None:
        now = time.monotonic()
        for packet in packets:
            self.stats.fps_encoded.tick(now)
            self.stats.encoder_lag_s = now - t
            with self._lock:
                rec = self._rec
                if rec is not None and not rec.passthrough:
                    # A frame encoded for the previous mode (station setting just changed)
                    # must not open this recording's file with the wrong codec.
                    if encoder.mode == rec.mode:
                        self._write(rec, packet, encoder.template, encoder.fps)
                elif self._ring is not None:
                    self._ring.add(packet, t)

    # -- state -------------------------------------------------------------------------
    def _rec_id(self) -> str | None:
        rec = self._rec
        return rec.recording_id if rec is not None else None

    def _set_state(self, state: str, detail: str, recording_id: str | None) -> None:
        if state == self.state and detail == self.detail:
            return
        self.state, self.detail = state, detail
        try:
            self.on_state(state, detail, recording_id)
        except Exception:
            log.exception("state callback failed", extra=kv(source=self.config.name))


def _same_stream(a: StreamInfo, b: StreamInfo) -> bool:
    def extradata(info: StreamInfo) -> bytes | None:
        return info.template.codec_context.extradata if info.template is not None else None

    return (a.codec, a.width, a.height, a.pix_fmt) == (
        b.codec,
        b.width,
        b.height,
        b.pix_fmt,
    ) and extradata(a) == extradata(b)
