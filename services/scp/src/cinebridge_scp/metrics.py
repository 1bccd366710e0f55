"""Prometheus metrics of the Storage SCP (served on the service's /metrics endpoint).

Each worker process (`CB_SCP_WORKERS`) is its own scrape target; sum over instances.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ASSOCIATIONS_ACCEPTED = Counter(
    "cinebridge_scp_associations_accepted_total", "Associations accepted (A-ASSOCIATE-AC sent)"
)
ASSOCIATIONS_REJECTED = Counter(
    "cinebridge_scp_associations_rejected_total",
    "Associations refused, by reason (A-ASSOCIATE-RJ, or a connection closed at the gate)",
    ("reason",),
)
ASSOCIATIONS_OPEN = Gauge(
    "cinebridge_scp_associations_open", "Connections past the gate, associating or associated"
)
ASSOCIATIONS_ENDED = Counter(
    "cinebridge_scp_associations_ended_total",
    "Associations that ended, by how (released, peer_abort, protocol_error, timeout, closed)",
    ("how",),
)
COMMITMENT_REQUESTS = Counter(
    "cinebridge_scp_commitment_requests_total",
    "Storage Commitment requests answered (PS3.4 J.3), by result (committed, failures)",
    ("result",),
)
COMMITMENT_REPORTS = Counter(
    "cinebridge_scp_commitment_reports_total",
    "Storage Commitment reports received for the sender, by outcome (stored, failed)",
    ("outcome",),
)
COMMITMENT_REPORTS_OWED = Gauge(
    "cinebridge_scp_commitment_reports_owed",
    "Storage Commitment reports stored and not yet answered by their requester (new association)",
)
COMMITMENT_REPORTS_SENT = Counter(
    "cinebridge_scp_commitment_report_attempts_total",
    "Attempts to send an owed Storage Commitment report, by outcome (sent, retry, abandoned)",
    ("outcome",),
)
ECHOES = Counter("cinebridge_scp_echo_requests_total", "C-ECHO requests answered")
INSTANCES_RECEIVED = Counter(
    "cinebridge_scp_instances_received_total", "Instances stored and acknowledged with success"
)
INSTANCES_REFUSED = Counter(
    "cinebridge_scp_instances_refused_total",
    "C-STORE requests answered with a failure status (hex, PS3.4 B.2.3)",
    ("status",),
)
RECEIVED_BYTES = Counter(
    "cinebridge_scp_received_bytes_total", "Bytes of instances stored (Part 10 files as written)"
)
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STORE_SECONDS = Histogram(
    "cinebridge_scp_store_duration_seconds",
    "Last data fragment received to C-STORE status decided (check, fsync, index)",
    buckets=_LATENCY,
)
FSYNC_SECONDS = Histogram(
    "cinebridge_scp_fsync_duration_seconds",
    "fsync of a received file, its rename and the directory fsync",
    buckets=_LATENCY,
)
INDEX_SECONDS = Histogram(
    "cinebridge_scp_index_duration_seconds",
    "Wait for the commit of a received instance's index row and outbox event once its file"
    " was durable (the statement itself overlaps the fsyncs; rows of concurrent associations"
    " commit in one transaction)",
    buckets=_LATENCY,
)
INDEX_GROUPS = Counter(
    "cinebridge_scp_index_groups_total",
    "Groups of index rows written, by how they commit: statement (every file durable before it"
    " was sent, or one instance while several associations store: one round trip) or"
    " transaction (held open until the files are durable)",
    ("how",),
)
QUARANTINED = Counter(
    "cinebridge_scp_quarantined_files_total",
    "Received files without an index row that failed their check, moved to quarantine/",
)
RECOVERED = Counter(
    "cinebridge_scp_recovered_files_total",
    "Received files without an index row found by the recovery sweep, by what was done",
    ("outcome",),
)

#: A-ASSOCIATE-RJ explanations (acceptor.Association._refusal) → the `reason` label.
REJECT_REASONS = {
    "protocol version not supported": "protocol_version",
    "application context name not supported": "application_context",
    "called AE title not recognised": "called_ae_title",
    "calling AE title empty": "calling_ae_title",
    "calling AE title not in allow-list": "calling_ae_title",
    "too many associations": "too_many_associations",
}


def rejected(why: str) -> None:
    ASSOCIATIONS_REJECTED.labels(REJECT_REASONS.get(why, "other")).inc()
