"""What each DICOM service says about itself for the station's conformance statement (PS3.2).

The gateway asks every service that speaks DICOM or writes DICOM objects
(`cb.rpc.<service>.conformance`) and renders the answers in the structure of PS3.2 Annex A
(`cinebridge_common.statement`). Each service describes what it actually does, from the same
tables and code it negotiates or builds objects with, and from its own settings — the gateway
cannot know another service's environment (docs/conformance-statement.md).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from .base import Reply, Request


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class NamedUid(_Row):
    name: str
    uid: str


class SopClassSupport(_Row):
    """One SOP class of an AE, its role, and every transfer syntax it accepts or proposes."""

    name: str
    uid: str
    role: str  # "SCU" or "SCP"
    transfer_syntaxes: list[NamedUid] = []
    extended_negotiation: str = "None"


class QueryKey(_Row):
    """One key of a C-FIND identifier as the service builds it (PS3.4 C.4.1.1.3)."""

    name: str
    tag: str  # "(0010,0010)"; a sequence item's key is "(0040,0100) > (0008,0060)"
    kind: str  # "matching" or "return"


class StatusRow(_Row):
    """One row of a status handling table (PS3.2 A.4.2.x.3): what the AE does on a status."""

    service: str  # "N-ACTION-RSP", "N-EVENT-REPORT" ...
    status: str  # "Success", "Failure" ...
    code: str  # "0000", "0110", "A710 (Error ID)" ...
    behaviour: str
    meaning: str = ""  # what the status means, where its code alone does not say


class ApplicationEntity(_Row):
    """PS3.2 A.4.2: one Application Entity as it is configured on this station."""

    name: str  # functional name: "Storage Server", "Storage Client" ...
    service: str
    ae_title: str
    function: str
    #: Where it listens (acceptors) or "" (requestors).
    listen: str = ""
    sop_classes: list[SopClassSupport] = []
    #: Association policies: Maximum PDU, number of associations, asynchronous operations,
    #: implementation class UID and version name, timeouts (PS3.2 A.4.2.x.2).
    policies: dict[str, str] = {}
    initiation: str = ""
    acceptance: str = ""
    query_keys: list[QueryKey] = []
    #: Remote AEs this one talks to (destinations, worklist servers): "AE@host:port".
    peers: list[str] = []
    character_sets: list[str] = []
    #: The security profile in effect (PS3.15 Annex B), or "none".
    security: str = "none"
    #: The real-world activity and its sequencing (PS3.2 A.4.2.x.3), when the policies above
    #: do not say it all (Storage Commitment: request, report, re-request).
    activity: str = ""
    #: Status handling of the activity's DIMSE services.
    statuses: list[StatusRow] = []


class ObjectAttribute(_Row):
    module: str
    name: str
    tag: str
    vr: str
    #: Where the value comes from: a fixed value, "study", "worklist", "measured" ...
    value: str


class CreatedObject(_Row):
    """PS3.2 A.8.1: one kind of object the converter writes, introspected from a built one."""

    profile: str
    kind: str  # "still" or "video"
    sop_class: NamedUid
    modality: str
    transfer_syntaxes: list[NamedUid] = []
    modules: list[str] = []
    attributes: list[ObjectAttribute] = []


class ConformanceReply(Reply):
    """One service's part of the conformance statement."""

    subject: ClassVar[str] = "cb.rpc.conformance.reply"
    service: str = ""
    version: str = ""
    application_entities: list[ApplicationEntity] = []
    created_objects: list[CreatedObject] = []
    #: The IOD profile the station uses now (converter only).
    iod_profile: str = ""
    notes: list[str] = []


class ScpConformance(Request):
    """Describe the Storage Server / Verification AE as it listens now."""

    subject: ClassVar[str] = "cb.rpc.scp.conformance"


class SenderConformance(Request):
    """Describe the Storage and Verification Client AE and its destinations."""

    subject: ClassVar[str] = "cb.rpc.sender.conformance"
    #: (SOP Class UID, Transfer Syntax UID) of each kind of object the station sends (from the
    #: converter's answer): the sender says which presentation contexts it proposes for them.
    objects: list[tuple[str, str]] = []


class WorklistConformance(Request):
    """Describe the Worklist Client AE: query keys, servers, character sets."""

    subject: ClassVar[str] = "cb.rpc.worklist.conformance"


class ConverterConformance(Request):
    """Describe every object the converter writes, per IOD profile."""

    subject: ClassVar[str] = "cb.rpc.converter.conformance"


#: The request of each service, in the statement's order.
CONFORMANCE_REQUESTS: tuple[type[Request], ...] = (
    ScpConformance,
    SenderConformance,
    WorklistConformance,
    ConverterConformance,
)
