-- Converter: an instance whose DICOM file was removed by the local purge policy (docs/purge.md)
-- keeps its row, marked, so that a repeated purge job removes only what is left and reports the
-- same totals.
ALTER TABLE instances ADD COLUMN purged_at timestamptz;
