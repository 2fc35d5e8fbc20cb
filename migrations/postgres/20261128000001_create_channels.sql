-- One row per channel. The tokens live only in token_ciphertext, sealed with AES-256-GCM
-- (src/store/crypto.rs) and tagged with the id of the key that sealed them; every other column
-- is metadata and never holds a secret.
CREATE TABLE warden_channels (
    channel          TEXT        NOT NULL PRIMARY KEY,
    provider         TEXT        NOT NULL,
    -- +1 on every token change; the compare-and-set target of mark_pending.
    version          BIGINT      NOT NULL DEFAULT 0 CHECK (version >= 0),
    status           TEXT        NOT NULL DEFAULT 'active'
                                 CHECK (status IN ('active', 'reauth_pending', 'reauth_failed')),
    last_error       TEXT,
    token_key_id     TEXT,
    token_ciphertext BYTEA,
    token_expires_at TIMESTAMPTZ,
    -- Single-flight re-auth across replicas; expiry is compared with the database's clock.
    lease_holder     TEXT,
    lease_expires_at TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((token_key_id IS NULL) = (token_ciphertext IS NULL)),
    CHECK ((lease_holder IS NULL) = (lease_expires_at IS NULL))
);
