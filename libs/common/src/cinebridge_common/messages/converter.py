"""Convert jobs the converter consumes and the events it produces."""

from __future__ import annotations

from typing import ClassVar, Literal

from .base import Event, Job, Reply, Request

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
    #: None: the station's setting when the job runs (a job travels as JSON, where a field left
    #: at its default cannot be told from one set to the same value).
    iod: IodChoice | None = None
    video_transfer_syntax: str | None = None
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
    #: The instance's series (one per source, statement Table 37) and Series Description (the
    #: source's name); `part` of `parts` instances made from one recording. What the worklist's
    #: Performed Series Sequence lists (PS3.4 F.7.2); absent for a handed-in instance.
    series_instance_uid: str | None = None
    series_description: str | None = None
    part: int = 1
    parts: int = 1


class ConversionFailed(Event):
    subject: ClassVar[str] = "cb.evt.conversion.failed"
    media_id: str
    study_id: str
    reason: str


ExportKind = Literal["mp4", "dicomdir", "deid"]


class ExportStudy(Request):
    """Export a study's media or instances (gateway → converter): MP4/JPEG files, DICOM media
    with a DICOMDIR (PS3.10/PS3.11 STD-GEN-USB/CD), or a de-identified copy (PS3.15 Annex E).
    The converter writes under the media store's `exports/` (then zipped for a download) or into
    its configured export folder; `export_id` names the result, never a patient's data."""

    subject: ClassVar[str] = "cb.rpc.converter.export"
    export_id: str
    study_id: str
    kind: ExportKind
    #: "download": a ZIP in the media store for the gateway to stream; "folder": the
    #: converter's export folder (a mounted USB stick or network share).
    target: Literal["download", "folder"] = "download"
    #: mp4 only: patient/date caption "none", burned into the pictures, or a side-car text file.
    caption: Literal["none", "burned", "sidecar"] = "none"
    #: deid only: PS3.15 E.3.6 Retain Longitudinal Temporal Information (Modified Dates) and
    #: E.3.5 Clean Descriptors options; None takes the station's settings.
    retain_dates: bool | None = None
    clean_descriptors: bool | None = None
    requested_by: str | None = None


class ExportStudyReply(Reply):
    """What an export wrote: where, how much, and what the user must check before sharing."""

    subject: ClassVar[str] = "cb.rpc.converter.reply"
    export_id: str = ""
    #: Relative path of the ZIP in the media store (download), or the folder written (folder).
    location: str = ""
    files: int = 0
    bytes: int = 0
    warnings: list[str] = []
