-- Modality Performed Procedure Step SCU (PS3.4 Annex F; IHE RAD-6/RAD-7). Owner: worklist.
-- The gateway reads mpps_steps to show each study's step; only the worklist service writes.

-- The RIS's MPPS SCP, per worklist server: host/port/AE left NULL take the server's own.
ALTER TABLE worklist_servers
    ADD COLUMN mpps_enabled boolean NOT NULL DEFAULT false,
    ADD COLUMN mpps_ae      text,
    ADD COLUMN mpps_host    text,
    ADD COLUMN mpps_port    int CHECK (mpps_port BETWEEN 1 AND 65535);

-- One performed procedure step per study. `created`: the SCP acknowledged our N-CREATE (the
-- N-SET is sent only after it); `final_status`: what the step must end as, once the study is
-- saved and converted (COMPLETED) or abandoned (DISCONTINUED, with `reason`, CID 9300).
-- Retries: `next_attempt_at` with backoff; a worker holds a row by its lease while it talks to
-- the SCP (claimed FOR UPDATE SKIP LOCKED), and the sweeper re-queues what is overdue.
CREATE TABLE mpps_steps (
    id               uuid PRIMARY KEY,
    study_id         uuid NOT NULL UNIQUE REFERENCES studies (id) ON DELETE CASCADE,
    server_id        text NOT NULL,
    sop_instance_uid text NOT NULL UNIQUE,
    pps_id           text NOT NULL,
    state            text NOT NULL DEFAULT 'pending-create' CHECK (state IN (
                         'pending-create', 'in-progress', 'pending-set', 'completed',
                         'discontinued', 'failed-retrying', 'failed')),
    created          boolean NOT NULL DEFAULT false,
    -- Set just before the request leaves: a retry after a crash knows the SCP may have it.
    create_sent      boolean NOT NULL DEFAULT false,
    set_sent         boolean NOT NULL DEFAULT false,
    final_status     text CHECK (final_status IN ('COMPLETED', 'DISCONTINUED')),
    reason           jsonb,
    started_at       timestamptz NOT NULL,
    saved_at         timestamptz,
    ended_at         timestamptz,
    operator         text,                       -- who pressed Save (Operators' Name)
    attempts         int NOT NULL DEFAULT 0,
    last_status      int,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_until      timestamptz,
    generation       int NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mpps_steps_due ON mpps_steps (next_attempt_at)
    WHERE state IN ('pending-create', 'pending-set', 'failed-retrying');

-- The media a Save asked to convert, and what became of each (NULL: not yet known).
CREATE TABLE mpps_media (
    step_id   uuid NOT NULL REFERENCES mpps_steps (id) ON DELETE CASCADE,
    media_id  uuid NOT NULL,
    parts     int NOT NULL DEFAULT 1,
    outcome   text CHECK (outcome IN ('converted', 'failed')),
    PRIMARY KEY (step_id, media_id)
);

-- Every instance made for the study (cb.evt.instance.created): the Performed Series Sequence.
CREATE TABLE mpps_instances (
    sop_instance_uid    text PRIMARY KEY,
    step_id             uuid NOT NULL REFERENCES mpps_steps (id) ON DELETE CASCADE,
    media_id            uuid NOT NULL,
    sop_class_uid       text NOT NULL,
    series_instance_uid text NOT NULL,
    series_description  text NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mpps_instances_step ON mpps_instances (step_id);
