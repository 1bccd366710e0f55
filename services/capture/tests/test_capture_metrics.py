"""A pipeline's running counts become Prometheus counters that never go down."""

from __future__ import annotations

from cinebridge_capture import metrics
from prometheus_client import REGISTRY


def dropped(room: str) -> float:
    labels = {"room": room, "source": "endo"}
    return REGISTRY.get_sample_value("cinebridge_capture_dropped_frames_total", labels) or 0.0


def test_counter_follows_the_running_total_across_a_pipeline_restart() -> None:
    labels = ("metrics-test", "endo")
    metrics.advance(metrics.DROPPED, labels, 5)
    metrics.advance(metrics.DROPPED, labels, 5)  # nothing new
    metrics.advance(metrics.DROPPED, labels, 12)
    assert dropped("metrics-test") == 12
    metrics.advance(metrics.DROPPED, labels, 3)  # the pipeline restarted its count at 0
    assert dropped("metrics-test") == 15
    metrics.advance(metrics.DROPPED, labels, 4)
    assert dropped("metrics-test") == 16
