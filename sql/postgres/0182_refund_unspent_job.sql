-- Why: a completed campaign's unspent boost money went back to its boosters
-- only when the business or an admin called refund-unspent (0106); the issue
-- says it goes back. Now the settler's refund_unspent job gives a completed
-- campaign's unspent money back once its last events were paid (below),
-- whenever its boosters still hold some of it: the same refunds, by the same rule, in one transaction
-- under the campaign's row lock, so a business's call at the same moment
-- finds nothing left (and the job nothing after it). The business's part
-- goes back with it (0106 gives back all or nothing; a completed campaign
-- never spends again).
--
-- The job's gate, for each campaign (a settlement that merely *started*
-- after the completion is not enough: the settler pays an event timestamped
-- before the completion whenever it arrives, and one that came later would
-- find remaining_budget 0 and be refused budget_exhausted):
--  * no payout of the campaign is still held: none of its credits
--    ('campaign' legs, or its live sales') is pending with a hold, 0190's
--    rule (held until released, whatever the clock says; 0150's
--    oros_campaign_payouts_held_until asks the clock, and between a hold's
--    end and the release job a sale's refund is still reversed into the
--    budget). So no sale of it can be refunded into the budget any more
--    (refund_after_hold): nothing the boosters paid comes back after it;
--  * a succeeded settlement's watermark (the newest ingested_at it read) is
--    p_grace past the completion: every event that reached ClickHouse within
--    p_grace of the completion was read (the settler passes
--    OROS_UNSPENT_GRACE_S plus its re-read overlap).
-- Written once (oros_unspent_settled) for the due list and for the give-back
-- the settler asks for (p_by NULL), which checks it again under the
-- campaign's row lock. A business's or an admin's own call keeps 0106's rule.
--
-- Money coming back into the campaign later: not a refunded sale:
-- it returns to a pool whose units are worth nothing (pool_price 0, 0101),
-- so it is the business's and the job never lists the campaign. With the
-- gate above no sale can be refunded after the job gave back. What still
-- comes back: a boost's won dispute, what of it does not repay the
-- supporter's debt, buys units in a new epoch, so the next run gives it
-- back to that booster; a funding's won dispute is the
-- business's (no boost holds units of the new epoch) and waits for its call.
-- A business that gave back itself under 0106's rule, while payouts were
-- still held, gets a held sale refunded afterwards back on its next call,
-- the boosters' part of that payout with it (docs/supporters.md).

-- 0106's body, split: oros_give_back_unspent(campaign, by) books the refunds
-- (by: who asked, NULL for the settler); oros_refund_unspent keeps the
-- request's caller check in front of it; oros_unspent_boosts_due lists the
-- campaigns the job gives back.

-- Whether p_campaign's last events were paid and its payouts are final, as the settler gives back.
CREATE FUNCTION oros_unspent_settled(p_campaign uuid, p_completed timestamptz, p_grace interval) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT NOT EXISTS (SELECT 1 FROM ledger_entries e
                      WHERE e.status = 'pending' AND e.hold_until IS NOT NULL
                        AND ((e.source_type = 'campaign' AND e.source_id = p_campaign)
                             OR (e.source_type = 'live_sale'
                                 AND e.source_id IN (SELECT s.id FROM live_sales s WHERE s.campaign_id = p_campaign))))
         AND EXISTS (SELECT 1 FROM settlement_runs r
                      WHERE r.kind = 'settle' AND r.status = 'succeeded' AND NOT r.dry_run
                        AND r.watermark_to >= p_completed + p_grace)
$$;
REVOKE ALL ON FUNCTION oros_unspent_settled(uuid, timestamptz, interval) FROM PUBLIC;

-- Give back p_campaign's unspent budget, as asked by p_by; the settler's call (p_by NULL, p_grace its grace)
-- is gated by oros_unspent_settled under the row lock. The owner's, and through oros_refund_unspent the API's.
-- oros_refund_unspent's call (two arguments) resolves to it unchanged.
CREATE FUNCTION oros_give_back_unspent(p_campaign uuid, p_by uuid, p_grace interval DEFAULT NULL)
RETURNS SETOF issued_refunds
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_campaign campaigns;
  v_completed timestamptz;
  v_left numeric;
  v_ids uuid[];
  v_funding record;
  v_take numeric;
  v_id uuid;
BEGIN
  SELECT * INTO v_campaign FROM campaigns c WHERE c.id = p_campaign FOR UPDATE;
  IF v_campaign.id IS NULL THEN
    RAISE EXCEPTION 'campaign % not found', p_campaign USING ERRCODE = 'no_data_found';
  END IF;
  IF v_campaign.status IS DISTINCT FROM 'completed' THEN
    RAISE EXCEPTION 'campaign % is %: only a completed campaign gives its unspent budget back', p_campaign,
      v_campaign.status USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'campaign_not_completed';
  END IF;
  SELECT max(h.changed_at) INTO v_completed FROM campaign_status_history h
   WHERE h.campaign_id = p_campaign AND h.status = 'completed';
  IF NOT EXISTS (SELECT 1 FROM settlement_runs r
                  WHERE r.kind = 'settle' AND r.status = 'succeeded' AND NOT r.dry_run
                    AND r.started_at > v_completed) THEN
    RAISE EXCEPTION 'campaign % completed at %; its last events are paid by the next settlement, retry after it',
      p_campaign, v_completed USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'settlement_pending';
  END IF;
  IF p_by IS NULL AND NOT oros_unspent_settled(p_campaign, v_completed, p_grace) THEN
    RAISE EXCEPTION 'campaign % completed at %: a payout is still held or its late events may not be read yet',
      p_campaign, v_completed USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'unspent_not_settled';
  END IF;
  v_left := v_campaign.remaining_budget;
  IF v_left = 0 THEN
    RETURN;
  END IF;

  WITH held AS (
    SELECT b.id, b.stripe_payment_intent_id AS pi, v.value, trunc(v.value, 2) AS cents,
           b.amount - b.taken_back - coalesce((SELECT sum(i.amount) FROM issued_refunds i WHERE i.boost_id = b.id), 0)
             AS refundable
      FROM boosts b JOIN boost_values v ON v.boost_id = b.id
     WHERE b.campaign_id = p_campaign AND v.value > 0
  ), extra AS (
    -- Cents still to hand out after each boost got its whole cents: one each, largest remainders first.
    SELECT greatest(0, ((least(v_left, round(sum(h.value), 2)) - sum(h.cents)) * 100)::int) AS n FROM held h
  ), shares AS (
    SELECT h.id, h.pi,
           least(h.refundable,
                 h.cents + CASE WHEN row_number() OVER (ORDER BY h.value - h.cents DESC, h.id) <= (SELECT n FROM extra)
                                THEN 0.01 ELSE 0 END) AS amount
      FROM held h
  ), made AS (
    INSERT INTO issued_refunds (campaign_id, reason, boost_id, payment_intent_id, amount, transfer_id, created_by)
    SELECT p_campaign, 'unspent', s.id, s.pi, s.amount, gen_random_uuid(), p_by FROM shares s WHERE s.amount > 0
    RETURNING id, amount
  )
  SELECT coalesce(array_agg(m.id), '{}'), v_left - coalesce(sum(m.amount), 0) INTO v_ids, v_left FROM made m;

  FOR v_funding IN
    SELECT f.id, f.method, f.stripe_payment_intent_id AS pi,
           f.amount - f.reversed_amount
             - coalesce((SELECT sum(i.amount) FROM issued_refunds i WHERE i.funding_id = f.id), 0) AS refundable
      FROM campaign_fundings f
     WHERE f.campaign_id = p_campaign AND f.status = 'succeeded'
     ORDER BY coalesce(f.succeeded_at, f.created_at) DESC, f.id DESC
  LOOP
    EXIT WHEN v_left <= 0;
    v_take := least(v_left, v_funding.refundable);
    CONTINUE WHEN v_take <= 0;
    INSERT INTO issued_refunds (campaign_id, reason, funding_id, payment_intent_id, amount, status, note, transfer_id,
                                created_by)
    VALUES (p_campaign, 'unspent', v_funding.id, CASE WHEN v_funding.method = 'stripe' THEN v_funding.pi END, v_take,
            CASE WHEN v_funding.method = 'stripe' THEN 'pending' ELSE 'manual' END,
            CASE WHEN v_funding.method <> 'stripe' THEN 'an off-Stripe funding: return it by hand' END,
            gen_random_uuid(), p_by)
    RETURNING id INTO v_id;
    v_ids := v_ids || v_id;
    v_left := v_left - v_take;
  END LOOP;
  IF v_left > 0 THEN
    INSERT INTO issued_refunds (campaign_id, reason, amount, status, note, transfer_id, created_by)
    VALUES (p_campaign, 'unspent', v_left, 'manual',
            'more unspent budget than the fundings can take back: return it to the business by hand',
            gen_random_uuid(), p_by)
    RETURNING id INTO v_id;
    v_ids := v_ids || v_id;
  END IF;

  INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status,
                              description, metadata)
  SELECT leg.wallet, i.transfer_id, 'refund', i.id, i.amount, leg.direction, 'settled', leg.description,
         jsonb_strip_nulls(jsonb_build_object('issued_refund', i.id, 'campaign_id', i.campaign_id,
                                              'funding_id', i.funding_id, 'boost_id', i.boost_id))
    FROM issued_refunds i
   CROSS JOIN LATERAL (VALUES (oros_platform_wallet('escrow'), 'debit', 'unspent budget given back'),
                              (oros_platform_wallet('clearing'), 'credit', 'unspent budget paid back to its payer'))
         AS leg(wallet, direction, description)
   WHERE i.id = ANY(v_ids);
  UPDATE campaigns c
     SET remaining_budget = c.remaining_budget - v_campaign.remaining_budget,
         funded_budget = c.funded_budget - v_campaign.remaining_budget
   WHERE c.id = p_campaign;
  RETURN QUERY SELECT * FROM issued_refunds i WHERE i.id = ANY(v_ids) ORDER BY array_position(v_ids, i.id);
