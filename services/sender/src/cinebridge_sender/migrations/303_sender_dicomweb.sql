-- Sender: a destination is a DIMSE Storage SCP (AE title, host, port) or a DICOMweb archive
-- reached by STOW-RS (PS3.18 §10.5): base URL, authentication, TLS verification. Columns
-- documented in services/sender/README.md.

ALTER TABLE destinations
    ADD COLUMN kind text NOT NULL DEFAULT 'dimse' CHECK (kind IN ('dimse', 'dicomweb')),
    ADD COLUMN base_url text CHECK (base_url IS NULL OR base_url ~ '^https?://'),
    ADD COLUMN auth text NOT NULL DEFAULT 'none' CHECK (auth IN ('none', 'basic', 'bearer')),
    ADD COLUMN username text,
    -- The basic password or bearer token: written by the destination upsert, read only to send;
    -- never returned by the sender's replies.
    ADD COLUMN secret text,
    ADD COLUMN tls_verify boolean NOT NULL DEFAULT true,
    ADD COLUMN ca_file text,
    ALTER COLUMN ae_title DROP NOT NULL,
    ALTER COLUMN host DROP NOT NULL,
    ALTER COLUMN port DROP NOT NULL,
    ADD CONSTRAINT destinations_kind_complete CHECK (
        (kind = 'dimse' AND ae_title IS NOT NULL AND host IS NOT NULL AND port IS NOT NULL)
        OR (kind = 'dicomweb' AND base_url IS NOT NULL)
    );
