-- Storage Commitment reports the SCP owes requesters on a new association (PS3.4 J.3.3), owner:
-- services/scp. A row is written, with a WAL flush, before the N-ACTION-RSP goes out, and kept
-- until the requester answered its N-EVENT-REPORT: a restart in between sends it afterwards.
-- The requester's address is the one configured when it asked (CB_SCP_COMMITMENT_PEERS).

CREATE TABLE scp_commitment_reports (
    id                bigserial PRIMARY KEY,
    transaction_uid   text NOT NULL,
    requester_ae      text NOT NULL,
    host              text NOT NULL,
    port              integer NOT NULL,
    -- As whom the SCP calls: its AE title and implementation at the time of the request.
    calling_ae        text NOT NULL,
    implementation    text[] NOT NULL,
    -- {"committed": [[class, instance], ...], "failed": [[class, instance, reason], ...]}
    report            jsonb NOT NULL,
    state             text NOT NULL DEFAULT 'owed' CHECK (state IN ('owed', 'sent', 'abandoned')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL,
    leased_until      timestamptz,
    last_error        text,
    last_status       integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);
CREATE INDEX scp_commitment_reports_due ON scp_commitment_reports (next_attempt_at)
    WHERE state = 'owed';
