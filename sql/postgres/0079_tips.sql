-- Why: the seed's tips table held rows that nothing created. A tip is now paid
-- through Stripe and booked only when Stripe confirms it (the funding guard of
-- 0029, for tips): POST /v1/tips records a pending tip_intents row holding the
-- PaymentIntent (one_time) or subscription (monthly), its amount, creator and
-- post; the webhook credits only such a row, for its amount and currency, once
-- (a one_time intent once; a monthly one once per paid invoice). A payment of
-- any other amount is refused for good, as a funding is. Crediting writes the
-- tips row and one balanced transfer (source_type 'tip'): clearing debited the
-- amount, the fee wallet credited platform_fee and the creator net_amount,
-- both pending with the hold; what the creator owes (0075) is repaid from the
-- net first. A tip naming a locked post of its creator with
-- amount >= min_tip_to_unlock unlocks it in the same transaction.
-- The fee percent arrives as an argument: oros/fees.py owns the rule (the
-- base OROS_TIP_FEE_PCT lowered by the creator's tier at the time, 0076).

CREATE TABLE tip_intents (
  id UUID PRIMARY KEY,
  from_user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  to_creator_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  amount DECIMAL(10,2) NOT NULL CHECK (amount > 0),
  currency VARCHAR(3) NOT NULL DEFAULT 'usd',
  frequency VARCHAR(20) NOT NULL CHECK (frequency IN ('one_time', 'monthly')),
  post_id UUID REFERENCES community_posts(id) ON DELETE SET NULL,
  message TEXT CHECK (length(message) <= 500),
  stripe_payment_intent_id VARCHAR(100) UNIQUE,
  stripe_subscription_id VARCHAR(100) UNIQUE,
  -- one_time: pending -> succeeded | failed (a retry may still succeed) | refused;
  -- monthly: pending -> active (first invoice paid) -> canceled | refused.
  status VARCHAR(20) NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'succeeded', 'active', 'failed', 'refused', 'canceled')),
  refusal_reason TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  ended_at TIMESTAMPTZ,
  CONSTRAINT tip_intent_to_another CHECK (from_user_id <> to_creator_id),
  CONSTRAINT tip_intent_stripe_object CHECK (
    (frequency = 'one_time' AND stripe_payment_intent_id IS NOT NULL AND stripe_subscription_id IS NULL)
    OR (frequency = 'monthly' AND stripe_subscription_id IS NOT NULL AND stripe_payment_intent_id IS NULL))
);
CREATE INDEX idx_tip_intents_from ON tip_intents(from_user_id, created_at);
CREATE INDEX idx_tip_intents_to ON tip_intents(to_creator_id);

ALTER TABLE tips
  ADD COLUMN intent_id UUID REFERENCES tip_intents(id) ON DELETE SET NULL,
  ADD COLUMN post_id UUID REFERENCES community_posts(id) ON DELETE SET NULL,
  ADD COLUMN message TEXT,
  ADD COLUMN currency VARCHAR(3) NOT NULL DEFAULT 'usd',
  ADD COLUMN fee_pct DECIMAL(5,2),
  ADD COLUMN stripe_payment_intent_id VARCHAR(100) UNIQUE,
  ADD COLUMN stripe_invoice_id VARCHAR(100) UNIQUE,
  -- The transfer now paying the tip (a refund inside the hold books the rest anew).
  ADD COLUMN transfer_id UUID,
  ADD COLUMN hold_until TIMESTAMPTZ,
  -- What refunds and disputes took back in all (0080), and the fee's part of it.
  ADD COLUMN reversed_amount DECIMAL(10,2) NOT NULL DEFAULT 0,
  ADD COLUMN reversed_fee DECIMAL(10,2) NOT NULL DEFAULT 0,
  ADD CONSTRAINT tip_reversal_bounded CHECK (
    reversed_amount >= 0 AND reversed_amount <= amount AND reversed_fee >= 0 AND reversed_fee <= platform_fee
    AND reversed_fee <= reversed_amount AND reversed_amount - reversed_fee <= net_amount);
CREATE INDEX idx_tips_from_created ON tips(from_user_id, created_at);
CREATE INDEX idx_tips_to_created ON tips(to_creator_id, created_at);

