-- Why: money Stripe takes back from us -- a refund (charge.refunded) or a
-- dispute (charge.dispute.*) -- left the books untouched: a disputed card
-- funding was ignored while its campaign kept spending, and nothing reversed a
-- tip. Stripe's side is now recorded per PaymentIntent, and the object it paid
-- (a tip, a card funding, a membership invoice) is brought to match it:
--   taken back = least(amount, refunded so far + disputes whose funds Stripe
--                withdrew and has not reinstated)
-- Recording is monotonic (the refunded total only grows, a dispute's
-- withdrawn/reinstated flags only turn on), so replays and out-of-order
-- delivery converge on the same books; a refund or dispute that arrives before
-- its payment is applied when the payment is credited (0079, 0081).
--  * A tip inside its hold: its transfer is reversed and what it still pays is
--    booked anew with the same hold. After the hold (the creator's money was
--    released and may be spent): clearing pays the amount back, the fee wallet
--    its part, and the creator's part becomes a receivable (0075), swept at
--    once from what the creator has available. The creator's part of a take
--    back is round_half_up(net x taken / amount), the fee's the rest: a
--    partial refund always takes net, and the fee never moves alone.
--  * A card funding: its campaign's unspent escrow pays back first (budget and
--    funded_budget fall together, so funded - remaining = paid holds), the
--    rest becomes the business's receivable. While a dispute is open the
--    campaign is paused and cannot be activated; no campaign of a business
--    that owes the platform can be activated (trigger below).
--  * A membership invoice: the revenue is given back (fees -> clearing).
-- Funds reinstated (a dispute won) book the same way in reverse; the
-- creator's or business's receivable is repaid first.

