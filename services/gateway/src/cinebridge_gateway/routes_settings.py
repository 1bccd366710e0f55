"""Settings page (statement §4.4, §6): station settings, destinations, worklist servers, Echo."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from cinebridge_common.messages import (
    Destination,
    DestinationDelete,
    DestinationListReply,
    DestinationListRequest,
    DestinationReply,
    DestinationUpsert,
    EchoReply,
    EchoRequest,
    WorklistEcho,
    WorklistEchoReply,
    WorklistServer,
    WorklistServerDelete,
    WorklistServersList,
    WorklistServersReply,
    WorklistServerUpsert,
)
from cinebridge_common.messages.base import Reply
from cinebridge_common.messages.converter import IodChoice
from cinebridge_common.messages.sender import (
    DestinationKind,
    DestinationProfile,
    DicomwebAuth,
    check_dicomweb_url,
)
from cinebridge_common.station import StationSettings, load_station_settings
from fastapi import APIRouter, Path, Request, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from .deps import Admin, ApiError, Gw, User, client_of
from .repository import Principal
from .settings_repository import save_station_settings

router = APIRouter(prefix="/api/v1/settings", tags=["settings"])


def _ae_title(value: str) -> str:
    if "\\" in value:
        raise ValueError("an AE title must not contain a backslash (PS3.5 6.2)")
    if any(not 0x20 <= ord(c) <= 0x7E for c in value):
        raise ValueError("an AE title holds printable ASCII characters only (PS3.5 6.2)")
    if not value.strip():
        raise ValueError("an AE title must not be blank")
    return value


def _host(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.:_-]+", value):
        raise ValueError("a host name or IP address: letters, digits and . : _ - only")
    return value


def _ca_file(value: str) -> str:
    if not value.startswith("/") or "\x00" in value:
        raise ValueError("the CA file is an absolute path on the sender's host")
    return value


#: PS3.5 6.2 AE: up to 16 characters of the default repertoire, no backslash, no control
#: characters; the message says so instead of quoting the pattern.
AeTitle = Annotated[
    str,
    Field(min_length=1, max_length=16, description="AE title: 1 to 16 characters, no backslash"),
    AfterValidator(_ae_title),
]
Host = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_host)]
Port = Annotated[int, Field(ge=1, le=65535)]
CHARACTER_SETS = (
    "ISO_IR 6",
    "ISO_IR 100",
    "ISO_IR 101",
    "ISO_IR 109",
    "ISO_IR 110",
    "ISO_IR 144",
    "ISO_IR 127",
    "ISO_IR 126",
    "ISO_IR 138",
    "ISO_IR 148",
    "ISO_IR 13",
    "ISO_IR 166",
    "ISO_IR 192",
    "GB18030",
    "GBK",
)
VIDEO_SYNTAXES = (
    "1.2.840.10008.1.2.4.100",
    "1.2.840.10008.1.2.4.101",
    "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.103",
)
Charset = Literal[CHARACTER_SETS]  # type: ignore[valid-type]
VideoSyntax = Literal[VIDEO_SYNTAXES]  # type: ignore[valid-type]
UuidText = Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{36}$")]
ServerId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]


class StationChange(BaseModel):
    """Station settings the page edits; absent fields keep their value."""

    model_config = ConfigDict(extra="forbid")
    station_name: Annotated[str, Field(min_length=1, max_length=16)] | None = None
    local_ae_title: AeTitle | None = None
    character_set: Charset | None = None
    video_transfer_syntax: VideoSyntax | None = None
    iod: IodChoice | None = None
    worklist_character_set: Charset | None = None
    wildcard_matching: bool | None = None
    mpps_trigger: Literal["first-capture", "study-start"] | None = None
    #: Local purge policy (docs/purge.md).
    purge_enabled: bool | None = None
    purge_retention_days: Annotated[float, Field(ge=0, le=36500)] | None = None
    purge_low_watermark_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    purge_high_watermark_percent: Annotated[float, Field(ge=0, le=100)] | None = None


class AdHocEcho(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ae_title: AeTitle
    host: Host
    port: Port
    calling_ae_title: AeTitle | None = None


class DestinationIn(BaseModel):
    """A destination as the settings page sends it: every field checked here, so a bad value
    is a 422 naming the field (the sender's table never sees it). DIMSE: AE title, host, port;
    DICOMweb (STOW-RS, PS3.18 §10.5): base URL, authentication, TLS verification. `secret` (the
    basic password or bearer token) is write-only: left out on an edit, the stored one is kept;
    no response carries it."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    id: Annotated[str, Field(pattern=r"^[0-9a-fA-F-]{36}$")] | None = None
    name: Annotated[str, Field(min_length=1, max_length=64)]
    kind: DestinationKind = "dimse"
    ae_title: AeTitle | None = None
    host: Host | None = None
    port: Port | None = None
    calling_ae_title: AeTitle | None = None
    tls: bool = False
    profile: DestinationProfile = "statement"
    enabled: bool = True
    auto_send: bool = True
    max_associations: Annotated[int, Field(ge=1, le=16)] = 2
    base_url: Annotated[str, Field(max_length=2048), AfterValidator(check_dicomweb_url)] | None = (
        None
    )
    auth: DicomwebAuth = "none"
    username: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    secret: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        default=None, repr=False
    )
    tls_verify: bool = True
    ca_file: Annotated[str, Field(max_length=1024), AfterValidator(_ca_file)] | None = None
    #: Storage Commitment (PS3.4 Annex J), DIMSE destinations only (the sender refuses it for
    #: a DICOMweb one): ask, wait for the report this long, ask again this many times.
    commitment_required: bool = False
    commitment_timeout_s: Annotated[int, Field(ge=1, le=604800)] = 300
    commitment_retries: Annotated[int, Field(ge=0, le=100)] = 3

    @model_validator(mode="after")
    def _complete(self) -> DestinationIn:
        if self.kind == "dimse" and not (self.ae_title and self.host and self.port):
            raise ValueError("a DIMSE destination needs ae_title, host and port")
        if self.kind == "dicomweb" and not self.base_url:
            raise ValueError("a DICOMweb destination needs base_url")
        if self.auth == "basic" and not self.username:
            raise ValueError("basic authentication needs a username")
        if self.kind == "dicomweb" and self.commitment_required:
            raise ValueError("Storage Commitment is a DIMSE service: not for a DICOMweb archive")
        return self


