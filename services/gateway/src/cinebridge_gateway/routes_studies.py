"""Studies: create (form/worklist/local), edit (§8.1.5), search, detail, save, discontinue.
A study's media are in routes_media, its sends in routes_deliveries."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Annotated, Any, Literal, TypeVar

from cinebridge_common.bus import BusError
from cinebridge_common.messages import (
    CatalogCreateStudy,
    CatalogCreateStudyReply,
    CatalogEditStudy,
    CatalogEditStudyReply,
    CatalogReconcile,
    CatalogReconcileReply,
    CodedReason,
    ConvertMedia,
    MppsRetry,
    MppsRetryReply,
    NewStudyRecord,
    StudyDiscontinued,
    StudySaved,
    WorklistCheckItem,
    WorklistCheckItemReply,
    WorklistItem,
)
from cinebridge_common.messages.base import Reply
from cinebridge_common.messages.base import Request as BusRequest
from cinebridge_common.messages.converter import IodChoice
from cinebridge_common.outbox import enqueue
from cinebridge_common.procedure_codes import DISCONTINUATION_REASONS
from cinebridge_common.station import load_station_settings
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .deps import ApiError, Gateway, Gw, User, client_of, not_found
from .repository import received_study
from .schemas import Accepted, StudyDetail, StudyOut
from .search_repository import StudyFilter
from .studies import (
    PatientData,
    PatientEdit,
    apply_edit,
    new_study_from_form,
    new_study_from_local,
    new_study_from_worklist,
    new_unscheduled_study,
)
from .study_access import (
    ledger_fields,
    ledger_map,
    media_with_ledger,
    study_or_404,
    study_state,
    study_with_files,
)

router = APIRouter(prefix="/api/v1", tags=["studies"])

Room = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
StudyStatus = Literal["non-converted", "converted", "sent", "failed", "received"]
VIDEO_SYNTAXES = (
    "1.2.840.10008.1.2.4.100",
    "1.2.840.10008.1.2.4.101",
    "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.103",
)


class NewStudy(BaseModel):
    """Start a study: from the PATIENT form, a WORKLIST item, a LOCAL study, or unscheduled
    (patient data later; statement §4.1.3)."""

    model_config = ConfigDict(extra="forbid")
    origin: Literal["form", "worklist", "local", "unscheduled"] = "form"
    room: Room | None = None
    patient: PatientData | None = None
    worklist_item: WorklistItem | None = None
    from_study_id: uuid.UUID | None = None


class SaveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    iod: IodChoice | None = None
    video_transfer_syntax: Literal[VIDEO_SYNTAXES] | None = None  # type: ignore[valid-type]
    auto_send: bool = True


async def study_values(gw: Gateway, body: NewStudy, room: str | None) -> dict[str, Any]:
    """The new study's columns for one of the ways a study begins (statement §4.1.3)."""
    root, now = gw.settings.org_uid_root, dt.datetime.now(dt.UTC)
    if body.origin == "form":
        return new_study_from_form(body.patient or PatientData(), room, root, now)
    if body.origin == "unscheduled":
        return new_unscheduled_study(room, root, now)
    if body.origin == "worklist":
        if body.worklist_item is None:
            raise ApiError(422, "validation_error", "worklist_item: required for origin=worklist")
        return new_study_from_worklist(body.worklist_item, room, root, now)
    if body.from_study_id is None:
        raise ApiError(422, "validation_error", "from_study_id: required for origin=local")
    source = await gw.repo.get_study(gw.pool, body.from_study_id)
    if source is None and await gw.repo.has_table("received_study_index"):
        source = await received_study(gw.pool, body.from_study_id)
    if source is None:
        raise not_found("study")
    return new_study_from_local(source, room, root, now)


async def insert_new_study(
    gw: Gateway, values: dict[str, Any], origin: str, actor: str, client: str
) -> dict[str, Any]:
    """The study catalog (capture) writes the study and announces it; the gateway audits it."""
    record = NewStudyRecord(**{**values, "id": str(values["id"])})
    msg = CatalogCreateStudy(study=record, by=actor)
    reply = await ask_catalog(gw, msg, CatalogCreateStudyReply)
    if reply.conflict:
        raise ApiError(
            409,
            "conflict",
            "a study with this Study Instance UID exists already (this worklist item was "
            "started before: open it from Local search)",
        )
    if not reply.ok:
        raise ApiError(422, "validation_error", reply.error or "the study catalog refused")
    study = await gw.repo.get_study(gw.pool, values["id"])
    assert study is not None, "the catalog answered before its commit"
    await gw.repo.audit(
        gw.pool,
        actor,
        "study_created",
        study_id=study["id"],
        detail={"origin": origin},
        client=client,
    )
    return study


