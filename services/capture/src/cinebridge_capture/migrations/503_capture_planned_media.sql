-- Capture: "Stop" answers as soon as the file is closed and registers it in the background
-- (hashing and probing an hours-long recording outlasts an RPC). The media id given in the
-- reply is journalled here first, so a crash before the registration keeps that id.
ALTER TABLE capture_recordings ADD COLUMN planned_media_id uuid;
