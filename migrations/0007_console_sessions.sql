-- Sign-ins to the web console (`/console`). The browser holds a random
-- 256-bit session id in a cookie; only its SHA-256 is stored, so a copy of
-- this table signs nobody in. A session is bound to the API key that opened
-- it (NULL: a server without keys) and ends with it. The CSRF token is sent
-- back with every form and compared with this row's.
CREATE TABLE console_sessions (
    id_hash      bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    companion_id uuid NOT NULL REFERENCES companions (id) ON DELETE CASCADE,
    api_key_id   uuid REFERENCES api_keys (id) ON DELETE CASCADE,
    csrf_token   text NOT NULL CHECK (length(csrf_token) BETWEEN 32 AND 128),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