@router.post("/studies", response_model=StudyOut, status_code=201)
async def create_study(body: NewStudy, principal: User, request: Request, gw: Gw) -> dict[str, Any]:
    """Create a study without making it a room's current one (`POST /rooms/{room}/study` does
    both in one request)."""
    values = await study_values(gw, body, body.room)
    return await insert_new_study(gw, values, body.origin, principal.name, client_of(request))


class SearchQuery(BaseModel):
    """The LOCAL search's query parameters. Checked here as one model rather than declared one
    by one on the route: FastAPI's per-parameter handling cost ~0.15 ms of the gateway's CPU on
    every search (eleven parameters; bench/gateway.py), the whole model ~0.02 ms. The OpenAPI
    document lists them as before (`_query_parameters`) and a bad one answers the same 422."""

    model_config = ConfigDict(extra="ignore")

    q: str | None = Field(None, max_length=64)
    patient_id: str | None = Field(None, max_length=64)
    accession_number: str | None = Field(None, max_length=16)
    date_from: str | None = Field(None, pattern=r"^\d{8}$")
    date_to: str | None = Field(None, pattern=r"^\d{8}$")
    origin: Literal["form", "worklist", "local", "unscheduled", "received"] | None = None
    status: StudyStatus | None = None
    room: str | None = Field(None, max_length=64)
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=100_000)
    ledger: bool = Field(
        False, description="add each study's delivery ledger state (asks the sender)"
    )


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """A model's fields as optional OpenAPI query parameters, as FastAPI lists declared ones."""
    parameters = []
    for name, prop in model.model_json_schema()["properties"].items():
        schema = {k: v for k, v in prop.items() if not (k == "default" and v is None)}
        parameter = {"name": name, "in": "query", "required": False, "schema": schema}
        if "description" in schema:
            parameter["description"] = schema["description"]
        parameters.append(parameter)
    return parameters


def search_query(request: Request) -> SearchQuery:
    """The request's search parameters (the last value of a repeated one, as FastAPI takes)."""
    try:
        return SearchQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("query", *err["loc"])} for err in exc.errors()]
        ) from None


@router.get(
    "/studies",
    response_model=list[StudyOut],
    openapi_extra={"parameters": _query_parameters(SearchQuery)},
)
async def search_studies(_: User, gw: Gw, request: Request) -> Response:
    """LOCAL search (§4.1.3): prefix match on name/ID/accession (`*`, `?` wildcards), newest
    first, each marked non-converted / converted / sent / failed."""
    query = search_query(request)
    page = await gw.repo.search_studies_json(StudyFilter(**query.model_dump(exclude={"ledger"})))
    if query.ledger:
        page = await _with_ledger(gw, page)
    # Already JSON (made by PostgreSQL in the StudyOut shape): passed through as it is.
    return Response(page, media_type="application/json")


async def _with_ledger(gw: Gateway, page: str) -> str:
    """The page with each local study's ledger state (null for a study received from
    elsewhere, and for every study while the sender does not answer). Asked for, not by
    default: the search itself stays one query, the ledger is one more question to the sender."""
    rows: list[dict[str, Any]] = json.loads(page)
    local = [uuid.UUID(r["id"]) for r in rows if r.get("origin") != "received"]
    ledgers = await ledger_map(gw, local) or {}
    for row in rows:
        entry = ledgers.get(row["id"])
        row["ledger"] = entry.state if entry else None
    return json.dumps(rows)


@router.get("/studies/{study_id}", response_model=StudyDetail)
async def get_study(
    study_id: uuid.UUID,
    _: User,
    gw: Gw,
    ledger: Annotated[
        bool, Query(description="add the study's delivery ledger state (asks the sender)")
    ] = False,
) -> dict[str, Any]:
    """The study with its media items, their deliveries and its procedure step; each item's
    delivery ledger state, per destination, and with `ledger=true` the study's (null while
    the sender does not answer) (docs/purge.md "Ledger")."""
    study = await study_or_404(gw, study_id)
    study.pop("worklist_item", None)
    deliveries = await gw.repo.deliveries_for_study(study_id)
    entry = None
    if ledger:
        entry = (await ledger_map(gw, [study_id]) or {}).get(str(study_id))
    media = await gw.repo.list_media(study_id)
    return {
        **study,
        "status": await gw.repo.study_status(study_id),
        "commitment": await gw.repo.study_commitment(study_id),
        **ledger_fields(entry),
        "media": gw.progress.annotate(
            media_with_ledger(media, deliveries, await study_state(gw, study_id, entry))
        ),
        "deliveries": deliveries,
        "mpps": await gw.repo.mpps_for_study(study_id),
    }


