-- Why: Stripe's refunds and disputes (0080) knew tips, card fundings and
-- membership invoices, and now meet two new things:
--  * A boost's payment taken back (charge.refunded, charge.dispute.*): what
--    the boost still holds in the escrow pool (0101) comes back out of the
--    campaign's budget (remaining and funded fall together); what it already
--    paid for (real clicks, paid to creators) becomes the supporter's
--    receivable (0075), as a business's spent funding does: the supporter's
--    next credits (a reward, a tip, an earning) repay it first and what it has
--    available is swept, never a negative balance. A dispute of a boost does
--    not freeze the campaign (the business did nothing). Funds reinstated (a
--    dispute won) repay that receivable first and the rest goes back into the
--    pool for the boost (a completed campaign's: given back by the next
--    refund-unspent).
--  * A card funding taken back recovered min(taken, remaining_budget) from
--    escrow: with boosts, that could hand supporters' money to the business's
--    card. It now recovers at most what the business itself still holds in the
--    pool; the rest is the business's receivable, as before.
--  * Stripe's refunded total of a payment now includes the refunds OROS
--    issues itself (0103: unspent budget given back, a boost refunded at once).
--    Those are no takeback (they were booked when issued), so the takeback
--    rule subtracts them: taken back = (refunded - issued at Stripe, at least
--    0) + disputes withdrawn and not reinstated.
CREATE OR REPLACE FUNCTION oros_stripe_taken_back(p_payment_intent text, OUT taken numeric, OUT disputed boolean)
LANGUAGE sql STABLE AS $$
  SELECT greatest(coalesce((SELECT refunded_amount FROM stripe_refunds WHERE payment_intent_id = p_payment_intent), 0)
                  - oros_issued_at_stripe(p_payment_intent), 0)
         + coalesce((SELECT sum(amount) FROM stripe_disputes
                      WHERE payment_intent_id = p_payment_intent AND funds_withdrawn AND NOT funds_reinstated), 0),
         EXISTS (SELECT 1 FROM stripe_disputes WHERE payment_intent_id = p_payment_intent AND funds_withdrawn
                    AND NOT funds_reinstated AND oros_dispute_open(status))
$$;

-- Bring a boost to p_target taken back in all.
CREATE FUNCTION oros_take_back_boost(p_boost uuid, p_target numeric) RETURNS TABLE (outcome text, taken numeric)
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_boost boosts;
  v_target numeric;
  v_delta numeric;
  v_value numeric;
  v_escrow numeric;
  v_repay numeric;
  v_back numeric;
  v_price numeric;
  v_epoch integer;
  v_transfer uuid := gen_random_uuid();
BEGIN
  -- The campaign row first, as settlement locks it: its budget moves with escrow.
  PERFORM 1 FROM campaigns c WHERE c.id = (SELECT b.campaign_id FROM boosts b WHERE b.id = p_boost) FOR UPDATE;
  SELECT * INTO v_boost FROM boosts b WHERE b.id = p_boost FOR UPDATE;
  v_target := least(v_boost.amount, greatest(p_target, 0));
  v_delta := v_target - v_boost.taken_back;
  taken := v_target;
  IF v_delta = 0 THEN
    outcome := 'unchanged';
    RETURN NEXT;
    RETURN;
  END IF;
  PERFORM oros_lock_receivables(ARRAY[v_boost.supporter_id]);
  IF v_delta > 0 THEN
    SELECT v.value INTO v_value FROM boost_values v WHERE v.boost_id = p_boost;
    v_escrow := least(v_delta, trunc(v_value, 2));
    INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                description, metadata)
    SELECT l.wallet_id, v_transfer, 'refund', v_boost.id, l.amount, l.direction, 'settled', l.description,
           jsonb_build_object('boost_id', v_boost.id, 'campaign_id', v_boost.campaign_id, 'taken_back', v_target)
      FROM (VALUES (oros_platform_wallet('clearing'), v_delta, 'credit', 'boost paid back to the supporter'),
                   (oros_platform_wallet('escrow'), v_escrow, 'debit', 'unspent boost recovered'),
                   (oros_receivable_wallet(v_boost.supporter_id), v_delta - v_escrow, 'debit',
                    'spent boost taken back by the card issuer: owed by the supporter'))
           AS l(wallet_id, amount, direction, description)
     WHERE l.amount > 0;
    IF v_escrow > 0 THEN
      -- Sold at the price before the sale (the same after it, unless the pool is now empty: price 0).
      SELECT c.pool_price INTO v_price FROM campaigns c WHERE c.id = v_boost.campaign_id;
      UPDATE campaigns c SET remaining_budget = c.remaining_budget - v_escrow, funded_budget = c.funded_budget - v_escrow
       WHERE c.id = v_boost.campaign_id;
      UPDATE boosts b SET pool_units = greatest(0, b.pool_units - oros_pool_div(v_escrow, v_price)) WHERE b.id = p_boost;
    END IF;
    outcome := CASE WHEN v_escrow = v_delta THEN 'recovered_from_escrow' ELSE 'receivable' END;
  ELSE
    SELECT coalesce(sum(r.repay), 0) INTO v_repay
      FROM oros_receivable_repayments(ARRAY[v_boost.supporter_id], ARRAY[-v_delta]) r;
    v_back := -v_delta - v_repay;
    INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                                description, metadata)
    SELECT l.wallet_id, v_transfer, 'refund', v_boost.id, l.amount, l.direction, 'settled', l.description,
           jsonb_build_object('boost_id', v_boost.id, 'campaign_id', v_boost.campaign_id, 'taken_back', v_target)
      FROM (VALUES (oros_platform_wallet('clearing'), -v_delta, 'debit', 'boost funds reinstated'),
                   (oros_receivable_wallet(v_boost.supporter_id), v_repay, 'credit', 'repays what the supporter owes'),
                   (oros_platform_wallet('escrow'), v_back, 'credit', 'reinstated boost back into escrow'))
           AS l(wallet_id, amount, direction, description)
     WHERE l.amount > 0;
    IF v_back > 0 THEN
      UPDATE campaigns c
         SET remaining_budget = c.remaining_budget + v_back, funded_budget = c.funded_budget + v_back,
             total_budget = greatest(c.total_budget, c.funded_budget + v_back)
       WHERE c.id = v_boost.campaign_id
      RETURNING c.pool_price, c.pool_epoch INTO v_price, v_epoch;
      -- Units of an older epoch are worth nothing: the boost holds only what it buys now.
      UPDATE boosts b
         SET pool_units = CASE WHEN b.pool_epoch = v_epoch THEN b.pool_units ELSE 0 END + oros_pool_div(v_back, v_price),
             pool_epoch = v_epoch
       WHERE b.id = p_boost;
    END IF;
    outcome := 'reinstated';
  END IF;
  UPDATE boosts b SET taken_back = v_target WHERE b.id = p_boost;
  PERFORM oros_sweep_receivables(ARRAY[v_boost.supporter_id]);
  RETURN NEXT;
END;
$$;

-- 0080's, but the escrow a funding's takeback recovers is at most what the business holds in the pool.
CREATE OR REPLACE FUNCTION oros_take_back_funding(p_funding uuid, p_target numeric, p_disputed boolean)
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
    v_escrow := least(v_delta, oros_business_unspent(v_campaign.id));
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

-- 0080's, knowing boosts too (a boost intent not credited is recorded, and is no checkout sale).
CREATE OR REPLACE FUNCTION oros_apply_takeback(p_payment_intent text)
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
  RETURN QUERY SELECT 'unmatched'::text, NULL::uuid, 'recorded'::text, v_state.taken;
END;
$$;
