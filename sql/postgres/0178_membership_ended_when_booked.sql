-- Why: a refund or dispute arriving before its membership invoice's
-- invoice.paid is recorded, and applied when the invoice is booked
-- (oros_apply_takeback): 0173 then ended the membership, but
-- oros_membership_paid discarded that outcome, so the webhook never canceled
-- the Stripe subscription and every later invoice was booked as revenue for a
-- membership that gives nothing. The booking now answers 'membership_ended'
-- (its reason naming the invoice) and the webhook cancels the subscription
-- after its transaction commits, as the regular takeback path does.

-- 0078's, answering the takeback that ended the membership as it was booked.
CREATE OR REPLACE FUNCTION oros_membership_paid(p_event text, p_subscription text, p_invoice text,
                                                p_payment_intent text, p_amount numeric, p_currency text,
                                                p_price numeric, p_fee_cap numeric, p_period_end timestamptz)
RETURNS TABLE (outcome text, membership_id uuid, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row memberships;
  v_transfer uuid := gen_random_uuid();
  v_taken text;
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
      SELECT r.outcome INTO v_taken FROM oros_apply_takeback(p_payment_intent) r;
      -- Taken back before it was booked (0173): ended now; the caller cancels its subscription after the commit.
      IF v_taken = 'membership_ended' THEN
        outcome := 'membership_ended';
        reason := format('invoice %s was taken back before it was booked: membership %s ended', p_invoice, v_row.id);
      END IF;
    END IF;
  END IF;
  membership_id := v_row.id;
  IF outcome NOT IN ('activated', 'renewed', 'membership_ended', 'no_membership') THEN
    UPDATE stripe_events e SET ignored_reason = coalesce(reason, outcome) WHERE e.id = p_event;
  END IF;
  RETURN NEXT;
END;
$$;
