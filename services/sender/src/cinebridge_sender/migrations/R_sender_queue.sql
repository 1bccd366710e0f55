-- Sender: the `deliveries` table is the send queue (services/sender/README.md, "Queue"). Every
-- sender process LISTENs on two channels and its per-destination workers sleep until the
-- earliest due delivery of their destination, or until one of these wakes them:
--
--   cb_sender_queue         payload: a destination id; a delivery to it became queued (a new
--                           one, Forward, the operator's retry, a Storage Commitment re-send)
--   cb_sender_destinations  payload: a destination id; it was added, edited or deleted
--
-- Triggers rather than a NOTIFY in each writer: whoever queues a delivery wakes the workers of
-- every sender process, and PostgreSQL delivers a notification only when its transaction
-- commits (never before the row is visible), once per payload and transaction.

CREATE OR REPLACE FUNCTION sender_notify_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cb_sender_queue', NEW.destination_id::text);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER deliveries_queued
    AFTER INSERT OR UPDATE OF state, next_attempt_at, generation ON deliveries
    FOR EACH ROW WHEN (NEW.state = 'queued')
    EXECUTE FUNCTION sender_notify_queued();

CREATE OR REPLACE FUNCTION sender_notify_destination() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('cb_sender_destinations', OLD.id::text);
    ELSE
        PERFORM pg_notify('cb_sender_destinations', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER destinations_changed
    AFTER INSERT OR UPDATE OR DELETE ON destinations
    FOR EACH ROW EXECUTE FUNCTION sender_notify_destination();
