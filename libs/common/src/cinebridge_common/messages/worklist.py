"""Worklist requests (C-FIND via the worklist service) and their typed results."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from .base import Reply, Request


class WorklistItem(BaseModel):
    """One Modality Worklist entry (statement Table 18), plus the full dataset as DICOM JSON."""

    patient_name: str | None = None
    patient_id: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    accession_number: str | None = None
    requested_procedure_id: str | None = None
    requested_procedure_description: str | None = None
    study_instance_uid: str | None = None
    referring_physician_name: str | None = None
    modality: str | None = None
    scheduled_station_ae_title: str | None = None
    scheduled_procedure_step_start_date: str | None = None
    scheduled_procedure_step_start_time: str | None = None
    scheduled_procedure_step_id: str | None = None
    scheduled_procedure_step_description: str | None = None
    scheduled_performing_physician_name: str | None = None
    #: Every returned attribute, sequences included, as DICOM JSON (PS3.18 F.2).
    dataset: dict[str, Any] = {}


class WorklistQuery(Request):
    """Search the worklist with the statement's fields (Table 18 P keys, date or range)."""

    subject: ClassVar[str] = "cb.rpc.worklist.query"
    server_id: str | None = None
    patient_name: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    requested_procedure_id: str | None = None
    date_from: str | None = None
    date_to: str | None = None


class WorklistQueryReply(Reply):
    subject: ClassVar[str] = "cb.rpc.worklist.reply"
    items: list[WorklistItem] = []
    incomplete: bool = False
    cached: bool = False
    too_many: bool = False
    warnings: list[str] = []


class WorklistEcho(Request):
    subject: ClassVar[str] = "cb.rpc.worklist.echo"
    server_id: str


class WorklistEchoReply(Reply):
    subject: ClassVar[str] = "cb.rpc.worklist.reply"
    reachable: bool = False
    rtt_ms: float | None = None
    reason: str | None = None
