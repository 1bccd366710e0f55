"""Settings of the worklist service (environment, prefix `CB_`)."""

from __future__ import annotations

from cinebridge_common.messages import WorklistServer
from cinebridge_common.settings import ServiceSettings
from pydantic import Field


class WorklistSettings(ServiceSettings):
    """`CB_WORKLIST_*` on top of the common `CB_*` settings."""

    #: JSON list of WorklistServer objects upserted at every start, e.g.
    #: `[{"id":"ris","host":"10.0.0.5","port":104,"called_ae":"RIS","modality":"ES"}]`.
    worklist_seed_servers: list[WorklistServer] = Field(default_factory=list)
    #: Client execution time to receive data (statement Table 26: 10 s).
    worklist_timeout_s: float = Field(default=10.0, gt=0, le=600)
    #: TCP connect and A-ASSOCIATE-AC limit (statement Table 26: 10 s).
    worklist_connect_timeout_s: float = Field(default=10.0, gt=0, le=120)
    #: Upper bound on entries per query; more → C-CANCEL and "too many results".
    worklist_max_entries: int = Field(default=1000, ge=1, le=100_000)
    #: C-ECHO limit (statement Table 26, Verification client: 10 s).
    worklist_echo_timeout_s: float = Field(default=10.0, gt=0, le=120)
    #: MPPS (PS3.4 Annex F): association and answer limit of one N-CREATE or N-SET.
    worklist_mpps_timeout_s: float = Field(default=10.0, gt=0, le=120)
    #: Retry after a transient failure: base * 2**(n-1), capped, with jitter.
    worklist_mpps_backoff_s: float = Field(default=10.0, gt=0, le=3600)
    worklist_mpps_backoff_cap_s: float = Field(default=600.0, gt=0, le=86_400)
    #: Transient failures before the step is marked failed (shown with its last error).
    worklist_mpps_max_attempts: int = Field(default=100, ge=1, le=10_000)
    #: How long a worker holds a step while it talks to the SCP.
    worklist_mpps_lease_s: float = Field(default=60.0, gt=0, le=3600)
    #: How often steps owed a request for too long are queued again.
    worklist_mpps_sweep_interval_s: float = Field(default=30.0, gt=0, le=3600)
