-- Why: a boosting supporter earns a reward on what its boost paid for, paid
-- when the campaign completes (issue 15). The rule, per boost i of a campaign
-- (the escrow pool of 0101 says what each boost still holds):
--   spent_i  = amount_i - taken_back_i - value_i   (what its money paid out while it was in the pool)
--   reward_i = trunc(reward_pct_i / 100 x max(spent_i, 0), 2)
-- Every payout is paid by the pool's holders in proportion to what each
-- holds, so the boosts' spent parts add up to at most what the campaign paid
-- out while boosts were in it, and rounding down keeps the rewards within
-- reward_pct of that; a supporter's money clawed back by a refund or dispute
-- earns nothing. Paid in the transaction that completes the campaign,
-- whatever completes it (the business's POST /complete, the settler when the
-- budget is exhausted, anything else that sets the status): a trigger on the
-- status, so no path can forget it. Payouts settled after completion (events
-- that happened before it) count for the refund of unspent money, not for the
-- reward.
-- Booking: one transfer per reward (source_type 'boost'): the platform's
-- rewards wallet (0100) debited, the supporter credited through
-- oros_credit_legs (what it owes the platform is repaid first). Both held
-- until the campaign's last earning still held is released (its refund
-- window): the reward follows the payouts it was paid on. A reward that
-- comes to 0.00 is marked paid with no transfer.
-- Each boost's value and reward as they stand: the one place the reward rule is
-- written (oros_pay_boost_rewards fixes it at completion; reward_view shows it
-- before). The owner's, like boost_values.
CREATE VIEW boost_accruals AS
SELECT v.boost_id, v.campaign_id, v.value,
       trunc(b.reward_pct * greatest(b.amount - b.taken_back - v.value, 0) / 100, 2) AS reward
  FROM boost_values v JOIN boosts b ON b.id = v.boost_id;

CREATE FUNCTION oros_pay_boost_rewards(p_campaign uuid) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_hold timestamptz;
  v_status text;
  v_due record;
BEGIN
  SELECT max(e.hold_until) INTO v_hold FROM ledger_entries e
   WHERE e.source_type = 'campaign' AND e.source_id = p_campaign AND e.status = 'pending'
     AND e.hold_until > now();
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

CREATE FUNCTION campaigns_pay_boost_rewards() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  PERFORM oros_pay_boost_rewards(NEW.id);
  RETURN NULL;
END;
$$;
CREATE TRIGGER campaigns_pay_boost_rewards AFTER UPDATE OF status ON campaigns
  FOR EACH ROW WHEN (NEW.status = 'completed' AND OLD.status IS DISTINCT FROM 'completed')
  EXECUTE FUNCTION campaigns_pay_boost_rewards();

-- The caller's rewards, with a pending boost
-- reward's amount as it stands now (what its boost has paid for so far, at its
-- percent) and, for a boost's, what the boost still holds unspent. Owned by the
-- schema owner, so it reads the pool the request role may not; it answers
-- only about auth.uid().
CREATE VIEW reward_view AS
SELECT r.id, r.user_id, r.source, r.status, r.campaign_id, r.boost_id, r.transfer_id, r.paid_at, r.created_at,
       CASE WHEN r.status = 'pending' AND a.boost_id IS NOT NULL THEN a.reward ELSE r.amount END AS amount,
       trunc(a.value, 2) AS unspent
  FROM rewards r LEFT JOIN boost_accruals a ON a.boost_id = r.boost_id
 WHERE r.user_id = auth.uid();
GRANT SELECT ON reward_view TO oros_app;
