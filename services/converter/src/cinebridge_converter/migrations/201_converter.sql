-- Converter: the DICOM instances it made, and the series/instance numbers it handed out.

-- One series per (study, source) (statement: "Series per source named after the source").
CREATE TABLE converter_series (
    study_id       uuid NOT NULL REFERENCES studies (id),
    source         text NOT NULL,
    series_number  int NOT NULL,
    PRIMARY KEY (study_id, source)
);

-- Instance numbers run across all series of a study (statement Table 37).
CREATE TABLE converter_study_counters (
    study_id       uuid PRIMARY KEY REFERENCES studies (id),
    last_instance  int NOT NULL DEFAULT 0
);

-- Numbers reserved for one conversion of one media item, reused by a redelivered job.
CREATE TABLE converter_reservations (
    media_id        uuid NOT NULL REFERENCES media (id),
    conversion_key  text NOT NULL,          -- study UID + transfer syntax + IOD
    parts           int NOT NULL,
    series_number   int NOT NULL,
    first_instance  int NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (media_id, conversion_key, parts)
);

CREATE TABLE instances (
    id                   uuid PRIMARY KEY,
    sop_instance_uid     text NOT NULL UNIQUE,
    media_id             uuid NOT NULL REFERENCES media (id),
    part                 int NOT NULL,
    parts                int NOT NULL,
    study_id             uuid NOT NULL REFERENCES studies (id),
    study_instance_uid   text NOT NULL,
    series_instance_uid  text NOT NULL,
    sop_class_uid        text NOT NULL,
    transfer_syntax_uid  text NOT NULL,
    series_number        int NOT NULL,
    instance_number      int NOT NULL,
    rel_path             text NOT NULL,
    size                 bigint NOT NULL,
    sha256               text NOT NULL,
    rows                 int NOT NULL,
    columns              int NOT NULL,
    frames               int,
    transcoded           boolean NOT NULL DEFAULT false,
    note                 text,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_media ON instances (media_id);
CREATE INDEX instances_study ON instances (study_id);
