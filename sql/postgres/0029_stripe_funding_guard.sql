-- Why: payment_intent.succeeded credited whatever campaign the intent's metadata
-- named, for whatever amount it carried (5,000,000.00 reached an unfunded
-- campaign). Now only a PaymentIntent that POST /v1/campaigns/{id}/fund recorded
-- in campaign_fundings is credited, for that row's campaign, amount and currency.
-- A mismatch is refused for good and says why on the row (status 'refused',
-- refusal_reason), for finance to resolve: refund it in Stripe, or book what
-- arrived as an off-Stripe funding. Every payment_intent.succeeded that credits
-- nothing keeps its reason in stripe_events.ignored_reason.

-- All money is USD (wallets.currency), so every existing row asked for usd.
ALTER TABLE campaign_fundings ADD COLUMN currency VARCHAR(3) NOT NULL DEFAULT 'usd';
ALTER TABLE campaign_fundings ADD COLUMN refusal_reason TEXT;
ALTER TABLE campaign_fundings DROP CONSTRAINT campaign_fundings_status_check;
ALTER TABLE campaign_fundings ADD CONSTRAINT campaign_fundings_status_check
  CHECK (status IN ('pending', 'succeeded', 'failed', 'refused'));
ALTER TABLE stripe_events ADD COLUMN ignored_reason TEXT;

-- The effect of one payment_intent.succeeded (p_event, already claimed in
-- stripe_events by the caller's transaction). 'failed' rows are still payable:
-- payment_failed ends one attempt, and Stripe.js may retry the same intent.
-- The row is locked first, so two events for one intent credit it once.
CREATE FUNCTION oros_credit_payment_intent(
  p_event text, p_payment_intent text, p_amount numeric, p_currency text
) RETURNS TABLE (outcome text, funding_id uuid, campaign_id uuid, amount numeric, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row campaign_fundings;
BEGIN
  SELECT * INTO v_row FROM campaign_fundings f
   WHERE f.stripe_payment_intent_id = p_payment_intent AND f.method = 'stripe'
   FOR UPDATE;
  IF NOT FOUND THEN
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
  ELSE
    PERFORM oros_fund_campaign(v_row.campaign_id, v_row.amount, 'stripe', p_payment_intent, NULL, p_payment_intent);
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
REVOKE ALL ON FUNCTION oros_credit_payment_intent(text, text, numeric, text) FROM PUBLIC;
-- The admin API's database role applies the webhook (0025); no request role may.
GRANT EXECUTE ON FUNCTION oros_credit_payment_intent(text, text, numeric, text) TO oros_api;
