-- Why: a payment_intent.succeeded whose funding would overflow its campaign's
-- budget (NUMERIC(12,2)) raised inside oros_fund_campaign, so the webhook
-- answered 500 and Stripe retried it for days, each time failing again. The
-- money is at Stripe either way: the funding is now refused for good with its
-- reason (status 'refused', refusal_reason, stripe_events.ignored_reason) for
-- finance to refund or book, as a mismatched amount already is (0029), and
-- Stripe gets a 2xx. And a refund or dispute that reached us before the
-- payment did (0080) is applied as soon as the funding is credited.
CREATE OR REPLACE FUNCTION oros_credit_payment_intent(
  p_event text, p_payment_intent text, p_amount numeric, p_currency text
) RETURNS TABLE (outcome text, funding_id uuid, campaign_id uuid, amount numeric, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row campaign_fundings;
  v_campaign campaigns;
BEGIN
  SELECT * INTO v_row FROM campaign_fundings f
   WHERE f.stripe_payment_intent_id = p_payment_intent AND f.method = 'stripe'
   FOR UPDATE;
  SELECT * INTO v_campaign FROM campaigns c WHERE c.id = v_row.campaign_id;
  IF v_row.id IS NULL THEN
    outcome := 'ignored';
    reason := format('no funding row for PaymentIntent %s: POST /v1/campaigns/{id}/fund did not create it',
                     p_payment_intent);
  ELSIF v_row.status = 'succeeded' THEN
    outcome := 'ignored';
    reason := format('funding %s is already credited', v_row.id);
  ELSIF v_row.status = 'refused' THEN
    outcome := 'refused';
    reason := v_row.refusal_reason;
  ELSIF p_amount IS DISTINCT FROM v_row.amount OR p_currency IS DISTINCT FROM v_row.currency THEN
    outcome := 'refused';
    reason := format('PaymentIntent %s received %s %s but funding %s asked for %s %s; nothing credited',
                     p_payment_intent, coalesce(p_amount::text, 'no amount'), coalesce(p_currency, 'no currency'),
                     v_row.id, v_row.amount, v_row.currency);
    UPDATE campaign_fundings f SET status = 'refused', refusal_reason = reason WHERE f.id = v_row.id;
  ELSIF v_campaign.funded_budget + v_row.amount > 9999999999.99 THEN
    outcome := 'refused';
    reason := format('PaymentIntent %s paid %s %s but campaign %s (funded %s) cannot hold it: its budget would '
                     'overflow; nothing credited', p_payment_intent, v_row.amount, v_row.currency, v_campaign.id,
                     v_campaign.funded_budget);
    UPDATE campaign_fundings f SET status = 'refused', refusal_reason = reason WHERE f.id = v_row.id;
  ELSE
    PERFORM oros_fund_campaign(v_row.campaign_id, v_row.amount, 'stripe', p_payment_intent, NULL, p_payment_intent);
    PERFORM oros_apply_takeback(p_payment_intent);
    outcome := 'credited';
  END IF;
  IF outcome <> 'credited' THEN
    UPDATE stripe_events e SET ignored_reason = reason WHERE e.id = p_event;
  END IF;
  funding_id := v_row.id;
  campaign_id := v_row.campaign_id;
  amount := v_row.amount;
  RETURN NEXT;
END;
$$;
