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
