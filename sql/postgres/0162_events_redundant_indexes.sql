-- Why: a settlement writes every event it decides once, a million rows in a catch-up run, and each
-- index on events is written for every row. Five of the seed's (0004) serve no query that another
-- index does not serve as well; together they were 35% of inserting decided events (200k rows,
-- three interleaved runs each: 3.8-5.6 s with them, 2.5-3.3 s without). A settle run, whose time
-- goes mostly to the report sums and the foreign keys, did not move measurably (docs/settlement.md).
-- * idx_events_campaign (campaign_id) is the prefix of idx_events_campaign_occurred (0036), which
--   also serves the cascade from campaigns;
-- * idx_events_creator (creator_id) is the prefix of idx_events_creator_occurred (0036), which
--   also serves the cascade from users;
-- * idx_events_verified indexes a boolean: never selective;
-- * idx_events_type indexes four values; the lookups by type are by order id: refunds of no known
--   order have their partial index (0022), and a sale by its order id (a Stripe webhook's, a refund
--   naming no campaign: admin_api/webhooks.py, settler/refunds.py) gets one here;
-- * idx_events_created: no query filters or sorts events by created_at.
DROP INDEX IF EXISTS idx_events_campaign;
DROP INDEX IF EXISTS idx_events_creator;
DROP INDEX IF EXISTS idx_events_verified;
DROP INDEX IF EXISTS idx_events_type;
DROP INDEX IF EXISTS idx_events_created;
CREATE INDEX IF NOT EXISTS idx_events_sale_order ON events (order_id) WHERE event_type = 'sale';
