"""Sender settings (`CB_SENDER_*` on top of the shared `CB_*` ones)."""

from __future__ import annotations

import json
from pathlib import Path

from cinebridge_common.messages import Destination
from cinebridge_common.settings import ServiceSettings
from pydantic import field_validator

from .policy import Backoff
from .scu import Timeouts


class SenderSettings(ServiceSettings):
    #: JSON list of destinations upserted by name at start, e.g.
    #: `[{"name": "pacs", "ae_title": "PACS", "host": "10.0.0.5", "port": 104}]`.
    sender_seed_destinations: list[Destination] = []
    #: Retry after a transient failure: base * factor**(n-1), capped, +-jitter.
    sender_backoff_base_s: float = 30.0
    sender_backoff_factor: float = 2.0
    sender_backoff_cap_s: float = 600.0
    sender_backoff_jitter: float = 0.2
    #: After this many transient failures a delivery becomes failed-permanent (Forward revives it).
    sender_max_attempts: int = 100
    #: Instances per association batch (one study is usually one batch).
    sender_batch_max: int = 100
    #: Batches sent at once by this process (a worker per enabled destination, one batch each
    #: at a time), and Storage Commitment N-ACTION jobs at once.
    sender_workers: int = 4
    #: Statement Table 26: 10 s TCP connect and A-ASSOCIATE-AC.
    sender_connect_timeout_s: float = 10.0
    sender_acse_timeout_s: float = 10.0
    #: Wait for a C-STORE-RSP (covers the PACS's post-receive work on large videos).
    sender_dimse_timeout_s: float = 120.0
    #: Silence on the socket (a PACS that hangs mid-transfer) before the association is dropped.
    sender_network_timeout_s: float = 60.0
    #: How long a claimed delivery belongs to this process without renewal (SIGKILL recovery);
    #: also the longest an idle queue worker sleeps without looking at its queue.
    sender_lease_s: float = 60.0
    #: Period of the Storage Commitment sweep and of the queue metrics refresh.
    sender_sweep_interval_s: float = 30.0
    #: STOW-RS destinations: instances per request are bounded by the batch and by this many MB
    #: (one larger instance goes alone); the bytes are streamed, so this bounds retries, not memory.
    sender_stow_request_max_mb: int = 256
    #: Storage Commitment (PS3.4 Annex J): how long the N-ACTION association stays open for an
    #: N-EVENT-REPORT on it (a report on a new association to the SCP ends the wait at once).
    sender_commitment_same_association_wait_s: float = 10.0
    #: A study stored at a destination that requires commitment and not committed this long
    #: after it was sent is overdue: listed for the ops page, counted in the metrics.
    sender_commitment_overdue_s: float = 3600.0
    sender_tls_ca_file: Path | None = None
    sender_tls_cert_file: Path | None = None
    sender_tls_key_file: Path | None = None

    @field_validator("sender_seed_destinations", mode="before")
    @classmethod
    def _parse_json(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value

    def backoff(self) -> Backoff:
        return Backoff(
            base_s=self.sender_backoff_base_s,
            factor=self.sender_backoff_factor,
            cap_s=self.sender_backoff_cap_s,
            jitter=self.sender_backoff_jitter,
        )

    def timeouts(self) -> Timeouts:
        return Timeouts(
            connect_s=self.sender_connect_timeout_s,
            acse_s=self.sender_acse_timeout_s,
            dimse_s=self.sender_dimse_timeout_s,
            network_s=self.sender_network_timeout_s,
        )