class WorklistServerIn(BaseModel):
    """A worklist server as the settings page sends it (checked like DestinationIn)."""

    model_config = ConfigDict(extra="forbid")
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
    name: Annotated[str, Field(max_length=64)] = ""
    host: Host
    port: Port
    called_ae: AeTitle
    calling_ae: AeTitle | None = None
    modality: Annotated[str, Field(max_length=16)] = ""
    station_ae: Annotated[str, Field(max_length=16)] = ""
    character_set: Charset | None = None
    wildcards: bool | None = None
    timeout_s: Annotated[float, Field(gt=0, le=600)] | None = None
    max_entries: Annotated[int, Field(ge=1, le=100_000)] | None = None
    enabled: bool = True
    position: Annotated[int, Field(ge=0, le=1000)] = 0
    mpps_enabled: bool = False
    mpps_ae: AeTitle | None = None
    mpps_host: Host | None = None
    mpps_port: Port | None = None


class EchoResult(BaseModel):
    reachable: bool
    rtt_ms: float | None = None
    reason: str | None = None


def _timeout(gw: Gw) -> float:
    return gw.settings.gateway_rpc_timeout_s


@router.get("/station", response_model=StationSettings)
async def get_station(_: User, gw: Gw) -> StationSettings:
    return await load_station_settings(gw.pool)


@router.put("/station", response_model=StationSettings)
async def put_station(
    body: StationChange, principal: Admin, request: Request, gw: Gw
) -> StationSettings:
    changes = body.model_dump(exclude_none=True)
    async with gw.pool.acquire() as conn, conn.transaction():
        try:
            saved = await save_station_settings(conn, changes, principal.name)
        except ValidationError as exc:
            # A combination no single field shows (a high watermark below the low one).
            message = "; ".join(str(e["msg"]) for e in exc.errors())
            raise ApiError(422, "invalid_settings", message) from exc
        await gw.repo.audit(
            conn,
            principal.name,
            "settings_changed",
            target="station",
            detail=changes,
            client=client_of(request),
        )
    return saved


@router.post("/echo", response_model=EchoResult)
async def echo_ae(body: AdHocEcho, _: User, gw: Gw) -> EchoResult:
    """C-ECHO an AE typed into the form before it is saved (the Echo button)."""
    reply = await gw.bus.request(EchoRequest(**body.model_dump()), EchoReply, _timeout(gw) + 5)
    return EchoResult(
        reachable=reply.reachable, rtt_ms=reply.rtt_ms, reason=reply.reason or reply.error
    )


