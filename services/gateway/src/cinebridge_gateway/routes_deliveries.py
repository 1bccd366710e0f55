"""Sending a study again and following its sends: "Forward" (§4.1.3), the study's deliveries
and their attempts, and a retry of one. The sender reads the DICOM files again for each, so a
purged study is refused with 410 and the date (docs/purge.md)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from cinebridge_common.messages import ForwardStudy, RetryDelivery, RetryDeliveryReply
from cinebridge_common.outbox import enqueue
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from .deps import ApiError, Gw, User, client_of
from .schemas import Accepted, DeliveryOut
from .study_access import refuse_purged, study_or_404, study_with_files

router = APIRouter(prefix="/api/v1", tags=["studies"])


class ForwardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    destination_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=32)]
    instance_id: uuid.UUID | None = None


@router.post("/studies/{study_id}/forward", response_model=Accepted, status_code=202)
async def forward_study(
    study_id: uuid.UUID, body: ForwardRequest, principal: User, request: Request, gw: Gw
) -> Accepted:
    """ "Forward" (§4.1.3): send a saved study (or one instance) again to chosen destinations."""
    key = f"forward-{uuid.uuid4().hex}"  # each press is a new request, by design
    job = ForwardStudy(
        job_key=key,
        study_id=str(study_id),
        instance_id=str(body.instance_id) if body.instance_id else None,
        destination_ids=[str(d) for d in body.destination_ids],
        requested_by=principal.name,
    )
    async with gw.pool.acquire() as conn, conn.transaction():
        # The sender reads the study's DICOM files again: gone once a purge started.
        await study_with_files(gw, study_id, conn)
        await enqueue(conn, job, key)
        await gw.repo.audit(
            conn,
            principal.name,
            "study_forwarded",
            study_id=study_id,
            detail={"destinations": job.destination_ids},
            client=client_of(request),
        )
    return Accepted(accepted=1, job_keys=[key])


@router.get("/studies/{study_id}/deliveries", response_model=list[DeliveryOut])
async def study_deliveries(study_id: uuid.UUID, _: User, gw: Gw) -> list[dict[str, Any]]:
    await study_or_404(gw, study_id)
    return await gw.repo.deliveries_for_study(study_id)


@router.get("/deliveries/{delivery_id}/attempts")
async def delivery_attempts(delivery_id: uuid.UUID, _: User, gw: Gw) -> list[dict[str, Any]]:
    return await gw.repo.delivery_attempts(delivery_id)


@router.post("/deliveries/{delivery_id}/retry")
async def retry_delivery(
    delivery_id: uuid.UUID, principal: User, request: Request, gw: Gw
) -> dict[str, Any]:
    study_id = await gw.repo.delivery_study(delivery_id)
    if study_id is not None:
        await refuse_purged(gw, study_id)
    reply = await gw.bus.request(
        RetryDelivery(delivery_id=str(delivery_id)),
        RetryDeliveryReply,
        gw.settings.gateway_rpc_timeout_s,
    )
    if not reply.ok:
        raise ApiError(409, "retry_refused", reply.error or "the sender refused the retry")
    await gw.repo.audit(
        gw.pool,
        principal.name,
        "delivery_retried",
        study_id=study_id,
        target=str(delivery_id),
        client=client_of(request),
    )
    return {"delivery_id": str(delivery_id), "state": reply.state}
