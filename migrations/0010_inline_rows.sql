-- Rows of memories and messages stay whole in the table up to 4 KB, not
-- 2 KB. A 384-dim embedding (1.5 KB) plus a sentence and its tsvector is
-- just over 2 KB, so PostgreSQL moved most embeddings to the TOAST table,
-- and every distance computed outside the HNSW index fetched one through
-- the TOAST index: an exact scan of a 1,000-memory scope took 5.7 ms, and
-- 2.2 ms with rows inline (docs/BENCHMARKS.md). The embedding columns'
-- storage (MAIN: kept inline unless a row passes a page) is set where their
-- type is fixed (db::migrate::fix_dimension), as ALTER COLUMN TYPE resets it.
-- Rows written before this migration keep their out-of-line vectors until
-- they are next rewritten.
ALTER TABLE memories SET (toast_tuple_target = 4080);
ALTER TABLE messages SET (toast_tuple_target = 4080);
