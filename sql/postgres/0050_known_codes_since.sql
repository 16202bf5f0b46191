-- Why: the tracker's filter of known link codes (tracker/misses.py) is loaded in full every five
-- minutes. A link whose publish to Redis was lost (Redis down as it was made) and whose Redis
-- entry expired could only be found through the few lookups a second the filter lets through, and
-- a flood of made-up codes spends those: the real link answered 404 until the next load. Now the
-- tracker also reads the codes made since its last read every few seconds, by created_at: an index
-- to find them, and the column for the tracker's role.
CREATE INDEX idx_tracking_created ON tracking_links (created_at);
GRANT SELECT (created_at) ON tracking_links TO oros_tracker;