ALTER TABLE tip_intents ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON tip_intents TO oros_app;
CREATE POLICY "tip_intents_parties" ON tip_intents FOR SELECT TO oros_app
  USING (auth.uid() IN (from_user_id, to_creator_id));
CREATE POLICY "admin_read" ON tip_intents FOR SELECT TO oros_app USING (auth.is_admin());
-- The webhook finds whose tip a payment is (its fee depends on the creator).
GRANT SELECT (id, to_creator_id, stripe_payment_intent_id, stripe_subscription_id) ON tip_intents TO oros_api;
CREATE POLICY "api_reads_tip_intents" ON tip_intents FOR SELECT TO oros_api USING (true);

-- What a tip to p_creator (naming p_post) must meet; all of it is public:
-- who is a creator, their minimum tip, a post's creator and unlock price. The
-- post is read through community_post_view, as every reader the request role
-- reaches does (0074): its metadata only, never the content.
CREATE FUNCTION oros_tip_terms(p_creator uuid, p_post uuid)
RETURNS TABLE (is_creator boolean, min_tip_amount numeric, post_creator_id uuid, post_is_locked boolean,
               post_min_tip_to_unlock numeric)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT EXISTS (SELECT 1 FROM user_roles r JOIN users u ON u.id = r.user_id
                  WHERE r.user_id = p_creator AND r.role = 'creator' AND NOT u.is_system),
         -- The seed's default minimum for a creator without a profile.
         coalesce((SELECT c.min_tip_amount FROM creator_profiles c WHERE c.user_id = p_creator), 1.00),
         p.creator_id, p.is_locked, p.min_tip_to_unlock
    FROM (SELECT 1) AS one LEFT JOIN community_post_view p ON p.id = p_post
$$;

-- POST /v1/tips, after Stripe created the PaymentIntent or subscription: the
-- caller's pending tip. Checks again what the API checked (the last line).
CREATE FUNCTION oros_open_tip(p_id uuid, p_to uuid, p_amount numeric, p_frequency text, p_post uuid,
                              p_message text, p_payment_intent text, p_subscription text)
RETURNS tip_intents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_caller uuid := auth.uid();
  v_terms record;
  v_row tip_intents;
BEGIN
  IF v_caller IS NULL OR NOT EXISTS (SELECT 1 FROM user_roles WHERE user_id = v_caller
                                                               AND role IN ('supporter', 'admin')) THEN
    RAISE EXCEPTION 'oros_open_tip: % is not a supporter', v_caller USING ERRCODE = 'insufficient_privilege';
  END IF;
  SELECT * INTO v_terms FROM oros_tip_terms(p_to, p_post);
  IF p_to = v_caller THEN
    RAISE EXCEPTION 'a creator cannot be tipped by itself' USING ERRCODE = 'invalid_parameter_value',
      COLUMN = 'to_creator_id';
  END IF;
  IF NOT v_terms.is_creator THEN
    RAISE EXCEPTION 'user % is not a creator', p_to USING ERRCODE = 'invalid_parameter_value',
      COLUMN = 'to_creator_id';
  END IF;
  IF p_amount IS NULL OR p_amount <> round(p_amount, 2) OR p_amount < v_terms.min_tip_amount OR p_amount <= 0 THEN
    RAISE EXCEPTION 'a tip to % must be at least % with at most two decimals, got %', p_to, v_terms.min_tip_amount,
      p_amount USING ERRCODE = 'invalid_parameter_value', COLUMN = 'amount';
  END IF;
  IF p_post IS NOT NULL AND v_terms.post_creator_id IS DISTINCT FROM p_to THEN
    RAISE EXCEPTION 'post % is not a post of %', p_post, p_to USING ERRCODE = 'invalid_parameter_value',
      COLUMN = 'post_id';
  END IF;
  INSERT INTO tip_intents (id, from_user_id, to_creator_id, amount, frequency, post_id, message,
                           stripe_payment_intent_id, stripe_subscription_id)
  VALUES (p_id, v_caller, p_to, p_amount, p_frequency, p_post, p_message,
          CASE WHEN p_frequency = 'one_time' THEN p_payment_intent END,
          CASE WHEN p_frequency = 'monthly' THEN p_subscription END)
  RETURNING * INTO v_row;
  RETURN v_row;
END;
$$;

