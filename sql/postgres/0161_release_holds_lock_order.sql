-- Why: the hold release and the writers that take held money back could
-- deadlock (DeadlockDetected: the refund's webhook or settler transaction
-- failed, or the release run), because they took the same rows in opposite
-- orders (tests/test_supporters/test_receivables.py and test_boost_rewards.py
-- lay the rows out in the bad order and show each):
--  * Legs. oros_release_holds (0008) settled the due legs in one UPDATE, which
--    locks rows in the order it reads them (the heap's, or the hold index's).
--    The takebacks lock the held legs they move in id order: a tip's refund or
--    dispute (oros_take_back_tip, 0080) and a sale's refund
--    (settler/refunds.py). A release that read a tip's two held legs in the
--    other order held one and waited for the other, which the refund held
--    while waiting for the first. And a sale refunded after its campaign
--    completed locked the sale's legs, moved money, then locked the boost
--    rewards' legs (0155): a release that read those first waited on the
--    sale's while holding them.
--  * Wallets. Each movement locks its wallets in id order (0040), but a writer
--    that moves money in several statements locks them statement by
--    statement: a tip taken back after its hold locked clearing, fees and the
--    receivable, then swept the debt from the creator's main wallet; a sale's
--    refund locked the sale's wallets, then the boosters'. A release (one
--    statement, all its wallets in id order) could hold the creator's or
--    booster's wallet while waiting for the fees wallet.
--
-- The one lock order of every writer that moves held money (documented here):
--   1. its own rows (the tip; the campaign then the sale's event);
--   2. every held leg it may move, in one statement, in id order;
--   3. the receivable wallets it may touch, in id order (0075);
--   4. every other wallet it may move, in one statement, in id order, before
--      its first movement (the ledger trigger's own locks then find them held).
-- The release takes no row of 1 or 3: it locks the due legs in id order (2),
-- then settles them, and its trigger locks their wallets at once (4). A leg a
-- concurrent writer reversed meanwhile is skipped (FOR UPDATE reads it again),
-- so nothing is released twice. oros_take_back_tip took its creator's
-- receivable before its legs; it now keeps the order above (no writer that
-- shares its legs, only the release, locks a receivable, so this was no
-- deadlock, only a second order to remember). A sale's refund keeps it in
-- settler/refunds.py.
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

-- 0080's, in that order: the tip, its held legs, the creator's receivable, then the clearing, fees and creator's
-- wallets at once. Unchanged otherwise.
CREATE OR REPLACE FUNCTION oros_take_back_tip(p_tip uuid, p_target numeric) RETURNS TABLE (outcome text, taken numeric)
LANGUAGE plpgsql AS $$
DECLARE
  v_tip tips;
  v_target numeric;
  v_net_back numeric;
  v_fee_back numeric;
  v_held boolean;
  v_live boolean;
  v_transfer uuid := gen_random_uuid();
  v_delta numeric;
  v_fee_delta numeric;
BEGIN
  SELECT * INTO v_tip FROM tips t WHERE t.id = p_tip FOR UPDATE;
  v_target := least(v_tip.amount, greatest(p_target, 0));
  taken := v_target;
  IF v_target = v_tip.reversed_amount THEN
    outcome := 'unchanged';
    RETURN NEXT;
    RETURN;
  END IF;
  v_net_back := least(v_tip.net_amount, round(v_tip.net_amount * v_target / v_tip.amount, 2));
  v_fee_back := v_target - v_net_back;
  -- Locking the held legs makes a concurrent hold release wait: "still held" stays true until we are done.
  SELECT bool_or(l.status = 'pending') INTO v_held
    FROM (SELECT e.status FROM ledger_entries e WHERE e.transfer_id = v_tip.transfer_id AND e.hold_until IS NOT NULL
           ORDER BY e.id FOR UPDATE) l;
  PERFORM oros_lock_receivables(ARRAY[v_tip.to_creator_id]);
  -- Every other wallet this may move, at once (the receivable branch sweeps the creator's main wallet in a
  -- statement of its own).
  PERFORM 1 FROM wallets w
   WHERE w.id IN (oros_platform_wallet('clearing'), oros_platform_wallet('fees'))
      OR (w.user_id = v_tip.to_creator_id AND w.purpose = 'main')
   ORDER BY w.id FOR NO KEY UPDATE;
  v_live := EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transfer_id = v_tip.transfer_id
                                                     AND e.status IN ('pending', 'settled'));
  IF coalesce(v_held, false) OR (NOT v_live AND now() < v_tip.hold_until) THEN
    -- Inside the hold: the paying transfer goes; what the tip still pays is booked anew, same hold.
    UPDATE ledger_entries e SET status = 'reversed'
     WHERE e.transfer_id = v_tip.transfer_id AND e.status IN ('pending', 'settled');
    INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                hold_until, description, metadata)
    SELECT l.wallet_id, v_transfer, 'tip', v_tip.id, l.amount, l.direction, l.status, l.hold_until, l.description,
           jsonb_build_object('rebooked_from', v_tip.transfer_id, 'taken_back', v_target)
      FROM (SELECT oros_platform_wallet('clearing') AS wallet_id, v_tip.amount - v_target AS amount,
                   'debit' AS direction, 'settled' AS status, NULL::timestamptz AS hold_until,
                   'tip received, less what was taken back' AS description
            UNION ALL
            SELECT oros_platform_wallet('fees'), v_tip.platform_fee - v_fee_back, 'credit', 'pending',
                   v_tip.hold_until, 'platform fee on a tip'
            UNION ALL
            SELECT c.wallet_id, c.amount, 'credit', c.status, c.hold_until,
                   CASE WHEN c.repays THEN 'tip repaying what the creator owes' ELSE 'tip' END
              FROM oros_credit_legs(ARRAY[v_tip.to_creator_id], ARRAY[v_tip.net_amount - v_net_back], 'pending',
                                    v_tip.hold_until) c) l
     WHERE l.amount > 0;
    IF v_target < v_tip.amount THEN
      UPDATE tips t SET transfer_id = v_transfer WHERE t.id = p_tip;
    END IF;
    outcome := 'reversed_in_hold';
  ELSE
    v_delta := v_target - v_tip.reversed_amount;
    v_fee_delta := v_fee_back - v_tip.reversed_fee;
    IF v_delta > 0 THEN
      -- Released already: the creator's part is owed (then swept from its available balance).
      INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                  description, metadata)
      SELECT l.wallet_id, v_transfer, 'refund', v_tip.id, l.amount, l.direction, 'settled', l.description,
             jsonb_build_object('tip', v_tip.id, 'taken_back', v_target)
        FROM (VALUES (oros_platform_wallet('clearing'), v_delta, 'credit', 'tip paid back to the payer'),
                     (oros_platform_wallet('fees'), v_fee_delta, 'debit', 'platform fee of a tip given back'),
                     (oros_receivable_wallet(v_tip.to_creator_id), v_delta - v_fee_delta, 'debit',
                      'tip taken back after its hold: owed by the creator'))
             AS l(wallet_id, amount, direction, description)
       WHERE l.amount > 0;
      outcome := 'receivable';
    ELSE
      -- Funds reinstated after the hold: paid out at once, repaying what the creator owes first.
      INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                  hold_until, description, metadata)
      SELECT l.wallet_id, v_transfer, 'tip', v_tip.id, l.amount, l.direction, l.status, l.hold_until, l.description,
             jsonb_build_object('tip', v_tip.id, 'taken_back', v_target)
        FROM (SELECT oros_platform_wallet('clearing') AS wallet_id, -v_delta AS amount, 'debit' AS direction,
                     'settled' AS status, NULL::timestamptz AS hold_until, 'tip funds reinstated' AS description
              UNION ALL
              SELECT oros_platform_wallet('fees'), -v_fee_delta, 'credit', 'settled', NULL, 'platform fee on a tip'
              UNION ALL
              SELECT c.wallet_id, c.amount, 'credit', c.status, c.hold_until,
                     CASE WHEN c.repays THEN 'tip repaying what the creator owes' ELSE 'tip' END
                FROM oros_credit_legs(ARRAY[v_tip.to_creator_id], ARRAY[v_fee_delta - v_delta], 'settled', NULL) c) l
       WHERE l.amount > 0;
      outcome := 'reinstated';
    END IF;
  END IF;
  UPDATE tips t SET reversed_amount = v_target, reversed_fee = v_fee_back WHERE t.id = p_tip;
  PERFORM oros_refresh_tip_unlock(p_tip);
  IF outcome = 'receivable' THEN
    PERFORM oros_sweep_receivables(ARRAY[v_tip.to_creator_id]);
  END IF;
  RETURN NEXT;
END;
$$;
