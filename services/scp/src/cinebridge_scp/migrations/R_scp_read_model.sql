-- SCP: the read model it publishes of its index of received instances (docs/architecture.md,
-- "One owner per table"): what other services read, while the tables behind stay the SCP's to
-- change. Columns are only ever added at the end and keep their meaning.

-- One row per received study with how many instances it holds: the gateway's local search
-- (statement §4.1.3), a study received back, and a LOCAL start from a received study.
CREATE OR REPLACE VIEW received_study_index AS
    SELECT s.id, s.study_instance_uid, s.patient_name, s.patient_id, s.patient_birth_date,
           s.patient_sex, s.accession_number, s.study_id, s.study_description,
           s.referring_physician, s.study_date, s.study_time, s.first_received_at,
           s.last_received_at,
           (SELECT count(*) FROM received_instances i WHERE i.study_id = s.id) AS instances
    FROM received_studies s;

-- How many instances were received, in all and in the last day: the gateway's ops page.
CREATE OR REPLACE VIEW received_totals AS
    SELECT count(*) AS instances,
           count(*) FILTER (WHERE received_at > now() - interval '1 day') AS last_24h
    FROM received_instances;