-- The caller stops its monthly tip (after Stripe canceled the subscription).
CREATE FUNCTION oros_cancel_monthly_tip(p_id uuid) RETURNS tip_intents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row tip_intents;
BEGIN
  UPDATE tip_intents SET status = 'canceled', ended_at = now()
   WHERE id = p_id AND from_user_id = auth.uid() AND frequency = 'monthly' AND status IN ('pending', 'active')
  RETURNING * INTO v_row;
  IF NOT FOUND THEN
    SELECT * INTO v_row FROM tip_intents WHERE id = p_id AND from_user_id = auth.uid();
  END IF;
  RETURN v_row;
END;
$$;

-- payment_intent.payment_failed: one attempt failed (Stripe.js may retry the intent).
CREATE FUNCTION oros_fail_tip_intent(p_payment_intent text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_count integer;
BEGIN
  UPDATE tip_intents SET status = 'failed' WHERE stripe_payment_intent_id = p_payment_intent AND status = 'pending';
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$$;

-- customer.subscription.deleted (or updated to an end state) of a monthly tip.
CREATE FUNCTION oros_end_tip_subscription(p_subscription text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_count integer;
BEGIN
  UPDATE tip_intents SET status = 'canceled', ended_at = now()
   WHERE stripe_subscription_id = p_subscription AND status IN ('pending', 'active');
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$$;

-- A tip unlocks its post while what it still pays (after refunds) reaches the
-- post's unlock price; called when the tip is credited and after every refund
-- or dispute of it.
CREATE FUNCTION oros_refresh_tip_unlock(p_tip uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM tip_unlocks u
   WHERE u.tip_id = p_tip
     AND NOT EXISTS (SELECT 1 FROM tips t JOIN community_posts p ON p.id = u.community_post_id
                      WHERE t.id = p_tip AND p.is_locked AND p.min_tip_to_unlock IS NOT NULL
                        AND t.amount - t.reversed_amount >= p.min_tip_to_unlock);
  INSERT INTO tip_unlocks (tip_id, community_post_id)
  SELECT t.id, p.id FROM tips t JOIN community_posts p ON p.id = t.post_id AND p.creator_id = t.to_creator_id
   WHERE t.id = p_tip AND p.is_locked AND p.min_tip_to_unlock IS NOT NULL
     AND t.amount - t.reversed_amount >= p.min_tip_to_unlock
  ON CONFLICT (tip_id, community_post_id) DO NOTHING;
END;
$$;

-- A confirmed payment of a tip (p_event already claimed by the caller's
-- transaction): the one_time intent of p_payment_intent, or the monthly
-- intent of p_subscription for invoice p_invoice. Outcomes: credited;
-- no_intent (not a tip: the caller tries the other kinds); ignored (already
-- credited); refused (amount or currency unlike the intent's: never credited,
-- the intent refused for good). The intent row is locked first, so concurrent
-- events for one payment credit it once.
CREATE FUNCTION oros_credit_tip(p_event text, p_payment_intent text, p_subscription text, p_invoice text,
                                p_amount numeric, p_currency text, p_fee_pct numeric, p_hold_days integer)
RETURNS TABLE (outcome text, tip_id uuid, intent_id uuid, creator_id uuid, amount numeric, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_intent tip_intents;
  v_tip uuid := gen_random_uuid();
  v_transfer uuid := gen_random_uuid();
  v_fee numeric;
  v_hold timestamptz := now() + make_interval(days => p_hold_days);
BEGIN
  IF p_subscription IS NOT NULL THEN
    SELECT * INTO v_intent FROM tip_intents i WHERE i.stripe_subscription_id = p_subscription FOR UPDATE;
  ELSE
    SELECT * INTO v_intent FROM tip_intents i WHERE i.stripe_payment_intent_id = p_payment_intent FOR UPDATE;
  END IF;
  IF NOT FOUND THEN
    outcome := 'no_intent';
    RETURN NEXT;
    RETURN;
  END IF;
  intent_id := v_intent.id;
  creator_id := v_intent.to_creator_id;
  IF v_intent.status = 'refused' THEN
    outcome := 'refused';
    reason := v_intent.refusal_reason;
  ELSIF v_intent.status = 'succeeded' THEN
    outcome := 'ignored';
    reason := format('tip intent %s is already credited', v_intent.id);
  ELSIF v_intent.frequency = 'monthly' AND (p_invoice IS NULL
        OR EXISTS (SELECT 1 FROM tips t WHERE t.stripe_invoice_id = p_invoice)) THEN
    outcome := 'ignored';
    reason := format('invoice %s of tip intent %s is already credited (or names no invoice)', p_invoice, v_intent.id);
  ELSIF p_amount IS DISTINCT FROM v_intent.amount OR p_currency IS DISTINCT FROM v_intent.currency THEN
    outcome := 'refused';
    reason := format('%s %s received %s %s but tip intent %s asked for %s %s; nothing credited',
                     coalesce(p_invoice, p_payment_intent), coalesce(p_subscription, ''),
                     coalesce(p_amount::text, 'no amount'), coalesce(p_currency, 'no currency'),
                     v_intent.id, v_intent.amount, v_intent.currency);
    UPDATE tip_intents i SET status = 'refused', refusal_reason = reason WHERE i.id = v_intent.id;
  ELSIF p_fee_pct IS NULL OR p_fee_pct < 0 OR p_fee_pct > 100 OR p_hold_days IS NULL OR p_hold_days < 0 THEN
    RAISE EXCEPTION 'oros_credit_tip: fee percent % or hold days % out of range', p_fee_pct, p_hold_days
      USING ERRCODE = 'invalid_parameter_value';
  ELSE
    -- round() on numeric rounds half away from zero: half-up for these positive amounts, as campaigns do.
    v_fee := round(v_intent.amount * p_fee_pct / 100, 2);
    INSERT INTO tips (id, from_user_id, to_creator_id, amount, platform_fee, net_amount, frequency, intent_id,
                      post_id, message, currency, fee_pct, stripe_payment_intent_id, stripe_invoice_id, transfer_id,
                      hold_until)
    VALUES (v_tip, v_intent.from_user_id, v_intent.to_creator_id, v_intent.amount, v_fee, v_intent.amount - v_fee,
            v_intent.frequency, v_intent.id, v_intent.post_id, v_intent.message, v_intent.currency, p_fee_pct,
            p_payment_intent, p_invoice, v_transfer, v_hold);
    INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                hold_until, description, metadata)
    SELECT l.wallet_id, v_transfer, 'tip', v_tip, l.amount, l.direction, l.status, l.hold_until, l.description,
           jsonb_build_object('tip_intent', v_intent.id, 'invoice', p_invoice)
      FROM (SELECT oros_platform_wallet('clearing') AS wallet_id, v_intent.amount AS amount, 'debit' AS direction,
                   'settled' AS status, NULL::timestamptz AS hold_until, 'tip received' AS description
            UNION ALL
            SELECT oros_platform_wallet('fees'), v_fee, 'credit', 'pending', v_hold, 'platform fee on a tip'
            UNION ALL
            SELECT c.wallet_id, c.amount, 'credit', c.status, c.hold_until,
                   CASE WHEN c.repays THEN 'tip repaying what the creator owes' ELSE 'tip' END
              FROM oros_credit_legs(ARRAY[v_intent.to_creator_id], ARRAY[v_intent.amount - v_fee], 'pending',
                                    v_hold) c) l
     WHERE l.amount > 0;
    UPDATE tip_intents i SET status = CASE WHEN i.frequency = 'one_time' THEN 'succeeded' ELSE 'active' END
     WHERE i.id = v_intent.id AND i.status IN ('pending', 'failed');
    PERFORM oros_refresh_tip_unlock(v_tip);
    IF p_payment_intent IS NOT NULL THEN
      -- A refund or dispute that reached us before this payment did.
      PERFORM oros_apply_takeback(p_payment_intent);
    END IF;
    outcome := 'credited';
    tip_id := v_tip;
    amount := v_intent.amount;
  END IF;
  IF outcome <> 'credited' THEN
    UPDATE stripe_events e SET ignored_reason = reason WHERE e.id = p_event;
  END IF;
  RETURN NEXT;
END;
$$;

GRANT EXECUTE ON FUNCTION oros_tip_terms(uuid, uuid), oros_open_tip(uuid, uuid, numeric, text, uuid, text, text, text),
  oros_cancel_monthly_tip(uuid) TO oros_app;
GRANT EXECUTE ON FUNCTION oros_credit_tip(text, text, text, text, numeric, text, numeric, integer),
  oros_fail_tip_intent(text), oros_end_tip_subscription(text) TO oros_api;
