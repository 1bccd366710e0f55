-- Worklist service. Owner: worklist. The gateway may read both tables directly; it
-- changes servers only through the cb.rpc.worklist.servers.* RPCs.

-- Configured worklist servers (RIS); seeded from CB_WORKLIST_SEED_SERVERS at start.
CREATE TABLE worklist_servers (
    id            text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    name          text NOT NULL DEFAULT '',
    host          text NOT NULL,
    port          int NOT NULL CHECK (port BETWEEN 1 AND 65535),
    called_ae     text NOT NULL,
    calling_ae    text,                      -- NULL: station_settings.local_ae_title
    modality      text NOT NULL DEFAULT '',  -- C key (Table 18), '' = any
    station_ae    text NOT NULL DEFAULT '',  -- C key (Table 18), '' = any
    character_set text,                      -- NULL: station_settings.worklist_character_set
    wildcards     boolean,                   -- NULL: station_settings.wildcard_matching
    timeout_s     double precision,          -- NULL: CB_WORKLIST_TIMEOUT_S (10 s, Table 26)
    max_entries   int,                       -- NULL: CB_WORKLIST_MAX_ENTRIES
    enabled       boolean NOT NULL DEFAULT true,
    position      int NOT NULL DEFAULT 0,    -- the first enabled server is the default
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text
);

-- Offline cache: every entry of today's successful queries, offered (marked cached) when the
-- server is unreachable. `item` is the WorklistItem JSON (typed fields + DICOM JSON dataset).
CREATE TABLE worklist_cache (
    server_id   text NOT NULL REFERENCES worklist_servers (id) ON DELETE CASCADE,
    item_key    text NOT NULL,
    item        jsonb NOT NULL,
    sps_date    text NOT NULL DEFAULT '',
    fetched_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (server_id, item_key)
);
CREATE INDEX worklist_cache_fetched ON worklist_cache (server_id, fetched_at);
