-- Shared infrastructure tables: transactional outbox, dead letters, service heartbeats.

CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    msg_id        text NOT NULL UNIQUE,          -- Nats-Msg-Id: dedup across re-publishes
    subject       text NOT NULL,
    payload       bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    attempts      int NOT NULL DEFAULT 0,
    last_error    text
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE dead_letters (
    id               bigserial PRIMARY KEY,
    stream           text NOT NULL,
    consumer         text NOT NULL,
    stream_seq       bigint NOT NULL,
    original_subject text NOT NULL,
    deliveries       int NOT NULL,
    reason           text NOT NULL,
    payload          text NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream, consumer, stream_seq)
);

-- A scratch table for the bus/outbox tests and the exactly-once demonstration.
CREATE TABLE processed_messages (
    consumer   text NOT NULL,
    msg_key    text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, msg_key)
);
