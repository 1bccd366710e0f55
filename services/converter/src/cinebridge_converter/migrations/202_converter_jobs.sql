-- Converter: the job in hand for each media item, so that work never vanishes. A row exists from
-- the start of a conversion (or a dead-lettered job) until the media is converted or failed; the
-- reconciler re-queues a row whose lease ran out (no converter holds it) or, after too many
-- re-queues, marks the media failed with the reason.
CREATE TABLE converter_jobs (
    media_id     uuid PRIMARY KEY REFERENCES media (id),
    job          jsonb NOT NULL,                 -- the ConvertMedia message, for a re-queue
    lease_until  timestamptz NOT NULL,
    requeues     int NOT NULL DEFAULT 0,
    last_error   text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX converter_jobs_lease ON converter_jobs (lease_until);
