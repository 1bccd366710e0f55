-- Gateway (services/gateway): the read-only `viewer` role (dashboards, ops page), a password
-- that must be changed at the next log-in (first-run or reset by an administrator), and API
-- tokens that expire.

ALTER TABLE gateway_users DROP CONSTRAINT gateway_users_role_check;
ALTER TABLE gateway_users ADD CONSTRAINT gateway_users_role_check
    CHECK (role IN ('viewer', 'operator', 'administrator'));
ALTER TABLE gateway_users ADD COLUMN must_change_password boolean NOT NULL DEFAULT false;

ALTER TABLE gateway_api_tokens DROP CONSTRAINT gateway_api_tokens_role_check;
ALTER TABLE gateway_api_tokens ADD CONSTRAINT gateway_api_tokens_role_check
    CHECK (role IN ('viewer', 'operator', 'administrator'));
ALTER TABLE gateway_api_tokens ADD COLUMN expires_at timestamptz;

-- The audit log filtered by user and action (the audit screen).
CREATE INDEX gateway_audit_actor ON gateway_audit_log (actor, at DESC);
CREATE INDEX gateway_audit_action ON gateway_audit_log (action, at DESC);
