-- Why: the transaction that completes a campaign pays its boosters' rewards
-- (0105), through oros_credit_legs, which locks each booster's receivable.
-- When the settler completes a campaign (its budget exhausted), that came after
-- oros_book_payouts' ledger trigger had locked escrow, fees and the creators'
-- wallets: a receivable locked after other wallets, against the lock order
-- every receivable writer keeps (0075), so a booster's tip refunded at that
-- moment could deadlock with the settlement. oros_post_settlement, as 0076
-- wrote it, now locks the creators' and the boosters' receivables together,
-- in id order, first, when it completes the campaign. Unchanged otherwise.
CREATE OR REPLACE FUNCTION oros_post_settlement(p_campaign uuid, p_run uuid, p_hold_until timestamptz,
                                     p_complete boolean, p_transfers uuid[], p_creators uuid[], p_counts integer[],
                                     p_fees numeric[], p_links uuid[], p_clicks integer[], p_conversions integer[])
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
  IF p_complete THEN
    -- Completing pays the boosters' rewards (0105), which may repay what they owe: every receivable this
    -- transaction may touch is locked now, in id order, before the ledger trigger locks any other wallet.
    PERFORM oros_lock_receivables(p_creators || ARRAY(SELECT b.supporter_id FROM boosts b
                                                        WHERE b.campaign_id = p_campaign));
  END IF;
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
