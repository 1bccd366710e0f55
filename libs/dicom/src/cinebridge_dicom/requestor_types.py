"""What a requestor association is set up with, what it hands back, and what it raises.

Split from `requestor` (which re-exports every name here, so `requestor.Settings`,
`requestor.AssociationError` and the rest stay where callers import them from).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from . import dimse

#: Largest P-DATA we accept unless told otherwise, announced in A-ASSOCIATE-RQ (PS3.8 D.1).
DEFAULT_MAX_PDU = 1 << 20


class AssociationError(Exception):
    """The association failed or broke; `transient` says whether trying later may help."""

    def __init__(self, reason: str, *, transient: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class Rejected(AssociationError):
    """A-ASSOCIATE-RJ, or no proposed presentation context accepted."""


class Aborted(AssociationError):
    """A-ABORT from the peer, an unexpected or invalid PDU, or the connection lost."""


class Expired(AssociationError):
    """A deadline passed while waiting for the peer."""


@dataclass(frozen=True)
class Context:
    id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True)
class Message:
    """One complete DIMSE message received: its command set and data set (if any)."""

    command: dimse.Command
    dataset: bytes | None

    @property
    def field(self) -> int:
        return self.command.field

    @property
    def status(self) -> int | None:
        return self.command.status


@dataclass(frozen=True)
class Settings:
    """What one association asks for and how long it waits (PS3.8 9.1.5 ARTIM; DIMSE)."""

    calling_ae: str
    called_ae: str
    implementation_class_uid: str
    implementation_version_name: str
    max_pdu: int = DEFAULT_MAX_PDU
    connect_s: float = 10.0
    acse_s: float = 10.0
    network_s: float = 60.0
    dimse_s: float = 120.0
    #: Largest data set of one response (C-FIND identifier, N-* attribute list).
    max_dataset: int = 4 << 20
    tls: ssl.SSLContext | None = None
