"""Worklist requests (C-FIND via the worklist service) and their typed results."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, PrivateAttr

from .base import Event, Job, Reply, Request

#: What became of a live query (the gateway words its banner from it).
QueryOutcome = Literal["complete", "too_many", "partial", "timeout", "unreachable", "failed"]


class ValueFlag(BaseModel):
    """A value of a worklist answer that broke its VR or the statement's Table 18 rules, or
    that was decoded by a fallback: shown to the operator; the item carries the replacement."""

    #: "(0010,0030)", nested "(0040,0100)>(0040,0002)".
    tag: str
    keyword: str = ""
    problem: str
    #: What the item holds instead: "left empty", "cut to 64 characters", "decoded as Latin-1".
    action: str
    #: The value as received (at most 200 characters); empty when it could not be kept.
    value: str = ""


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
    #: Stable identity of the entry (hash of its UIDs/ids), the same across queries and servers.
    item_key: str | None = None
    issuer_of_patient_id: str | None = None
    admission_id: str | None = None
    requested_procedure_priority: str | None = None
    #: Values replaced or decoded by a fallback at the door (`dataset` holds the replacements).
    flags: list[ValueFlag] = []
    #: The whole item's JSON text when it is kept as text (`keep_as_text`); `dataset` is then
    #: empty and `json_text`/`full_dataset` are the ways to it.
    _text: str | None = PrivateAttr(default=None)

    def keep_as_text(self) -> WorklistItem:
        """Serialize the item once and let its `dataset` tree go (in place; returns self).

        A 1,000-entry answer is ~130,000 dicts and lists of DICOM JSON; kept alive while the
        answer is read, they make Python's cyclic collector run full collections over them
        (a third of the query's CPU, `bench/worklist.py`). Kept as one str each (not tracked
        by the collector), each entry's tree dies as soon as it is serialized, and the text
        is what the bus and the day's cache need anyway. Only the typed fields stay objects:
        the answer is sorted, merged and logged by them. Do not change the item afterwards."""
        if self._text is None:
            self._text = self.model_dump_json()
            self.dataset = {}
        return self

    def json_text(self) -> str:
        """The item's compact JSON (`model_dump_json`), dataset included."""
        return self._text if self._text is not None else self.model_dump_json()

    def full_dataset(self) -> dict[str, Any]:
        """`dataset`, parsed again from the text when the item is kept as text."""
        if self._text is None:
            return self.dataset
        parsed: dict[str, Any] = json.loads(self._text)["dataset"]
        return parsed


class WorklistServer(BaseModel):
    """A configured worklist server (RIS): address, AE titles and its C keys (Table 18 "C")."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    name: str = ""
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    called_ae: str = Field(pattern=r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
    #: Our AE title towards this server; None = the station's local AE title (Table 26 "SPACS").
    calling_ae: str | None = Field(default=None, pattern=r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
    #: C keys: Scheduled Procedure Step Sequence > Modality / Scheduled Station AE Title.
    modality: str = Field(default="", max_length=16)
    station_ae: str = Field(default="", max_length=16)
    #: Character set for responses without (0008,0005); None = station worklist_character_set.
    character_set: str | None = None
    #: Leading/trailing wildcards on P keys; None = station wildcard_matching.
    wildcards: bool | None = None
    #: Client execution time limit (statement Table 26: 10 s); None = service default.
    timeout_s: float | None = Field(default=None, gt=0, le=600)
    #: Upper bound on entries; more → C-CANCEL and "too many results"; None = service default.
    max_entries: int | None = Field(default=None, ge=1, le=100_000)
    enabled: bool = True
    position: int = 0
    #: The RIS's Modality Performed Procedure Step SCP (PS3.4 Annex F; IHE RAD-6/RAD-7):
    #: when enabled, the station reports each study's procedure step there. Host and port
    #: default to the worklist server's own, the AE title to `called_ae`.
    mpps_enabled: bool = False
    mpps_ae: str | None = Field(default=None, pattern=r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
    mpps_host: str | None = Field(default=None, min_length=1, max_length=253)
    mpps_port: int | None = Field(default=None, ge=1, le=65535)


class WorklistQuery(Request):
    """Search the worklist with the statement's fields (Table 18 P keys, date or range)."""

    subject: ClassVar[str] = "cb.rpc.worklist.query"
    #: None: every enabled server at once, answers merged (de-duplicated by item key).
    server_id: str | None = None
    patient_name: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    requested_procedure_id: str | None = None
    date_from: str | None = None
    date_to: str | None = None


