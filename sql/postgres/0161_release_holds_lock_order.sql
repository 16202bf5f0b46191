-- Why: oros_release_holds (0008) settled every due pending leg in one UPDATE,
-- which locks the rows in the order it happens to read them (the heap's, or
-- the hold index's), an order no other writer can keep. The writers that take
-- held money back lock the held legs they move first, in id order: a tip's
-- refund or dispute (oros_take_back_tip, 0080), a sale's refund
-- (settler/refunds.py), a boost reward's (0155). So a release that read a
-- tip's two held legs in the other order held one and waited for the other,
-- while the refund held that one and waited for the first: a deadlock
-- (DeadlockDetected: the refund's webhook failed, or the release run). And a
-- sale refunded after its campaign completed locked the sale's legs, then the
-- boost rewards' legs (0155): a release that read the rewards' legs first
-- held them and waited on the sale's (tests/test_supporters/test_receivables.py,
-- test_boost_rewards.py show both, with the rows laid out in the bad order).
--
-- The one lock order of every writer that moves held legs (documented here):
--   1. its own rows (the tip, the campaign then the sale event, ...);
--   2. every held ledger leg it may move, in one statement, in id order;
--   3. the receivable wallets it may touch, in id order (0075);
--   4. the other wallets, in id order: the ledger trigger's (0040); a writer
--      that moves money in several statements locks them all at once first
--      (settler/refunds.py).
-- The release takes no row of 1 or 3: it now locks the due legs in id order
-- (2), then settles them, and its trigger locks their wallets (4). A leg a
-- concurrent writer reversed or settled meanwhile is skipped (FOR UPDATE
-- reads it again), so nothing is released twice.
CREATE OR REPLACE FUNCTION oros_release_holds(p_now timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_count bigint;
BEGIN
  UPDATE ledger_entries e SET status = 'settled'
   WHERE e.id IN (SELECT d.id FROM ledger_entries d
                   WHERE d.status = 'pending' AND d.hold_until IS NOT NULL AND d.hold_until <= p_now
                   ORDER BY d.id FOR UPDATE)
     AND e.status = 'pending';
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$$;
