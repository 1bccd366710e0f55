-- Capture: the study catalog sets media.state from the converter's events (in progress,
-- instance created, conversion failed). They reach it on separate durable consumers, so in no
-- guaranteed order between them: each state records when the event that set it occurred, and
-- an older event never overrides a newer one.
ALTER TABLE media ADD COLUMN state_changed_at timestamptz;
