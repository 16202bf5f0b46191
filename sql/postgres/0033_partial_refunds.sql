-- Why: any refund, even of one cent, reversed a sale's whole commission (the
-- refund's value was never read). A refund now reverses the commission pro rata
-- to what was refunded, cumulatively over several refunds (settler/refunds.py).
-- A sale's row keeps what it was paid (payout_amount, platform_fee); these
-- columns say how much of the order has been refunded so far and how much of
-- the payout and fee went back, so what the sale still pays is
-- payout_amount - reversed_payout (reconcile and reports read it that way).
-- The checks are the last line behind "never more than was paid".
ALTER TABLE events
  ADD COLUMN refunded_value DECIMAL(12,2) NOT NULL DEFAULT 0,
  ADD COLUMN reversed_payout DECIMAL(12,2) NOT NULL DEFAULT 0,
  ADD COLUMN reversed_fee DECIMAL(12,2) NOT NULL DEFAULT 0,
  ADD CONSTRAINT refunded_value_not_negative CHECK (refunded_value >= 0),
  ADD CONSTRAINT reversal_within_payment CHECK (
    reversed_payout >= 0 AND reversed_fee >= 0
    AND reversed_payout <= coalesce(payout_amount, 0) AND reversed_fee <= coalesce(platform_fee, 0)
    AND reversed_payout - reversed_fee <= coalesce(payout_amount - platform_fee, 0));

-- A sale reversed before this migration was reversed whole.
UPDATE events SET reversed_payout = payout_amount, reversed_fee = platform_fee, refunded_value = coalesce(value, 0)
 WHERE status = 'reversed' AND event_type <> 'refund' AND payout_amount IS NOT NULL;

-- A reversed sale gave everything back (a refund event is 'reversed' too, and pays nothing).
ALTER TABLE events ADD CONSTRAINT reversed_gave_all_back CHECK (
  status <> 'reversed' OR payout_amount IS NULL
  OR (reversed_payout = payout_amount AND reversed_fee = platform_fee));
