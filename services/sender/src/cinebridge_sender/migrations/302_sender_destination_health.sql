-- Sender: reachability of each destination. A destination that cannot be reached is retried as
-- a whole with backoff (one association attempt per round, not one per queued instance).
CREATE TABLE destination_health (
    destination_id  uuid PRIMARY KEY REFERENCES destinations (id) ON DELETE CASCADE,
    failures        int NOT NULL DEFAULT 0,     -- consecutive association failures
    retry_at        timestamptz,                -- no association before this time
    last_error      text,
    last_ok_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
