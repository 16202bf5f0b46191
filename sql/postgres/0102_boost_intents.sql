-- Why: the seed's boosts table held rows that nothing created. A boost is now
-- paid through Stripe and booked only when Stripe confirms it, as tips and
-- card fundings are (0029, 0079): POST /v1/campaigns/{id}/boosts records a
-- pending boost_intents row holding the PaymentIntent, the campaign and the
-- amount asked for, and only such a row is what the webhook may credit, for
-- its amount, once (0104). Who may boost: a supporter (or an admin), on an
-- active campaign, that is neither the campaign's business nor one of its
-- creators (a reward on payouts to oneself is a discount on one's own fee).
CREATE TABLE boost_intents (
  id UUID PRIMARY KEY,
  supporter_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  campaign_id UUID NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
  amount DECIMAL(10,2) NOT NULL CHECK (amount > 0),
  currency VARCHAR(3) NOT NULL DEFAULT 'usd',
  stripe_payment_intent_id VARCHAR(100) NOT NULL UNIQUE,
  -- pending -> succeeded (credited) | failed (a retry may still succeed) | refused (amount or currency
  -- unlike this row's: never credited) | refunded (paid when the campaign could no longer take it:
  -- given back at once, issued_refunds).
  status VARCHAR(20) NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'succeeded', 'failed', 'refused', 'refunded')),
  refusal_reason TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  credited_at TIMESTAMPTZ
);
CREATE INDEX idx_boost_intents_supporter ON boost_intents(supporter_id, created_at);
CREATE INDEX idx_boost_intents_campaign ON boost_intents(campaign_id);

ALTER TABLE boost_intents ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON boost_intents TO oros_app;
CREATE POLICY "boost_intents_owner" ON boost_intents FOR SELECT TO oros_app USING (auth.uid() = supporter_id);
CREATE POLICY "admin_read" ON boost_intents FOR SELECT TO oros_app USING (auth.is_admin());

-- Why a caller may not boost a campaign now, or NULL. The campaign must exist
-- (the caller's RLS view of it is the API's business: this answers for any).
CREATE FUNCTION oros_boost_blocker(p_campaign uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT CASE
    WHEN c.id IS NULL THEN 'campaign_not_found'
    WHEN c.status IS DISTINCT FROM 'active' THEN 'campaign_not_active'
    WHEN c.business_id = auth.uid() THEN 'own_campaign'
    WHEN EXISTS (SELECT 1 FROM campaign_creators m WHERE m.campaign_id = c.id AND m.creator_id = auth.uid())
      THEN 'campaign_member'
  END
    FROM (SELECT 1) AS one LEFT JOIN campaigns c ON c.id = p_campaign
$$;

-- POST /v1/campaigns/{id}/boosts, after Stripe made the PaymentIntent: the
-- caller's pending boost. Checks again what the API checked.
CREATE FUNCTION oros_open_boost(p_id uuid, p_campaign uuid, p_amount numeric, p_payment_intent text)
RETURNS boost_intents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_caller uuid := auth.uid();
  v_blocker text;
  v_row boost_intents;
BEGIN
  IF v_caller IS NULL OR NOT EXISTS (SELECT 1 FROM user_roles WHERE user_id = v_caller
                                                               AND role IN ('supporter', 'admin')) THEN
    RAISE EXCEPTION 'oros_open_boost: % is not a supporter', v_caller USING ERRCODE = 'insufficient_privilege';
  END IF;
  v_blocker := oros_boost_blocker(p_campaign);
  IF v_blocker IS NOT NULL THEN
    RAISE EXCEPTION 'campaign % cannot be boosted by %: %', p_campaign, v_caller, v_blocker
      USING ERRCODE = 'object_not_in_prerequisite_state', HINT = v_blocker;
  END IF;
  IF p_amount IS NULL OR p_amount <= 0 OR p_amount <> round(p_amount, 2) OR p_amount > 99999999.99 THEN
    RAISE EXCEPTION 'a boost must be a positive amount with at most two decimals, got %', p_amount
      USING ERRCODE = 'invalid_parameter_value', COLUMN = 'amount';
  END IF;
  IF p_payment_intent IS NULL THEN
    RAISE EXCEPTION 'a boost needs its PaymentIntent' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO boost_intents (id, supporter_id, campaign_id, amount, stripe_payment_intent_id)
  VALUES (p_id, v_caller, p_campaign, p_amount, p_payment_intent)
  RETURNING * INTO v_row;
  RETURN v_row;
END;
$$;

-- payment_intent.payment_failed: one attempt failed (Stripe.js may retry the intent).
CREATE FUNCTION oros_fail_boost_intent(p_payment_intent text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_count integer;
BEGIN
  UPDATE boost_intents SET status = 'failed' WHERE stripe_payment_intent_id = p_payment_intent AND status = 'pending';
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$$;

GRANT EXECUTE ON FUNCTION oros_boost_blocker(uuid), oros_open_boost(uuid, uuid, numeric, text) TO oros_app;
GRANT EXECUTE ON FUNCTION oros_fail_boost_intent(text) TO oros_api;
