"""Prometheus metrics per room and source (served on the service's /metrics endpoint)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LABELS = ("room", "source")

INPUT_FPS = Gauge(
    "cinebridge_capture_input_frames_per_second",
    "Frames per second arriving from the source",
    LABELS,
)
ENCODED_FPS = Gauge(
    "cinebridge_capture_encoded_frames_per_second", "Frames per second leaving the encoder", LABELS
)
DROPPED = Counter(
    "cinebridge_capture_dropped_frames_total", "Frames dropped (encoder behind the source)", LABELS
)
ENCODER_LAG = Gauge(
    "cinebridge_capture_encoder_lag_seconds", "Frame arrival to encoded packet", LABELS
)
SIGNAL = Gauge("cinebridge_capture_signal_present", "1 while the source delivers frames", LABELS)
RECORDING = Gauge("cinebridge_capture_recording", "1 while the source is recording", LABELS)
RECONNECTS = Counter("cinebridge_capture_source_reconnects_total", "Source reopen attempts", LABELS)
RECORDED_SECONDS = Counter(
    "cinebridge_capture_recorded_seconds_total", "Seconds of video recorded and registered", LABELS
)
DISK_FREE = Gauge(
    "cinebridge_capture_disk_free_bytes", "Free bytes on the media store volume", ("room",)
)
DISK_HEADROOM = Gauge(
    "cinebridge_capture_disk_headroom_bytes", "Free bytes above the recording reserve", ("room",)
)
SNAPSHOT_SECONDS = Histogram(
    "cinebridge_capture_snapshot_duration_seconds",
    "Snapshot request to JPEG fsync'd and registered",
    ("room",),
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
)

_last_totals: dict[tuple[int, tuple[str, ...]], float] = {}


def advance(counter: Counter, labels: tuple[str, ...], total: float) -> None:
    """Bring `counter` up to a pipeline's running `total` (which restarts with its pipeline)."""
    key = (id(counter), labels)
    last = _last_totals.get(key, 0.0)
    if total < last:  # the pipeline restarted its count
        last = 0.0
    if total > last:
        counter.labels(*labels).inc(total - last)
    _last_totals[key] = total


#: The local purge policy (docs/purge.md), shared by every room's process (one runs it at a time).
PURGED = Counter(
    "cinebridge_capture_purged_studies_total", "Studies whose local data was purged", ("reason",)
)
STORE_LOW = Gauge(
    "cinebridge_capture_media_store_low",
    "1 while the media store is below the low watermark and nothing more may be purged",
)
