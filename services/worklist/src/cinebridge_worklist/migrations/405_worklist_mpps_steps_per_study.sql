-- Several performed procedure steps per study (PS3.4 Annex F; IHE RAD TF-2 4.6.4.1.2.4). Owner:
-- worklist. A step that is COMPLETED or DISCONTINUED is final (PS3.4 F.7.2.2), so what a study
-- does after it goes into a new step of its own:
--  - the append case: media captured and saved after the step ended;
--  - a study linked to a worklist item after its unscheduled step was created: that step is
--    DISCONTINUED ("Incorrect worklist entry selected") and a step linked to the item follows;
--  - MPPS enabled in the middle of a study: the Save creates the step and it takes every
--    instance the study already has.
-- `seq` numbers a study's steps (1 = the first); at most one step of a study is open
-- (final_status NULL) at a time. `scheduled`: whether the N-CREATE that left carried the worklist
-- item (NULL: not sent yet), so its final N-SET is built from the same item.
ALTER TABLE mpps_steps DROP CONSTRAINT mpps_steps_study_id_key;
ALTER TABLE mpps_steps
    ADD COLUMN seq       int NOT NULL DEFAULT 1,
    ADD COLUMN scheduled boolean,
    ADD CONSTRAINT mpps_steps_study_seq UNIQUE (study_id, seq);
CREATE UNIQUE INDEX mpps_steps_one_open ON mpps_steps (study_id) WHERE final_status IS NULL;

-- Every instance of a study is recorded, with or without a step: one made before its step
-- existed (MPPS enabled meanwhile, or its event read before the Save's) has no step yet and is
-- taken by the step the study's Save opens. `parts`: how many instances its media item makes.
ALTER TABLE mpps_instances
    ALTER COLUMN step_id DROP NOT NULL,
    ADD COLUMN study_id uuid REFERENCES studies (id) ON DELETE CASCADE,
    ADD COLUMN parts    int NOT NULL DEFAULT 1;
UPDATE mpps_instances i SET study_id = s.study_id FROM mpps_steps s WHERE s.id = i.step_id;
CREATE INDEX mpps_instances_study ON mpps_instances (study_id) WHERE step_id IS NULL;
