-- The exactly-once scratch table of the bus tests does not belong in a station's schema: the
-- test worker (cinebridge_common.testing.worker) creates its own.
DROP TABLE IF EXISTS processed_messages;