#: How often an edit is computed again when the study changed under it (another edit,
#: reconciliation) before the operator is asked to try again.
EDIT_ATTEMPTS = 3


@router.patch("/studies/{study_id}", response_model=StudyOut)
async def edit_study(
    study_id: uuid.UUID, body: PatientEdit, principal: User, request: Request, gw: Gw
) -> dict[str, Any]:
    """Statement §8.1.5, computed here from the study as read and applied by the study catalog
    (capture) only if the study is still as read."""
    for _ in range(EDIT_ATTEMPTS):
        study = await study_or_404(gw, study_id)
        changes = apply_edit(study, body, gw.settings.org_uid_root)
        if not changes:
            return study
        msg = CatalogEditStudy(
            study_id=str(study_id), changes=changes, read_at=study["updated_at"], by=principal.name
        )
        reply = await ask_catalog(gw, msg, CatalogEditStudyReply)
        if not reply.ok:
            raise ApiError(409, "conflict", reply.error or "the study catalog refused the edit")
        if not reply.found:
            raise not_found("study")
        if not reply.stale:
            break
    else:
        raise ApiError(409, "conflict", "the study changed while it was edited: try again")
    await gw.repo.audit(
        gw.pool,
        principal.name,
        "study_edited",
        study_id=study_id,
        detail={"fields": sorted(changes)},
        client=client_of(request),
    )
    return await study_or_404(gw, study_id)


CatalogReply = TypeVar("CatalogReply", bound=Reply)


async def ask_catalog(gw: Gateway, msg: BusRequest, reply_type: type[CatalogReply]) -> CatalogReply:
    """A request to the study catalog (capture owns `studies` and `media`): 503 while no
    capture process answers."""
    try:
        return await gw.bus.request(msg, reply_type, gw.settings.gateway_rpc_timeout_s)
    except BusError as exc:
        raise ApiError(503, "catalog_unavailable", f"the study catalog (capture): {exc}") from None


class ReconcileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    worklist_item: WorklistItem


@router.post("/studies/{study_id}/reconcile", response_model=StudyOut)
async def reconcile_study(
    study_id: uuid.UUID, body: ReconcileRequest, principal: User, request: Request, gw: Gw
) -> dict[str, Any]:
    """WORKLIST dialog on a study already begun (statement §4.1.3: acquisition may start before
    the patient data; the operator then picks the worklist item): the worklist service checks
    the item as it checks a RIS answer, and the study catalog (capture) gives the study the
    item's Study Instance UID and attributes."""
    await study_or_404(gw, study_id)
    timeout = gw.settings.gateway_rpc_timeout_s
    checked = await gw.bus.request(
        WorklistCheckItem(item=body.worklist_item), WorklistCheckItemReply, timeout
    )
    if not checked.ok or checked.item is None:
        raise ApiError(409, "reconcile_refused", checked.error or "the worklist service refused")
    msg = CatalogReconcile(study_id=str(study_id), item=checked.item, by=principal.name)
    reply = await ask_catalog(gw, msg, CatalogReconcileReply)
    if not reply.ok:
        raise ApiError(409, "reconcile_refused", reply.error or "the study catalog refused")
    await gw.repo.audit(
        gw.pool,
        principal.name,
        "study_reconciled",
        study_id=study_id,
        detail={"previous_uid": reply.previous_study_instance_uid},
        client=client_of(request),
    )
    return await study_or_404(gw, study_id)


