-- Why: a boost's reward is fixed when its campaign completes (0105) and held
-- until the campaign's last held payout is released (0150), but a payout
-- reversed after completion (a sale or live sale refunded inside its hold)
-- gave its money back to the pool without lowering the rewards fixed on it:
-- the platform over-paid up to reward_pct of that payout. Now the reversal
-- lowers them, in its own transaction, by the same rule:
--   spent_i  = what boost i's money had paid out when its reward was fixed
--              (rewards.spent, stored at completion from now on)
--   regained_i = what the reversals since gave back to boost i's value in
--              the pool (its units x the rise of the pool's price each
--              reversal caused; rewards.regained, unrounded)
--   reward_i = min(paid so far, trunc(reward_pct_i x max(spent_i - regained_i, 0) / 100, 2))
-- so a reward only ever falls, never below what the formula gives, and its
-- cents are truncated as at completion (never more than the formula).
-- Booked as the ledger allows (only statuses move, forward):
--  * reward still held (its transfer's legs pending): the transfer is
--    reversed whole and the reward booked again at its new amount, same
--    hold, through the one credit rule (oros_credit_legs);
--  * reward already released: what it lost is taken back as every post-hold
--    clawback is, a receivable of the supporter (its receivable wallet
--    debited, the rewards wallet credited, then swept from what it has
--    available and repaid by its next credits).
-- The rewards row follows (amount = what it pays now, transfer_id = its live
-- paying transfer), as a share reward's does (0111).
-- Only rewards fixed after the reversed payout was booked counted it: a
-- payout settled after completion (an event from before it) counts for the
-- refund of unspent money, not the reward, and neither does its reversal.
-- The settler calls it right after the reversal, in its transaction, with
-- the pool's price before it (settler/refunds.py: Python decides, this
-- writes and checks); its boosters' receivables are locked first, the
-- order every receivable writer keeps (0075).

ALTER TABLE rewards
  ADD COLUMN spent NUMERIC CHECK (spent >= 0),
  ADD COLUMN regained NUMERIC NOT NULL DEFAULT 0 CHECK (regained >= 0);

-- Rewards fixed before this migration did not keep their base: the least
-- base that gives the amount paid (amount x 100 / pct, truncated) never
-- pays more.
UPDATE rewards w
   SET spent = trunc((w.amount * 100)::numeric(80, 40) / b.reward_pct, 30)
  FROM boosts b
 WHERE b.id = w.boost_id AND w.source = 'boost' AND w.status = 'paid' AND b.reward_pct > 0;
UPDATE rewards SET spent = 0 WHERE source = 'boost' AND status = 'paid' AND spent IS NULL;

-- 0150's, keeping each reward's base (spent) beside its amount.
CREATE OR REPLACE FUNCTION oros_pay_boost_rewards(p_campaign uuid) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_hold timestamptz;
  v_status text;
  v_due record;
BEGIN
  v_hold := oros_campaign_payouts_held_until(p_campaign);
  v_status := CASE WHEN v_hold IS NULL THEN 'settled' ELSE 'pending' END;
  SELECT array_agg(r.id ORDER BY r.id) AS rewards, array_agg(r.user_id ORDER BY r.id) AS users,
         array_agg(r.amount ORDER BY r.id) AS amounts, array_agg(r.spent ORDER BY r.id) AS spent,
         array_agg(gen_random_uuid() ORDER BY r.id) AS transfers, coalesce(sum(r.amount), 0) AS total
    INTO v_due
    FROM (SELECT w.id, w.user_id, a.reward AS amount, greatest(b.amount - b.taken_back - a.value, 0) AS spent
            FROM rewards w JOIN boost_accruals a ON a.boost_id = w.boost_id JOIN boosts b ON b.id = w.boost_id
           WHERE w.campaign_id = p_campaign AND w.source = 'boost' AND w.status = 'pending'
           FOR UPDATE OF w) r;
  IF v_due.rewards IS NULL THEN
    RETURN 0;
  END IF;
  INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status, hold_until,
                              description, metadata)
  SELECT leg.wallet, t.transfer, 'boost', t.reward, leg.amount, leg.direction, leg.status, leg.hold, leg.description,
         jsonb_build_object('reward_id', t.reward, 'campaign_id', p_campaign)
    FROM unnest(v_due.rewards, v_due.transfers) WITH ORDINALITY AS t(reward, transfer, n)
    JOIN (SELECT u.n, oros_platform_wallet('rewards') AS wallet, u.amount, 'debit' AS direction, v_status AS status,
                 v_hold AS hold, 'boost reward paid by the platform' AS description
            FROM unnest(v_due.amounts) WITH ORDINALITY AS u(amount, n)
          UNION ALL
          SELECT c.n, c.wallet_id, c.amount, 'credit', c.status, c.hold_until,
                 CASE WHEN c.repays THEN 'boost reward repaying what the supporter owes' ELSE 'boost reward' END
            FROM oros_credit_legs(v_due.users, v_due.amounts, v_status, v_hold) c) leg ON leg.n = t.n
   WHERE leg.amount > 0
   ORDER BY t.n, leg.direction DESC;
  UPDATE rewards w
     SET amount = d.amount, spent = d.spent, status = 'paid', paid_at = now(),
         transfer_id = CASE WHEN d.amount > 0 THEN d.transfer END
    FROM unnest(v_due.rewards, v_due.amounts, v_due.spent, v_due.transfers) AS d(id, amount, spent, transfer)
   WHERE w.id = d.id;
  RETURN v_due.total;
END;
$$;

