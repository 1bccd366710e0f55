"""Messages of the local purge policy: capture (the study catalog's owner) plans a purge and
removes the catalog's media, the converter removes the study's DICOM files, the gateway audits
it (docs/purge.md)."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, Literal

from .base import Event, Job, Reply, Request

PurgeReason = Literal["retention", "watermark"]


class PurgeStudyFiles(Job):
    """Remove the DICOM files the converter wrote for a study whose purge capture started (every
    destination requiring commitment committed it). job_key: `purge:<study id>`; asked again, it
    removes what is left and reports the same totals."""

    subject: ClassVar[str] = "cb.job.converter.purge"
    study_id: str
    reason: PurgeReason = "retention"
    #: When the purge started: instances made later (a capture into the study after its purge
    #: began) were never committed and are kept.
    started_at: dt.datetime | None = None


class InstancesPurged(Event):
    """The converter removed every DICOM file of a study and marked its instances purged."""

    subject: ClassVar[str] = "cb.evt.instances.purged"
    study_id: str
    instances: int = 0
    bytes: int = 0


class StudyPurged(Event):
    """A study's local data is gone (media, preview data, DICOM files); its catalog rows stay,
    marked purged, for the audit and the ledger. The gateway records it in its audit log."""

    subject: ClassVar[str] = "cb.evt.study.purged"
    study_id: str
    study_instance_uid: str = ""
    reason: PurgeReason = "retention"
    media_files: int = 0
    media_bytes: int = 0
    instances: int = 0
    instance_bytes: int = 0


class MediaStoreLow(Event):
    """Free space of the media store is below the low watermark and nothing more may be purged
    (what is left is not committed, or held): the operator must act."""

    subject: ClassVar[str] = "cb.evt.media_store.low"
    free_percent: float
    low_watermark_percent: float
    kept_uncommitted: int = 0
    kept_held: int = 0


class CatalogHoldStudy(Request):
    """Hold (or release) a study: a held study is never purged, whatever its commitment and age.
    Answered by any capture process (the study catalog's owner)."""

    subject: ClassVar[str] = "cb.rpc.capture.catalog.hold"
    study_id: str
    held: bool = True
    by: str | None = None


class CatalogHoldStudyReply(Reply):
    subject: ClassVar[str] = "cb.rpc.capture.reply"
    study_id: str | None = None
    held: bool = False
    #: The study's local data is gone already: holding it keeps nothing.
    purged: bool = False
