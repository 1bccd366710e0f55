"""A study's media items: the list, the file of one (the snapshot shown as thumbnail, the
recording played or downloaded), and deleting one. A purged study's files are gone: asking for
one is answered 410 with the date (docs/purge.md)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from cinebridge_common.messages import CatalogDeleteMedia, CatalogDeleteMediaReply
from cinebridge_common.store import UnsafePath
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse

from .deps import ApiError, Gw, User, client_of, not_found
from .routes_studies import ask_catalog
from .schemas import MediaOut
from .study_access import media_out, purged_error, refuse_purged, study_or_404

router = APIRouter(prefix="/api/v1", tags=["studies"])


@router.get("/studies/{study_id}/media", response_model=list[MediaOut])
async def study_media(study_id: uuid.UUID, _: User, gw: Gw) -> list[dict[str, Any]]:
    await study_or_404(gw, study_id)
    return [media_out(m) for m in await gw.repo.list_media(study_id)]


@router.get(
    "/media/{media_id}/content",
    responses={
        200: {"description": "The media file", "content": {"image/jpeg": {}, "video/mp4": {}}}
    },
)
async def media_content(media_id: uuid.UUID, _: User, gw: Gw) -> FileResponse:
    """The snapshot (JPEG, used as thumbnail) or recording (MP4) bytes."""
    media = await gw.repo.get_media(media_id)
    if media is None or media["state"] == "deleted":
        raise not_found("media")
    if media["purged_at"] is not None:
        await refuse_purged(gw, media["study_id"])
        raise purged_error(media["purged_at"])
    try:
        path = gw.store.resolve(media["rel_path"])
    except UnsafePath:
        raise not_found("media file") from None
    if not path.is_file():
        await refuse_purged(gw, media["study_id"])  # removed by a purge not yet marked
        raise not_found("media file")
    return FileResponse(path, media_type=media["mime"], headers={"Cache-Control": "private"})


@router.delete("/media/{media_id}", status_code=204)
async def delete_media(
    media_id: uuid.UUID,
    principal: User,
    request: Request,
    gw: Gw,
    confirm: Annotated[
        bool, Query(description="must be true: deleting needs a confirmation")
    ] = False,
) -> Response:
    if not confirm:
        raise ApiError(428, "confirmation_required", "add confirm=true to delete this media item")
    media = await gw.repo.get_media(media_id)
    if media is None:
        raise not_found("media")
    # The catalog (capture) owns media rows: it marks the item deleted; the audit is ours.
    msg = CatalogDeleteMedia(media_id=str(media_id), by=principal.name)
    reply = await ask_catalog(gw, msg, CatalogDeleteMediaReply)
    if not reply.ok:
        raise ApiError(503, "catalog_unavailable", reply.error or "the study catalog refused")
    if not reply.deleted:
        raise not_found("media")
    await gw.repo.audit(
        gw.pool,
        principal.name,
        "media_deleted",
        study_id=media["study_id"],
        target=str(media_id),
        client=client_of(request),
    )
    return Response(status_code=204)
