-- Gateway (services/gateway): users, browser sessions, API tokens for ops tools, and the audit
-- log of who did what to which study. Session ids and tokens are stored as SHA-256 only.

CREATE TABLE gateway_users (
    id             uuid PRIMARY KEY,
    username       text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('operator', 'administrator')),
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gateway_sessions (
    id_hash      text PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES gateway_users (id) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    client       text
);
CREATE INDEX gateway_sessions_expiry ON gateway_sessions (expires_at);

CREATE TABLE gateway_api_tokens (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    token_hash   text NOT NULL UNIQUE,
    role         text NOT NULL CHECK (role IN ('operator', 'administrator')),
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used    timestamptz,
    revoked_at   timestamptz
);

CREATE TABLE gateway_audit_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL,
    study_id  uuid,
    target    text,
    detail    jsonb NOT NULL DEFAULT '{}'::jsonb,
    client    text
);
CREATE INDEX gateway_audit_study ON gateway_audit_log (study_id, at DESC);
CREATE INDEX gateway_audit_at ON gateway_audit_log (at DESC);

-- Local search (statement §4.1.3 LOCAL dialog): case-insensitive prefix matching on patient
-- name / ID / accession and recent-first listing over 100k+ studies.
CREATE INDEX gateway_studies_name_prefix ON studies (lower(patient_name) text_pattern_ops);
CREATE INDEX gateway_studies_pid_prefix ON studies (lower(patient_id) text_pattern_ops);
CREATE INDEX gateway_studies_acc_prefix ON studies (lower(accession_number) text_pattern_ops);
CREATE INDEX gateway_studies_date ON studies (study_date);
