-- Access statistics move out of memories. A read's count used to rewrite
-- the whole memory row (about 2 KB with its vector); such a row rarely finds
-- room on its page, so most of those updates were not HOT and entered the
-- row again into every index, the HNSW index included (at 100k memories,
-- 43,000 of 115,000 access updates). A narrow row per read memory is cheap
-- to update and touches one small index.
CREATE TABLE memory_access (
    memory_id uuid PRIMARY KEY REFERENCES memories (id) ON DELETE CASCADE,
    access_count bigint NOT NULL DEFAULT 0 CHECK (access_count >= 0),
    last_accessed_at timestamptz
);

INSERT INTO memory_access (memory_id, access_count, last_accessed_at)
SELECT id, access_count, last_accessed_at FROM memories
WHERE access_count > 0 OR last_accessed_at IS NOT NULL;

ALTER TABLE memories DROP COLUMN access_count, DROP COLUMN last_accessed_at;
