-- Index of instances received by the Storage SCP (owner: services/scp). Read by the gateway for
-- the local search (statement §4.1.3) and "upload earlier studies of this patient".
-- Patient attributes are kept per study (as sent); received_patients groups them by Patient ID.

CREATE TABLE received_studies (
    id                  uuid PRIMARY KEY,
    study_instance_uid  text NOT NULL UNIQUE,
    patient_name        text NOT NULL DEFAULT '',
    patient_id          text NOT NULL DEFAULT '',
    patient_birth_date  text NOT NULL DEFAULT '',
    patient_sex         text NOT NULL DEFAULT '',
    accession_number    text NOT NULL DEFAULT '',
    study_id            text NOT NULL DEFAULT '',
    study_date          text NOT NULL DEFAULT '',
    study_time          text NOT NULL DEFAULT '',
    study_description   text NOT NULL DEFAULT '',
    referring_physician text NOT NULL DEFAULT '',
    calling_ae          text NOT NULL DEFAULT '',
    first_received_at   timestamptz NOT NULL DEFAULT now(),
    last_received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX received_studies_patient_id ON received_studies (patient_id);
CREATE INDEX received_studies_patient_name ON received_studies (lower(patient_name) text_pattern_ops);
CREATE INDEX received_studies_study_date ON received_studies (study_date);
CREATE INDEX received_studies_accession ON received_studies (accession_number);

CREATE TABLE received_series (
    id                  uuid PRIMARY KEY,
    study_id            uuid NOT NULL REFERENCES received_studies (id),
    series_instance_uid text NOT NULL UNIQUE,
    modality            text NOT NULL DEFAULT '',
    series_number       text NOT NULL DEFAULT '',
    series_description  text NOT NULL DEFAULT '',
    last_received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX received_series_study ON received_series (study_id);

CREATE TABLE received_instances (
    id                  uuid PRIMARY KEY,
    study_id            uuid NOT NULL REFERENCES received_studies (id),
    series_id           uuid NOT NULL REFERENCES received_series (id),
    sop_instance_uid    text NOT NULL UNIQUE,
    sop_class_uid       text NOT NULL,
    transfer_syntax_uid text NOT NULL,
    instance_number     text NOT NULL DEFAULT '',
    number_of_frames    text NOT NULL DEFAULT '',
    rel_path            text NOT NULL,
    size                bigint NOT NULL,
    sha256              text NOT NULL,
    calling_ae          text NOT NULL,
    source_address      text NOT NULL DEFAULT '',
    received_at         timestamptz NOT NULL DEFAULT now(),
    -- How many later copies of this SOP Instance UID replaced the file (duplicates=replace).
    replacements        int NOT NULL DEFAULT 0
);
CREATE INDEX received_instances_series ON received_instances (series_id);
CREATE INDEX received_instances_study ON received_instances (study_id);

CREATE VIEW received_patients AS
    SELECT patient_id,
           (array_agg(patient_name ORDER BY last_received_at DESC))[1] AS patient_name,
           (array_agg(patient_birth_date ORDER BY last_received_at DESC))[1] AS patient_birth_date,
           (array_agg(patient_sex ORDER BY last_received_at DESC))[1] AS patient_sex,
           count(*) AS studies,
           max(last_received_at) AS last_received_at
    FROM received_studies
    GROUP BY patient_id;