CREATE TABLE stripe_refunds (
  payment_intent_id VARCHAR(100) PRIMARY KEY,
  charge_id VARCHAR(100),
  refunded_amount DECIMAL(12,2) NOT NULL CHECK (refunded_amount >= 0),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE stripe_disputes (
  id VARCHAR(100) PRIMARY KEY,
  payment_intent_id VARCHAR(100) NOT NULL,
  charge_id VARCHAR(100),
  amount DECIMAL(12,2) NOT NULL CHECK (amount >= 0),
  status VARCHAR(40) NOT NULL,
  funds_withdrawn BOOLEAN NOT NULL DEFAULT false,
  funds_reinstated BOOLEAN NOT NULL DEFAULT false,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_stripe_disputes_payment ON stripe_disputes(payment_intent_id);

ALTER TABLE campaign_fundings ADD COLUMN reversed_amount DECIMAL(12,2) NOT NULL DEFAULT 0,
  ADD CONSTRAINT funding_reversal_bounded CHECK (reversed_amount >= 0 AND reversed_amount <= amount);

ALTER TABLE stripe_refunds ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_disputes ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON stripe_refunds, stripe_disputes TO oros_app;
CREATE POLICY "admin_read" ON stripe_refunds FOR SELECT TO oros_app USING (auth.is_admin());
CREATE POLICY "admin_read" ON stripe_disputes FOR SELECT TO oros_app USING (auth.is_admin());

-- Stripe's final dispute statuses; any other is still open.
CREATE FUNCTION oros_dispute_open(p_status text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT p_status NOT IN ('won', 'lost', 'warning_closed', 'prevented')
$$;

-- What Stripe has taken back of a payment, and whether a dispute of it is open.
CREATE FUNCTION oros_stripe_taken_back(p_payment_intent text, OUT taken numeric, OUT disputed boolean)
LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT refunded_amount FROM stripe_refunds WHERE payment_intent_id = p_payment_intent), 0)
         + coalesce((SELECT sum(amount) FROM stripe_disputes
                      WHERE payment_intent_id = p_payment_intent AND funds_withdrawn AND NOT funds_reinstated), 0),
         EXISTS (SELECT 1 FROM stripe_disputes WHERE payment_intent_id = p_payment_intent AND funds_withdrawn
                    AND NOT funds_reinstated AND oros_dispute_open(status))
$$;

-- Bring a tip to p_target taken back in all.
CREATE FUNCTION oros_take_back_tip(p_tip uuid, p_target numeric) RETURNS TABLE (outcome text, taken numeric)
LANGUAGE plpgsql AS $$
DECLARE
  v_tip tips;
  v_target numeric;
  v_net_back numeric;
  v_fee_back numeric;
  v_held boolean;
  v_live boolean;
  v_transfer uuid := gen_random_uuid();
  v_delta numeric;
  v_fee_delta numeric;
BEGIN
  SELECT * INTO v_tip FROM tips t WHERE t.id = p_tip FOR UPDATE;
  v_target := least(v_tip.amount, greatest(p_target, 0));
  taken := v_target;
  IF v_target = v_tip.reversed_amount THEN
    outcome := 'unchanged';
    RETURN NEXT;
    RETURN;
  END IF;
  v_net_back := least(v_tip.net_amount, round(v_tip.net_amount * v_target / v_tip.amount, 2));
  v_fee_back := v_target - v_net_back;
  PERFORM oros_lock_receivables(ARRAY[v_tip.to_creator_id]);
  -- Locking the held legs makes a concurrent hold release wait: "still held" stays true until we are done.
  SELECT bool_or(l.status = 'pending') INTO v_held
    FROM (SELECT e.status FROM ledger_entries e WHERE e.transfer_id = v_tip.transfer_id AND e.hold_until IS NOT NULL
           ORDER BY e.id FOR UPDATE) l;
  v_live := EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transfer_id = v_tip.transfer_id
                                                     AND e.status IN ('pending', 'settled'));
  IF coalesce(v_held, false) OR (NOT v_live AND now() < v_tip.hold_until) THEN
    -- Inside the hold: the paying transfer goes; what the tip still pays is booked anew, same hold.
    UPDATE ledger_entries e SET status = 'reversed'
     WHERE e.transfer_id = v_tip.transfer_id AND e.status IN ('pending', 'settled');
    INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                hold_until, description, metadata)
    SELECT l.wallet_id, v_transfer, 'tip', v_tip.id, l.amount, l.direction, l.status, l.hold_until, l.description,
           jsonb_build_object('rebooked_from', v_tip.transfer_id, 'taken_back', v_target)
      FROM (SELECT oros_platform_wallet('clearing') AS wallet_id, v_tip.amount - v_target AS amount,
                   'debit' AS direction, 'settled' AS status, NULL::timestamptz AS hold_until,
                   'tip received, less what was taken back' AS description
            UNION ALL
            SELECT oros_platform_wallet('fees'), v_tip.platform_fee - v_fee_back, 'credit', 'pending',
                   v_tip.hold_until, 'platform fee on a tip'
            UNION ALL
            SELECT c.wallet_id, c.amount, 'credit', c.status, c.hold_until,
                   CASE WHEN c.repays THEN 'tip repaying what the creator owes' ELSE 'tip' END
              FROM oros_credit_legs(ARRAY[v_tip.to_creator_id], ARRAY[v_tip.net_amount - v_net_back], 'pending',
                                    v_tip.hold_until) c) l
     WHERE l.amount > 0;
    IF v_target < v_tip.amount THEN
      UPDATE tips t SET transfer_id = v_transfer WHERE t.id = p_tip;
    END IF;
    outcome := 'reversed_in_hold';
  ELSE
    v_delta := v_target - v_tip.reversed_amount;
    v_fee_delta := v_fee_back - v_tip.reversed_fee;
    IF v_delta > 0 THEN
      -- Released already: the creator's part is owed (then swept from its available balance).
      INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                  description, metadata)
      SELECT l.wallet_id, v_transfer, 'refund', v_tip.id, l.amount, l.direction, 'settled', l.description,
             jsonb_build_object('tip', v_tip.id, 'taken_back', v_target)
        FROM (VALUES (oros_platform_wallet('clearing'), v_delta, 'credit', 'tip paid back to the payer'),
                     (oros_platform_wallet('fees'), v_fee_delta, 'debit', 'platform fee of a tip given back'),
                     (oros_receivable_wallet(v_tip.to_creator_id), v_delta - v_fee_delta, 'debit',
                      'tip taken back after its hold: owed by the creator'))
             AS l(wallet_id, amount, direction, description)
       WHERE l.amount > 0;
      outcome := 'receivable';
    ELSE
      -- Funds reinstated after the hold: paid out at once, repaying what the creator owes first.
      INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                  hold_until, description, metadata)
      SELECT l.wallet_id, v_transfer, 'tip', v_tip.id, l.amount, l.direction, l.status, l.hold_until, l.description,
             jsonb_build_object('tip', v_tip.id, 'taken_back', v_target)
        FROM (SELECT oros_platform_wallet('clearing') AS wallet_id, -v_delta AS amount, 'debit' AS direction,
                     'settled' AS status, NULL::timestamptz AS hold_until, 'tip funds reinstated' AS description
              UNION ALL
              SELECT oros_platform_wallet('fees'), -v_fee_delta, 'credit', 'settled', NULL, 'platform fee on a tip'
              UNION ALL
              SELECT c.wallet_id, c.amount, 'credit', c.status, c.hold_until,
                     CASE WHEN c.repays THEN 'tip repaying what the creator owes' ELSE 'tip' END
                FROM oros_credit_legs(ARRAY[v_tip.to_creator_id], ARRAY[v_fee_delta - v_delta], 'settled', NULL) c) l
       WHERE l.amount > 0;
      outcome := 'reinstated';
    END IF;
  END IF;
  UPDATE tips t SET reversed_amount = v_target, reversed_fee = v_fee_back WHERE t.id = p_tip;
  PERFORM oros_refresh_tip_unlock(p_tip);
  IF outcome = 'receivable' THEN
    PERFORM oros_sweep_receivables(ARRAY[v_tip.to_creator_id]);
  END IF;
  RETURN NEXT;
