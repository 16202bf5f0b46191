-- Why: a boost's payment_intent.succeeded must credit exactly what the
-- supporter asked for, once, to a campaign that can still spend it (the
-- funding guard of 0029 and 0081, for boosts). oros_credit_boost, in the
-- webhook's transaction (the event already claimed):
--  * credits only a pending (or failed: Stripe.js may retry) boost_intents
--    row, for its amount and currency; any other amount or currency is refused
--    for good (a tampered PaymentIntent), for finance to refund;
--  * locks the intent, then the campaign row (as settlement does), so two
--    events for one payment credit it once and a settlement never sees half a
--    boost;
--  * if the campaign is no longer active (paused, frozen, completed: it cannot
--    spend the boost, or not now) or the boost would overflow its budget, the
--    payment is refunded at once: an issued refund (0103) the webhook sends
--    after committing, nothing booked;
--  * otherwise writes the boosts row (with the reward percent of this moment,
--    the terms the supporter boosted under, and its units of the campaign's
--    escrow pool, 0101), one balanced transfer (source_type 'boost': clearing
--    debited, escrow credited), raises funded_budget, remaining_budget and
--    total_budget by the amount, and records its reward, pending (0105).
-- The reward percent arrives as an argument, from OROS_BOOST_REWARD_PCT of the
-- API that received the webhook (oros/settings.py owns it), as a tip's fee does.
ALTER TABLE boosts
  ADD COLUMN intent_id UUID UNIQUE REFERENCES boost_intents(id) ON DELETE SET NULL,
  ADD COLUMN currency VARCHAR(3) NOT NULL DEFAULT 'usd',
  ADD COLUMN stripe_payment_intent_id VARCHAR(100) UNIQUE,
  ADD COLUMN reward_pct DECIMAL(5,2) NOT NULL DEFAULT 0 CHECK (reward_pct >= 0 AND reward_pct <= 100),
  ADD COLUMN transfer_id UUID,
  -- What refunds and disputes of its payment took back (0107).
  ADD COLUMN taken_back DECIMAL(10,2) NOT NULL DEFAULT 0,
  ADD CONSTRAINT boost_takeback_bounded CHECK (taken_back >= 0 AND taken_back <= amount);
CREATE INDEX idx_boosts_supporter ON boosts(supporter_id, created_at);

GRANT SELECT (intent_id, currency, stripe_payment_intent_id, reward_pct, taken_back) ON boosts TO oros_app;
-- The webhook finds whose boost a payment is.
GRANT SELECT (id, stripe_payment_intent_id) ON boost_intents TO oros_api;
CREATE POLICY "api_reads_boost_intents" ON boost_intents FOR SELECT TO oros_api USING (true);

CREATE FUNCTION oros_credit_boost(p_event text, p_payment_intent text, p_amount numeric, p_currency text,
                                  p_reward_pct numeric)