-- A payout of p_campaign booked at p_booked_at was just given back, and the
-- pool's price rose to what it is now from p_price_before (epoch p_epoch):
-- each paid boost reward that counted the payout regains its boost's units x
-- the rise, and falls to what the rule above gives. Returns the rewards
-- lowered, what each gave back, and whether it was still held (false: owed).
CREATE FUNCTION oros_take_back_boost_rewards(p_campaign uuid, p_price_before numeric, p_epoch integer,
                                             p_booked_at timestamptz)
RETURNS TABLE (reward_id uuid, taken numeric, held boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row record;
  v_hold timestamptz;
  v_transfer uuid;
  v_owing uuid[] := '{}';
  v_pool record;
  v_regained uuid[];
BEGIN
  IF p_price_before IS NULL OR p_epoch IS NULL OR p_booked_at IS NULL THEN
    RAISE EXCEPTION 'oros_take_back_boost_rewards: campaign % needs the price and epoch before, and the payout''s '
      'booking time', p_campaign USING ERRCODE = 'check_violation';
  END IF;
  SELECT c.pool_price, c.pool_epoch INTO v_pool FROM campaigns c WHERE c.id = p_campaign;
  -- Money given back to an empty pool (refund-unspent gave everything back) moves no price: nobody's units
  -- regain anything, it is the business's (0101), and the rewards stand.
  WITH regained AS (
    UPDATE rewards w SET regained = w.regained + round(b.pool_units * (v_pool.pool_price - p_price_before), 30)
      FROM boosts b
     WHERE b.id = w.boost_id AND w.campaign_id = p_campaign AND w.source = 'boost' AND w.status = 'paid'
       AND w.paid_at >= p_booked_at AND b.pool_epoch = p_epoch AND b.pool_units > 0
       AND v_pool.pool_epoch = p_epoch AND v_pool.pool_price > p_price_before
    RETURNING w.id
  )
  SELECT coalesce(array_agg(id), '{}') INTO v_regained FROM regained;
  -- Only those: a reward that regained nothing now is left as it is, whatever rounding its base had.
  FOR v_row IN
    SELECT r.* FROM (SELECT w.id, w.user_id, w.amount, w.transfer_id,
                            least(w.amount, trunc(b.reward_pct * greatest(w.spent - w.regained, 0) / 100, 2)) AS due
                       FROM rewards w JOIN boosts b ON b.id = w.boost_id
                      WHERE w.id = ANY(v_regained)) r
     WHERE r.due < r.amount ORDER BY r.id
  LOOP
    -- Locking the legs makes a concurrent hold release wait: "still held" stays true until we are done.
    SELECT max(l.hold_until) FILTER (WHERE l.status = 'pending') INTO v_hold
      FROM (SELECT e.status, e.hold_until FROM ledger_entries e
             WHERE e.transfer_id = v_row.transfer_id AND e.hold_until IS NOT NULL ORDER BY e.id FOR UPDATE) l;
    v_transfer := gen_random_uuid();
    IF v_hold IS NOT NULL THEN
      -- Held: the paying transfer goes, what the reward still pays is booked again with the same hold.
      UPDATE ledger_entries e SET status = 'reversed'
       WHERE e.transfer_id = v_row.transfer_id AND e.status IN ('pending', 'settled');
      INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                  hold_until, description, metadata)
      SELECT leg.wallet, v_transfer, 'boost', v_row.id, leg.amount, leg.direction, leg.status, leg.hold,
             leg.description, jsonb_build_object('reward_id', v_row.id, 'campaign_id', p_campaign,
                                                 'rebooked_from', v_row.transfer_id, 'taken_back',
                                                 v_row.amount - v_row.due)
        FROM (SELECT oros_platform_wallet('rewards') AS wallet, v_row.due AS amount, 'debit' AS direction,
                     'pending' AS status, v_hold AS hold, 'boost reward paid by the platform' AS description
              UNION ALL
              SELECT c.wallet_id, c.amount, 'credit', c.status, c.hold_until,
                     CASE WHEN c.repays THEN 'boost reward repaying what the supporter owes' ELSE 'boost reward' END
                FROM oros_credit_legs(ARRAY[v_row.user_id], ARRAY[v_row.due], 'pending', v_hold) c) leg
       WHERE leg.amount > 0
       ORDER BY leg.direction DESC;
      UPDATE rewards w SET amount = v_row.due, transfer_id = CASE WHEN v_row.due > 0 THEN v_transfer END
       WHERE w.id = v_row.id;
    ELSE
      -- Released: the supporter may have withdrawn it; what it lost is owed, netted against what it earns next.
      INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                  description, metadata)
      SELECT l.wallet, v_transfer, 'boost', v_row.id, v_row.amount - v_row.due, l.direction, 'settled',
             l.description, jsonb_build_object('reward_id', v_row.id, 'campaign_id', p_campaign,
                                               'taken_back', v_row.amount - v_row.due)
        FROM (VALUES (oros_receivable_wallet(v_row.user_id), 'debit',
                      'boost reward taken back after its hold: owed by the supporter'),
                     (oros_platform_wallet('rewards'), 'credit', 'boost reward taken back'))
             AS l(wallet, direction, description);
      UPDATE rewards w SET amount = v_row.due WHERE w.id = v_row.id;
      v_owing := v_owing || v_row.user_id;
    END IF;
    reward_id := v_row.id;
    taken := v_row.amount - v_row.due;
    held := v_hold IS NOT NULL;
    RETURN NEXT;
  END LOOP;
  IF cardinality(v_owing) > 0 THEN
    PERFORM oros_sweep_receivables(v_owing);
  END IF;
END;
$$;

REVOKE ALL ON FUNCTION oros_take_back_boost_rewards(uuid, numeric, integer, timestamptz) FROM PUBLIC;
