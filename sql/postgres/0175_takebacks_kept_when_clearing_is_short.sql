-- Why: a refund or dispute larger than what clearing holds (the platform's
-- cash at Stripe, already paid out) makes the books refuse the overdraft
-- (positive_available); the webhook rolls back and answers 503 so that
-- Stripe retries. But the rollback took Stripe's own side with it (the
-- stripe_refunds / stripe_disputes row), so until a retry succeeded nothing
-- anywhere said that Stripe had taken the money back, and after Stripe's
-- last retry (3 days) it was lost without trace. Recording Stripe's side is
-- now a function of its own (oros_note_refund, oros_note_dispute), which
-- oros_record_refund and oros_record_dispute call before applying; the
-- webhook, when the money move is refused, rolls the event back (its claim
-- too, so Stripe's retry applies it) and records Stripe's side alone in a
-- transaction of its own. Reconcile's stripe_takebacks_applied then names
-- the payment (taken back at Stripe, not in the books) until it is applied.

-- Stripe's refunded total of a payment (charge.refunded): only grows.
CREATE FUNCTION oros_note_refund(p_payment_intent text, p_charge text, p_refunded numeric) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  IF p_payment_intent IS NULL OR p_refunded IS NULL OR p_refunded < 0 THEN
    RAISE EXCEPTION 'a refund needs its PaymentIntent and a refunded total, got % and %', p_payment_intent,
      p_refunded USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO stripe_refunds AS r (payment_intent_id, charge_id, refunded_amount)
  VALUES (p_payment_intent, p_charge, p_refunded)
  ON CONFLICT (payment_intent_id) DO UPDATE
    SET refunded_amount = greatest(r.refunded_amount, EXCLUDED.refunded_amount),
        charge_id = coalesce(r.charge_id, EXCLUDED.charge_id), updated_at = now();
END;
$$;

-- A dispute's state (charge.dispute.*): the flags only turn on, and a final status stays final.
CREATE FUNCTION oros_note_dispute(p_dispute text, p_payment_intent text, p_charge text, p_amount numeric,
                                  p_status text, p_withdrawn boolean, p_reinstated boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  IF p_dispute IS NULL OR p_payment_intent IS NULL OR p_amount IS NULL OR p_amount < 0 OR p_status IS NULL THEN
    RAISE EXCEPTION 'a dispute needs its id, PaymentIntent, amount and status, got % % % %', p_dispute,
      p_payment_intent, p_amount, p_status USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO stripe_disputes AS d (id, payment_intent_id, charge_id, amount, status, funds_withdrawn,
                                    funds_reinstated)
  VALUES (p_dispute, p_payment_intent, p_charge, p_amount, p_status, p_withdrawn, p_reinstated)
  ON CONFLICT (id) DO UPDATE
    SET status = CASE WHEN oros_dispute_open(d.status) THEN EXCLUDED.status ELSE d.status END,
        funds_withdrawn = d.funds_withdrawn OR EXCLUDED.funds_withdrawn,
        funds_reinstated = d.funds_reinstated OR EXCLUDED.funds_reinstated,
        updated_at = now();
END;
$$;

-- 0080's: record, then apply.
CREATE OR REPLACE FUNCTION oros_record_refund(p_payment_intent text, p_charge text, p_refunded numeric)
RETURNS TABLE (kind text, object_id uuid, outcome text, taken numeric)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  PERFORM oros_note_refund(p_payment_intent, p_charge, p_refunded);
  RETURN QUERY SELECT * FROM oros_apply_takeback(p_payment_intent);
END;
$$;

CREATE OR REPLACE FUNCTION oros_record_dispute(p_dispute text, p_payment_intent text, p_charge text,
                                               p_amount numeric, p_status text, p_withdrawn boolean,
                                               p_reinstated boolean)
RETURNS TABLE (kind text, object_id uuid, outcome text, taken numeric)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  PERFORM oros_note_dispute(p_dispute, p_payment_intent, p_charge, p_amount, p_status, p_withdrawn, p_reinstated);
  RETURN QUERY SELECT * FROM oros_apply_takeback(p_payment_intent);
END;
$$;

-- The webhook only (the caller check is this grant): what Stripe reports.
REVOKE ALL ON FUNCTION oros_note_refund(text, text, numeric),
  oros_note_dispute(text, text, text, numeric, text, boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oros_note_refund(text, text, numeric),
  oros_note_dispute(text, text, text, numeric, text, boolean, boolean) TO oros_api;
