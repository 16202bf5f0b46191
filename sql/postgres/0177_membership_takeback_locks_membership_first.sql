-- Why: 0173's takeback of a membership invoice moved clearing and fees (the
-- ledger trigger locks those wallets) and only then updated the membership
-- and its fee span, while oros_membership_paid locks the membership row first
-- and then the same wallets. A renewal racing a dispute or refund of an older
-- invoice of the same membership deadlocked (40P01, a 500 to Stripe). The
-- project's order (README, 0161): a writer locks its own rows first, then the
-- wallets. So the takeback locks the membership row before anything else it
-- writes; the renewal then waits on that row, holding no wallet.

-- 0173's, locking the membership first.
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
