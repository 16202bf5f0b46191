-- Why: the platform's own wallets, and every money movement that starts outside
-- the settler as one SQL function, so its rules live beside the data.
-- The system user (fixed id) owns escrow and fees (credit-normal) and the
-- Stripe clearing wallet (debit-normal: the cash we hold).
INSERT INTO users (id, email, username, display_name, is_system, kyc_status)
VALUES ('00000000-0000-0000-0000-000000000001', 'system@oros.invalid', 'oros-system',
        'OROS platform', TRUE, 'approved');

INSERT INTO wallets (user_id, purpose, normal_balance) VALUES
  ('00000000-0000-0000-0000-000000000001', 'escrow', 'credit'),
  ('00000000-0000-0000-0000-000000000001', 'fees', 'credit'),
  ('00000000-0000-0000-0000-000000000001', 'clearing', 'debit');

CREATE OR REPLACE FUNCTION oros_platform_wallet(p_purpose text) RETURNS uuid
LANGUAGE sql STABLE AS $$
  SELECT id FROM wallets
   WHERE user_id = '00000000-0000-0000-0000-000000000001' AND purpose = p_purpose
$$;

-- Money arrives for a campaign: debit clearing (cash in), credit escrow, and
-- raise the campaign's funded and remaining budget. Idempotent per Stripe
-- PaymentIntent: a second call for the same intent changes nothing.
CREATE OR REPLACE FUNCTION oros_fund_campaign(
  p_campaign uuid, p_amount numeric, p_method text, p_reference text,
  p_created_by uuid, p_payment_intent text DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_funding uuid;
  v_transfer uuid := gen_random_uuid();
BEGIN
  IF p_amount IS NULL OR p_amount <= 0 THEN
    RAISE EXCEPTION 'funding amount must be positive, got %', p_amount USING ERRCODE = 'check_violation';
  END IF;
  PERFORM 1 FROM campaigns WHERE id = p_campaign FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'campaign % does not exist', p_campaign USING ERRCODE = 'no_data_found';
  END IF;
  IF p_payment_intent IS NOT NULL THEN
    SELECT id INTO v_funding FROM campaign_fundings
     WHERE stripe_payment_intent_id = p_payment_intent AND status = 'succeeded';
    IF FOUND THEN
      RETURN v_funding;
    END IF;
  END IF;
  INSERT INTO campaign_fundings (campaign_id, amount, method, reference, stripe_payment_intent_id,
                                 status, transfer_id, created_by, succeeded_at)
  VALUES (p_campaign, p_amount, p_method, p_reference, p_payment_intent,
          'succeeded', v_transfer, p_created_by, now())
  ON CONFLICT (stripe_payment_intent_id) DO UPDATE
    SET status = 'succeeded', transfer_id = EXCLUDED.transfer_id, succeeded_at = now(),
        amount = EXCLUDED.amount
  RETURNING id INTO v_funding;
  INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status, description, metadata)
  VALUES
    (oros_platform_wallet('clearing'), v_transfer, 'escrow', p_campaign, p_amount, 'debit', 'settled',
     'funds received for campaign', jsonb_build_object('funding_id', v_funding, 'reference', p_reference)),
    (oros_platform_wallet('escrow'), v_transfer, 'escrow', p_campaign, p_amount, 'credit', 'settled',
     'campaign budget into escrow', jsonb_build_object('funding_id', v_funding, 'reference', p_reference));
  UPDATE campaigns
     SET funded_budget = funded_budget + p_amount,
         remaining_budget = remaining_budget + p_amount,
         total_budget = greatest(total_budget, funded_budget + p_amount)
   WHERE id = p_campaign;
  RETURN v_funding;
END;
$$;

-- A creator asks to withdraw: the amount is reserved at once (a pending debit
-- lowers available_balance; positive_available refuses an overdraft), so the
-- same money can never be requested twice. Runs as the caller (auth.uid()).
CREATE OR REPLACE FUNCTION oros_request_withdrawal(p_amount numeric, p_method text)
RETURNS withdrawals
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_wallet uuid;
  v_transfer uuid := gen_random_uuid();
  v_row withdrawals;
BEGIN
  SELECT id INTO v_wallet FROM wallets WHERE user_id = auth.uid() AND purpose = 'main';
  IF v_wallet IS NULL THEN
    RAISE EXCEPTION 'no wallet for the caller' USING ERRCODE = 'insufficient_privilege';
  END IF;
  INSERT INTO withdrawals (wallet_id, amount, method, transfer_id)
  VALUES (v_wallet, p_amount, p_method, v_transfer) RETURNING * INTO v_row;
  INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status, description)
  VALUES
    (v_wallet, v_transfer, 'withdrawal', v_row.id, p_amount, 'debit', 'pending', 'withdrawal requested'),
    (oros_platform_wallet('clearing'), v_transfer, 'withdrawal', v_row.id, p_amount, 'credit', 'pending',
     'withdrawal payable');
  RETURN v_row;
END;
$$;
REVOKE ALL ON FUNCTION oros_request_withdrawal(numeric, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oros_request_withdrawal(numeric, text) TO oros_app;

-- The payout job's outcome for one withdrawal: paid settles both legs; failed
-- fails them, which returns the reserved money to the creator.
CREATE OR REPLACE FUNCTION oros_finish_withdrawal(p_withdrawal uuid, p_ok boolean, p_stripe_transfer text,
                                                  p_reason text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_transfer uuid;
BEGIN
  UPDATE withdrawals
     SET status = CASE WHEN p_ok THEN 'completed' ELSE 'failed' END,
         stripe_transfer_id = p_stripe_transfer, failure_reason = p_reason, processed_at = now()
   WHERE id = p_withdrawal AND status IN ('requested', 'processing')
  RETURNING transfer_id INTO v_transfer;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'withdrawal % is not open', p_withdrawal USING ERRCODE = 'no_data_found';
  END IF;
  UPDATE ledger_entries SET status = CASE WHEN p_ok THEN 'settled' ELSE 'failed' END
   WHERE transfer_id = v_transfer AND status = 'pending';
END;
$$;

-- Move every pending credit whose hold has passed to settled.
CREATE OR REPLACE FUNCTION oros_release_holds(p_now timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_count bigint;
BEGIN
  UPDATE ledger_entries SET status = 'settled'
   WHERE status = 'pending' AND hold_until IS NOT NULL AND hold_until <= p_now;
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$$;
