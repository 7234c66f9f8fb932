-- The GIN indexes write new entries straight into the index, not into a
-- pending list. An agent searches right after it stores, and every search
-- scans a pending list whole until autovacuum merges it: after a 10,000-turn
-- ingest in batches of 250, the full-text side of a search took 8.2 ms
-- against 2.7 ms once merged (docs/BENCHMARKS.md). Entries already pending
-- are merged here.
ALTER INDEX memories_tsv SET (fastupdate = off);
ALTER INDEX memories_tags SET (fastupdate = off);
ALTER INDEX messages_tsv SET (fastupdate = off);
SELECT gin_clean_pending_list('memories_tsv'::regclass),
       gin_clean_pending_list('memories_tags'::regclass),
       gin_clean_pending_list('messages_tsv'::regclass);
