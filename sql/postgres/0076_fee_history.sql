-- Why: the creator tiers (creator_plus, creator_pro) lower the platform fee on
-- the creator's campaign earnings and tips, and an earning or a tip must be
-- charged the fee that applied when it happened, however late it is settled
-- (as campaign status already is, 0004). Each paid creator membership records
-- one span [effective_from, effective_until) with its tier's fee cap; the fee
-- of an earning or tip at time T is the base fee lowered to the smallest cap
-- whose span holds T (oros/fees.py owns that rule). A span starts when OROS
-- records the membership's first payment and ends when it records its end,
-- both now(): a span never reaches into the past, so nothing already charged
-- would have been charged differently. Settlement groups a campaign's paid
-- events into transfers per creator and fee (settler/plan.py), so
-- oros_post_settlement (0041) now takes a fee per transfer, not one per
-- campaign.
CREATE TABLE fee_history (
  id BIGSERIAL PRIMARY KEY,
  user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  membership_id UUID NOT NULL UNIQUE REFERENCES memberships(id) ON DELETE CASCADE,
  fee_pct DECIMAL(5,2) NOT NULL CHECK (fee_pct >= 0 AND fee_pct <= 100),
  effective_from TIMESTAMPTZ NOT NULL DEFAULT now(),
  effective_until TIMESTAMPTZ,
  CONSTRAINT fee_span_forward CHECK (effective_until IS NULL OR effective_until >= effective_from)
);
CREATE INDEX idx_fee_history_user ON fee_history(user_id, effective_from);

-- History is appended to: a span's cap and start never change, and its end is
-- set once.
CREATE FUNCTION fee_history_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'fee history span % cannot be deleted', OLD.id USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF (NEW.id, NEW.user_id, NEW.membership_id, NEW.fee_pct, NEW.effective_from)
     IS DISTINCT FROM (OLD.id, OLD.user_id, OLD.membership_id, OLD.fee_pct, OLD.effective_from)
     OR (OLD.effective_until IS NOT NULL AND NEW.effective_until IS DISTINCT FROM OLD.effective_until) THEN
    RAISE EXCEPTION 'fee history span % may only be closed, once', OLD.id
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END;
$$;
CREATE TRIGGER fee_history_guard BEFORE UPDATE OR DELETE ON fee_history
  FOR EACH ROW EXECUTE FUNCTION fee_history_guard();

ALTER TABLE fee_history ENABLE ROW LEVEL SECURITY;
-- The Stripe webhook prices a tip with it (oros/fees.py); a user reads their own.
GRANT SELECT ON fee_history TO oros_api, oros_app;
CREATE POLICY "api_reads_fee_history" ON fee_history FOR SELECT TO oros_api USING (true);
CREATE POLICY "fee_history_owner" ON fee_history FOR SELECT TO oros_app USING (auth.uid() = user_id);
CREATE POLICY "admin_read" ON fee_history FOR SELECT TO oros_app USING (auth.is_admin());

-- One campaign's settlement, as 0041 wrote it, but each transfer at its own
-- fee (p_fees[i]: the platform's part of each of its p_counts[i] events), and
-- total_earned raised by what each transfer nets. The old signature goes: the
-- settler is its only caller.
DROP FUNCTION oros_post_settlement(uuid, uuid, timestamptz, numeric, boolean, uuid[], uuid[], integer[], uuid[],
                                   integer[], integer[]);
CREATE FUNCTION oros_post_settlement(p_campaign uuid, p_run uuid, p_hold_until timestamptz, p_complete boolean,
                                     p_transfers uuid[], p_creators uuid[], p_counts integer[], p_fees numeric[],
                                     p_links uuid[], p_clicks integer[], p_conversions integer[])
RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_payout numeric;
  v_events bigint;
BEGIN
  SELECT payout_per_action INTO v_payout FROM campaigns WHERE id = p_campaign FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'oros_post_settlement: campaign % does not exist', p_campaign USING ERRCODE = 'no_data_found';
  END IF;
  IF EXISTS (SELECT 1 FROM unnest(p_counts) AS n WHERE n IS NULL OR n <= 0)
     OR cardinality(p_counts) IS DISTINCT FROM cardinality(p_transfers)
     OR cardinality(p_fees) IS DISTINCT FROM cardinality(p_transfers) THEN
    RAISE EXCEPTION 'oros_post_settlement: campaign % needs a positive count of events and a fee per transfer',
      p_campaign USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT coalesce(sum(n), 0) INTO v_events FROM unnest(p_counts) AS n;
  IF v_events > 0 THEN
    -- oros_book_payouts refuses a missing, negative or excessive fee.
    PERFORM oros_book_payouts(
      p_campaign, p_hold_until, p_transfers, p_creators,
      ARRAY(SELECT v_payout * n FROM unnest(p_counts) WITH ORDINALITY AS u(n, i) ORDER BY i),
      ARRAY(SELECT f * n FROM unnest(p_fees, p_counts) WITH ORDINALITY AS u(f, n, i) ORDER BY i),
      ARRAY(SELECT jsonb_build_object('run_id', p_run::text, 'events', n)
              FROM unnest(p_counts) WITH ORDINALITY AS u(n, i) ORDER BY i));
    -- Rows locked in id order first: UPDATE ... FROM takes its row locks in no promised order.
    PERFORM 1 FROM campaign_creators WHERE campaign_id = p_campaign AND creator_id = ANY(p_creators)
     ORDER BY id FOR UPDATE;
    UPDATE campaign_creators cc SET total_earned = cc.total_earned + x.net
      FROM (SELECT c, sum((v_payout - f) * n) AS net FROM unnest(p_creators, p_counts, p_fees) AS u(c, n, f)
             GROUP BY c) x
     WHERE cc.campaign_id = p_campaign AND cc.creator_id = x.c;
    PERFORM 1 FROM tracking_links WHERE id = ANY(p_links) ORDER BY id FOR UPDATE;
    UPDATE tracking_links t SET click_count = t.click_count + x.c, conversion_count = t.conversion_count + x.v
      FROM unnest(p_links, p_clicks, p_conversions) AS x(id, c, v)
     WHERE t.id = x.id;
  END IF;
  UPDATE campaigns
     SET remaining_budget = remaining_budget - v_payout * v_events,
         status = CASE WHEN p_complete AND status = 'active' THEN 'completed' ELSE status END
   WHERE id = p_campaign;
  RETURN v_payout * v_events;
END;
$$;
REVOKE ALL ON FUNCTION oros_post_settlement(uuid, uuid, timestamptz, boolean, uuid[], uuid[], integer[], numeric[],
                                            uuid[], integer[], integer[]) FROM PUBLIC;
