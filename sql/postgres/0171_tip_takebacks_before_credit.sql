-- Why: a refund (or dispute) of a tip's payment that reached us before the
-- payment was credited came back 'unmatched' from oros_apply_takeback, and the
-- webhook then took it for a checkout sale's refund: a phantom 'refund' event
-- appended to the stream (rejected later as no_such_order), beside the
-- takeback correctly kept for when the tip is credited. Boost intents already
-- had the rule (0107); tip intents get it: a payment of a tip intent not
-- credited (a one_time tip's PaymentIntent, pending, failed or refused) or a
-- refused payment we gave back (0170: a monthly invoice's PaymentIntent is
-- known to us only through its issued refund) is ('tip', intent, 'recorded').
-- A monthly invoice not booked yet names no PaymentIntent we know; its refund
-- stays unmatched (finance: docs/supporters.md).
--
-- Nothing serialised the handling of one PaymentIntent either, so a
-- takeback could be lost. A refund racing its payment's webhook: the credit read what
-- Stripe took back before the refund committed, and the refund looked for the
-- tip before the credit committed; both committed, neither applied it. A
-- refund racing a dispute (or two disputes): each read the amount taken back
-- without the other's row, then waited on the tip's row lock and wrote its
-- own, stale target.
-- Every path that matches a payment to what Stripe took back of it goes
-- through oros_apply_takeback: oros_record_refund and oros_record_dispute
-- after recording Stripe's side, and each credit (oros_credit_tip,
-- oros_membership_paid, oros_credit_boost, oros_credit_payment_intent,
-- oros_finish_issued_refund) after writing its object. So that is where the
-- lock is taken: a transaction advisory lock on the PaymentIntent id, before
-- anything is read. Whichever comes second waits for the first to commit,
-- then reads (READ COMMITTED: each statement after the lock sees it) both the
-- object and Stripe's full side, and brings the object to the right target.
-- The lock is taken after the caller's own rows were written, and a
-- transaction that waits on it holds no row the holder needs (the holder
-- cannot see the waiter's uncommitted object), so it adds no deadlock.

-- 0107's, knowing tip intents not credited too, serialised per PaymentIntent.
CREATE OR REPLACE FUNCTION oros_apply_takeback(p_payment_intent text)
RETURNS TABLE (kind text, object_id uuid, outcome text, taken numeric)
LANGUAGE plpgsql AS $$
DECLARE
  v_state record;
  v_id uuid;
  v_invoice text;
BEGIN
  -- One payment's takebacks and credit, one at a time (oros/locks.py); read everything after it.
  PERFORM pg_advisory_xact_lock(hashtextextended('oros_payment:' || p_payment_intent, 0));
  SELECT * INTO v_state FROM oros_stripe_taken_back(p_payment_intent);
  SELECT t.id INTO v_id FROM tips t WHERE t.stripe_payment_intent_id = p_payment_intent;
  IF FOUND THEN
    RETURN QUERY SELECT 'tip'::text, v_id, r.outcome, r.taken FROM oros_take_back_tip(v_id, v_state.taken) r;
    RETURN;
  END IF;
  SELECT f.id INTO v_id FROM campaign_fundings f
   WHERE f.stripe_payment_intent_id = p_payment_intent AND f.method = 'stripe' AND f.status = 'succeeded';
  IF FOUND THEN
    RETURN QUERY SELECT 'funding'::text, v_id, r.outcome, r.taken
                   FROM oros_take_back_funding(v_id, v_state.taken, v_state.disputed) r;
    RETURN;
  END IF;
  SELECT b.id INTO v_id FROM boosts b WHERE b.stripe_payment_intent_id = p_payment_intent;
  IF FOUND THEN
    RETURN QUERY SELECT 'boost'::text, v_id, r.outcome, r.taken FROM oros_take_back_boost(v_id, v_state.taken) r;
    RETURN;
  END IF;
  SELECT i.id, i.membership_id INTO v_invoice, v_id FROM membership_invoices i
   WHERE i.stripe_payment_intent_id = p_payment_intent;
  IF FOUND THEN
    RETURN QUERY SELECT 'membership'::text, v_id, r.outcome, r.taken
                   FROM oros_take_back_membership_invoice(v_invoice, v_state.taken) r;
    RETURN;
  END IF;
  -- A boost not credited (yet, or ever: refunded at once): kept for when it is, and never a sale's refund.
  SELECT i.id INTO v_id FROM boost_intents i WHERE i.stripe_payment_intent_id = p_payment_intent;
  IF FOUND THEN
    RETURN QUERY SELECT 'boost'::text, v_id, 'recorded'::text, v_state.taken;
    RETURN;
  END IF;
  -- A tip not credited (yet: a one_time tip's payment, applied when it is; or ever: a refused payment, one_time,
  -- or a monthly invoice we refunded): kept, and never a sale's refund either.
  SELECT i.id INTO v_id FROM tip_intents i WHERE i.stripe_payment_intent_id = p_payment_intent;
  IF NOT FOUND THEN
    SELECT r.tip_intent_id INTO v_id FROM issued_refunds r
     WHERE r.payment_intent_id = p_payment_intent AND r.tip_intent_id IS NOT NULL;
  END IF;
  IF v_id IS NOT NULL THEN
    RETURN QUERY SELECT 'tip'::text, v_id, 'recorded'::text, v_state.taken;
    RETURN;
  END IF;
  RETURN QUERY SELECT 'unmatched'::text, NULL::uuid, 'recorded'::text, v_state.taken;
END;
$$;
