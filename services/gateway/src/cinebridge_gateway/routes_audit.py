"""The audit log: who did what to which study, filtered, and exported as CSV."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from .deps import Gw, User
from .repository import AuditFilter

router = APIRouter(prefix="/api/v1", tags=["ops"])

CSV_LIMIT = 100_000


class AuditEntry(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    action: str
    study_id: uuid.UUID | None
    target: str | None
    detail: dict[str, Any]
    client: str | None
    patient_name: str | None = None
    patient_id: str | None = None


def _filter(
    study_id: uuid.UUID | None = None,
    actor: Annotated[str | None, Query(max_length=80)] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_]+$")] = None,
    patient: Annotated[
        str, Query(max_length=64, description="patient name or ID, prefix, any case")
    ] = "",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditFilter:
    return AuditFilter(study_id, actor, action, patient, since, until, before_id, limit)


Filter = Annotated[AuditFilter, Depends(_filter)]
CSV_COLUMNS = ("at", "actor", "action", "patient_name", "patient_id", "study_id", "target")


@router.get("/audit", response_model=list[AuditEntry])
async def audit_log(_: User, gw: Gw, f: Filter) -> list[dict[str, Any]]:
    """Newest first; page with `before_id` (the last id of the previous page)."""
    return await gw.repo.list_audit(f)


@router.get(
    "/audit.csv",
    responses={200: {"description": "CSV, one row per entry", "content": {"text/csv": {}}}},
)
async def audit_csv(_: User, gw: Gw, f: Filter) -> Response:
    """The filtered log as CSV (every match up to 100,000 rows; `limit` is ignored)."""
    rows = await gw.repo.list_audit(dataclasses.replace(f, limit=CSV_LIMIT))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*CSV_COLUMNS, "client", "detail"])
    for row in rows:
        cells = [_cell(row[c]) for c in CSV_COLUMNS]
        writer.writerow([*cells, row["client"] or "", json.dumps(row["detail"], sort_keys=True)])
    headers = {"Content-Disposition": 'attachment; filename="cinebridge-audit.csv"'}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    text = str(value)
    # A cell a spreadsheet would run as a formula is quoted (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
