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
--    refund locked the sale's wallets, then the boosters'; a settlement that
--    completes its campaign booked the payouts (escrow, fees, creators), then
--    the boosters' rewards (0105). A release (one statement, all its wallets
--    in id order) could hold the creator's or booster's wallet while waiting
--    for the fees wallet.
--
-- The one lock order of every writer that moves held money, or moves money
-- in several statements (documented here):
--   1. its own rows (the tip; the campaign, then the sale's event);
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
-- settler/refunds.py; a completing settlement (oros_post_settlement, below)
-- moves no held leg and takes 1, 3, 4.
CREATE OR REPLACE FUNCTION oros_release_holds(p_now timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_count bigint;
BEGIN
  -- A locking CTE runs once, whatever join the planner picks for the UPDATE (as a subquery it could be
  -- re-run per row: the same locks, in the same order, n times over).
  WITH due AS (
    SELECT d.id FROM ledger_entries d
     WHERE d.status = 'pending' AND d.hold_until IS NOT NULL AND d.hold_until <= p_now
     ORDER BY d.id FOR UPDATE)
  UPDATE ledger_entries e SET status = 'settled'
    FROM due WHERE e.id = due.id AND e.status = 'pending';
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

-- 0111's, completing a campaign: the campaign, the receivables, then every other wallet the payouts and the
-- boosters' rewards (paid by the completion, 0105, in a statement of its own) move, at once. Unchanged otherwise.
CREATE OR REPLACE FUNCTION oros_post_settlement(p_campaign uuid, p_run uuid, p_hold_until timestamptz,
                                                p_complete boolean, p_transfers uuid[], p_creators uuid[],
                                                p_counts integer[], p_fees numeric[], p_links uuid[],
                                                p_clicks integer[], p_conversions integer[], p_shares uuid[],
                                                p_rewards numeric[])
RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_payout numeric;
  v_events bigint;
  v_supporters uuid[];
  v_bad uuid;
BEGIN
  SELECT payout_per_action INTO v_payout FROM campaigns WHERE id = p_campaign FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'oros_post_settlement: campaign % does not exist', p_campaign USING ERRCODE = 'no_data_found';
  END IF;
  IF EXISTS (SELECT 1 FROM unnest(p_counts) AS n WHERE n IS NULL OR n <= 0)
     OR cardinality(p_counts) IS DISTINCT FROM cardinality(p_transfers)
     OR cardinality(p_fees) IS DISTINCT FROM cardinality(p_transfers)
     OR cardinality(p_shares) IS DISTINCT FROM cardinality(p_transfers)
     OR cardinality(p_rewards) IS DISTINCT FROM cardinality(p_transfers) THEN
    RAISE EXCEPTION 'oros_post_settlement: campaign % needs a positive count of events, a fee, a share and a reward '
      'per transfer', p_campaign USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- The supporter is the share link's, a link of this campaign and of the transfer's creator.
  SELECT u.t INTO v_bad FROM unnest(p_transfers, p_creators, p_shares, p_rewards) AS u(t, c, s, r)
    LEFT JOIN tracking_links l ON l.id = u.s
   WHERE u.r IS NULL OR u.r < 0 OR (u.s IS NULL AND u.r > 0)
      OR (u.s IS NOT NULL AND (l.id IS NULL OR l.supporter_id IS NULL OR l.campaign_id <> p_campaign
                               OR l.creator_id <> u.c))
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'oros_post_settlement: transfer % of campaign % names no share link of its creator, or a reward '
      'without one', v_bad, p_campaign USING ERRCODE = 'check_violation';
  END IF;
  v_supporters := ARRAY(SELECT l.supporter_id FROM unnest(p_shares) WITH ORDINALITY AS u(s, i)
                          LEFT JOIN tracking_links l ON l.id = u.s ORDER BY u.i);
  SELECT coalesce(sum(n), 0) INTO v_events FROM unnest(p_counts) AS n;
  IF p_complete THEN
    -- Completing pays the boosters' rewards (0105), which may repay what they owe: every receivable this
    -- transaction may touch is locked now, in id order, before the ledger trigger locks any other wallet.
    PERFORM oros_lock_receivables(p_creators || v_supporters || ARRAY(SELECT b.supporter_id FROM boosts b
                                                                       WHERE b.campaign_id = p_campaign));
    -- Then every other wallet it moves, at once, in id order: the payouts' (escrow, fees, the creators' and
    -- supporters') and, in a statement of their own, the rewards' (the rewards wallet, the boosters').
    PERFORM 1 FROM wallets w
     WHERE w.id IN (oros_platform_wallet('escrow'), oros_platform_wallet('fees'), oros_platform_wallet('rewards'))
        OR (w.purpose = 'main' AND w.user_id = ANY(p_creators || v_supporters || ARRAY(
              SELECT b.supporter_id FROM boosts b WHERE b.campaign_id = p_campaign)))
     ORDER BY w.id FOR NO KEY UPDATE;
  END IF;
  IF v_events > 0 THEN
    -- oros_book_payouts refuses a missing, negative or excessive fee or reward.
    PERFORM oros_book_payouts(
      p_campaign, p_hold_until, p_transfers, p_creators,
      ARRAY(SELECT v_payout * n FROM unnest(p_counts) WITH ORDINALITY AS u(n, i) ORDER BY i),
      ARRAY(SELECT f * n FROM unnest(p_fees, p_counts) WITH ORDINALITY AS u(f, n, i) ORDER BY i),
      ARRAY(SELECT jsonb_build_object('run_id', p_run::text, 'events', n)
              FROM unnest(p_counts) WITH ORDINALITY AS u(n, i) ORDER BY i),
      v_supporters,
      ARRAY(SELECT r * n FROM unnest(p_rewards, p_counts) WITH ORDINALITY AS u(r, n, i) ORDER BY i));
    INSERT INTO rewards (user_id, source, amount, status, campaign_id, tracking_link_id, transfer_id, paid_at)
    SELECT s, 'share', r * n, 'paid', p_campaign, l, t, now()
      FROM unnest(v_supporters, p_shares, p_rewards, p_counts, p_transfers) AS u(s, l, r, n, t)
     WHERE r > 0;
    -- Rows locked in id order first: UPDATE ... FROM takes its row locks in no promised order.
    PERFORM 1 FROM campaign_creators WHERE campaign_id = p_campaign AND creator_id = ANY(p_creators)
     ORDER BY id FOR UPDATE;
    UPDATE campaign_creators cc SET total_earned = cc.total_earned + x.net
      FROM (SELECT c, sum((v_payout - f - r) * n) AS net
              FROM unnest(p_creators, p_counts, p_fees, p_rewards) AS u(c, n, f, r) GROUP BY c) x
     WHERE cc.campaign_id = p_campaign AND cc.creator_id = x.c;
    PERFORM 1 FROM tracking_links WHERE id = ANY(p_links) ORDER BY id FOR UPDATE;
    UPDATE tracking_links t SET click_count = t.click_count + x.c, conversion_count = t.conversion_count + x.v
      FROM unnest(p_links, p_clicks, p_conversions) AS x(id, c, v)
     WHERE t.id = x.id;
  END IF;
  UPDATE campaigns
     SET remaining_budget = remaining_budget - v_payout * v_events,
         status = CASE WHEN p_complete AND status = 'active' THEN 'completed' ELSE status END
   WHERE id = p_campaign;
  RETURN v_payout * v_events;
END;
$$;
