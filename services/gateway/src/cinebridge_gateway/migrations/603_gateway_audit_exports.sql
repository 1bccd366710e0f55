-- Study exports: a download's audit entry names the study its export was made of, found by
-- the export id of the `study_exported` entry (partial index: exports are a small share).
CREATE INDEX gateway_audit_export ON gateway_audit_log ((detail->>'export_id'))
    WHERE action = 'study_exported';
