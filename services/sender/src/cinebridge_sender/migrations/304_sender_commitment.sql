-- Sender: Storage Commitment Push Model (PS3.4 Annex J) per destination. Once a destination
-- acknowledged every instance of a study, the sender asks it to commit them (N-ACTION) and
-- records the answer (N-EVENT-REPORT) per delivery. Columns documented in
-- services/sender/README.md.

ALTER TABLE destinations
    ADD COLUMN commitment_required boolean NOT NULL DEFAULT false,
    -- How long to wait for the N-EVENT-REPORT before asking again.
    ADD COLUMN commitment_timeout_s int NOT NULL DEFAULT 300
        CHECK (commitment_timeout_s BETWEEN 1 AND 604800),
    -- Requests after the first one (a time-out or failed instances), then commit-failed.
    ADD COLUMN commitment_retries int NOT NULL DEFAULT 3
        CHECK (commitment_retries BETWEEN 0 AND 100);

-- Per delivery (instance x destination): NULL = not asked (yet, or not required);
-- requested, committed, failed (the archive's Failed SOP Sequence or time-outs, after the
-- retries), unsupported (the archive refused the SOP class: not a failed delivery).
ALTER TABLE deliveries
    ADD COLUMN commitment text
        CHECK (commitment IN ('requested', 'committed', 'failed', 'unsupported')),
    ADD COLUMN commitment_reason text,
    ADD COLUMN committed_at timestamptz,
    -- Requests made for this delivery (failed instances are sent and asked for again).
    ADD COLUMN commitment_requests int NOT NULL DEFAULT 0;

-- One row per N-ACTION (a re-request gets a new Transaction UID, PS3.4 J.3.2.1.1). A report
-- for an earlier transaction of the same study still counts.
CREATE TABLE commitment_transactions (
    transaction_uid  text PRIMARY KEY,
    destination_id   uuid NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    study_id         uuid,
    -- pending: N-ACTION to send; requested: N-ACTION-RSP 0000 came, report awaited;
    -- answered: report applied; superseded: timed out, asked again in a new transaction;
    -- unsupported: the archive accepted no Storage Commitment context; failed: given up.
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'requested', 'answered', 'superseded',
                                      'unsupported', 'failed')),
    -- 1 for the first request of these instances, counting re-requests.
    request          int NOT NULL DEFAULT 1,
    attempts         int NOT NULL DEFAULT 0,      -- N-ACTION association attempts
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    requested_at     timestamptz,
    answered_at      timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX commitment_transactions_due ON commitment_transactions (next_attempt_at)
    WHERE state IN ('pending', 'requested');

CREATE TABLE commitment_items (
    transaction_uid  text NOT NULL REFERENCES commitment_transactions (transaction_uid)
                     ON DELETE CASCADE,
    delivery_id      uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    PRIMARY KEY (transaction_uid, delivery_id)
);
CREATE INDEX commitment_items_delivery ON commitment_items (delivery_id);
CREATE INDEX deliveries_uncommitted ON deliveries (destination_id, delivered_at)
    WHERE commitment IS DISTINCT FROM 'committed';