END;
$$;

-- Bring a card funding to p_target taken back in all; p_disputed: a dispute of it is open (freeze).
CREATE FUNCTION oros_take_back_funding(p_funding uuid, p_target numeric, p_disputed boolean)
RETURNS TABLE (outcome text, taken numeric)
LANGUAGE plpgsql AS $$
DECLARE
  v_funding campaign_fundings;
  v_campaign campaigns;
  v_target numeric;
  v_delta numeric;
  v_escrow numeric;
  v_repay numeric;
  v_transfer uuid := gen_random_uuid();
BEGIN
  SELECT * INTO v_funding FROM campaign_fundings f WHERE f.id = p_funding FOR UPDATE;
  -- The campaign row first, as settlement locks it: its budget moves with escrow.
  SELECT * INTO v_campaign FROM campaigns c WHERE c.id = v_funding.campaign_id FOR UPDATE;
  IF p_disputed AND v_campaign.status = 'active' THEN
    UPDATE campaigns c SET status = 'paused' WHERE c.id = v_campaign.id;
  END IF;
  v_target := least(v_funding.amount, greatest(p_target, 0));
  v_delta := v_target - v_funding.reversed_amount;
  taken := v_target;
  IF v_delta = 0 THEN
    outcome := 'unchanged';
    RETURN NEXT;
    RETURN;
  END IF;
  PERFORM oros_lock_receivables(ARRAY[v_campaign.business_id]);
  IF v_delta > 0 THEN
    v_escrow := least(v_delta, v_campaign.remaining_budget);
    INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                description, metadata)
    SELECT l.wallet_id, v_transfer, 'refund', v_funding.id, l.amount, l.direction, 'settled', l.description,
           jsonb_build_object('campaign_id', v_campaign.id, 'funding_id', v_funding.id, 'taken_back', v_target)
      FROM (VALUES (oros_platform_wallet('clearing'), v_delta, 'credit', 'card funding paid back to the business'),
                   (oros_platform_wallet('escrow'), v_escrow, 'debit', 'unspent budget recovered'),
                   (oros_receivable_wallet(v_campaign.business_id), v_delta - v_escrow, 'debit',
                    'spent budget taken back by the card issuer: owed by the business'))
           AS l(wallet_id, amount, direction, description)
     WHERE l.amount > 0;
    UPDATE campaigns c SET remaining_budget = remaining_budget - v_escrow, funded_budget = funded_budget - v_escrow
     WHERE c.id = v_campaign.id;
    outcome := CASE WHEN v_escrow = v_delta THEN 'recovered_from_escrow' ELSE 'receivable' END;
  ELSE
    SELECT coalesce(sum(r.repay), 0) INTO v_repay
      FROM oros_receivable_repayments(ARRAY[v_campaign.business_id], ARRAY[-v_delta]) r;
    INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                description, metadata)
    SELECT l.wallet_id, v_transfer, 'refund', v_funding.id, l.amount, l.direction, 'settled', l.description,
           jsonb_build_object('campaign_id', v_campaign.id, 'funding_id', v_funding.id, 'taken_back', v_target)
      FROM (VALUES (oros_platform_wallet('clearing'), -v_delta, 'debit', 'card funding reinstated'),
                   (oros_receivable_wallet(v_campaign.business_id), v_repay, 'credit', 'repays what the business owes'),
                   (oros_platform_wallet('escrow'), -v_delta - v_repay, 'credit', 'reinstated budget into escrow'))
           AS l(wallet_id, amount, direction, description)
     WHERE l.amount > 0;
    UPDATE campaigns c
       SET remaining_budget = remaining_budget - v_delta - v_repay,
           funded_budget = funded_budget - v_delta - v_repay,
           total_budget = greatest(total_budget, funded_budget - v_delta - v_repay)
     WHERE c.id = v_campaign.id;
    outcome := 'reinstated';
  END IF;
  UPDATE campaign_fundings f SET reversed_amount = v_target WHERE f.id = p_funding;
  PERFORM oros_sweep_receivables(ARRAY[v_campaign.business_id]);
  RETURN NEXT;
