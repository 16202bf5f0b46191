-- Why: a tip payment of another amount than asked (0079's refusal) was charged
-- and never booked, and a refused monthly tip kept its Stripe subscription
-- running: every later invoice was charged and refused again, and the
-- supporter could not cancel it (the cancel route and the subscription's end
-- knew only pending and active intents). A refused payment bought nothing, so
-- it is now given back whole, at once: an issued refund (0103) of the
-- payment's PaymentIntent, reason 'tip_refused', with no transfer (the money
-- never entered the books: clearing was never debited for it, so giving it
-- back moves nothing there either), once per payment. oros_credit_tip returns
-- it and the refused intent's subscription, which the webhook sends and
-- cancels at Stripe after its transaction commits (as a boost refunded at
-- once, 0104). A refused intent can be canceled by its supporter (ended_at
-- set, the status stays 'refused' with its reason), and Stripe's end of its
-- subscription records ended_at too.
-- A payment a tip row already holds (by invoice or PaymentIntent) is
-- answered first, 'ignored' as credited, whatever the intent's status: once a
-- later invoice of a monthly tip was refused, an event about an earlier,
-- booked invoice (Stripe's twin invoice.payment_succeeded, or an invoice.paid
-- retried after a 503) must not give that booked payment back while the
-- creator keeps the tip (our own refund, no other check would see it;
-- reconcile's refused_tip_refunds_never_booked does). A refused intent's
-- reason for an event names that event's payment.

ALTER TABLE issued_refunds
  ALTER COLUMN campaign_id DROP NOT NULL,
  ADD COLUMN tip_intent_id UUID REFERENCES tip_intents(id) ON DELETE RESTRICT,
  DROP CONSTRAINT issued_refunds_reason_check,
  ADD CONSTRAINT issued_refunds_reason_check
    CHECK (reason IN ('unspent', 'campaign_not_active', 'budget_overflow', 'tip_refused')),
  DROP CONSTRAINT issued_refund_one_payer,
  ADD CONSTRAINT issued_refund_one_payer
    CHECK (num_nonnulls(funding_id, boost_id, boost_intent_id, tip_intent_id) <= 1),
  -- A refused tip's refund belongs to no campaign; every other refund to one.
  ADD CONSTRAINT issued_refund_whose CHECK ((reason = 'tip_refused') = (tip_intent_id IS NOT NULL)
                                            AND (reason = 'tip_refused') = (campaign_id IS NULL));
CREATE INDEX idx_issued_refunds_tip_intent ON issued_refunds(tip_intent_id) WHERE tip_intent_id IS NOT NULL;

-- 0079's, giving back a refused payment and naming a refused intent's subscription.
DROP FUNCTION oros_credit_tip(text, text, text, text, numeric, text, numeric, integer);

CREATE FUNCTION oros_credit_tip(p_event text, p_payment_intent text, p_subscription text, p_invoice text,
                                p_amount numeric, p_currency text, p_fee_pct numeric, p_hold_days integer)
RETURNS TABLE (outcome text, tip_id uuid, intent_id uuid, creator_id uuid, amount numeric, reason text,
               subscription_id text, refund_id uuid)
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
  -- A booked payment is answered first: a later refusal of the intent must never give it back.
  IF EXISTS (SELECT 1 FROM tips t WHERE t.stripe_invoice_id = p_invoice OR t.stripe_payment_intent_id = p_payment_intent)
  THEN
    outcome := 'ignored';
    reason := format('%s of tip intent %s is already credited', coalesce(p_invoice, p_payment_intent), v_intent.id);
  ELSIF v_intent.status = 'refused' THEN
    -- This event's payment, not the one that refused the intent: named so its ignored_reason says which.
    outcome := 'refused';
    reason := format('%s %s received %s %s but tip intent %s is refused; nothing credited',
                     coalesce(p_invoice, p_payment_intent), coalesce(p_subscription, ''),
                     coalesce(p_amount::text, 'no amount'), coalesce(p_currency, 'no currency'), v_intent.id);
  ELSIF v_intent.status = 'succeeded' THEN
    outcome := 'ignored';
    reason := format('tip intent %s is already credited', v_intent.id);
  ELSIF v_intent.frequency = 'monthly' AND p_invoice IS NULL THEN
    outcome := 'ignored';
    reason := format('an event of monthly tip intent %s names no invoice', v_intent.id);
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
  IF outcome = 'refused' THEN
    -- Charged and never booked: given back whole, once per payment; a monthly one is stopped (the caller
    -- cancels the subscription at Stripe after this commits), or every later invoice would be charged too.
    subscription_id := v_intent.stripe_subscription_id;
    IF p_payment_intent IS NOT NULL AND p_amount > 0
       AND NOT EXISTS (SELECT 1 FROM issued_refunds r WHERE r.payment_intent_id = p_payment_intent) THEN
      INSERT INTO issued_refunds (reason, tip_intent_id, payment_intent_id, amount)
      VALUES ('tip_refused', v_intent.id, p_payment_intent, p_amount)
      RETURNING id INTO refund_id;
    END IF;
  END IF;
  IF outcome <> 'credited' THEN
    UPDATE stripe_events e SET ignored_reason = reason WHERE e.id = p_event;
  END IF;
  RETURN NEXT;
END;
$$;

REVOKE ALL ON FUNCTION oros_credit_tip(text, text, text, text, numeric, text, numeric, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oros_credit_tip(text, text, text, text, numeric, text, numeric, integer) TO oros_api;

-- 0079's, and a refused intent ends too (its status keeps the reason).
CREATE OR REPLACE FUNCTION oros_cancel_monthly_tip(p_id uuid) RETURNS tip_intents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row tip_intents;
BEGIN
  UPDATE tip_intents
     SET status = CASE WHEN status = 'refused' THEN status ELSE 'canceled' END, ended_at = now()
   WHERE id = p_id AND from_user_id = auth.uid() AND frequency = 'monthly'
     AND (status IN ('pending', 'active') OR (status = 'refused' AND ended_at IS NULL))
  RETURNING * INTO v_row;
  IF NOT FOUND THEN
    SELECT * INTO v_row FROM tip_intents WHERE id = p_id AND from_user_id = auth.uid();
  END IF;
  RETURN v_row;
END;
$$;

-- 0079's, and a refused intent's subscription ending is recorded too.
CREATE OR REPLACE FUNCTION oros_end_tip_subscription(p_subscription text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_count integer;
BEGIN
  UPDATE tip_intents
     SET status = CASE WHEN status = 'refused' THEN status ELSE 'canceled' END, ended_at = now()
   WHERE stripe_subscription_id = p_subscription
     AND (status IN ('pending', 'active') OR (status = 'refused' AND ended_at IS NULL));
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$$;
