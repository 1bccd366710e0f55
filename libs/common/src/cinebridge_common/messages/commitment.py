"""Storage Commitment (PS3.4 Annex J): reports the station's SCP receives for the sender, and
the sender's answer to "which studies are committed"."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from pydantic import BaseModel

from .base import Event, Job, Reply, Request


class CommittedReference(BaseModel):
    sop_class_uid: str
    sop_instance_uid: str
    #: Failure Reason (0008,1197, PS3.3 C.14.1.1) of a Failed SOP Sequence item; None: committed.
    failure_reason: int | None = None


class CommitmentReported(Event):
    """An N-EVENT-REPORT of the Storage Commitment Push Model that an archive sent to the
    station's SCP on an association it opened (PS3.4 J.3.3): stored in JetStream before the
    SCP answers it, consumed by the sender whenever it runs."""

    subject: ClassVar[str] = "cb.evt.commitment.reported"
    transaction_uid: str
    calling_ae: str
    references: list[CommittedReference]


class CommittedStudiesRequest(Request):
    """Which studies every destination marked "commitment required" has committed (every
    instance of the study, per destination): the question a local purge policy asks."""

    subject: ClassVar[str] = "cb.rpc.sender.commitment.committed"
    #: Only studies whose last commitment is older than this many seconds (0: any).
    committed_before_s: float = 0.0
    limit: int = 1000
    #: Of these studies only (at most 1000; empty: any study). A purge asks about its candidates,
    #: so that the answer never depends on which studies a limit cut off.
    study_ids: list[str] = []


class CommittedStudiesReply(Reply):
    subject: ClassVar[str] = "cb.rpc.sender.commitment.committed.reply"
    study_ids: list[str] = []
    #: Per listed study, how many instances the sender has for it (each committed): a purge
    #: compares it with the instances made, so that one not yet handed to the sender is never
    #: taken as committed.
    instances: dict[str, int] = {}
    #: Per listed study, its last commitment (the retention runs from it).
    committed_at: dict[str, dt.datetime] = {}


class CommitmentStatusRequest(Request):
    """The commitment state of studies (one badge each) per destination: of `study_ids`, or
    with `overdue` of every study stored at a destination that requires commitment and not
    committed `CB_SENDER_COMMITMENT_OVERDUE_S` after it was sent (the ops page's list)."""

    subject: ClassVar[str] = "cb.rpc.sender.commitment.status"
    study_ids: list[str] = []
    overdue: bool = False


class StudyCommitment(BaseModel):
    study_id: str
    destination_id: str
    destination: str
    #: sending, sent, requested, committed, commit-failed, unsupported (PS3.4 J.3: the
    #: archive refused the SOP class, which is no failed delivery).
    state: str
    instances: int
    committed: int


class CommitmentStatusReply(Reply):
    subject: ClassVar[str] = "cb.rpc.sender.commitment.status.reply"
    studies: list[StudyCommitment] = []


class RequestCommitment(Job):
    """Send (or send again) the N-ACTION of one Storage Commitment transaction of the sender
    (job_key: the Transaction UID)."""

    subject: ClassVar[str] = "cb.job.sender.commit"
    transaction_uid: str
