-- Capture: the read model it publishes of its rooms (docs/architecture.md, "One owner per
-- table"); the study catalog's read model is `studies` and `media` themselves. Columns are only
-- ever added at the end and keep their meaning.

-- Every room a capture process has served: the gateway lists them while none runs.
CREATE OR REPLACE VIEW capture_served_rooms AS
    SELECT room FROM capture_rooms;

-- Studies whose purge has started (docs/purge.md): the delivery ledger shows them as purging
-- until `studies.purged_at` is set.
CREATE OR REPLACE VIEW capture_purging_studies AS
    SELECT study_id FROM capture_purges;