END;
$$;

-- Bring a membership invoice to p_target taken back in all: revenue given back (or regained).
CREATE FUNCTION oros_take_back_membership_invoice(p_invoice text, p_target numeric)
RETURNS TABLE (outcome text, taken numeric)
LANGUAGE plpgsql AS $$
DECLARE
  v_invoice membership_invoices;
  v_target numeric;
  v_delta numeric;
BEGIN
  SELECT * INTO v_invoice FROM membership_invoices i WHERE i.id = p_invoice FOR UPDATE;
  v_target := least(v_invoice.amount, greatest(p_target, 0));
  v_delta := v_target - v_invoice.reversed_amount;
  taken := v_target;
  outcome := CASE WHEN v_delta > 0 THEN 'revenue_given_back' WHEN v_delta < 0 THEN 'reinstated' ELSE 'unchanged' END;
  INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                              description, metadata)
  SELECT l.wallet_id, t.id, 'refund', v_invoice.membership_id, abs(v_delta), l.direction, 'settled', l.description,
         jsonb_build_object('invoice', v_invoice.id, 'taken_back', v_target)
    FROM (VALUES (oros_platform_wallet('clearing'), CASE WHEN v_delta > 0 THEN 'credit' ELSE 'debit' END,
                  'membership payment taken back or reinstated'),
                 (oros_platform_wallet('fees'), CASE WHEN v_delta > 0 THEN 'debit' ELSE 'credit' END,
                  'membership revenue')) AS l(wallet_id, direction, description),
         (SELECT gen_random_uuid() AS id) t
   WHERE v_delta <> 0;
  UPDATE membership_invoices i SET reversed_amount = v_target WHERE i.id = p_invoice;
  RETURN NEXT;
