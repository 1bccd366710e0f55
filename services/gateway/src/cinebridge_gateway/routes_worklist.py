"""The WORKLIST dialog's search (statement §4.1.3, Table 18), answered a page at a time.

The worklist service's whole answer (up to its entry cap, chunked over the bus when large)
is kept briefly by this gateway (`worklist_pages`); the first page comes with the search, the
others from `GET /worklist/results/{result_id}`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated

from cinebridge_common.messages import WorklistItem, WorklistQuery
from cinebridge_common.messages.worklist import QueryOutcome
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from .deps import ApiError, Gw, User
from .worklist_pages import StoredAnswer

router = APIRouter(prefix="/api/v1", tags=["worklist"])

DicomDateRange = Annotated[str | None, Field(pattern=r"^\d{8}$")]
PageLimit = Annotated[int, Field(ge=1, le=500)]
#: Entries per page unless the caller asks otherwise.
DEFAULT_PAGE = 100


class WorklistSearch(BaseModel):
    """The WORKLIST dialog's fields (statement Table 18 matching keys, date or date range)."""

    model_config = ConfigDict(extra="forbid")
    server_id: Annotated[str | None, Field(max_length=64)] = None
    patient_name: Annotated[str | None, Field(max_length=64)] = None
    patient_id: Annotated[str | None, Field(max_length=64)] = None
    accession_number: Annotated[str | None, Field(max_length=16)] = None
    requested_procedure_id: Annotated[str | None, Field(max_length=16)] = None
    date_from: DicomDateRange = None
    date_to: DicomDateRange = None
    #: Entries of the first page (the rest: `GET /worklist/results/{result_id}`).
    limit: PageLimit = DEFAULT_PAGE


class WorklistPage(BaseModel):
    """One page of a worklist answer; `total` entries in all, `items` from `offset`."""

    result_id: str
    total: int
    offset: int
    limit: int
    items: list[WorklistItem]
    incomplete: bool = False
    cached: bool = False
    too_many: bool = False
    warnings: list[str] = []
    server_id: str | None = None
    outcome: QueryOutcome | None = None
    cached_at: dt.datetime | None = None


def page_json(answer: StoredAnswer, result_id: str, offset: int, limit: int) -> bytes:
    """The page as `WorklistPage` JSON, its entries spliced in as the worklist service wrote
    them (`StoredAnswer.entries_json`): validating 100 entries of ~4 KB into models and
    dumping them again cost the gateway more CPU than the rest of the search."""
    meta = answer.meta
    banner = WorklistPage(
        result_id=result_id,
        total=answer.total,
        offset=offset,
        limit=limit,
        items=[],
        incomplete=meta.incomplete,
        cached=meta.cached,
        too_many=meta.too_many,
        warnings=meta.warnings,
        server_id=meta.server_id,
        outcome=meta.outcome,
        cached_at=meta.cached_at,
    ).model_dump_json(exclude={"items"})
    return banner.encode()[:-1] + b',"items":' + answer.entries_json(offset, limit) + b"}"


def _page(data: bytes) -> Response:
    return Response(data, media_type="application/json")


@router.post("/worklist/query", response_model=WorklistPage)
async def worklist_query(body: WorklistSearch, principal: User, gw: Gw) -> Response:
    data = await gw.bus.request_bytes(
        WorklistQuery(**body.model_dump(exclude={"limit"})),
        # The worklist service may take connect + query limits (10 s + 10 s) per server.
        gw.settings.gateway_rpc_timeout_s + 20,
    )
    # Entries stay the texts the worklist service wrote (worklist_pages): only the banner is
    # parsed; 5,000 entries: ~0.1 s of CPU.
    answer = await asyncio.to_thread(StoredAnswer.from_reply_bytes, data)
    if not answer.meta.ok:
        raise ApiError(502, "worklist_failed", answer.meta.error or "the worklist query failed")
    result_id = gw.worklist_pages.keep(principal.name, answer)
    return _page(page_json(answer, result_id, 0, body.limit))


@router.get("/worklist/results/{result_id}", response_model=WorklistPage)
async def worklist_page(
    result_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")],
    principal: User,
    gw: Gw,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = DEFAULT_PAGE,
) -> Response:
    answer = gw.worklist_pages.get(principal.name, result_id)
    if answer is None:
        raise ApiError(
            404, "worklist_result_gone", "this worklist answer has expired: search again"
        )
    return _page(page_json(answer, result_id, offset, limit))
