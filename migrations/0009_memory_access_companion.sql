-- Access rows carry their memory's companion, the distribution column every
-- tenant table shares (docs/SCALING.md): on a sharded database they then
-- live on their memory's shard, and the flush and the reads that join them
-- to memories stay single-shard. The key leads with the companion, as a
-- distributed table's must.
ALTER TABLE memory_access ADD COLUMN companion_id uuid;

UPDATE memory_access a SET companion_id = m.companion_id
FROM memories m WHERE m.id = a.memory_id;

ALTER TABLE memory_access ALTER COLUMN companion_id SET NOT NULL;
ALTER TABLE memory_access DROP CONSTRAINT memory_access_pkey;
ALTER TABLE memory_access ADD PRIMARY KEY (companion_id, memory_id);
