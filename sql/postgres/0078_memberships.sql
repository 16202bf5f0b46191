-- Why: the seed's memberships were rows with a status and nothing behind them.
-- Each is now a Stripe subscription (billing_provider_id) whose webhooks drive
-- it: POST /v1/memberships opens it 'pending' (a status added here: the
-- subscription exists, nothing is paid, no benefit applies); its first paid
-- invoice makes it 'active'; it ends 'canceled' when its user (or Stripe's
-- dashboard) asked to cancel, else 'expired' (payment never made, or failed
-- for good), with ends_at kept. Every paid invoice is platform revenue
-- (clearing -> fees, source_type 'membership'), booked once per invoice
-- (membership_invoices), and only for the tier's price: an invoice for
-- another amount (a subscription edited in Stripe) activates nothing and books
-- nothing, for finance to refund. A creator tier's fee cap is written to
-- fee_history (0076) when the membership becomes active and closed when it ends.
-- Tier prices and effects live in oros/tiers.py and arrive as arguments.

ALTER TABLE memberships DROP CONSTRAINT memberships_status_check;
ALTER TABLE memberships ADD CONSTRAINT memberships_status_check
  CHECK (status IN ('pending', 'active', 'canceled', 'expired'));
ALTER TABLE memberships
  ADD COLUMN cancel_at_period_end BOOLEAN NOT NULL DEFAULT false,
  ADD COLUMN current_period_end TIMESTAMPTZ,
  ADD COLUMN last_payment_failed_at TIMESTAMPTZ,
  ADD COLUMN refusal_reason TEXT,
  ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  ADD CONSTRAINT memberships_billing_provider_id_key UNIQUE (billing_provider_id);
-- The Stripe webhook prices an invoice by its membership's tier (oros/tiers.py).
GRANT SELECT (billing_provider_id, membership_type) ON memberships TO oros_api;
CREATE POLICY "api_reads_memberships" ON memberships FOR SELECT TO oros_api USING (true);
-- One live membership of each type per user (a pending one is canceled before another is opened).
CREATE UNIQUE INDEX idx_memberships_live ON memberships(user_id, membership_type) WHERE status IN ('pending', 'active');
CREATE TRIGGER update_memberships_updated_at BEFORE UPDATE ON memberships
  FOR EACH ROW EXECUTE FUNCTION update_updated_at();

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_source_type_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_source_type_check CHECK (source_type IN (
  'campaign', 'escrow', 'withdrawal', 'tip', 'boost', 'live_sale', 'refund', 'adjustment', 'receivable',
  'membership'));

