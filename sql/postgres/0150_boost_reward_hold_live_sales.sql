-- Why: a boost's reward is computed from everything its campaign paid while
-- the boost was in the pool, live sales included (oros_post_live_sales lowers
-- remaining_budget like any payout, so the pool's price and boost_accruals
-- count them; a refunded live sale raises it again). But 0105 held the reward
-- only until the campaign's last held 'campaign' leg was released, so a
-- campaign paying live sales after its last ordinary payout (or only live
-- sales) made its boosters' rewards available while the live sales they were
-- computed from were still inside their refund window. The rule now: a
-- reward is held until the last credit still held of any payout of its
-- campaign is released, ordinary ('campaign') or live ('live_sale', whose
-- source is the live_sales row). Written once, here, for every caller.
CREATE FUNCTION oros_campaign_payouts_held_until(p_campaign uuid) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT max(e.hold_until) FROM ledger_entries e
   WHERE e.status = 'pending' AND e.hold_until > now()
     AND ((e.source_type = 'campaign' AND e.source_id = p_campaign)
          OR (e.source_type = 'live_sale'
              AND e.source_id IN (SELECT s.id FROM live_sales s WHERE s.campaign_id = p_campaign)));
$$;
REVOKE ALL ON FUNCTION oros_campaign_payouts_held_until(uuid) FROM PUBLIC;
-- The lookup above, at each completion: a campaign's live sales without scanning them all.
CREATE INDEX idx_live_sales_campaign ON live_sales(campaign_id);

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
         array_agg(r.amount ORDER BY r.id) AS amounts,
         array_agg(gen_random_uuid() ORDER BY r.id) AS transfers, coalesce(sum(r.amount), 0) AS total
    INTO v_due
    FROM (SELECT w.id, w.user_id, a.reward AS amount
            FROM rewards w JOIN boost_accruals a ON a.boost_id = w.boost_id
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
     SET amount = d.amount, status = 'paid', paid_at = now(),
         transfer_id = CASE WHEN d.amount > 0 THEN d.transfer END
    FROM unnest(v_due.rewards, v_due.amounts, v_due.transfers) AS d(id, amount, transfer)
   WHERE w.id = d.id;
  RETURN v_due.total;
END;
$$;