@router.get("/destinations", response_model=list[Destination], response_model_exclude={"secret"})
async def list_destinations(_: User, gw: Gw) -> list[Destination]:
    reply = await gw.bus.request(DestinationListRequest(), DestinationListReply, _timeout(gw))
    return reply.destinations


@router.post(
    "/destinations",
    response_model=Destination,
    response_model_exclude={"secret"},
    status_code=201,
)
async def upsert_destination(
    body: DestinationIn, principal: Admin, request: Request, gw: Gw
) -> Destination:
    """Add a destination, or edit one (with its `id`; `enabled: false` disables it)."""
    destination = Destination(**body.model_dump())
    reply = await gw.bus.request(
        DestinationUpsert(destination=destination), DestinationReply, _timeout(gw)
    )
    if not reply.ok or reply.destination is None:
        raise ApiError(409, "destination_refused", reply.error or "the sender refused it")
    await gw.repo.audit(
        gw.pool,
        principal.name,
        "destination_saved",
        target=reply.destination.id,
        detail={"name": body.name, "enabled": body.enabled},
        client=client_of(request),
    )
    return reply.destination


@router.delete("/destinations/{destination_id}", status_code=204)
async def delete_destination(
    destination_id: UuidText, principal: Admin, request: Request, gw: Gw
) -> Response:
    reply = await gw.bus.request(
        DestinationDelete(destination_id=destination_id), DestinationReply, _timeout(gw)
    )
    return await _deleted(
        reply, "destination", "destination_deleted", destination_id, principal, request, gw
    )


@router.post("/destinations/{destination_id}/echo", response_model=EchoResult)
async def echo_destination(destination_id: UuidText, _: User, gw: Gw) -> EchoResult:
    reply = await gw.bus.request(
        EchoRequest(destination_id=destination_id), EchoReply, _timeout(gw) + 5
    )
    return _echo_result(reply)


@router.get("/worklist-servers", response_model=list[WorklistServer])
async def list_worklist_servers(_: User, gw: Gw) -> list[WorklistServer]:
    reply = await gw.bus.request(WorklistServersList(), WorklistServersReply, _timeout(gw))
    return reply.servers


@router.post("/worklist-servers", response_model=list[WorklistServer], status_code=201)
async def upsert_worklist_server(
    body: WorklistServerIn, principal: Admin, request: Request, gw: Gw
) -> list[WorklistServer]:
    server = WorklistServer(**body.model_dump())
    reply = await gw.bus.request(
        WorklistServerUpsert(server=server, by=principal.name), WorklistServersReply, _timeout(gw)
    )
    if not reply.ok:
        raise ApiError(409, "worklist_server_refused", reply.error or "the worklist refused it")
    await gw.repo.audit(
        gw.pool, principal.name, "worklist_server_saved", target=body.id, client=client_of(request)
    )
    return reply.servers


@router.delete("/worklist-servers/{server_id}", status_code=204)
async def delete_worklist_server(
    server_id: ServerId, principal: Admin, request: Request, gw: Gw
) -> Response:
    reply = await gw.bus.request(
        WorklistServerDelete(server_id=server_id), WorklistServersReply, _timeout(gw)
    )
    return await _deleted(
        reply, "worklist server", "worklist_server_deleted", server_id, principal, request, gw
    )


@router.post("/worklist-servers/{server_id}/echo", response_model=EchoResult)
async def echo_worklist_server(server_id: ServerId, _: User, gw: Gw) -> EchoResult:
    reply = await gw.bus.request(
        WorklistEcho(server_id=server_id), WorklistEchoReply, _timeout(gw) + 5
    )
    return _echo_result(reply)


async def _deleted(
    reply: Reply,
    what: str,
    action: str,
    target: str,
    principal: Principal,
    request: Request,
    gw: Gw,
) -> Response:
    """204 and an audit row once the owner deleted `target`; 404 when it knew no such thing."""
    if not reply.ok:
        raise ApiError(404, "not_found", reply.error or f"{what} not found")
    await gw.repo.audit(gw.pool, principal.name, action, target=target, client=client_of(request))
    return Response(status_code=204)


def _echo_result(reply: EchoReply | WorklistEchoReply) -> EchoResult:
    return EchoResult(
        reachable=reply.reachable, rtt_ms=reply.rtt_ms, reason=reply.reason or reply.error
    )
