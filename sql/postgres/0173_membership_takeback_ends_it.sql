-- Why: a refunded or disputed membership invoice gave its revenue back
-- (0080) and nothing else: the membership stayed active and its fee span
-- open, so a creator who paid creator_pro and disputed the charge kept the 5%
-- fee, and a supporter_plus refunded in full kept unlocking posts. Now, when
-- the membership's current invoice (its latest) is taken back in full, or a
-- dispute of any of its invoices withdraws the funds (a chargeback: the
-- holder says it never agreed to pay), the membership ends at once: status
-- 'canceled', ends_at = now(), its fee span closed now (events from then on
-- pay the base fee; never backdated, as every span). The outcome says
-- 'membership_ended', and the webhook cancels the Stripe subscription after
-- its transaction commits, so nothing is billed again. A partial refund of
-- the current invoice, or a full one of an older invoice, leaves it running
-- (the period now paid was paid). A dispute won later gives the paid period
-- back (0179).
-- The takeback locks the membership row first. It moved clearing and fees (the
-- ledger trigger locks those wallets) and only then updated the membership
-- and its fee span, while oros_membership_paid locks the membership row first
-- and then the same wallets. A renewal racing a dispute or refund of an older
-- invoice of the same membership would deadlock (40P01, a 500 to Stripe). The
-- project's order (README, 0161): a writer locks its own rows first, then the
-- wallets. So the takeback locks the membership row before anything else it
-- writes; the renewal then waits on that row, holding no wallet.

-- The webhook (oros_api) reads the subscription of a membership it ended.
GRANT SELECT (id) ON memberships TO oros_api;

-- End p_invoice's membership if what was taken back of it leaves the
-- membership unpaid: its current invoice taken back whole, or a dispute of
-- this invoice with its funds withdrawn. True when it ended it now.
CREATE FUNCTION oros_end_unpaid_membership(p_invoice membership_invoices) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  v_current boolean;
BEGIN
  v_current := NOT EXISTS (SELECT 1 FROM membership_invoices i
                            WHERE i.membership_id = p_invoice.membership_id
                              AND (i.paid_at, i.id) > (p_invoice.paid_at, p_invoice.id));
  IF NOT ((v_current AND p_invoice.reversed_amount >= p_invoice.amount)
          OR EXISTS (SELECT 1 FROM stripe_disputes d
                      WHERE d.payment_intent_id = p_invoice.stripe_payment_intent_id
                        AND d.funds_withdrawn AND NOT d.funds_reinstated)) THEN
    RETURN false;
  END IF;
  UPDATE memberships m SET status = 'canceled', ends_at = now()
   WHERE m.id = p_invoice.membership_id AND m.status IN ('pending', 'active');
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  UPDATE fee_history f SET effective_until = now()
   WHERE f.membership_id = p_invoice.membership_id AND f.effective_until IS NULL;
  RETURN true;
END;
$$;

-- 0080's, ending the membership its takeback leaves unpaid, the membership locked first.
CREATE OR REPLACE FUNCTION oros_take_back_membership_invoice(p_invoice text, p_target numeric)
RETURNS TABLE (outcome text, taken numeric)
LANGUAGE plpgsql AS $$
DECLARE
  v_invoice membership_invoices;
  v_target numeric;
  v_delta numeric;
BEGIN
  -- The membership's row before the wallets, as oros_membership_paid takes them.
  PERFORM 1 FROM memberships m
   WHERE m.id = (SELECT i.membership_id FROM membership_invoices i WHERE i.id = p_invoice)
     FOR UPDATE;
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
                  'membership revenue')) AS l (wallet_id, direction, description),
         (SELECT gen_random_uuid() AS id) AS t
   WHERE v_delta <> 0;
  UPDATE membership_invoices i SET reversed_amount = v_target WHERE i.id = p_invoice;
  v_invoice.reversed_amount := v_target;
  IF v_delta > 0 AND oros_end_unpaid_membership(v_invoice) THEN
    outcome := 'membership_ended';
  END IF;
  RETURN NEXT;
END;
$$;
