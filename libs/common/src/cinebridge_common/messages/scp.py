"""Events of the Storage SCP."""

from __future__ import annotations

from typing import ClassVar

from .base import Event


class InstanceReceived(Event):
    """An instance received over C-STORE is fsync'd, indexed and acknowledged."""

    subject: ClassVar[str] = "cb.evt.instance.received"
    instance_id: str
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str
    rel_path: str
    size: int
    sha256: str
    replaced: bool = False
