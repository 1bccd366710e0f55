-- Station-wide settings edited on the gateway's settings page (statement §4.4 configuration,
-- §6 character sets). Services read them at job time; missing keys fall back to env defaults.
-- Known keys: station_name, local_ae_title, character_set ("ISO_IR 100", "ISO_IR 192", ...),
-- video_transfer_syntax (UID), iod ("sc" | "vl"), worklist_character_set, wildcard_matching (bool).
CREATE TABLE station_settings (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text
);
