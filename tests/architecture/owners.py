"""Who owns which table: the one place the SQL-ownership check and docs/architecture.md agree on.

A table's owner is the only part of the station whose SQL may change it (INSERT, UPDATE, DELETE,
TRUNCATE, COPY ... FROM) or its schema (CREATE/ALTER TABLE, CREATE INDEX ... ON). Every other
service asks the owner — an RPC for what needs an answer, a durable JetStream job or event for
what must not be lost — and reads through the owner's API or a view it publishes as its read
model. Owners are the services' short names (`cinebridge_<owner>`); `common` is the shared
library, which writes its tables on behalf of whichever service calls it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: table (or view) → owner.
TABLE_OWNERS: dict[str, str] = {
    # The shared library: schema bookkeeping, each service's outbox rows of its own events, the
    # dead letters copied from CB_DLQ by the shared mirror consumer.
    "schema_migrations": "common",
    "schema_repeatables": "common",
    "outbox": "common",
    "dead_letters": "common",
    # Capture: the rooms and recordings, and the study catalog. Studies and media rows are born
    # where a room captures — an unscheduled study on the first capture, a media row with each
    # file — and capture must keep capturing while the gateway, converter or worklist is down.
    "capture_rooms": "capture",
    "capture_recordings": "capture",
    "capture_purges": "capture",
    "studies": "capture",
    "media": "capture",
    "capture_served_rooms": "capture",
    "capture_purging_studies": "capture",
    # Converter: the instances it makes and its numbering and job journal.
    "instances": "converter",
    "converter_series": "converter",
    "converter_study_counters": "converter",
    "converter_reservations": "converter",
    "converter_jobs": "converter",
    "converted_instances": "converter",
    # Sender.
    "destinations": "sender",
    "outgoing_instances": "sender",
    "deliveries": "sender",
    "delivery_attempts": "sender",
    "forward_requests": "sender",
    "destination_health": "sender",
    "commitment_transactions": "sender",
    "commitment_items": "sender",
    "delivery_states": "sender",
    "delivery_attempt_log": "sender",
    "destination_names": "sender",
    # SCP: the index of received instances and its public read model.
    "received_studies": "scp",
    "received_series": "scp",
    "received_instances": "scp",
    "received_patients": "scp",
    "received_study_index": "scp",
    "received_totals": "scp",
    # Worklist.
    "worklist_servers": "worklist",
    "worklist_cache": "worklist",
    "mpps_steps": "worklist",
    "mpps_media": "worklist",
    "mpps_instances": "worklist",
    "mpps_step_states": "worklist",
    # Gateway: accounts, sessions, audit, and the station settings its settings page edits
    # (every service reads them through cinebridge_common.station.load_station_settings).
    "gateway_users": "gateway",
    "gateway_sessions": "gateway",
    "gateway_api_tokens": "gateway",
    "gateway_audit_log": "gateway",
    "station_settings": "gateway",
    # Dropped by migration 004; kept here so that the migration that created it still checks.
    "processed_messages": "common",
    # Scratch tables of the shared test workers (cinebridge_testkit), created by tests.
    "test_processed_messages": "testing",
    "test_work_done": "testing",
}


@dataclass(frozen=True)
class Excuse:
    """A write by a part that does not own the table (`*`: any table), in `path` (None:
    anywhere in the writer's code), and why it is right or still there."""

    writer: str
    table: str
    path: str | None
    reason: str

    def key(self) -> tuple[str, str, str | None]:
        return self.writer, self.table, self.path


_MIGRATIONS = "libs/common/src/cinebridge_common/migrations"

#: Writes that are right although the writer is not the owner.
#: (`cinebridge restore` writes every table too, but through pg_restore, not SQL of its own: it
#: fills an empty database from a backup with every service stopped, docs/backup.md.)
ALLOWED: list[Excuse] = [
    Excuse(
        "scp",
        "outbox",
        "services/scp/src/cinebridge_scp/migrations/R_scp_index_instance.sql",
        "the SCP indexes a received instance and queues its own cb.evt.instance.received in one "
        "PL/pgSQL call, one round trip per C-STORE; the row is the SCP's own event",
    ),
]

#: Foreign writes that remain, each with the owner's route that replaces it. The check fails
#: when one of them is gone without being struck from this list, so the list only shrinks.
_GATEWAY = "services/gateway/src/cinebridge_gateway"
PENDING: list[Excuse] = [
    Excuse(
        "common",
        "studies",
        f"{_MIGRATIONS}/002_studies.sql",
        "the shared migrations of the first release; they move beside their owner (capture)",
    ),
    Excuse(
        "common",
        "media",
        f"{_MIGRATIONS}/002_studies.sql",
        "the shared migrations of the first release; they move beside their owner (capture)",
    ),
    Excuse(
        "common",
        "station_settings",
        f"{_MIGRATIONS}/003_station_settings.sql",
        "the shared migrations of the first release; it moves beside its owner (gateway)",
    ),
    Excuse(
        "worklist",
        "studies",
        "services/worklist/src/cinebridge_worklist/migrations/402_studies_modality.sql",
        "an applied migration is never edited: the column is capture's from now on",
    ),
    Excuse(
        "gateway",
        "studies",
        f"{_GATEWAY}/migrations/601_gateway.sql",
        "the search indexes of an applied migration; new indexes of `studies` go in capture's "
        "migrations",
    ),
]

#: Service modules that may hold SQL although they are not repositories, and why.
SQL_OUTSIDE_REPOSITORIES: dict[str, str] = {
    "services/cli/src/cinebridge_cli/backup.py": (
        "backup counts and lists every table of the database by name, whoever owns it: it is "
        "the one reader of the whole schema and speaks to PostgreSQL directly (docs/backup.md)"
    ),
}
