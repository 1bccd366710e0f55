"""Prometheus metrics of the converter (served on the common /metrics endpoint)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CONVERSIONS = Counter(
    "cinebridge_converter_conversions_total",
    "Convert jobs by outcome (converted, duplicate, failed, retry)",
    ["outcome"],
)
SECONDS = Histogram(
    "cinebridge_converter_conversion_duration_seconds",
    "Wall time of a conversion, by media kind",
    ["kind"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
INSTANCES = Counter(
    "cinebridge_converter_instances_written_total", "DICOM instances written", ["sop_class"]
)