END;
$$;

-- Bring whatever p_payment_intent paid to what Stripe has taken back of it.
-- kind 'unmatched': not (yet) a payment of ours; applied when it is credited.
CREATE FUNCTION oros_apply_takeback(p_payment_intent text)
RETURNS TABLE (kind text, object_id uuid, outcome text, taken numeric)
LANGUAGE plpgsql AS $$
DECLARE
  v_state record;
  v_id uuid;
  v_invoice text;
BEGIN
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
  SELECT i.id, i.membership_id INTO v_invoice, v_id FROM membership_invoices i
   WHERE i.stripe_payment_intent_id = p_payment_intent;
  IF FOUND THEN
    RETURN QUERY SELECT 'membership'::text, v_id, r.outcome, r.taken
                   FROM oros_take_back_membership_invoice(v_invoice, v_state.taken) r;
    RETURN;
  END IF;
  RETURN QUERY SELECT 'unmatched'::text, NULL::uuid, 'recorded'::text, v_state.taken;
END;
$$;

-- charge.refunded: p_refunded is the charge's amount_refunded (a total; an older, smaller one changes nothing).
CREATE FUNCTION oros_record_refund(p_payment_intent text, p_charge text, p_refunded numeric)
RETURNS TABLE (kind text, object_id uuid, outcome text, taken numeric)
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
  RETURN QUERY SELECT * FROM oros_apply_takeback(p_payment_intent);
END;
$$;

-- charge.dispute.*: the flags only turn on, and a final status stays final.
CREATE FUNCTION oros_record_dispute(p_dispute text, p_payment_intent text, p_charge text, p_amount numeric,
                                    p_status text, p_withdrawn boolean, p_reinstated boolean)
RETURNS TABLE (kind text, object_id uuid, outcome text, taken numeric)
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
  RETURN QUERY SELECT * FROM oros_apply_takeback(p_payment_intent);
END;
$$;

-- Why a campaign may not become active now, or NULL: a disputed card funding
-- (frozen until the dispute closes) or a business that owes the platform.
CREATE FUNCTION oros_activation_blocker(p_campaign uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT CASE
    WHEN EXISTS (SELECT 1 FROM campaign_fundings f JOIN stripe_disputes d ON d.payment_intent_id = f.stripe_payment_intent_id
                  WHERE f.campaign_id = p_campaign AND d.funds_withdrawn AND NOT d.funds_reinstated
                    AND oros_dispute_open(d.status))
      THEN 'campaign_frozen'
    WHEN EXISTS (SELECT 1 FROM campaigns c JOIN wallets w ON w.user_id = c.business_id AND w.purpose = 'receivable'
                  WHERE c.id = p_campaign AND w.available_balance > 0)
      THEN 'business_owes'
  END
$$;

CREATE FUNCTION campaigns_refuse_blocked_activation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_blocker text := oros_activation_blocker(NEW.id);
BEGIN
  IF v_blocker IS NOT NULL THEN
    RAISE EXCEPTION 'campaign % cannot be activated: %', NEW.id, v_blocker
      USING ERRCODE = 'check_violation', COLUMN = 'status';
  END IF;
  RETURN NEW;
END;
$$;
CREATE TRIGGER campaigns_refuse_blocked_activation BEFORE UPDATE OF status ON campaigns
  FOR EACH ROW WHEN (NEW.status = 'active' AND OLD.status IS DISTINCT FROM 'active')
  EXECUTE FUNCTION campaigns_refuse_blocked_activation();

GRANT EXECUTE ON FUNCTION oros_record_refund(text, text, numeric),
  oros_record_dispute(text, text, text, numeric, text, boolean, boolean) TO oros_api;
GRANT EXECUTE ON FUNCTION oros_activation_blocker(uuid) TO oros_app;
