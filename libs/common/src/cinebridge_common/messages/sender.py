"""Jobs the sender consumes, its delivery events and the Echo request."""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import Event, Job, Reply, Request

DeliveryState = Literal[
    "queued", "sending", "sent", "warning", "failed-retrying", "failed-permanent"
]


class ForwardStudy(Job):
    """Statement "Forward": (re)send a study or an instance to destinations (idempotent)."""

    subject: ClassVar[str] = "cb.job.sender.forward"
    study_id: str | None = None
    instance_id: str | None = None
    destination_ids: list[str]
    requested_by: str | None = None


class DeliveryStateChanged(Event):
    subject: ClassVar[str] = "cb.evt.delivery.state_changed"
    delivery_id: str
    instance_id: str
    destination_id: str
    study_id: str | None = None
    state: DeliveryState
    attempt: int = 0
    status_code: int | None = None
    error: str | None = None


class EchoRequest(Request):
    """C-ECHO a configured destination, or an AE given by address (settings page "Echo")."""

    subject: ClassVar[str] = "cb.rpc.sender.echo"
    destination_id: str | None = None
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    calling_ae_title: str | None = None
    timeout_s: float = 10.0


class EchoReply(Reply):
    subject: ClassVar[str] = "cb.rpc.sender.reply"
    reachable: bool = False
    rtt_ms: float | None = None
    reason: str | None = None


DestinationProfile = Literal["statement", "decompress-stills"]
DestinationKind = Literal["dimse", "dicomweb"]
DicomwebAuth = Literal["none", "basic", "bearer"]


def check_dicomweb_url(value: str) -> str:
    """A DICOMweb base URL (PS3.18 §8.2): http or https, a host, no user information (credentials
    go in `username`/`secret`, never in a URL that is listed and logged), no query or fragment."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("a DICOMweb base URL starts with http:// or https://")
    if not parts.hostname:
        raise ValueError("a DICOMweb base URL names a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials go in the authentication fields, not in the URL")
    if parts.query or parts.fragment:
        raise ValueError("a DICOMweb base URL has no query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError as exc:
        raise ValueError(f"a DICOMweb base URL with a bad port: {exc}") from None
    return value.rstrip("/")


class Destination(BaseModel):
    """A destination as stored in the sender's `destinations` table: a DIMSE Storage SCP
    (`kind="dimse"`: AE title, host, port) or a DICOMweb STOW-RS archive (`kind="dicomweb"`:
    base URL, authentication, TLS verification)."""

    # A refused destination's error must not quote its secret back (replies, logs).
    model_config = ConfigDict(hide_input_in_errors=True)

    id: str | None = None
    name: str
    kind: DestinationKind = "dimse"
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    #: None: the station's local AE title (statement Table 25, "SPACS").
    calling_ae_title: str | None = None
    tls: bool = False
    profile: DestinationProfile = "statement"
    enabled: bool = True
    auto_send: bool = True
    max_associations: int = 2
    #: DICOMweb service root, e.g. `https://pacs.example/dicom-web` (PS3.18 §8.2).
    base_url: str | None = None
    auth: DicomwebAuth = "none"
    #: Basic authentication user (RFC 7617).
    username: str | None = None
    #: Write-only: the basic password or the bearer token. The sender stores it and never sends
    #: it back (replies carry `secret_set`); None on an edit keeps the stored one.
    secret: str | None = Field(default=None, repr=False)
    secret_set: bool = False
    #: Verify the archive's certificate (https); `ca_file` (on the sender's host) replaces the
    #: system's trusted CAs.
    tls_verify: bool = True
    ca_file: str | None = None
    #: Ask the archive to commit every study sent to it (Storage Commitment Push Model, PS3.4
    #: Annex J; DIMSE only): wait `commitment_timeout_s` for its report, ask again up to
    #: `commitment_retries` times, then show the study as commit-failed.
    commitment_required: bool = False
    commitment_timeout_s: int = Field(default=300, ge=1, le=604800)
    commitment_retries: int = Field(default=3, ge=0, le=100)

    @model_validator(mode="after")
    def _complete(self) -> Destination:
        if self.kind == "dimse":
            if not (self.ae_title and self.host and self.port):
                raise ValueError("a DIMSE destination needs ae_title, host and port")
            return self
        if not self.base_url:
            raise ValueError("a DICOMweb destination needs base_url")
        if self.commitment_required:
            raise ValueError("Storage Commitment is a DIMSE service: not for a DICOMweb archive")
        self.base_url = check_dicomweb_url(self.base_url)
        if self.auth == "basic" and not self.username:
            raise ValueError("basic authentication needs a username")
        if self.ca_file is not None and not self.ca_file.startswith("/"):
            raise ValueError("ca_file is an absolute path on the sender's host")
        return self


class DestinationListRequest(Request):
    subject: ClassVar[str] = "cb.rpc.sender.destinations.list"


class DestinationListReply(Reply):
    subject: ClassVar[str] = "cb.rpc.sender.destinations.reply"
    destinations: list[Destination] = []


class DestinationUpsert(Request):
    """Create (no id) or replace (with id) a destination; names are unique."""

    subject: ClassVar[str] = "cb.rpc.sender.destinations.upsert"
    destination: Destination


class DestinationReply(Reply):
    subject: ClassVar[str] = "cb.rpc.sender.destinations.reply"
    destination: Destination | None = None


class DestinationDelete(Request):
    """Delete a destination with its deliveries (sent instances stay at the PACS)."""

    subject: ClassVar[str] = "cb.rpc.sender.destinations.delete"
    destination_id: str


class RetryDelivery(Request):
    """Send a failed (or any) delivery again now, e.g. the UI's "retry" on one instance."""

    subject: ClassVar[str] = "cb.rpc.sender.retry"
    delivery_id: str


class RetryDeliveryReply(Reply):
    subject: ClassVar[str] = "cb.rpc.sender.retry.reply"
    state: DeliveryState | None = None
