"""Settings of one capture process (one room): sources, encoder, preview, disk reserve."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from cinebridge_common.settings import ServiceSettings, is_loopback_host
from pydantic import BaseModel, Field, field_validator

from .keys import key_code

#: Room and source names become NATS subject tokens, metric labels and URL path parts.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
#: The subject token of the study catalog's requests, which no room may take.
CATALOG_SUBJECT_NAME = "catalog"
ALLOWED_SCHEMES = (
    "lavfi:",
    "v4l2://",
    "file://",
    "rtsp://",
    "rtsps://",
    "srt://",
    "udp://",
    "rtp://",
    "http://",
    "https://",
)


class SourceConfig(BaseModel):
    """One video source of the room (`CB_CAPTURE_SOURCES` is a JSON list of these)."""

    name: str = Field(pattern=NAME_PATTERN)
    url: str
    #: V4L2 only: what to ask the device for; it answers with the nearest mode it offers.
    width: int | None = Field(default=None, ge=16, le=7680)
    height: int | None = Field(default=None, ge=16, le=4320)
    fps: float | None = Field(default=None, gt=0, le=240)
    pixel_format: str | None = Field(default=None, pattern=r"^[A-Z0-9]{4}$")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(ALLOWED_SCHEMES):
            raise ValueError(f"source url must start with one of {', '.join(ALLOWED_SCHEMES)}")
        if "\x00" in url or len(url) > 2000:
            raise ValueError("source url is not acceptable")
        return url


class KeyAction(BaseModel):
    """What a recording key (foot pedal, keypad) does: `CB_CAPTURE_INPUT_KEYS` values."""

    source: str = Field(pattern=NAME_PATTERN)
    action: Literal["snapshot", "record_start", "record_stop", "record_toggle"]


VideoMode = Literal["auto", "h264", "mpeg2-ml", "mpeg2-hl"]


class CaptureSettings(ServiceSettings):
    """`CB_CAPTURE_*` environment variables (see services/capture/README.md)."""

    capture_room: str = Field(default="room1", pattern=NAME_PATTERN)
    capture_sources: list[SourceConfig] = Field(
        default_factory=lambda: [
            SourceConfig(name="endo", url="lavfi:testsrc2=size=1280x720:rate=30")
        ]
    )
    #: MJPEG preview and thumbnails (`/preview/<source>.mjpg`, `/thumbnail/<source>.jpg`).
    capture_preview_host: str = "127.0.0.1"
    capture_preview_port: int = 0
    capture_preview_fps: float = Field(default=5.0, gt=0, le=30)
    capture_preview_width: int = Field(default=640, ge=64, le=1920)
    capture_preview_quality: int = Field(default=70, ge=10, le=95)
    #: A thumbnail is made when asked for, and reused for this long.
    capture_thumbnail_interval_s: float = Field(default=5.0, gt=0)
    #: Snapshot JPEG quality (baseline JPEG, ITU T.81 sequential DCT).
    capture_jpeg_quality: int = Field(default=90, ge=10, le=100)
    #: Recording: "auto" follows the station's video transfer syntax (statement Table 24).
    capture_video_mode: VideoMode = "auto"
    capture_encoder: str = "libx264"
    capture_x264_preset: str = "ultrafast"
    capture_x264_tune: str = "zerolatency"
    #: 8x8dct keeps the stream in High Profile even with the ultrafast preset.
    capture_x264_params: str = "8x8dct=1"
    capture_crf: int = Field(default=23, ge=0, le=51)
    capture_encoder_threads: int = Field(default=0, ge=0, le=64)
    #: Frames waiting for the encoder, in seconds of video: rides out CPU starvation this long
    #: before frames are dropped (each queued 1080p frame holds ~3 MB).
    capture_encoder_queue_s: float = Field(default=3.0, gt=0, le=10)
    #: Niceness of the reader/encoder/snapshot threads: a recording must win the CPU on a loaded
    #: box. Below 0 needs CAP_SYS_NICE (compose: `cap_add: [SYS_NICE]`); else they run at 0.
    #: The reader of a network stream recorded by pass-through runs at 0 (it needs ~1% of a core).
    capture_thread_nice: int = Field(default=-10, ge=-20, le=0)
    capture_gop_s: float = Field(default=1.0, gt=0, le=10)
    capture_passthrough: bool = True
    #: Pass-through sources: "on-demand" decodes pictures only for snapshots (the GOP so far),
    #: thumbnails (a keyframe) and a watched preview; "keyframes" also shows a watched preview
    #: from keyframes only; "all" decodes every picture as it arrives.
    capture_passthrough_decode: Literal["on-demand", "keyframes", "all"] = "on-demand"
    capture_prerecord_s: float = Field(default=0.0, ge=0, le=60)
    capture_max_recording_s: float = Field(default=4 * 3600.0, gt=0)
    #: A source is "no-signal" after this long without a frame; reopened with backoff.
    capture_signal_timeout_ms: int = Field(default=2000, ge=100)
    capture_open_timeout_s: float = Field(default=5.0, gt=0)
    capture_reconnect_max_s: float = Field(default=10.0, gt=0)
    #: A recording survives a drop-out this long; after it, it is ended and registered.
    capture_dropout_max_s: float = Field(default=30.0, gt=0)
    #: A recording refuses to start (and stops) when free space falls below this.
    capture_disk_reserve_bytes: int = Field(default=2 << 30, ge=0)
    capture_fsync_interval_s: float = Field(default=2.0, gt=0)
    #: Recording keys: a Linux input device and {key name or code: action}.
    capture_input_device: Path | None = None
    capture_input_keys: dict[str, KeyAction] = Field(default_factory=dict)
    #: Local purge policy (docs/purge.md; the policy itself is in the station settings): how
    #: often the planner runs, and how many candidates it reads and asks the sender about at a
    #: time (a run pages through all of them, oldest first).
    capture_purge_interval_s: float = Field(default=300.0, gt=0)
    capture_purge_batch: int = Field(default=200, ge=1, le=10000)

    def bound_beyond_loopback(self) -> bool:
        return super().bound_beyond_loopback() or not is_loopback_host(self.capture_preview_host)

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.capture_sources if s.name == name), None)

    @field_validator("capture_room")
    @classmethod
    def _not_the_catalog(cls, room: str) -> str:
        # cb.rpc.capture.catalog.* are the study catalog's subjects, beside cb.rpc.capture.<room>.*
        if room == CATALOG_SUBJECT_NAME:
            raise ValueError(f"a room may not be named {CATALOG_SUBJECT_NAME!r}")
        return room

    @field_validator("capture_input_keys")
    @classmethod
    def _known_keys(cls, keys: dict[str, KeyAction]) -> dict[str, KeyAction]:
        for name in keys:
            key_code(name)  # raises ValueError with the unknown name
        return keys

    @field_validator("capture_sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError("source names must be unique within a room")
        if not sources:
            raise ValueError("a room needs at least one source")
        return sources
