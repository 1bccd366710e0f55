"""Prometheus metrics per room and source (served on the service's /metrics endpoint)."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

LABELS = ("room", "source")

INPUT_FPS = Gauge("cb_capture_input_fps", "Frames per second arriving from the source", LABELS)
ENCODED_FPS = Gauge("cb_capture_encoded_fps", "Frames per second leaving the encoder", LABELS)
DROPPED = Gauge("cb_capture_dropped_frames", "Frames dropped since start (encoder behind)", LABELS)
ENCODER_LAG = Gauge("cb_capture_encoder_lag_seconds", "Frame arrival to encoded packet", LABELS)
SIGNAL = Gauge("cb_capture_signal_present", "1 while the source delivers frames", LABELS)
RECORDING = Gauge("cb_capture_recording", "1 while the source is recording", LABELS)
RECONNECTS = Gauge("cb_capture_source_reconnects", "Source reopen attempts since start", LABELS)
DISK_FREE = Gauge("cb_capture_disk_free_bytes", "Free bytes on the media store volume", ("room",))
DISK_HEADROOM = Gauge(
    "cb_capture_disk_headroom_bytes", "Free bytes above the recording reserve", ("room",)
)
SNAPSHOT_SECONDS = Histogram(
    "cb_capture_snapshot_seconds",
    "Snapshot request to JPEG fsync'd and registered",
    ("room",),
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
)