END;
$$;

REVOKE ALL ON FUNCTION oros_give_back_unspent(uuid, uuid, interval) FROM PUBLIC;

-- POST /v1/campaigns/{id}/refund-unspent: the campaign's business, or an admin.
CREATE OR REPLACE FUNCTION oros_refund_unspent(p_campaign uuid) RETURNS SETOF issued_refunds
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_caller uuid := auth.uid();
BEGIN
  IF v_caller IS NULL OR NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.id = p_campaign
                                                                 AND (c.business_id = v_caller OR auth.is_admin())) THEN
    RAISE EXCEPTION 'campaign % not found for %', p_campaign, v_caller USING ERRCODE = 'no_data_found';
  END IF;
  RETURN QUERY SELECT * FROM oros_give_back_unspent(p_campaign, v_caller);
END;
$$;

-- The completed campaigns whose boosters still hold money and oros_unspent_settled, at most p_limit, oldest
-- completion first.
CREATE FUNCTION oros_unspent_boosts_due(p_limit integer, p_grace interval) RETURNS SETOF uuid
LANGUAGE sql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT c.id
    FROM campaigns c
   CROSS JOIN LATERAL (SELECT max(h.changed_at) AS at FROM campaign_status_history h
                        WHERE h.campaign_id = c.id AND h.status = 'completed') AS completed
   WHERE c.status = 'completed' AND c.remaining_budget > 0
     AND EXISTS (SELECT 1 FROM boost_values v WHERE v.campaign_id = c.id AND v.value > 0)
     AND oros_unspent_settled(c.id, completed.at, p_grace)
   ORDER BY completed.at, c.id
   LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION oros_unspent_boosts_due(integer, interval) FROM PUBLIC;

REVOKE ALL ON FUNCTION oros_refund_unspent(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oros_refund_unspent(uuid) TO oros_app;
