-- Capture: journal the final store path just before the rename into place, so that recovery
-- registers a recording that was moved but not yet registered when the process died.
ALTER TABLE capture_recordings ADD COLUMN final_path text;