class WorklistQueryReply(Reply):
    """`ok`: there is a list to show (live, or today's cache when the server is unreachable);
    `incomplete`/`too_many`/`cached` qualify it and `warnings[0]` says why."""

    subject: ClassVar[str] = "cb.rpc.worklist.reply"
    items: list[WorklistItem] = []
    incomplete: bool = False
    cached: bool = False
    too_many: bool = False
    warnings: list[str] = []
    server_id: str | None = None
    outcome: QueryOutcome | None = None
    #: When `cached`: when the offered entries were last fetched from the server.
    cached_at: dt.datetime | None = None

    def to_bytes(self) -> bytes:
        """The entries one per line (`encode_reply`), each as its `json_text` (an entry kept
        as text has an empty `dataset`: pydantic's own dump would lose it)."""
        return encode_reply(self, [item.json_text() for item in self.items])


#: The entries of a reply laid out one per line (`encode_reply`): a raw newline occurs nowhere
#: else in compact JSON (inside strings it is escaped), so a reader finds each entry's JSON
#: text without parsing the answer.
_ITEMS_OPEN = b',"items":[\n'
_ITEMS_CLOSE = b"\n]}"
_ITEM_SEP = b",\n"


def encode_reply(reply: WorklistQueryReply, item_texts: list[str]) -> bytes:
    """The reply's JSON with its entries (`item_texts`: each one's compact JSON, in order) one
    per line after the other members; any JSON reader reads it as `reply.to_bytes()`."""
    head = reply.model_dump_json(exclude={"items"}).encode()
    body = _ITEM_SEP.join(text.encode() for text in item_texts)
    return head[:-1] + _ITEMS_OPEN + body + _ITEMS_CLOSE


def split_reply(data: bytes) -> tuple[bytes, list[bytes]] | None:
    """A reply made by `encode_reply` as (the reply's JSON without entries, each entry's JSON
    text), at the cost of finding newlines; None for a reply of any other layout."""
    first = data.find(b"\n")
    start = first + 1 - len(_ITEMS_OPEN)
    if first < 0 or start < 1 or data[start : first + 1] != _ITEMS_OPEN:
        return None
    if not data.endswith(_ITEMS_CLOSE) or len(data) < first + len(_ITEMS_CLOSE):
        return None
    body = data[first + 1 : len(data) - len(_ITEMS_CLOSE)]
    return data[:start] + b"}", body.split(_ITEM_SEP) if body else []


class WorklistEcho(Request):
    subject: ClassVar[str] = "cb.rpc.worklist.echo"
    server_id: str


class WorklistEchoReply(Reply):
    subject: ClassVar[str] = "cb.rpc.worklist.reply"
    reachable: bool = False
    rtt_ms: float | None = None
    reason: str | None = None


class WorklistServersList(Request):
    """List the configured worklist servers (ordered by position)."""

    subject: ClassVar[str] = "cb.rpc.worklist.servers.list"


class WorklistServerUpsert(Request):
    """Create or replace one worklist server (by id)."""

    subject: ClassVar[str] = "cb.rpc.worklist.servers.upsert"
    server: WorklistServer
    by: str | None = None


class WorklistServerDelete(Request):
    """Remove one worklist server and its cached entries."""

    subject: ClassVar[str] = "cb.rpc.worklist.servers.delete"
    server_id: str


class WorklistServersReply(Reply):
    subject: ClassVar[str] = "cb.rpc.worklist.reply"
    servers: list[WorklistServer] = []


class WorklistCheckItem(Request):
    """Check a worklist item that came back from a client as the door checks a RIS answer: the
    item is decoded again from its dataset (DICOM JSON), whose values are bounded and checked."""

    subject: ClassVar[str] = "cb.rpc.worklist.check_item"
    item: WorklistItem


class WorklistCheckItemReply(Reply):
    subject: ClassVar[str] = "cb.rpc.worklist.reply"
    item: WorklistItem | None = None


#: Where a study's Modality Performed Procedure Step is (table `mpps_steps`).
MppsState = Literal[
    "pending-create",
    "in-progress",
    "pending-set",
    "completed",
    "discontinued",
    "failed-retrying",
    "failed",
]


class MppsStepDue(Job):
    """Send what a performed procedure step owes its SCP (N-CREATE, then N-SET); the table
    `mpps_steps` says what and when, so a repeated job does nothing twice."""

    subject: ClassVar[str] = "cb.job.worklist.mpps"
    step_id: str


class MppsStateChanged(Event):
    """A study's performed procedure step changed state (after an N-CREATE or N-SET, or a
    failure with the SCP's status and error)."""

    subject: ClassVar[str] = "cb.evt.mpps.state_changed"
    step_id: str
    study_id: str
    state: MppsState
    status_code: int | None = None
    error: str | None = None


class MppsRetry(Request):
    """Send a study's failed performed procedure step again now (after the RIS or its
    settings were fixed): the request it owes, from its first attempt."""

    subject: ClassVar[str] = "cb.rpc.worklist.mpps.retry"
    study_id: str


class MppsRetryReply(Reply):
    subject: ClassVar[str] = "cb.rpc.worklist.reply"
    state: MppsState | None = None
