"""Events the gateway produces about studies."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from .base import Event


class StudyChanged(Event):
    """A local study was created, edited (statement §8.1.5) or reconciled with a worklist item."""

    subject: ClassVar[str] = "cb.evt.study.changed"
    study_id: str
    change: Literal["created", "edited", "reconciled", "deleted"]
    by: str | None = None


class StudySaved(Event):
    """The operator pressed Save (statement §4.1.3): these media items are being converted.
    The study catalog (capture) records the study's state as `saved`; the procedure is over
    once each item is converted or failed (PS3.4 F.7.2: PPS COMPLETED)."""

    subject: ClassVar[str] = "cb.evt.study.saved"
    study_id: str
    media_ids: list[str] = []
    by: str | None = None


class CodedReason(BaseModel):
    """A coded entry (PS3.3 Table 8.8-1 Code Sequence Macro): value, scheme, meaning."""

    value: str = Field(min_length=1, max_length=16)
    scheme: str = Field(default="DCM", min_length=1, max_length=16)
    meaning: str = Field(min_length=1, max_length=64)


class StudyDiscontinued(Event):
    """The operator abandoned the study: its performed procedure step ends DISCONTINUED with
    this reason from PS3.16 CID 9300 "Procedure Discontinuation Reasons" (PS3.4 F.7.2)."""

    subject: ClassVar[str] = "cb.evt.study.discontinued"
    study_id: str
    reason: CodedReason
    by: str | None = None
