"""What a source pipeline is told and what it reports: options, statistics, the recording in
progress and the finished one, and the errors the room answers operators with. Kept apart from
`pipeline` (the reader and encoder threads) so that the room, supervisor and preview can name
them without reading the threads' code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .encoding import EncoderSettings, Mode
from .recorder import RecordingWriter
from .sequence import SequenceWatch

StateCallback = Callable[[str, str, str | None], None]  # (state, detail, recording_id)
PassthroughDecode = Literal["on-demand", "keyframes", "all"]


class NoSignal(RuntimeError):
    """The source delivers no frames right now."""


class AlreadyRecording(RuntimeError):
    """The source is already recording (one recording per source at a time)."""


@dataclass(frozen=True)
class PipelineOptions:
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    passthrough: bool = True
    prerecord_s: float = 0.0
    signal_timeout_s: float = 2.0
    open_timeout_s: float = 5.0
    reconnect_max_s: float = 10.0
    fsync_interval_s: float = 2.0
    queue_s: float = 3.0  # frames waiting for the encoder, in seconds at the source's rate
    #: Pass-through sources: "on-demand" decodes for snapshots/thumbnails only, and live while
    #: the preview is watched (reference pictures); "keyframes" the same but a watched preview
    #: shows keyframes only; "all" decodes every picture as it arrives (old behaviour).
    passthrough_decode: PassthroughDecode = "on-demand"
    #: Niceness of the reader and encoder threads: above the rest of a shared box (needs
    #: CAP_SYS_NICE; without it they run at 0).
    thread_nice: int = -10


@dataclass
class ActiveRecording:
    recording_id: str
    path: Path
    mode: Mode
    passthrough: bool
    started: float
    writer: RecordingWriter | None = None
    stopping: bool = False
    broken: str | None = None
    #: Pass-through: the stream's in-band sequence parameters, to end on a change.
    sequence: SequenceWatch = field(default_factory=SequenceWatch)


@dataclass(frozen=True)
class FinishedRecording:
    recording_id: str
    path: Path
    mode: Mode
    passthrough: bool
    frames: int
    duration_s: float
    width: int
    height: int
    fps: float
    reason: str | None


class Rate:
    """Events per second over the last whole second."""

    def __init__(self) -> None:
        self.count, self.window, self.value = 0, time.monotonic(), 0.0

    def tick(self, now: float) -> None:
        self.count += 1
        if now - self.window >= 1.0:
            self.value = self.count / (now - self.window)
            self.count, self.window = 0, now


@dataclass
class SourceStats:
    frames_in: int = 0
    frames_encoded: int = 0
    dropped: int = 0
    encoder_lag_s: float = 0.0
    queue_peak: int = 0  # most frames ever waiting for the encoder (how close to dropping)
    reconnects: int = 0
    fps_in: Rate = field(default_factory=Rate)
    fps_encoded: Rate = field(default_factory=Rate)
