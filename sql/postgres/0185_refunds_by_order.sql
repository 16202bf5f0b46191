-- Why: a refund applied to an unsigned pixel's sale of an order is decided again against the business's
-- own sale of that order once that sale supersedes the pixel (settler/supersede.py, issue 11), so the
-- refund is not lost with the pixel's reversed sale. The settler finds those refunds by order id; only
-- the orphans (no_such_order) had an index by order.
CREATE INDEX idx_events_refund_order ON events (order_id) WHERE event_type = 'refund';
