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
PATHS = Counter(
    "cinebridge_converter_conversion_paths_total",
    "Conversions by media kind and path: as_is (the source is the stream), remux, transcode",
    ["kind", "path"],
)
FAILURES = Counter(
    "cinebridge_converter_failures_total",
    "Failed conversion attempts by cause (bad_media, conversion, unsafe_path: for good; "
    "transient, cancelled, disk, database: retried)",
    ["cause"],
)


def record_path(kind: str, verbatim: bool, transcoded: bool) -> None:
    path = "transcode" if transcoded else "as_is" if verbatim else "remux"
    PATHS.labels(kind, path).inc()


def failed(exc: BaseException, *, retried: bool) -> None:
    """Count a failed attempt in CONVERSIONS (failed / retry) and FAILURES by its cause."""
    CONVERSIONS.labels("retry" if retried else "failed").inc()
    FAILURES.labels(cause_of(exc)).inc()


def cause_of(exc: BaseException) -> str:
    names = {
        "BadMedia": "bad_media",
        "ConversionError": "conversion",
        "UnsafePath": "unsafe_path",
        "TransientFailure": "transient",
        "Cancelled": "cancelled",
    }
    for cls in type(exc).__mro__:
        if cls.__name__ in names:
            return names[cls.__name__]
    if isinstance(exc, OSError):
        return "disk"
    return "database" if type(exc).__module__.startswith("asyncpg") else "other"
