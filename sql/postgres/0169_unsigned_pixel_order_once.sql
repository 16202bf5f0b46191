-- Why: 0167 let no unsigned pixel claim its order id, against other unsigned pixels either, so one
-- order could be paid once per click to any number of pixels naming it (issue 11: at most one paid
-- sale per order id, whatever the source). An unsigned pixel's order id now claims the order among
-- unsigned pixels (settler/verify.py PaidOrders), still never against the business's authenticated
-- post of it (idx_events_paid_order leaves unsigned pixels out); this index makes it the database's
-- rule too.
CREATE UNIQUE INDEX idx_events_paid_unsigned_pixel_order ON events (campaign_id, order_id)
WHERE order_id IS NOT NULL AND event_type IN ('conversion', 'sale') AND status IN ('paid', 'reversed')
AND unsigned_pixel;
