-- Converter: a job's outcome is the converter's own record. The study catalog (capture) sets
-- media.state from the converter's events, some moments later; the reconciler and the parking of
-- dead letters must not wait for it. A finished job keeps its row with its outcome ('converted'
-- or 'failed', with the reason in last_error) instead of losing it; a new job of the same media
-- item (Save again) clears the outcome.
ALTER TABLE converter_jobs
    ADD COLUMN outcome text CHECK (outcome IN ('converted', 'failed'));
DELETE FROM converter_jobs j USING media m
    WHERE m.id = j.media_id AND m.state IN ('converted', 'failed', 'deleted');
DROP INDEX converter_jobs_lease;
CREATE INDEX converter_jobs_open ON converter_jobs (lease_until) WHERE outcome IS NULL;
