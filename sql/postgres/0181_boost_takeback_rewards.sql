-- Why: a boost's payment taken back (refund, dispute: 0107) made the spent
-- part the supporter's receivable, but left the reward it had earned on that
-- money (0105) alone. Attack: boost, let the campaign complete, withdraw the
-- released reward, then dispute the card payment: the boost's spent money
-- is owed, the reward on it is kept. Now the spent part taken back counts
-- against the reward's base as a payout given back does (0155):
--   regained_i += the spent part taken back (what the takeback could not
--                 recover from the pool, which became the receivable)
--   reward_i    = min(paid so far, trunc(reward_pct_i x max(spent_i - regained_i, 0) / 100, 2))
-- booked by the same rule: a reward still held is reversed and booked again
-- at its new amount; one released (maybe withdrawn) adds what it lost to the
-- supporter's receivable. A reward not yet paid (the campaign still active)
-- needed nothing: boost_accruals counts taken_back already. A dispute won
-- later gives the reward nothing back: the reinstated money repays the debt
-- and goes back into the pool unspent (refund-unspent returns it).
-- The lowering is 0155's loop, now its own function for both callers.

-- Lower the paid boost rewards p_rewards of p_campaign to what the rule gives now (spent - regained). Returns the
-- rewards lowered, what each gave back, and whether it was still held (false: owed). The caller holds the
-- campaign's row and the supporters' receivables locks (0075's order).
CREATE FUNCTION oros_lower_boost_rewards(p_rewards uuid[], p_campaign uuid)
RETURNS TABLE (reward_id uuid, taken numeric, held boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row record;
  v_hold timestamptz;
  v_transfer uuid;
  v_owing uuid[] := '{}';
BEGIN
  FOR v_row IN
    SELECT r.* FROM (SELECT w.id, w.user_id, w.amount, w.transfer_id,
                            least(w.amount, trunc(b.reward_pct * greatest(w.spent - w.regained, 0) / 100, 2)) AS due
                       FROM rewards w JOIN boosts b ON b.id = w.boost_id
                      WHERE w.id = ANY(p_rewards)) r
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

REVOKE ALL ON FUNCTION oros_lower_boost_rewards(uuid[], uuid) FROM PUBLIC;

-- 0155's, lowering through oros_lower_boost_rewards.
CREATE OR REPLACE FUNCTION oros_take_back_boost_rewards(p_campaign uuid, p_price_before numeric, p_epoch integer,
                                                        p_booked_at timestamptz)
RETURNS TABLE (reward_id uuid, taken numeric, held boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
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
  RETURN QUERY SELECT * FROM oros_lower_boost_rewards(v_regained, p_campaign);
END;
$$;

-- 0107's, lowering the boost's paid reward by the spent part taken back.
CREATE OR REPLACE FUNCTION oros_take_back_boost(p_boost uuid, p_target numeric)
RETURNS TABLE (outcome text, taken numeric)
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_boost boosts;
  v_target numeric;
  v_delta numeric;
  v_value numeric;
  v_escrow numeric;
  v_repay numeric;
  v_back numeric;
  v_price numeric;
  v_epoch integer;
  v_rewards uuid[];
  v_transfer uuid := gen_random_uuid();
BEGIN
  -- The campaign row first, as settlement locks it: its budget moves with escrow.
  PERFORM 1 FROM campaigns c WHERE c.id = (SELECT b.campaign_id FROM boosts b WHERE b.id = p_boost) FOR UPDATE;
  SELECT * INTO v_boost FROM boosts b WHERE b.id = p_boost FOR UPDATE;
  v_target := least(v_boost.amount, greatest(p_target, 0));
  v_delta := v_target - v_boost.taken_back;
  taken := v_target;
  IF v_delta = 0 THEN
    outcome := 'unchanged';
    RETURN NEXT;
    RETURN;
  END IF;
  PERFORM oros_lock_receivables(ARRAY[v_boost.supporter_id]);
  IF v_delta > 0 THEN
    SELECT v.value INTO v_value FROM boost_values v WHERE v.boost_id = p_boost;
    v_escrow := least(v_delta, trunc(v_value, 2));
    INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                description, metadata)
    SELECT l.wallet_id, v_transfer, 'refund', v_boost.id, l.amount, l.direction, 'settled', l.description,
           jsonb_build_object('boost_id', v_boost.id, 'campaign_id', v_boost.campaign_id, 'taken_back', v_target)
      FROM (VALUES (oros_platform_wallet('clearing'), v_delta, 'credit', 'boost paid back to the supporter'),
                   (oros_platform_wallet('escrow'), v_escrow, 'debit', 'unspent boost recovered'),
                   (oros_receivable_wallet(v_boost.supporter_id), v_delta - v_escrow, 'debit',
                    'spent boost taken back by the card issuer: owed by the supporter'))
           AS l(wallet_id, amount, direction, description)
     WHERE l.amount > 0;
    IF v_escrow > 0 THEN
      -- Sold at the price before the sale (the same after it, unless the pool is now empty: price 0).
      SELECT c.pool_price INTO v_price FROM campaigns c WHERE c.id = v_boost.campaign_id;
      UPDATE campaigns c SET remaining_budget = c.remaining_budget - v_escrow, funded_budget = c.funded_budget - v_escrow
       WHERE c.id = v_boost.campaign_id;
      UPDATE boosts b SET pool_units = greatest(0, b.pool_units - oros_pool_div(v_escrow, v_price)) WHERE b.id = p_boost;
    END IF;
    IF v_delta > v_escrow THEN
      -- The spent part taken back paid for nothing of the supporter's: its reward's base loses it.
      WITH lost AS (
        UPDATE rewards w SET regained = w.regained + (v_delta - v_escrow)
         WHERE w.boost_id = p_boost AND w.source = 'boost' AND w.status = 'paid'
        RETURNING w.id
      )
      SELECT coalesce(array_agg(id), '{}') INTO v_rewards FROM lost;
      PERFORM oros_lower_boost_rewards(v_rewards, v_boost.campaign_id);
    END IF;
    outcome := CASE WHEN v_escrow = v_delta THEN 'recovered_from_escrow' ELSE 'receivable' END;
  ELSE
    SELECT coalesce(sum(r.repay), 0) INTO v_repay
      FROM oros_receivable_repayments(ARRAY[v_boost.supporter_id], ARRAY[-v_delta]) r;
    v_back := -v_delta - v_repay;
    INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                description, metadata)
    SELECT l.wallet_id, v_transfer, 'refund', v_boost.id, l.amount, l.direction, 'settled', l.description,
           jsonb_build_object('boost_id', v_boost.id, 'campaign_id', v_boost.campaign_id, 'taken_back', v_target)
      FROM (VALUES (oros_platform_wallet('clearing'), -v_delta, 'debit', 'boost funds reinstated'),
                   (oros_receivable_wallet(v_boost.supporter_id), v_repay, 'credit', 'repays what the supporter owes'),
                   (oros_platform_wallet('escrow'), v_back, 'credit', 'reinstated boost back into escrow'))
           AS l(wallet_id, amount, direction, description)
     WHERE l.amount > 0;
    IF v_back > 0 THEN
      UPDATE campaigns c
         SET remaining_budget = c.remaining_budget + v_back, funded_budget = c.funded_budget + v_back,
             total_budget = greatest(c.total_budget, c.funded_budget + v_back)
       WHERE c.id = v_boost.campaign_id
      RETURNING c.pool_price, c.pool_epoch INTO v_price, v_epoch;
      -- Units of an older epoch are worth nothing: the boost holds only what it buys now.
      UPDATE boosts b
         SET pool_units = CASE WHEN b.pool_epoch = v_epoch THEN b.pool_units ELSE 0 END + oros_pool_div(v_back, v_price),
             pool_epoch = v_epoch
       WHERE b.id = p_boost;
    END IF;
    outcome := 'reinstated';
  END IF;
  UPDATE boosts b SET taken_back = v_target WHERE b.id = p_boost;
  PERFORM oros_sweep_receivables(ARRAY[v_boost.supporter_id]);
  RETURN NEXT;
END;
$$;
