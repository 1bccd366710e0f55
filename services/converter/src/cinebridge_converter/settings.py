"""Converter settings (`CB_CONVERTER_*` on top of the shared `CB_*` ones)."""

from __future__ import annotations

from pathlib import Path

from cinebridge_common.settings import ServiceSettings

from .convert import Limits


class ConverterSettings(ServiceSettings):
    #: Conversions running at once in this process (each transcode uses every core it gets).
    converter_workers: int = 1
    #: JetStream ack wait; `in_progress` heartbeats every third of it keep long jobs alive.
    converter_ack_wait_s: float = 60.0
    converter_max_deliver: int = 6
    #: A conversion's lease on its media, renewed while it works; one that ran out is re-queued.
    converter_job_lease_s: float = 120.0
    #: How often the reconciler looks for jobs nobody holds.
    converter_reconcile_interval_s: float = 15.0
    #: Re-queues of one stuck job before its media is marked failed.
    converter_max_requeues: int = 3
    #: Hostile-input bounds: picture size, recording length, transcode time per second of video.
    converter_max_pixels: int = 8192 * 8192
    converter_max_duration_s: float = 12 * 3600
    converter_transcode_seconds_per_second: float = 4.0
    #: Largest fragment (PS3.5 A.4: 2^32-2); longer recordings become several instances.
    #: Lower it (e.g. 2^31-2) for archives with signed 32-bit lengths (docs/dicom.md).
    converter_max_fragment_bytes: int = 0xFFFFFFFE
    #: libx264 preset of the transcode path.
    converter_x264_preset: str = "veryfast"
    #: Modality of SC instances without a worklist item (statement Table 32: "OT").
    converter_default_modality: str = "OT"
    #: Anatomic Region of video VL instances (PS3.3 C.8.12.1: one item) "value^scheme^meaning".
    converter_anatomic_region: str = "38266002^SCT^Entire body"
    #: Exports: the folder "to folder" exports are written to (a mounted USB stick or network
    #: share; unset: downloads only), and how long a download stays in the media store.
    converter_export_folder: Path | None = None
    converter_export_keep_s: float = 24 * 3600
    #: De-identified exports: PS3.15 E.3.6 Retain Longitudinal Temporal Information (Modified
    #: Dates) and E.3.5 Clean Descriptors options, unless the request says otherwise.
    converter_export_retain_dates: bool = False
    converter_export_clean_descriptors: bool = False
    #: Capture sources (series names) known to overlay patient data on their picture: their
    #: instances get a warning in de-identified exports even when Burned In Annotation is NO.
    converter_export_overlay_sources: list[str] = []

    def limits(self) -> Limits:
        return Limits(
            max_pixels=self.converter_max_pixels,
            max_duration_s=self.converter_max_duration_s,
            max_fragment_bytes=self.converter_max_fragment_bytes,
            transcode_seconds_per_second=self.converter_transcode_seconds_per_second,
            preset=self.converter_x264_preset,
        )

    def anatomic_region(self) -> tuple[str, str, str]:
        value, scheme, meaning = [*self.converter_anatomic_region.split("^"), "", "", ""][:3]
        return value, scheme, meaning
