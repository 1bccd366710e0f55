-- Sender (services/sender): C-STORE destinations, the instances it may send, one delivery per
-- (instance, destination) with its state, and every attempt. Owned by the sender; the gateway
-- may read all four tables (columns documented in services/sender/README.md).

CREATE TABLE destinations (
    id                 uuid PRIMARY KEY,
    name               text NOT NULL UNIQUE,
    ae_title           text NOT NULL CHECK (length(ae_title) BETWEEN 1 AND 16),
    host               text NOT NULL,
    port               int  NOT NULL CHECK (port BETWEEN 1 AND 65535),
    -- NULL: the station's local AE title (station_settings.local_ae_title, Table 25 "SPACS").
    calling_ae_title   text CHECK (calling_ae_title IS NULL OR length(calling_ae_title) BETWEEN 1 AND 16),
    tls                boolean NOT NULL DEFAULT false,
    -- 'statement': send files as they are (Tables 9/10); 'decompress-stills': JPEG stills the
    -- destination refuses compressed are sent decompressed as Explicit VR Little Endian.
    profile            text NOT NULL DEFAULT 'statement'
                       CHECK (profile IN ('statement', 'decompress-stills')),
    enabled            boolean NOT NULL DEFAULT true,
    auto_send          boolean NOT NULL DEFAULT true,
    max_associations   int NOT NULL DEFAULT 2 CHECK (max_associations BETWEEN 1 AND 16),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Every instance announced by the converter (InstanceCreated), so that Forward can resend a
-- study to a destination added later.
CREATE TABLE outgoing_instances (
    id                   uuid PRIMARY KEY,
    study_id             uuid,
    sop_instance_uid     text NOT NULL,
    sop_class_uid        text NOT NULL,
    transfer_syntax_uid  text NOT NULL,
    rel_path             text NOT NULL,
    size                 bigint NOT NULL,
    sha256               text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outgoing_instances_study ON outgoing_instances (study_id);

CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    instance_id     uuid NOT NULL REFERENCES outgoing_instances (id),
    destination_id  uuid NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    study_id        uuid,
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'sending', 'sent', 'warning',
                                     'failed-retrying', 'failed-permanent')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A sender instance holds the delivery while it sends; an expired lease is free again.
    lease_owner     text,
    lease_until     timestamptz,
    last_status     int,
    last_error      text,
    -- Bumped by Forward/RetryDelivery: a new generation is a new send job (Nats-Msg-Id).
    generation      int NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (instance_id, destination_id)
);
CREATE INDEX deliveries_due ON deliveries (destination_id, next_attempt_at)
    WHERE state IN ('queued', 'failed-retrying', 'sending');
CREATE INDEX deliveries_study ON deliveries (study_id);

CREATE TABLE delivery_attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt      int NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    outcome      text NOT NULL,     -- sent, warning, failed-retrying, failed-permanent
    status_code  int,               -- C-STORE status (PS3.7 Annex C), NULL when none came back
    error        text,
    sender       text               -- instance id of the sender process that tried
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, attempt);

-- Forward requests already carried out (idempotent by job key).
CREATE TABLE forward_requests (
    job_key      text PRIMARY KEY,
    deliveries   int NOT NULL,
    done_at      timestamptz NOT NULL DEFAULT now()
);
