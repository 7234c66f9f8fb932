-- Conversation contexts: append-only message logs with cheap forks.
--
-- Versions number a context's messages 1, 2, 3, ... A fork at version v
-- shares its parent's messages up to v (they are never copied) and numbers
-- its own messages from v + 1, so the log a fork reads (ancestors' messages
-- up to each fork point, then its own) is one strictly increasing sequence.
-- Like memories.embedding, messages.embedding is typed with the deployment's
-- dimension (and indexed) by the migration runner once the dimension is known.

CREATE TYPE message_role AS ENUM ('user', 'assistant', 'system', 'tool');

CREATE TABLE contexts (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    companion_id   uuid NOT NULL REFERENCES companions (id) ON DELETE CASCADE,
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
    parent_id      uuid,
    fork_version   bigint,
    -- Messages and tokens of the log as read (inherited ones included).
    message_count  bigint NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    total_tokens   bigint NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    latest_version bigint NOT NULL DEFAULT 0 CHECK (latest_version >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz,
    UNIQUE (id, companion_id),
    CHECK ((parent_id IS NULL) = (fork_version IS NULL)),
    CHECK (fork_version IS NULL OR (fork_version >= 0 AND latest_version >= fork_version)),
    CHECK (parent_id IS DISTINCT FROM id),
    -- A fork belongs to its parent's companion. Soft deletion keeps the
    -- parent row, so forks go on reading the history they share.
    FOREIGN KEY (parent_id, companion_id) REFERENCES contexts (id, companion_id) ON DELETE CASCADE
);
CREATE INDEX contexts_scope_created ON contexts (companion_id, user_id, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX contexts_parent ON contexts (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE messages (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    context_id     uuid NOT NULL,
    -- Copied from the context so every statement can filter on it directly.
    companion_id   uuid NOT NULL,
    version        bigint NOT NULL CHECK (version >= 1),
    role           message_role NOT NULL,
    content        text NOT NULL CHECK (length(content) BETWEEN 1 AND 65536),
    tool_call_id   text CHECK (length(tool_call_id) BETWEEN 1 AND 256),
    tool_name      text CHECK (length(tool_name) BETWEEN 1 AND 256),
    token_count    integer NOT NULL CHECK (token_count >= 0),
    model          text CHECK (length(model) BETWEEN 1 AND 256),
    embedding      vector,
    embedding_model text,
    search_tsv     tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, content)) STORED,
    created_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz,
    UNIQUE (context_id, version),
    FOREIGN KEY (context_id, companion_id) REFERENCES contexts (id, companion_id) ON DELETE CASCADE,
    -- Tool calls belong to assistant and tool messages; a tool result says which call it answers.
    CHECK (role IN ('assistant', 'tool') OR (tool_call_id IS NULL AND tool_name IS NULL)),
    CHECK (role <> 'tool' OR tool_call_id IS NOT NULL)
);
CREATE INDEX messages_companion ON messages (companion_id);
CREATE INDEX messages_tsv ON messages USING gin (search_tsv);
CREATE INDEX messages_unembedded ON messages (created_at) WHERE embedding IS NULL;
