-- Local studies and captured media: written by the gateway (form, worklist, local search) and
-- by capture (unscheduled studies, media rows); read by the converter.

CREATE TABLE studies (
    id                  uuid PRIMARY KEY,
    study_instance_uid  text NOT NULL UNIQUE,
    origin              text NOT NULL CHECK (origin IN ('form', 'worklist', 'local', 'unscheduled')),
    room                text,
    patient_name        text NOT NULL DEFAULT '',
    patient_id          text NOT NULL DEFAULT '',
    patient_birth_date  text NOT NULL DEFAULT '',
    patient_sex         text NOT NULL DEFAULT '',
    accession_number    text NOT NULL DEFAULT '',
    study_id            text NOT NULL DEFAULT '',
    study_description   text NOT NULL DEFAULT '',
    referring_physician text NOT NULL DEFAULT '',
    study_date          text NOT NULL DEFAULT '',
    study_time          text NOT NULL DEFAULT '',
    -- The imported worklist item (DICOM JSON) for statement Table 38 mapping.
    worklist_item       jsonb,
    -- Statement §8.1.5: after a manual edit the "New" attributes are dropped.
    edited              boolean NOT NULL DEFAULT false,
    state               text NOT NULL DEFAULT 'open',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX studies_patient_id ON studies (patient_id);
CREATE INDEX studies_created_at ON studies (created_at DESC);

CREATE TABLE media (
    id           uuid PRIMARY KEY,
    study_id     uuid NOT NULL REFERENCES studies (id),
    room         text NOT NULL,
    source       text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('snapshot', 'recording')),
    rel_path     text NOT NULL,
    size         bigint NOT NULL,
    sha256       text NOT NULL,
    mime         text NOT NULL,
    width        int,
    height       int,
    frames       int,
    duration_s   double precision,
    fps          double precision,
    codec        text,
    recovered    boolean NOT NULL DEFAULT false,
    state        text NOT NULL DEFAULT 'captured',  -- captured, converting, converted, failed, deleted
    error        text,
    captured_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX media_study ON media (study_id);
