-- Why: nothing limited what one click could earn. A creator clicked their own
-- link once and fired the pixel sixteen times: sixteen conversions, each paid
-- (72.00 for one click). The settler now pays a click once on a conversion
-- campaign and once per order id on a sale campaign (settler/verify.py); these
-- indexes make that the database's rule too, so a second producer or a race
-- that got past the settler's lock aborts its transaction instead of paying.
-- A sale without an order id counts as the order '' of its click. Reversed
-- (refunded) payments keep their place: a refunded order is not paid again.
--
-- Clicks paid twice before this migration keep their ledger entries (the
-- ledger is immutable): every paid row after a click's first names that first
-- row in duplicate_of, and the indexes leave them out. Finance finds them with
-- SELECT * FROM events WHERE duplicate_of IS NOT NULL.
ALTER TABLE events ADD COLUMN duplicate_of UUID;

WITH ranked AS (
  SELECT id, first_value(id) OVER w AS first_id, row_number() OVER w AS n
    FROM events
   WHERE click_id IS NOT NULL AND event_type IN ('conversion', 'sale') AND status IN ('paid', 'reversed')
  WINDOW w AS (PARTITION BY click_id, event_type, CASE WHEN event_type = 'sale' THEN coalesce(order_id, '') END
               ORDER BY occurred_at, id)
)
UPDATE events e SET duplicate_of = r.first_id FROM ranked r WHERE e.id = r.id AND r.n > 1;

CREATE UNIQUE INDEX idx_events_paid_conversion_click ON events(click_id)
  WHERE event_type = 'conversion' AND status IN ('paid', 'reversed') AND duplicate_of IS NULL;
CREATE UNIQUE INDEX idx_events_paid_sale_click_order ON events(click_id, coalesce(order_id, ''))
  WHERE event_type = 'sale' AND status IN ('paid', 'reversed') AND duplicate_of IS NULL;
