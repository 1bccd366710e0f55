"""Conversion paths and failure causes as the converter's metrics name them."""

from __future__ import annotations

import asyncpg
from cinebridge_common.store import UnsafePath
from cinebridge_converter import metrics
from cinebridge_converter.errors import BadMedia, ConversionError, TransientFailure
from cinebridge_converter.video import Cancelled
from prometheus_client import REGISTRY


def test_causes() -> None:
    assert metrics.cause_of(BadMedia("empty")) == "bad_media"
    assert metrics.cause_of(ConversionError("no")) == "conversion"
    assert metrics.cause_of(UnsafePath("../x")) == "unsafe_path"
    assert metrics.cause_of(TransientFailure("disk full")) == "transient"
    assert metrics.cause_of(Cancelled()) == "cancelled"
    assert metrics.cause_of(OSError(28, "No space left on device")) == "disk"
    assert metrics.cause_of(asyncpg.PostgresConnectionError("gone")) == "database"
    assert metrics.cause_of(ValueError("?")) == "other"


def test_paths_and_failures_are_counted() -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    paths = "cinebridge_converter_conversion_paths_total"
    before = [sample(paths, kind="recording", path=p) for p in ("as_is", "remux", "transcode")]
    metrics.record_path("recording", verbatim=True, transcoded=False)
    metrics.record_path("recording", verbatim=False, transcoded=False)
    metrics.record_path("recording", verbatim=True, transcoded=True)
    after = [sample(paths, kind="recording", path=p) for p in ("as_is", "remux", "transcode")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    failures = sample("cinebridge_converter_failures_total", cause="bad_media")
    retries = sample("cinebridge_converter_conversions_total", outcome="retry")
    metrics.failed(BadMedia("empty"), retried=False)
    metrics.failed(OSError("x"), retried=True)
    assert sample("cinebridge_converter_failures_total", cause="bad_media") == failures + 1
    assert sample("cinebridge_converter_conversions_total", outcome="retry") == retries + 1
