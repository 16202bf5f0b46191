-- Why: OROS_BOOST_REWARD_PCT is bounded by the lowest creator fee so that a
-- boost's reward is paid out of the fee on what its money paid for. But the
-- fee is rounded per payout (split_fee: half up to the cent; a 0.04 payout at
-- 10 % pays a fee of 0.00) while a reward is trunc(pct x spent) over the
-- whole campaign, so on small payouts the rewards exceeded the fees the
-- campaign paid the platform. Now the rewards a campaign's completion pays
-- are capped at the platform fees actually booked on its payouts (the fee
-- wallet's legs of its ordinary payouts and of its live sales, as a
-- reversal left them, less any boost reward already paid on it), pro rata
-- across its boosts, each truncated to the cent. A reward's base (spent) is
-- kept: a later refund lowers it by the same rule (0155, 0181), never above
-- what was paid.

-- 0155's, with the cap.
CREATE OR REPLACE FUNCTION oros_pay_boost_rewards(p_campaign uuid) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_hold timestamptz;
  v_status text;
  v_due record;
  v_fees numeric;
  v_owed numeric;
BEGIN
  v_hold := oros_campaign_payouts_held_until(p_campaign);
  v_status := CASE WHEN v_hold IS NULL THEN 'settled' ELSE 'pending' END;
  -- The cap: the platform fees booked on the campaign's payouts (ordinary and live sales, what a reversal
  -- left), less the boost rewards already paid on it. The rows are locked first, as below.
  PERFORM 1 FROM rewards w WHERE w.campaign_id = p_campaign AND w.source = 'boost' AND w.status = 'pending'
     FOR UPDATE;
  SELECT coalesce(sum(CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END), 0) INTO v_fees
    FROM ledger_entries e
   WHERE e.wallet_id = oros_platform_wallet('fees') AND e.status <> 'reversed'
     AND ((e.source_type = 'campaign' AND e.source_id = p_campaign)
          OR (e.source_type = 'live_sale'
              AND e.source_id IN (SELECT s.id FROM live_sales s WHERE s.campaign_id = p_campaign)));
  v_fees := greatest(v_fees - coalesce((SELECT sum(w.amount) FROM rewards w WHERE w.campaign_id = p_campaign
                                                                       AND w.source = 'boost' AND w.status = 'paid'), 0),
                     0);
  SELECT coalesce(sum(a.reward), 0) INTO v_owed
    FROM rewards w JOIN boost_accruals a ON a.boost_id = w.boost_id
   WHERE w.campaign_id = p_campaign AND w.source = 'boost' AND w.status = 'pending';
  SELECT array_agg(r.id ORDER BY r.id) AS rewards, array_agg(r.user_id ORDER BY r.id) AS users,
         array_agg(r.amount ORDER BY r.id) AS amounts, array_agg(r.spent ORDER BY r.id) AS spent,
         array_agg(gen_random_uuid() ORDER BY r.id) AS transfers, coalesce(sum(r.amount), 0) AS total
    INTO v_due
    FROM (SELECT w.id, w.user_id,
                 -- Over the cap: each its share of it, truncated (so never more than the cap in all).
                 CASE WHEN v_owed > v_fees THEN trunc(a.reward * v_fees / v_owed, 2) ELSE a.reward END AS amount,
                 greatest(b.amount - b.taken_back - a.value, 0) AS spent
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