@router.post("/studies/{study_id}/save", response_model=Accepted, status_code=202)
async def save_study(
    study_id: uuid.UUID, body: SaveRequest, principal: User, request: Request, gw: Gw
) -> Accepted:
    """ "Save" (§4.1.3): one ConvertMedia job per media item; the job key (media id + IOD +
    transfer syntax) makes a second press harmless, and re-queues what is not converted."""
    station = await load_station_settings(gw.pool)
    iod = body.iod or station.iod
    syntax = body.video_transfer_syntax or station.video_transfer_syntax
    keys: list[str] = []
    async with gw.pool.acquire() as conn, conn.transaction():
        # Converting again needs the media files: gone once a purge started.
        await study_with_files(gw, study_id, conn)
        for media_id, state in await gw.repo.media_to_convert(conn, study_id):
            key = f"{media_id}:{iod}:{syntax}"
            job = ConvertMedia(
                job_key=key,
                media_id=str(media_id),
                study_id=str(study_id),
                iod=iod,
                video_transfer_syntax=syntax,  # type: ignore[arg-type]
                auto_send=body.auto_send,
                requested_by=principal.name,
            )
            # Same key, same result: for converted media a second Save is a no-op (one outbox
            # row per key). Every other item already asked for is asked again under a new
            # message id (the key, and so the UIDs, stay): a job lost or given up while it was
            # `captured`, `converting` or `failed` is revived; a twin of one in flight is
            # harmless (the converter finds the committed instance).
            msg_id = f"convert-{key}"
            if state != "converted" and await gw.repo.outbox_has(conn, msg_id):
                msg_id = f"{msg_id}-retry-{uuid.uuid4().hex}"
            await enqueue(conn, job, msg_id)
            keys.append(key)
        if not keys:
            raise ApiError(409, "nothing_to_save", "the study has no media to save")
        # The catalog (capture) records the saved state; the procedure is over once these are
        # converted (the worklist's MPPS N-SET COMPLETED, PS3.4 F.7.2). Each press is announced,
        # durable with the jobs; the worklist keeps the first.
        saved = StudySaved(
            study_id=str(study_id),
            media_ids=[key.split(":", 1)[0] for key in keys],
            by=principal.name,
        )
        await enqueue(conn, saved, f"study-saved-{study_id}-{uuid.uuid4().hex}")
        await gw.repo.audit(
            conn,
            principal.name,
            "study_saved",
            study_id=study_id,
            detail={"media": len(keys), "iod": iod, "ts": syntax},
            client=client_of(request),
        )
    return Accepted(accepted=len(keys), job_keys=keys)


class CodeOut(BaseModel):
    value: str
    scheme: str
    meaning: str


@router.get("/codes/discontinuation-reasons", response_model=list[CodeOut])
async def discontinuation_reasons(_: User) -> list[CodeOut]:
    """PS3.16 CID 9300 "Procedure Discontinuation Reasons", for the Discontinue dialog."""
    return [
        CodeOut(value=value, scheme="DCM", meaning=meaning)
        for value, meaning in DISCONTINUATION_REASONS.items()
    ]


class DiscontinueRequest(BaseModel):
    """Why the study is abandoned: a code of PS3.16 CID 9300 "Procedure Discontinuation
    Reasons" (scheme DCM), e.g. 110513 "Discontinued for unspecified reason"."""

    model_config = ConfigDict(extra="forbid")
    reason: Literal[tuple(DISCONTINUATION_REASONS)] = "110513"  # type: ignore[valid-type]


@router.post("/studies/{study_id}/discontinue", response_model=Accepted, status_code=202)
async def discontinue_study(
    study_id: uuid.UUID, body: DiscontinueRequest, principal: User, request: Request, gw: Gw
) -> Accepted:
    """The operator abandons the study: its performed procedure step ends DISCONTINUED with
    the reason (PS3.4 F.7.2, IHE RAD-7); media already captured stay."""
    reason = CodedReason(
        value=body.reason, scheme="DCM", meaning=DISCONTINUATION_REASONS[body.reason]
    )
    key = f"study-discontinued-{study_id}"
    async with gw.pool.acquire() as conn, conn.transaction():
        if await gw.repo.get_study(conn, study_id) is None:
            raise not_found("study")
        event = StudyDiscontinued(study_id=str(study_id), reason=reason, by=principal.name)
        await enqueue(conn, event, key)
        await gw.repo.audit(
            conn,
            principal.name,
            "study_discontinued",
            study_id=study_id,
            detail={"reason": body.reason, "meaning": reason.meaning},
            client=client_of(request),
        )
    return Accepted(accepted=1, job_keys=[key])


@router.post("/studies/{study_id}/mpps/retry")
async def retry_mpps(
    study_id: uuid.UUID, principal: User, request: Request, gw: Gw
) -> dict[str, Any]:
    """Send a failed performed procedure step again now (the RIS or its settings were fixed)."""
    await study_or_404(gw, study_id)
    reply = await gw.bus.request(
        MppsRetry(study_id=str(study_id)), MppsRetryReply, gw.settings.gateway_rpc_timeout_s
    )
    if not reply.ok:
        raise ApiError(409, "retry_refused", reply.error or "the worklist service refused")
    await gw.repo.audit(
        gw.pool, principal.name, "mpps_retried", study_id=study_id, client=client_of(request)
    )
    return {"study_id": str(study_id), "state": reply.state}
