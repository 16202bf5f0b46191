-- Why: a dispute ends a membership at once (0173); when the platform then
-- won it, Stripe reinstated the funds and the books took the revenue back,
-- but the membership stayed canceled: the platform kept the money and the
-- holder lost the period it paid (a won tip dispute restores its unlock).
-- Now a takeback that ends a membership records which invoice did
-- (memberships.ended_by_invoice), and when that invoice is paid again (the
-- dispute won), the membership runs again until the period it paid ends:
-- 'active', cancel_at_period_end, ends_at = current_period_end, and its fee
-- cap again from now until then (a second span: a span is never reopened
-- nor backdated, 0076). Its subscription stays canceled at Stripe (a
-- canceled subscription cannot be revived), so nothing is billed and no
-- Stripe event ends it: a membership whose ends_at has passed is over, and
-- opening a new one of its type ends it ('canceled') first.

ALTER TABLE memberships ADD COLUMN ended_by_invoice text;
-- A restored membership's cap is a second span (from the restore), never the
-- first one reopened: spans are never backdated and closed once (0076).
ALTER TABLE fee_history DROP CONSTRAINT fee_history_membership_id_key;
CREATE INDEX idx_fee_history_membership ON fee_history (membership_id);
COMMENT ON COLUMN memberships.ended_by_invoice IS
  'the membership invoice whose takeback ended it (0173); cleared when that takeback is undone (0179)';

-- 0173's condition, shared by ending and restoring: what was taken back of
-- p_invoice leaves the membership unpaid (its current invoice taken back
-- whole, or a dispute of it with its funds withdrawn and not reinstated).
CREATE FUNCTION oros_membership_invoice_unpaid(p_invoice membership_invoices) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT (NOT EXISTS (SELECT 1 FROM membership_invoices i
                       WHERE i.membership_id = p_invoice.membership_id
                         AND (i.paid_at, i.id) > (p_invoice.paid_at, p_invoice.id))
          AND p_invoice.reversed_amount >= p_invoice.amount)
      OR EXISTS (SELECT 1 FROM stripe_disputes d
                  WHERE d.payment_intent_id = p_invoice.stripe_payment_intent_id
                    AND d.funds_withdrawn AND NOT d.funds_reinstated);
$$;

-- 0173's, naming the invoice that ended it.
CREATE OR REPLACE FUNCTION oros_end_unpaid_membership(p_invoice membership_invoices) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT oros_membership_invoice_unpaid(p_invoice) THEN
    RETURN false;
  END IF;
  UPDATE memberships m SET status = 'canceled', ends_at = now(), ended_by_invoice = p_invoice.id
   WHERE m.id = p_invoice.membership_id AND m.status IN ('pending', 'active');
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  UPDATE fee_history f SET effective_until = now()
   WHERE f.membership_id = p_invoice.membership_id AND f.effective_until IS NULL;
  RETURN true;
END;
$$;

-- Run p_invoice's membership again if its takeback ended it and it is paid
-- again, until the period paid ends. True when it restored it now.
CREATE FUNCTION oros_restore_paid_membership(p_invoice membership_invoices) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  v_until timestamptz;
BEGIN
  -- Every invoice of it, not only the one undone: another refunded whole or disputed meanwhile leaves it unpaid.
  IF EXISTS (SELECT 1 FROM membership_invoices i
              WHERE i.membership_id = p_invoice.membership_id AND oros_membership_invoice_unpaid(i)) THEN
    RETURN false;
  END IF;
  UPDATE memberships m
     SET status = 'active', cancel_at_period_end = true, ends_at = m.current_period_end, ended_by_invoice = NULL
   WHERE m.id = p_invoice.membership_id AND m.status = 'canceled' AND m.ended_by_invoice = p_invoice.id
     AND m.current_period_end > now()
     -- Another of its type opened meanwhile is the live one.
     AND NOT EXISTS (SELECT 1 FROM memberships o
                      WHERE o.user_id = m.user_id AND o.membership_type = m.membership_type
                        AND o.status IN ('pending', 'active'))
  RETURNING m.ends_at INTO v_until;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  -- A span never reaches into the past and is closed once (0076): the cap again from now, to the period's end.
  INSERT INTO fee_history (user_id, membership_id, fee_pct, effective_until)
  SELECT f.user_id, f.membership_id, f.fee_pct, v_until
    FROM fee_history f
   WHERE f.membership_id = p_invoice.membership_id
   ORDER BY f.effective_from DESC
   LIMIT 1;
  RETURN true;
END;
$$;

-- 0173's, restoring the membership its takeback ended once that is undone.
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
  ELSIF v_delta < 0 AND oros_restore_paid_membership(v_invoice) THEN
    outcome := 'membership_restored';
  END IF;
  RETURN NEXT;
END;
$$;

-- 0078's, ending the caller's membership of this type whose restored period
-- is over (nothing from Stripe will) before opening the new one.
CREATE OR REPLACE FUNCTION oros_open_membership(p_id uuid, p_type text, p_subscription text) RETURNS memberships
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
  WITH ended AS (
    UPDATE memberships m SET status = 'canceled'
     WHERE m.user_id = auth.uid() AND m.membership_type = p_type AND m.status = 'active' AND m.ends_at <= now()
    RETURNING m.id)
  UPDATE fee_history f SET effective_until = now()
    FROM ended e
   WHERE f.membership_id = e.id AND f.effective_until IS NULL;
  INSERT INTO memberships (id, user_id, membership_type, status, billing_provider_id, started_at)
  VALUES (p_id, auth.uid(), p_type, 'pending', p_subscription, NULL)
  RETURNING * INTO v_row;
  RETURN v_row;
END;
$$;
