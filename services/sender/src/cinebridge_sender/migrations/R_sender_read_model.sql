-- Sender: the read model it publishes of its deliveries (docs/architecture.md, "One owner per
-- table"): what other services read, while the tables behind stay the sender's to change.
-- Columns are only ever added at the end and keep their meaning.

-- One row per (instance, destination) delivery with its destination and instance: the
-- gateway's study page, search status and Storage Commitment badge (PS3.4 Annex J), ops page
-- and `cinebridge send`. Outer joins on the keys, so that a reader that needs neither the
-- destination nor the instance pays for neither.
CREATE OR REPLACE VIEW delivery_states AS
    SELECT d.id, d.study_id, d.instance_id, d.destination_id, dst.name AS destination_name,
           dst.commitment_required, d.state, d.attempts, d.last_status, d.last_error,
           d.created_at, d.updated_at, d.delivered_at, d.commitment, d.commitment_reason,
           d.commitment_requests, i.sop_instance_uid, i.sop_class_uid,
           i.created_at AS instance_created_at
    FROM deliveries d
    LEFT JOIN destinations dst ON dst.id = d.destination_id
    LEFT JOIN outgoing_instances i ON i.id = d.instance_id;

-- Every attempt of a delivery, with the status the destination answered (statement Table 11).
CREATE OR REPLACE VIEW delivery_attempt_log AS
    SELECT delivery_id, attempt, started_at, finished_at, outcome, status_code, error, sender
    FROM delivery_attempts;

-- The configured destinations by name (the full records, with secrets, only over the
-- sender's RPC cb.rpc.sender.destinations.list).
CREATE OR REPLACE VIEW destination_names AS
    SELECT id, name FROM destinations;

-- Every instance the sender has recorded for delivery: `cinebridge convert --send` waits until
-- the sender has its handed-in files before it asks them forwarded.
CREATE OR REPLACE VIEW sender_instances AS
    SELECT id, study_id, sop_instance_uid, created_at FROM outgoing_instances;
