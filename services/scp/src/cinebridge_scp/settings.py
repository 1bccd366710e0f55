"""Settings of the Storage SCP: `CB_SCP_*` on top of the common `CB_*` settings."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Literal, Self

from cinebridge_common import conformance
from cinebridge_common.settings import ServiceSettings
from pydantic import field_validator, model_validator

from .commitment import CommitmentPeer


class ScpSettings(ServiceSettings):
    """Where the SCP listens, whom it accepts, and how every input is bounded."""

    #: Called AE title of the Storage Server (Table 25 leaves it empty; see README).
    scp_ae_title: str = conformance.DEFAULT_SCP_AE_TITLE
    #: Loopback in development; compose sets 0.0.0.0.
    scp_host: str = "127.0.0.1"
    #: The host other services (the sender's Echo from the settings page) reach this SCP at;
    #: empty = `scp_host`, or 127.0.0.1 when that is a wildcard. Compose sets `scp`.
    scp_advertised_host: str = ""
    scp_port: int = conformance.DEV_SCP_PORT
    #: Refuse associations whose Called AE is not `scp_ae_title` (A-ASSOCIATE-RJ 1/1/7).
    scp_require_called_ae: bool = True
    #: 0 = limited by resources: a quarter of the open-files limit.
    scp_max_associations: int = 0
    #: Connections that have not yet sent their A-ASSOCIATE-RQ (each costs one idle thread).
    scp_max_pending_connections: int = 1000
    #: Largest P-DATA-TF PDU we accept (our Maximum Length Received, PS3.8 D.1). Bigger PDUs
    #: mean fewer round trips through Python; a PDU announcing more aborts the association.
    scp_max_pdu: int = 4 * 1024 * 1024
    #: ARTIM: time from TCP accept to a complete A-ASSOCIATE-RQ, and for the release.
    scp_acse_timeout_s: float = 30.0
    #: Longest wait for the next PDU while a DIMSE message (command, data set) is half received.
    scp_dimse_timeout_s: float = 60.0
    #: Idle time without any PDU before the association is dropped.
    scp_network_timeout_s: float = 60.0
    #: Total time allowed to receive one PDU once its first byte arrived (drops slow-drip peers;
    #: 4 MiB in 120 s is 35 KB/s).
    scp_pdu_timeout_s: float = 120.0
    #: Sequence nesting depth beyond which a dataset is refused (DCMTK's default).
    scp_max_nesting_depth: int = 64
    #: Largest instance accepted (bytes); bigger ones are refused with 0xA700.
    scp_max_instance_bytes: int = 64 * 1024**3
    #: What a second copy of a stored SOP Instance UID does.
    scp_duplicates: Literal["replace", "keep-first"] = "replace"
    #: Allow-lists (empty = anyone). Others are rejected with A-ASSOCIATE-RJ and a logged reason.
    scp_allowed_calling_ae_titles: list[str] = []
    scp_allowed_addresses: list[str] = []
    #: DICOM TLS (PS3.15 B.12): enabled when a certificate and key are given.
    scp_tls_port: int = conformance.DEFAULT_SCP_TLS_PORT
    scp_tls_cert: Path | None = None
    scp_tls_key: Path | None = None
    #: CA bundle for client certificates; when set, clients must present a trusted certificate.
    scp_tls_client_ca: Path | None = None
    #: Processes sharing the DICOM port (SO_REUSEPORT); >1 lets concurrent senders use more
    #: cores. The service process starts the other N-1 (see workers.py).
    scp_workers: int = 1
    #: Set by the service process for the workers it starts; 0 = the service process itself.
    scp_worker_index: int = 0
    #: Time allowed for PostgreSQL to index one instance before answering 0xA700.
    scp_db_timeout_s: float = 15.0
    #: Received files without an index row (a crash between rename and commit, or a commit
    #: PostgreSQL lost) are indexed again: at start over this many days, then every interval.
    scp_recover_days: int = 7
    scp_recover_interval_s: float = 300.0
    #: Storage Commitment (PS3.4 Annex J): modalities that ask this SCP for commitment and
    #: want the report on a new association (`report: "new"`, with host and port), e.g.
    #: `[{"ae_title": "ENDO1", "host": "10.0.0.7", "port": 104, "report": "new"}]`. Others
    #: get it on the association of their request.
    scp_commitment_peers: list[CommitmentPeer] = []
    #: Longest wait for JetStream to store a report received for the sender before answering.
    scp_commitment_publish_timeout_s: float = 10.0
    #: Reports owed on a new association (reports.py): tries, then abandoned with the reason;
    #: the pause between tries doubles from `backoff_s` up to `backoff_cap_s` (defaults: about
    #: an hour of tries); a stored report waits `hold_s` at most for its N-ACTION-RSP to go out.
    scp_commitment_report_attempts: int = 20
    scp_commitment_report_backoff_s: float = 2.0
    scp_commitment_report_backoff_cap_s: float = 300.0
    scp_commitment_report_poll_s: float = 5.0
    scp_commitment_report_dimse_s: float = 30.0
    scp_commitment_report_hold_s: float = 2.0

    @field_validator("scp_commitment_peers", mode="before")
    @classmethod
    def _parse_peers(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value

    def effective_max_associations(self) -> int:
        if self.scp_max_associations > 0:
            return self.scp_max_associations
        # Each association holds a socket, a thread and a 64-256 KiB buffer.
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(16, min(soft // 4, 2000)) if soft > 0 else 1000

    @property
    def advertised_host(self) -> str:
        if self.scp_advertised_host:
            return self.scp_advertised_host
        return "127.0.0.1" if self.scp_host in ("", "0.0.0.0", "::") else self.scp_host

    @property
    def tls_enabled(self) -> bool:
        return self.scp_tls_cert is not None and self.scp_tls_key is not None

    @model_validator(mode="after")
    def _check(self) -> Self:
        title = self.scp_ae_title
        if not title.strip() or len(title) > 16 or "\\" in title or not title.isascii():
            raise ValueError("CB_SCP_AE_TITLE must be 1-16 ASCII characters without backslash")
        if not 4096 <= self.scp_max_pdu <= 256 * 1024 * 1024:
            raise ValueError("CB_SCP_MAX_PDU must be between 4096 and 268435456 bytes")
        if not 1 <= self.scp_workers <= 64:
            raise ValueError("CB_SCP_WORKERS must be between 1 and 64")
        if self.scp_workers > 1 and self.scp_port == 0:
            raise ValueError("CB_SCP_WORKERS > 1 needs a fixed CB_SCP_PORT to share")
        if (self.scp_tls_cert is None) != (self.scp_tls_key is None):
            raise ValueError("CB_SCP_TLS_CERT and CB_SCP_TLS_KEY must be set together")
        return self
