"""Events the gateway produces about studies."""

from __future__ import annotations

from typing import ClassVar, Literal

from .base import Event


class StudyChanged(Event):
    """A local study was created, edited (statement §8.1.5) or reconciled with a worklist item."""

    subject: ClassVar[str] = "cb.evt.study.changed"
    study_id: str
    change: Literal["created", "edited", "reconciled", "deleted"]
    by: str | None = None


class StudySaved(Event):
    """The operator saved a study (statement §4.1.3 "Save"): its convert jobs are queued. The
    study catalog (capture) records the study's state as `saved`."""

    subject: ClassVar[str] = "cb.evt.study.saved"
    study_id: str
    by: str | None = None
