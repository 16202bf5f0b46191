-- Why: an unsigned pixel paid in an earlier settlement run kept the order id it named, so the
-- business's own POST /v1/conversions for that order was rejected duplicate_order in a later run and
-- the creator whose click made the sale got nothing (issue 11: a pixel may never shadow the
-- authenticated post). Anyone holding a click id may fire an unsigned pixel and make up its order id,
-- so such a row no longer claims the order: the settler leaves it out of the orders paid already
-- (settler/verify.py), and idx_events_paid_order leaves it out too, so the authenticated sale of that
-- order can be paid beside it. An unsigned pixel still pays its click at most once, which the settler
-- checks and idx_events_paid_unsigned_pixel_click now makes the database's rule as well.
--
-- Rows decided before this migration are all false: Postgres never recorded an event's source, so a
-- pixel paid earlier keeps its order as before.
ALTER TABLE events ADD COLUMN unsigned_pixel BOOLEAN NOT NULL DEFAULT false;

DROP INDEX idx_events_paid_order;
CREATE UNIQUE INDEX idx_events_paid_order ON events (campaign_id, order_id)
WHERE order_id IS NOT NULL AND event_type IN ('conversion', 'sale') AND status IN ('paid', 'reversed')
AND NOT unsigned_pixel;

CREATE UNIQUE INDEX idx_events_paid_unsigned_pixel_click ON events (click_id)
WHERE unsigned_pixel AND status IN ('paid', 'reversed') AND duplicate_of IS NULL;

-- A Stripe refund finds the business's sale of its order before an unsigned pixel's (admin_api/webhooks.py).
GRANT SELECT (unsigned_pixel) ON events TO oros_api;
