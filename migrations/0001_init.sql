-- mnemo's base schema. The embedding column's dimension is fixed per
-- deployment at first start (see mnemo_settings.embedding_dim): the runner
-- types the column and builds the HNSW index once the dimension is known.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE mnemo_settings (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION mnemo_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END;
$$;

CREATE TABLE companions (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    external_id text NOT NULL UNIQUE CHECK (length(external_id) BETWEEN 1 AND 256),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE memory_kind AS ENUM ('fact', 'experience', 'preference', 'instruction', 'reflection');

CREATE TABLE memories (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    companion_id     uuid NOT NULL REFERENCES companions (id) ON DELETE CASCADE,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content          text NOT NULL CHECK (length(content) BETWEEN 1 AND 32768),
    content_hash     bytea NOT NULL CHECK (length(content_hash) = 32),
    kind             memory_kind NOT NULL DEFAULT 'fact',
    importance       smallint NOT NULL DEFAULT 5 CHECK (importance BETWEEN 0 AND 10),
    confidence       real NOT NULL DEFAULT 1 CHECK (confidence BETWEEN 0 AND 1),
    tags             text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 64),
    metadata         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    embedding        vector,
    embedding_model  text,
    search_tsv       tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, content)) STORED,
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz,
    archived_at      timestamptz,
    access_count     bigint NOT NULL DEFAULT 0 CHECK (access_count >= 0),
    last_accessed_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- updated_at tracks changes to what a memory says, not reads or background
-- embedding, so optimistic concurrency (expected_updated_at) is not broken
-- by a get_memory or by the embedding job.
CREATE OR REPLACE FUNCTION mnemo_touch_memory() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.content, NEW.kind, NEW.importance, NEW.confidence, NEW.tags, NEW.metadata,
        NEW.occurred_at, NEW.expires_at, NEW.archived_at)
       IS DISTINCT FROM
       (OLD.content, OLD.kind, OLD.importance, OLD.confidence, OLD.tags, OLD.metadata,
        OLD.occurred_at, OLD.expires_at, OLD.archived_at) THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER memories_touch BEFORE UPDATE ON memories
    FOR EACH ROW EXECUTE FUNCTION mnemo_touch_memory();

-- One live copy of a content per companion and user: concurrent identical
-- stores collapse onto one row instead of racing.
CREATE UNIQUE INDEX memories_live_content
    ON memories (companion_id, user_id, content_hash) WHERE archived_at IS NULL;
CREATE INDEX memories_scope_created ON memories (companion_id, user_id, created_at DESC, id DESC);
CREATE INDEX memories_scope_occurred ON memories (companion_id, user_id, occurred_at DESC);
CREATE INDEX memories_tsv ON memories USING gin (search_tsv);
CREATE INDEX memories_tags ON memories USING gin (tags);
CREATE INDEX memories_expires ON memories (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX memories_unembedded ON memories (created_at) WHERE embedding IS NULL;

CREATE TYPE relation_kind AS ENUM ('follows', 'contradicts', 'elaborates', 'corrects', 'references', 'causes');

CREATE TABLE memory_relations (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    companion_id uuid NOT NULL REFERENCES companions (id) ON DELETE CASCADE,
    from_id      uuid NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
    to_id        uuid NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
    relation     relation_kind NOT NULL,
    strength     real NOT NULL DEFAULT 1 CHECK (strength BETWEEN 0 AND 1),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (from_id <> to_id),
    UNIQUE (from_id, to_id, relation)
);
CREATE TRIGGER memory_relations_touch BEFORE UPDATE ON memory_relations
    FOR EACH ROW EXECUTE FUNCTION mnemo_touch_updated_at();
CREATE INDEX memory_relations_to ON memory_relations (to_id);
CREATE INDEX memory_relations_companion ON memory_relations (companion_id);

CREATE TABLE companion_sessions (
    id               text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 256),
    companion_id     uuid NOT NULL REFERENCES companions (id) ON DELETE CASCADE,
    user_id          uuid REFERENCES users (id) ON DELETE SET NULL,
    principal        text,
    init_state       jsonb,
    protocol_version text,
    client_info      jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    CHECK (expires_at >= created_at)
);
CREATE INDEX companion_sessions_expires ON companion_sessions (expires_at);