RETURNS TABLE (outcome text, boost_id uuid, intent_id uuid, campaign_id uuid, amount numeric, refund_id uuid,
               reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_intent boost_intents;
  v_campaign campaigns;
  v_boost uuid := gen_random_uuid();
  v_transfer uuid := gen_random_uuid();
  v_price numeric;
  v_epoch integer;
BEGIN
  SELECT * INTO v_intent FROM boost_intents i WHERE i.stripe_payment_intent_id = p_payment_intent FOR UPDATE;
  IF NOT FOUND THEN
    outcome := 'no_intent';
    RETURN NEXT;
    RETURN;
  END IF;
  intent_id := v_intent.id;
  campaign_id := v_intent.campaign_id;
  amount := v_intent.amount;
  IF v_intent.status = 'succeeded' THEN
    outcome := 'ignored';
    reason := format('boost intent %s is already credited', v_intent.id);
  ELSIF v_intent.status = 'refunded' THEN
    outcome := 'ignored';
    reason := format('boost intent %s was refunded: %s', v_intent.id, v_intent.refusal_reason);
  ELSIF v_intent.status = 'refused' THEN
    outcome := 'refused';
    reason := v_intent.refusal_reason;
  ELSIF p_amount IS DISTINCT FROM v_intent.amount OR p_currency IS DISTINCT FROM v_intent.currency THEN
    outcome := 'refused';
    reason := format('PaymentIntent %s received %s %s but boost intent %s asked for %s %s; nothing credited',
                     p_payment_intent, coalesce(p_amount::text, 'no amount'), coalesce(p_currency, 'no currency'),
                     v_intent.id, v_intent.amount, v_intent.currency);
    UPDATE boost_intents i SET status = 'refused', refusal_reason = reason WHERE i.id = v_intent.id;
  ELSIF p_reward_pct IS NULL OR p_reward_pct < 0 OR p_reward_pct > 100 THEN
    RAISE EXCEPTION 'oros_credit_boost: reward percent % out of range', p_reward_pct
      USING ERRCODE = 'invalid_parameter_value';
  ELSE
    SELECT * INTO v_campaign FROM campaigns c WHERE c.id = v_intent.campaign_id FOR UPDATE;
    IF v_campaign.status IS DISTINCT FROM 'active'
       OR v_campaign.funded_budget + v_intent.amount > 9999999999.99
       OR v_campaign.total_budget + v_intent.amount > 9999999999.99 THEN
      reason := CASE WHEN v_campaign.status IS DISTINCT FROM 'active'
                     THEN format('campaign %s is %s, no longer active: the boost is refunded', v_campaign.id,
                                 coalesce(v_campaign.status, 'gone'))
                     ELSE format('campaign %s cannot hold %s more: its budget would overflow; the boost is refunded',
                                 v_campaign.id, v_intent.amount) END;
      INSERT INTO issued_refunds (campaign_id, reason, boost_intent_id, payment_intent_id, amount)
      VALUES (v_intent.campaign_id,
              CASE WHEN v_campaign.status IS DISTINCT FROM 'active' THEN 'campaign_not_active' ELSE 'budget_overflow' END,
              v_intent.id, p_payment_intent, v_intent.amount)
      RETURNING id INTO refund_id;
      UPDATE boost_intents i SET status = 'refunded', refusal_reason = reason WHERE i.id = v_intent.id;
      outcome := 'refund_due';
    ELSE
      UPDATE campaigns c
         SET funded_budget = c.funded_budget + v_intent.amount, remaining_budget = c.remaining_budget + v_intent.amount,
             total_budget = c.total_budget + v_intent.amount
       WHERE c.id = v_campaign.id
      RETURNING c.pool_price, c.pool_epoch INTO v_price, v_epoch;
      INSERT INTO boosts (id, supporter_id, campaign_id, amount, intent_id, currency, stripe_payment_intent_id,
                          reward_pct, transfer_id, pool_units, pool_epoch)
      VALUES (v_boost, v_intent.supporter_id, v_intent.campaign_id, v_intent.amount, v_intent.id, v_intent.currency,
              p_payment_intent, p_reward_pct, v_transfer, oros_pool_div(v_intent.amount, v_price), v_epoch);
      INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                  description, metadata)
      SELECT l.wallet_id, v_transfer, 'boost', v_boost, v_intent.amount, l.direction, 'settled', l.description,
             jsonb_build_object('boost_id', v_boost, 'campaign_id', v_intent.campaign_id, 'boost_intent', v_intent.id)
        FROM (VALUES (oros_platform_wallet('clearing'), 'debit', 'boost received'),
                     (oros_platform_wallet('escrow'), 'credit', 'boost into the campaign''s escrow'))
             AS l(wallet_id, direction, description);
      INSERT INTO rewards (user_id, source, amount, status, campaign_id, boost_id)
      VALUES (v_intent.supporter_id, 'boost', 0, 'pending', v_intent.campaign_id, v_boost);
      UPDATE boost_intents i SET status = 'succeeded', credited_at = now() WHERE i.id = v_intent.id;
      -- A refund or dispute that reached us before this payment did.
      PERFORM oros_apply_takeback(p_payment_intent);
      outcome := 'credited';
      boost_id := v_boost;
    END IF;
  END IF;
  IF outcome NOT IN ('credited', 'refund_due') THEN
    UPDATE stripe_events e SET ignored_reason = reason WHERE e.id = p_event;
  END IF;
  RETURN NEXT;
END;
$$;

GRANT EXECUTE ON FUNCTION oros_credit_boost(text, text, numeric, text, numeric) TO oros_api;
