-- Capture (5xx): each room's current study, and recordings in progress so that a recording
-- interrupted by a crash is found, salvaged and registered at the next start.

CREATE TABLE capture_rooms (
    room        text PRIMARY KEY,
    study_id    uuid REFERENCES studies (id),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE capture_recordings (
    id           uuid PRIMARY KEY,
    room         text NOT NULL,
    source       text NOT NULL,
    study_id     uuid NOT NULL REFERENCES studies (id),
    mode         text NOT NULL,                 -- h264, mpeg2-ml, mpeg2-hl
    passthrough  boolean NOT NULL DEFAULT false,
    part_path    text NOT NULL,                 -- media store path written while recording
    state        text NOT NULL DEFAULT 'recording'
                 CHECK (state IN ('recording', 'done', 'recovered', 'empty', 'failed')),
    media_id     uuid REFERENCES media (id),
    error        text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz
);
CREATE INDEX capture_recordings_open ON capture_recordings (room) WHERE state = 'recording';
