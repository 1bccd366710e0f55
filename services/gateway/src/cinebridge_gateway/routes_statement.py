"""The station's DICOM Conformance Statement (PS3.2), generated on request: the gateway asks each
DICOM service to describe itself (`cb.rpc.<service>.conformance`) and renders the answers with
`cinebridge_common.statement` as an HTML page, a Markdown or PDF download, or JSON for tools."""

from __future__ import annotations

import asyncio
import datetime as dt

from cinebridge_common import __version__
from cinebridge_common import statement as doc
from cinebridge_common.bus import BusError
from cinebridge_common.messages.base import Request as BusRequest
from cinebridge_common.messages.conformance import (
    ConformanceReply,
    ConverterConformance,
    ScpConformance,
    SenderConformance,
    WorklistConformance,
)
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import BaseModel

from .deps import Gw, User
from .statement_pdf import to_pdf

router = APIRouter(tags=["statement"])


class StatementOut(BaseModel):
    version: str
    generated_at: dt.datetime
    #: Services that did not answer; their sections are missing from the statement.
    missing: list[str]
    services: list[ConformanceReply]


async def _ask(gw: Gw, request: BusRequest, missing: list[str]) -> ConformanceReply | None:
    service = request.subject.split(".")[2]
    try:
        reply = await gw.bus.request(request, ConformanceReply, gw.settings.gateway_rpc_timeout_s)
    except BusError as exc:
        missing.append(f"{service} ({exc})")
        return None
    if not reply.ok:
        missing.append(f"{service} ({reply.error})")
        return None
    return reply


async def gather(gw: Gw) -> StatementOut:
    """Every service's description. The converter answers first: the sender is asked which
    presentation contexts it proposes for exactly the objects the converter writes."""
    missing: list[str] = []
    converter = await _ask(gw, ConverterConformance(), missing)
    objects = [
        (obj.sop_class.uid, ts.uid)
        for obj in (converter.created_objects if converter else [])
        for ts in obj.transfer_syntaxes
    ]
    others = await asyncio.gather(
        _ask(gw, ScpConformance(), missing),
        _ask(gw, SenderConformance(objects=objects), missing),
        _ask(gw, WorklistConformance(), missing),
    )
    replies = [r for r in (*others, converter) if r is not None]
    return StatementOut(
        version=__version__,
        generated_at=dt.datetime.now(dt.UTC),
        missing=sorted(missing),
        services=replies,
    )


def blocks(out: StatementOut) -> list[doc.Block]:
    station = doc.Station(out.version, out.generated_at, out.missing)
    return doc.build(station, out.services)


@router.get("/api/v1/statement", response_model=StatementOut)
async def statement_json(_: User, gw: Gw) -> StatementOut:
    """What every DICOM service says about itself now (the statement's data)."""
    return await gather(gw)


@router.get(
    "/api/v1/statement.md",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/markdown": {}}}},
)
async def statement_markdown(_: User, gw: Gw) -> PlainTextResponse:
    """The conformance statement as a Markdown file (sections 1-8 of PS3.2 Annex A)."""
    out = await gather(gw)
    name = f"cinebridge-conformance-{out.generated_at:%Y%m%d}.md"
    return PlainTextResponse(
        doc.to_markdown(blocks(out)),
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/api/v1/statement.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
async def statement_pdf(_: User, gw: Gw) -> Response:
    """The conformance statement as a PDF file (A4; the same sections and tables)."""
    out = await gather(gw)
    # Tens of pages of tables take seconds to lay out: off the event loop.
    data = await asyncio.to_thread(to_pdf, blocks(out), out.generated_at)
    name = f"cinebridge-conformance-{out.generated_at:%Y%m%d}.pdf"
    return Response(
        data,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/statement", response_class=HTMLResponse, include_in_schema=False)
async def statement_page(_: User, gw: Gw) -> HTMLResponse:
    """The statement as a page of its own (the site's stylesheet; no script)."""
    body = doc.to_html(blocks(await gather(gw)))
    return HTMLResponse(_PAGE.format(body=body), headers={"Cache-Control": "no-store"})


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>CineBridge DICOM Conformance Statement</title>
<link rel="stylesheet" href="/ui/style.css"></head>
<body class="statement"><main>
<p><a href="/api/v1/statement.md" download>Download as Markdown</a> ·
<a href="/api/v1/statement.pdf" download>Download as PDF</a></p>
{body}
</main></body></html>
"""
