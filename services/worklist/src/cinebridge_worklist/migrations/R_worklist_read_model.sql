-- Worklist: the read model it publishes of its Modality Performed Procedure Steps
-- (docs/architecture.md, "One owner per table"): what other services read, while the tables
-- behind stay the worklist service's to change. Columns are only ever added at the end and
-- keep their meaning.

-- One row per performed procedure step (PS3.4 F.7) with its state and last outcome: the
-- gateway's study page (and its Retry). `seq` numbers a study's steps; the highest is its
-- latest (an append, or the step that follows a relinked one).
CREATE OR REPLACE VIEW mpps_step_states AS
    SELECT id, study_id, server_id, sop_instance_uid, pps_id, state, final_status, reason,
           attempts, last_status, last_error, started_at, ended_at, updated_at, seq
    FROM mpps_steps;