-- Each paid invoice of a membership, booked once.
CREATE TABLE membership_invoices (
  id VARCHAR(100) PRIMARY KEY,
  membership_id UUID NOT NULL REFERENCES memberships(id) ON DELETE CASCADE,
  stripe_payment_intent_id VARCHAR(100) UNIQUE,
  amount DECIMAL(12,2) NOT NULL CHECK (amount > 0),
  currency VARCHAR(3) NOT NULL,
  transfer_id UUID NOT NULL,
  -- What refunds and lost disputes took back of it (0080).
  reversed_amount DECIMAL(12,2) NOT NULL DEFAULT 0 CHECK (reversed_amount >= 0 AND reversed_amount <= amount),
  period_end TIMESTAMPTZ,
  paid_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_membership_invoices_membership ON membership_invoices(membership_id);
ALTER TABLE membership_invoices ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON membership_invoices TO oros_app;
CREATE POLICY "membership_invoices_owner" ON membership_invoices FOR SELECT TO oros_app
  USING (membership_id IN (SELECT id FROM memberships WHERE user_id = auth.uid()));
CREATE POLICY "admin_read" ON membership_invoices FOR SELECT TO oros_app USING (auth.is_admin());

-- POST /v1/memberships: the caller's subscription, pending until its first invoice is paid.
-- The API checked the caller's role for the tier (oros/tiers.py).
CREATE FUNCTION oros_open_membership(p_id uuid, p_type text, p_subscription text) RETURNS memberships
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row memberships;
BEGIN
  IF auth.uid() IS NULL THEN
    RAISE EXCEPTION 'oros_open_membership needs a caller' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_subscription IS NULL OR p_subscription !~ '^sub_[A-Za-z0-9]+$' THEN
    RAISE EXCEPTION 'a membership needs its Stripe subscription id, got %', p_subscription
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO memberships (id, user_id, membership_type, status, billing_provider_id, started_at)
  VALUES (p_id, auth.uid(), p_type, 'pending', p_subscription, NULL)
  RETURNING * INTO v_row;
  RETURN v_row;
END;
$$;

-- POST /v1/memberships/{id}/cancel, after Stripe accepted it: an active
-- membership runs to the end of its paid period; a pending one (nothing paid,
-- its subscription canceled at once) ends now.
CREATE FUNCTION oros_request_membership_cancel(p_id uuid, p_period_end timestamptz) RETURNS memberships
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row memberships;
BEGIN
  SELECT * INTO v_row FROM memberships WHERE id = p_id AND user_id = auth.uid() FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'membership % is not the caller''s', p_id USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF v_row.status = 'pending' THEN
    UPDATE memberships SET status = 'canceled', cancel_at_period_end = true, ends_at = now()
     WHERE id = p_id RETURNING * INTO v_row;
  ELSIF v_row.status = 'active' THEN
    UPDATE memberships
       SET cancel_at_period_end = true,
           current_period_end = coalesce(p_period_end, current_period_end),
           ends_at = coalesce(p_period_end, current_period_end)
     WHERE id = p_id RETURNING * INTO v_row;
  END IF;
  RETURN v_row;
END;
$$;

-- End a membership (its subscription is over): 'canceled' if a cancel was
-- asked for, else 'expired'; its fee span closes now.
CREATE FUNCTION oros_end_membership(p_subscription text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row memberships;
BEGIN
  SELECT * INTO v_row FROM memberships WHERE billing_provider_id = p_subscription FOR UPDATE;
  IF NOT FOUND THEN
    RETURN 'no_membership';
  END IF;
  IF v_row.status IN ('canceled', 'expired') THEN
    RETURN 'already_ended';
  END IF;
  UPDATE memberships
     SET status = CASE WHEN cancel_at_period_end THEN 'canceled' ELSE 'expired' END, ends_at = now()
   WHERE id = v_row.id;
  UPDATE fee_history SET effective_until = now() WHERE membership_id = v_row.id AND effective_until IS NULL;
  RETURN 'ended';
END;
$$;

-- customer.subscription.updated: a subscription Stripe ended (canceled,
-- unpaid, incomplete_expired) ends the membership; otherwise its cancel flag
-- and paid period follow Stripe (a cancel can be undone in the dashboard).
CREATE FUNCTION oros_membership_changed(p_subscription text, p_status text, p_cancel_at_period_end boolean,
                                        p_period_end timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row memberships;
BEGIN
  IF p_status IN ('canceled', 'unpaid', 'incomplete_expired') THEN
    RETURN oros_end_membership(p_subscription);
  END IF;
  SELECT * INTO v_row FROM memberships WHERE billing_provider_id = p_subscription FOR UPDATE;
  IF NOT FOUND THEN
    RETURN 'no_membership';
  END IF;
  IF v_row.status IN ('canceled', 'expired') THEN
    RETURN 'already_ended';
  END IF;
  UPDATE memberships
     SET cancel_at_period_end = coalesce(p_cancel_at_period_end, cancel_at_period_end),
         current_period_end = coalesce(p_period_end, current_period_end),
         ends_at = CASE WHEN coalesce(p_cancel_at_period_end, cancel_at_period_end)
                        THEN coalesce(p_period_end, current_period_end) END
   WHERE id = v_row.id;
  RETURN 'updated';
END;
$$;

-- invoice.payment_failed: Stripe retries a renewal for a while (the membership
-- stays active meanwhile); the subscription's end, if it comes, ends it.
CREATE FUNCTION oros_membership_payment_failed(p_subscription text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_count integer;
BEGIN
  UPDATE memberships SET last_payment_failed_at = now()
   WHERE billing_provider_id = p_subscription AND status IN ('pending', 'active');
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$$;

-- invoice.paid of a membership (p_event already claimed by the caller's
-- transaction): book the invoice once, for the tier's price p_price in usd;
-- the first one activates the membership and opens its fee span (p_fee_cap,
-- NULL for tiers without one). A paid invoice of an ended membership is
-- booked (the money arrived) but revives nothing.
CREATE FUNCTION oros_membership_paid(p_event text, p_subscription text, p_invoice text, p_payment_intent text,
                                     p_amount numeric, p_currency text, p_price numeric, p_fee_cap numeric,
                                     p_period_end timestamptz)
RETURNS TABLE (outcome text, membership_id uuid, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row memberships;
  v_transfer uuid := gen_random_uuid();
BEGIN
  SELECT * INTO v_row FROM memberships m WHERE m.billing_provider_id = p_subscription FOR UPDATE;
  IF NOT FOUND THEN
    outcome := 'no_membership';
  ELSIF EXISTS (SELECT 1 FROM membership_invoices i WHERE i.id = p_invoice) THEN
    outcome := 'ignored';
    reason := format('invoice %s is already booked', p_invoice);
  ELSIF p_amount IS DISTINCT FROM p_price OR p_currency IS DISTINCT FROM 'usd' THEN
    outcome := 'refused';
    reason := format('invoice %s of subscription %s paid %s %s but %s costs %s usd; nothing booked or activated',
                     p_invoice, p_subscription, coalesce(p_amount::text, 'no amount'),
                     coalesce(p_currency, 'no currency'), v_row.membership_type, p_price);
    UPDATE memberships m SET refusal_reason = reason WHERE m.id = v_row.id;
  ELSE
    INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                description, metadata)
    VALUES
      (oros_platform_wallet('clearing'), v_transfer, 'membership', v_row.id, p_amount, 'debit', 'settled',
       'membership payment received', jsonb_build_object('invoice', p_invoice)),
      (oros_platform_wallet('fees'), v_transfer, 'membership', v_row.id, p_amount, 'credit', 'settled',
       'membership revenue', jsonb_build_object('invoice', p_invoice));
    INSERT INTO membership_invoices (id, membership_id, stripe_payment_intent_id, amount, currency, transfer_id,
                                     period_end)
    VALUES (p_invoice, v_row.id, p_payment_intent, p_amount, p_currency, v_transfer, p_period_end);
    IF v_row.status = 'pending' THEN
      UPDATE memberships m SET status = 'active', started_at = now() WHERE m.id = v_row.id;
      IF p_fee_cap IS NOT NULL THEN
        INSERT INTO fee_history (user_id, membership_id, fee_pct) VALUES (v_row.user_id, v_row.id, p_fee_cap);
      END IF;
      outcome := 'activated';
    ELSIF v_row.status = 'active' THEN
      outcome := 'renewed';
    ELSE
      outcome := 'booked';
      reason := format('membership %s is %s: the payment is booked, nothing is revived', v_row.id, v_row.status);
    END IF;
    UPDATE memberships m SET current_period_end = greatest(m.current_period_end, p_period_end)
     WHERE m.id = v_row.id;
    IF p_payment_intent IS NOT NULL THEN
      PERFORM oros_apply_takeback(p_payment_intent);
    END IF;
  END IF;
  membership_id := v_row.id;
  IF outcome NOT IN ('activated', 'renewed', 'no_membership') THEN
    UPDATE stripe_events e SET ignored_reason = coalesce(reason, outcome) WHERE e.id = p_event;
  END IF;
  RETURN NEXT;
END;
$$;

GRANT EXECUTE ON FUNCTION oros_open_membership(uuid, text, text),
  oros_request_membership_cancel(uuid, timestamptz) TO oros_app;
GRANT EXECUTE ON FUNCTION oros_membership_paid(text, text, text, text, numeric, text, numeric, numeric,
  timestamptz), oros_membership_changed(text, text, boolean, timestamptz), oros_end_membership(text),
  oros_membership_payment_failed(text) TO oros_api;
