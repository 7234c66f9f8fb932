-- API keys for Streamable HTTP. Only a SHA-256 of each key is stored (keys
-- are 256-bit random, so a fast hash is enough); the prefix lets people tell
-- keys apart in listings.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    companion_id uuid NOT NULL REFERENCES companions (id) ON DELETE CASCADE,
    label        text CHECK (label IS NULL OR length(label) BETWEEN 1 AND 200),
    prefix       text NOT NULL CHECK (length(prefix) BETWEEN 4 AND 32),
    key_hash     bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_companion ON api_keys (companion_id);

-- Sessions are bound to the key that created them (NULL: no authentication).
ALTER TABLE companion_sessions
    ADD COLUMN api_key_id uuid REFERENCES api_keys (id) ON DELETE CASCADE;
CREATE INDEX companion_sessions_last_activity ON companion_sessions (last_activity_at);
