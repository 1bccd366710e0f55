"""Convert jobs the converter consumes and the events it produces."""

from __future__ import annotations

from typing import ClassVar, Literal

from .base import Event, Job

#: "standard": by the study's Modality (ES: VL/Video Endoscopic, XC: VL/Video Photographic,
#: else SC stills and Multi-frame True Color SC recordings); "videostation" = "sc": the
#: statement's Annex 8.1 Secondary Capture for everything; "mf-sc": SC / Multi-frame True Color
#: SC; "vl" = "vl-endoscopic": VL Endoscopic / Video Endoscopic (Modality ES);
#: "vl-photographic": VL / Video Photographic (Modality XC).
IodChoice = Literal[
    "standard", "videostation", "sc", "mf-sc", "vl", "vl-endoscopic", "vl-photographic"
]


class ConvertMedia(Job):
    """Turn one captured media item into a DICOM instance (job_key: media id + options)."""

    subject: ClassVar[str] = "cb.job.converter.convert"
    media_id: str
    study_id: str
    iod: IodChoice = "standard"
    video_transfer_syntax: str = "1.2.840.10008.1.2.4.102"
    auto_send: bool = True
    requested_by: str | None = None


class ConversionProgressed(Event):
    subject: ClassVar[str] = "cb.evt.conversion.progressed"
    media_id: str
    study_id: str
    fraction: float
    stage: str


class InstanceCreated(Event):
    """A DICOM Part 10 instance is durable in the media store: made by the converter (and
    indexed), or handed in through the gateway by `cinebridge send` (no media, no study)."""

    subject: ClassVar[str] = "cb.evt.instance.created"
    instance_id: str
    media_id: str
    study_id: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    rel_path: str
    size: int
    sha256: str
    auto_send: bool = True
    #: Deliver to exactly these destinations instead of the auto-send ones (an instance handed
    #: in by `cinebridge send`, which names its destination).
    destination_ids: list[str] | None = None


class ConversionFailed(Event):
    subject: ClassVar[str] = "cb.evt.conversion.failed"
    media_id: str
    study_id: str
    reason: str
