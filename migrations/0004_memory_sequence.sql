-- Insertion order of memories. Memories stored in one batch share
-- created_at, so search needs this to know which memories were stored next
-- to each other (neighbouring turns of a conversation, steps of a story).
ALTER TABLE memories ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
CREATE INDEX memories_scope_seq ON memories (companion_id, user_id, seq);
