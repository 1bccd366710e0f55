-- scp_index_instance (owner: services/scp): one round trip per received instance indexes the
-- instance, its series and study, and enqueues its InstanceReceived event in the outbox (same
-- rows as cinebridge_common.outbox.enqueue), all in the caller's single-statement transaction.
-- Concurrent copies of one SOP Instance UID serialise on an advisory lock; a second copy either
-- replaces the first (the row takes the new id and file; the old path is returned so the caller
-- deletes that file after commit) or, with p_keep_first, changes nothing. An instance of a study
-- and series already indexed with the same attributes does not upsert (and so lock) their rows,
-- so concurrent senders of one study commit in parallel. With p_channel NULL the outbox NOTIFY
-- is skipped: the row waits for the relays' next poll and is published in a batch.
-- Repeatable: edited in place, re-created when this text changes.

CREATE OR REPLACE FUNCTION scp_index_instance(
    a jsonb, p_keep_first boolean, p_msg_id text, p_subject text,
    p_payload bytea, p_payload_replaced bytea, p_channel text
) RETURNS TABLE (instance_id uuid, replaced_rel_path text, kept boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_id     uuid := (a->>'instance_id')::uuid;
    v_study  uuid;
    v_series uuid;
    v_prev   received_instances%ROWTYPE;
    v_found  boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(a->>'sop_instance_uid', 0));
    SELECT * INTO v_prev FROM received_instances
        WHERE sop_instance_uid = a->>'sop_instance_uid' FOR UPDATE;
    v_found := FOUND;
    IF v_found AND p_keep_first THEN
        RETURN QUERY SELECT v_prev.id, NULL::text, true;
        RETURN;
    END IF;

    -- Most instances belong to a study and series already indexed with the same attributes:
    -- find those without taking a row lock, so concurrent senders of one study do not queue
    -- on the study row until each other's commit.
    SELECT s.id INTO v_study FROM received_studies s
    WHERE s.study_instance_uid = a->>'study_instance_uid'
      AND (s.patient_name, s.patient_id, s.patient_birth_date, s.patient_sex,
           s.accession_number, s.study_id, s.study_date, s.study_time, s.study_description,
           s.referring_physician)
          = (a->>'patient_name', a->>'patient_id', a->>'patient_birth_date', a->>'patient_sex',
             a->>'accession_number', a->>'study_id', a->>'study_date', a->>'study_time',
             a->>'study_description', a->>'referring_physician');
    IF NOT FOUND THEN
        INSERT INTO received_studies AS s (id, study_instance_uid, patient_name, patient_id,
            patient_birth_date, patient_sex, accession_number, study_id, study_date, study_time,
            study_description, referring_physician, calling_ae)
        VALUES ((a->>'study_row_id')::uuid, a->>'study_instance_uid', a->>'patient_name',
            a->>'patient_id', a->>'patient_birth_date', a->>'patient_sex', a->>'accession_number',
            a->>'study_id', a->>'study_date', a->>'study_time', a->>'study_description',
            a->>'referring_physician', a->>'calling_ae')
        ON CONFLICT (study_instance_uid) DO UPDATE SET
            patient_name = EXCLUDED.patient_name, patient_id = EXCLUDED.patient_id,
            patient_birth_date = EXCLUDED.patient_birth_date, patient_sex = EXCLUDED.patient_sex,
            accession_number = EXCLUDED.accession_number, study_id = EXCLUDED.study_id,
            study_date = EXCLUDED.study_date, study_time = EXCLUDED.study_time,
            study_description = EXCLUDED.study_description,
            referring_physician = EXCLUDED.referring_physician, calling_ae = EXCLUDED.calling_ae,
            last_received_at = now()
        RETURNING s.id INTO v_study;
    END IF;

    SELECT r.id INTO v_series FROM received_series r
    WHERE r.series_instance_uid = a->>'series_instance_uid' AND r.study_id = v_study
      AND (r.modality, r.series_number, r.series_description)
          = (a->>'modality', a->>'series_number', a->>'series_description');
    IF NOT FOUND THEN
        INSERT INTO received_series AS r (id, study_id, series_instance_uid, modality,
            series_number, series_description)
        VALUES ((a->>'series_row_id')::uuid, v_study, a->>'series_instance_uid', a->>'modality',
            a->>'series_number', a->>'series_description')
        ON CONFLICT (series_instance_uid) DO UPDATE SET
            study_id = EXCLUDED.study_id, modality = EXCLUDED.modality,
            series_number = EXCLUDED.series_number,
            series_description = EXCLUDED.series_description, last_received_at = now()
        RETURNING r.id INTO v_series;
    END IF;

    IF v_found THEN
        UPDATE received_instances SET id = v_id, study_id = v_study, series_id = v_series,
            sop_class_uid = a->>'sop_class_uid', transfer_syntax_uid = a->>'transfer_syntax_uid',
            instance_number = a->>'instance_number', number_of_frames = a->>'number_of_frames',
            rel_path = a->>'rel_path', size = (a->>'size')::bigint, sha256 = a->>'sha256',
            calling_ae = a->>'calling_ae', source_address = a->>'source_address',
            received_at = now(), replacements = replacements + 1
        WHERE id = v_prev.id;
    ELSE
        INSERT INTO received_instances (id, study_id, series_id, sop_instance_uid, sop_class_uid,
            transfer_syntax_uid, instance_number, number_of_frames, rel_path, size, sha256,
            calling_ae, source_address)
        VALUES (v_id, v_study, v_series, a->>'sop_instance_uid', a->>'sop_class_uid',
            a->>'transfer_syntax_uid', a->>'instance_number', a->>'number_of_frames',
            a->>'rel_path', (a->>'size')::bigint, a->>'sha256', a->>'calling_ae',
            a->>'source_address');
    END IF;

    INSERT INTO outbox (msg_id, subject, payload)
    VALUES (p_msg_id, p_subject, CASE WHEN v_found THEN p_payload_replaced ELSE p_payload END)
    ON CONFLICT (msg_id) DO NOTHING;
    IF p_channel IS NOT NULL THEN
        PERFORM pg_notify(p_channel, '');
    END IF;
    RETURN QUERY SELECT v_id, CASE WHEN v_found THEN v_prev.rel_path END, false;
END
$$;
