-- Why: OROS now gives money back on its own, where before only Stripe (or
-- finance, in its dashboard) did: a completed campaign's unspent escrow goes
-- back to the boosters and the business (0106), and a boost paid after its
-- campaign stopped being active is refunded at once (0104). Each refund we
-- issue is one row here, written in the transaction that decides it, before
-- Stripe is asked:
--  * pending: to be sent to Stripe (a refund of payment_intent_id, Stripe's
--    idempotency key 'refund:<id>'); a failure that leaves us unsure is
--    retried (attempts, last_error) by whoever sends next (the request, the
--    settler's refunds job), never twice: a retry first looks the refund up at
--    Stripe by its metadata, since Stripe forgets idempotency keys after a day;
--  * succeeded: Stripe made it (stripe_refund_id);
--  * manual: nobody can send it through Stripe -- an off-Stripe funding, a
--    remainder no payment can take, or Stripe refused (a charge disputed or
--    already refunded in the dashboard) -- and finance returns it by hand.
-- A refund of unspent escrow is booked when it is written (transfer_id:
-- escrow debited, clearing credited), whatever becomes of it at Stripe; a
-- boost refunded at once never entered the books and has no transfer. This is
-- a different table from stripe_refunds (0080), which records what Stripe
-- reports of a payment: that report includes the refunds issued here, so the
-- takeback rule subtracts them (0107).
CREATE TABLE issued_refunds (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  campaign_id UUID NOT NULL REFERENCES campaigns(id) ON DELETE RESTRICT,
  reason VARCHAR(30) NOT NULL CHECK (reason IN ('unspent', 'campaign_not_active', 'budget_overflow')),
  -- Whose money: a funding of the business, a boost, a boost never credited, or (all NULL) the
  -- business's remainder that no funding can take back.
  funding_id UUID REFERENCES campaign_fundings(id) ON DELETE RESTRICT,
  boost_id UUID REFERENCES boosts(id) ON DELETE RESTRICT,
  boost_intent_id UUID REFERENCES boost_intents(id) ON DELETE RESTRICT,
  payment_intent_id VARCHAR(100),
  amount DECIMAL(12,2) NOT NULL CHECK (amount > 0),
  status VARCHAR(20) NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'manual')),
  transfer_id UUID,
  stripe_refund_id VARCHAR(100),
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  -- Why it is manual: for finance, who returns it.
  note TEXT,
  created_by UUID REFERENCES users(id) ON DELETE SET NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at TIMESTAMPTZ,
  CONSTRAINT issued_refund_one_payer CHECK (num_nonnulls(funding_id, boost_id, boost_intent_id) <= 1),
  CONSTRAINT issued_refund_booked CHECK ((reason = 'unspent') = (transfer_id IS NOT NULL)),
  CONSTRAINT issued_refund_at_stripe CHECK (status = 'manual' OR payment_intent_id IS NOT NULL),
  CONSTRAINT issued_refund_done CHECK ((status = 'succeeded') = (stripe_refund_id IS NOT NULL)),
  CONSTRAINT issued_refund_manual_says_why CHECK (status <> 'manual' OR note IS NOT NULL)
);
CREATE INDEX idx_issued_refunds_campaign ON issued_refunds(campaign_id, created_at);
CREATE INDEX idx_issued_refunds_payment ON issued_refunds(payment_intent_id);
CREATE INDEX idx_issued_refunds_pending ON issued_refunds(created_at) WHERE status = 'pending';
CREATE INDEX idx_issued_refunds_funding ON issued_refunds(funding_id) WHERE funding_id IS NOT NULL;
CREATE INDEX idx_issued_refunds_boost ON issued_refunds(boost_id) WHERE boost_id IS NOT NULL;

ALTER TABLE issued_refunds ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON issued_refunds TO oros_app;
-- The campaign's business sees the refunds of its campaign; a booster those of its own boosts.
CREATE POLICY "issued_refunds_business" ON issued_refunds FOR SELECT TO oros_app
  USING (campaign_id IN (SELECT id FROM campaigns WHERE business_id = auth.uid()));
CREATE POLICY "issued_refunds_booster" ON issued_refunds FOR SELECT TO oros_app
  USING (boost_id IN (SELECT id FROM boosts WHERE supporter_id = auth.uid())
         OR boost_intent_id IN (SELECT id FROM boost_intents WHERE supporter_id = auth.uid()));
CREATE POLICY "admin_read" ON issued_refunds FOR SELECT TO oros_app USING (auth.is_admin());

-- What Stripe refunded of a payment because we asked (or are asking): the
-- part of its refunded total that is no takeback. A refund turned manual was
-- never made at Stripe.
CREATE FUNCTION oros_issued_at_stripe(p_payment_intent text) RETURNS numeric
LANGUAGE sql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT coalesce(sum(amount), 0) FROM issued_refunds
   WHERE payment_intent_id = p_payment_intent AND status IN ('pending', 'succeeded')
$$;

-- The sender takes one pending refund: locked for its transaction (a second
-- sender skips it), which then records Stripe's answer. NULL: not pending, or
-- being sent by another.
CREATE FUNCTION oros_take_issued_refund(p_id uuid) RETURNS issued_refunds
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT * FROM issued_refunds WHERE id = p_id AND status = 'pending' FOR UPDATE SKIP LOCKED
$$;

-- The pending refunds, oldest first (the refunds job's batch).
CREATE FUNCTION oros_pending_issued_refunds(p_limit integer) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT id FROM issued_refunds WHERE status = 'pending' ORDER BY created_at, id LIMIT p_limit
$$;

-- Stripe's answer for a refund taken by oros_take_issued_refund in the same
-- transaction: made (p_stripe_refund), refused for good (p_refused: finance
-- returns it by hand; a takeback this refund was hiding is applied now), or
-- unknown (retried later).
CREATE FUNCTION oros_finish_issued_refund(p_id uuid, p_stripe_refund text, p_refused boolean, p_error text)
RETURNS issued_refunds
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row issued_refunds;
BEGIN
  IF p_stripe_refund IS NOT NULL THEN
    UPDATE issued_refunds SET status = 'succeeded', stripe_refund_id = p_stripe_refund, attempts = attempts + 1,
                              last_error = NULL, finished_at = now()
     WHERE id = p_id AND status = 'pending' RETURNING * INTO v_row;
  ELSIF p_refused THEN
    UPDATE issued_refunds SET status = 'manual', attempts = attempts + 1, last_error = left(p_error, 500),
                              note = 'Stripe refused the refund; return it by hand', finished_at = now()
     WHERE id = p_id AND status = 'pending' RETURNING * INTO v_row;
  ELSE
    UPDATE issued_refunds SET attempts = attempts + 1, last_error = left(p_error, 500)
     WHERE id = p_id AND status = 'pending' RETURNING * INTO v_row;
  END IF;
  IF v_row.id IS NULL THEN
    RAISE EXCEPTION 'issued refund % is not pending', p_id USING ERRCODE = 'no_data_found';
  END IF;
  IF v_row.status = 'manual' THEN
    PERFORM oros_apply_takeback(v_row.payment_intent_id);
  END IF;
  RETURN v_row;
END;
$$;

GRANT EXECUTE ON FUNCTION oros_take_issued_refund(uuid), oros_pending_issued_refunds(integer),
  oros_finish_issued_refund(uuid, text, boolean, text) TO oros_api;
