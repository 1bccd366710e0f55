-- Capture: the local purge policy (docs/purge.md). A study may be held by an administrator
-- (never purged while held); a purged study keeps its catalog rows, marked, for the audit and
-- the ledger. `capture_purges` journals each purge from its start, so a purge interrupted at any
-- step is finished by the next run: the media files are removed by capture, the DICOM files by
-- the converter (a durable job), and the study is marked purged when both are done.
ALTER TABLE studies
    ADD COLUMN held       boolean NOT NULL DEFAULT false,
    ADD COLUMN held_by    text,
    ADD COLUMN held_at    timestamptz,
    ADD COLUMN purged_at  timestamptz;
ALTER TABLE media ADD COLUMN purged_at timestamptz;

CREATE TABLE capture_purges (
    study_id          uuid PRIMARY KEY REFERENCES studies (id),
    reason            text NOT NULL CHECK (reason IN ('retention', 'watermark')),
    started_at        timestamptz NOT NULL DEFAULT now(),
    -- Set when every media file of the study is gone (and its preview data).
    media_removed_at  timestamptz,
    media_files       int NOT NULL DEFAULT 0,
    media_bytes       bigint NOT NULL DEFAULT 0,
    -- Set from the converter's cb.evt.instances.purged.
    dicom_removed_at  timestamptz,
    instances         int NOT NULL DEFAULT 0,
    instance_bytes    bigint NOT NULL DEFAULT 0,
    finished_at       timestamptz
);
CREATE INDEX capture_purges_open ON capture_purges (started_at) WHERE finished_at IS NULL;
CREATE INDEX studies_unpurged ON studies (created_at) WHERE purged_at IS NULL;
