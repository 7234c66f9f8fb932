-- Statistics of memories that keep up with its writes (issue 15). Search
-- plans read how many memories a scope (companion, user) holds from the
-- planner's statistics; where those say one row, the plans scan the whole
-- scope once per candidate. Autovacuum refreshes them after 10% of a table
-- changed: in a table of 100k memories, a new scope could grow to 10k
-- memories, stored one at a time, before its statistics saw it. 2% (and at
-- least 500 rows) keeps a growing scope's estimate near its size.
ALTER TABLE memories SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 500);

-- A user id names one person across companions, so the two scope columns
-- are correlated: estimated as independent, a scope of one companion among
-- ten is taken for a tenth of its size. With their dependency and most
-- common pairs the planner estimates the pair itself.
CREATE STATISTICS memories_scope (dependencies, mcv) ON companion_id, user_id FROM memories;
