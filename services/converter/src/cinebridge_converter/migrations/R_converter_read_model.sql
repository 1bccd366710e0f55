-- Converter: the read model it publishes of the instances it made (docs/architecture.md, "One
-- owner per table"): what other services read, while the tables behind stay the converter's to
-- change. Columns are only ever added at the end and keep their meaning.

-- One row per DICOM instance made from a media item (`part` of `parts` for a recording cut in
-- several): the gateway's study status (every item converted) and which media item a delivery
-- carries.
CREATE OR REPLACE VIEW converted_instances AS
    SELECT id, media_id, study_id, sop_instance_uid, sop_class_uid, part, parts
    FROM instances;
