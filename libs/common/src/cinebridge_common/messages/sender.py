"""Send jobs the sender consumes, its delivery events and the Echo request."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel

from .base import Event, Job, Reply, Request

DeliveryState = Literal[
    "queued", "sending", "sent", "warning", "failed-retrying", "failed-permanent"
]


class SendInstance(Job):
    """Deliver one instance to one destination (job_key: delivery id)."""

    subject: ClassVar[str] = "cb.job.sender.send"
    delivery_id: str


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


class Destination(BaseModel):
    """A C-STORE destination as stored in the sender's `destinations` table."""

    id: str | None = None
    name: str
    ae_title: str
    host: str
    port: int
    #: None: the station's local AE title (statement Table 25, "SPACS").
    calling_ae_title: str | None = None
    tls: bool = False
    profile: DestinationProfile = "statement"
    enabled: bool = True
    auto_send: bool = True
    max_associations: int = 2


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
