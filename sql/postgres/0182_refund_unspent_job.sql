-- Why: a completed campaign's unspent boost money went back to its boosters
-- only when the business or an admin called refund-unspent (0106); the issue
-- says it goes back. Now the settler's refund_unspent job gives a completed
-- campaign's unspent money back as soon as it may (a settlement that started
-- after the completion succeeded, 0106's rule) whenever its boosters still
-- hold some of it: the same refunds, by the same rule, in one transaction
-- under the campaign's row lock, so a business's call at the same moment
-- finds nothing left (and the job nothing after it). The business's part
-- goes back with it (0106 gives back all or nothing; a completed campaign
-- never spends again). Money that comes back into the campaign later (a
-- refunded sale, a won dispute) is given back by the next run the same way.
--
-- 0106's body, split: oros_give_back_unspent(campaign, by) books the refunds
-- (by: who asked, NULL for the settler); oros_refund_unspent keeps the
-- request's caller check in front of it; oros_unspent_boosts_due lists the
-- campaigns the job gives back.

-- Give back p_campaign's unspent budget, as asked by p_by (NULL: the settler). The owner's, and through
-- oros_refund_unspent the API's.
CREATE FUNCTION oros_give_back_unspent(p_campaign uuid, p_by uuid) RETURNS SETOF issued_refunds
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

REVOKE ALL ON FUNCTION oros_give_back_unspent(uuid, uuid) FROM PUBLIC;

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

-- The completed campaigns whose boosters still hold money and whose last events were paid (a settlement that
-- started after the completion succeeded), at most p_limit, oldest completion first.
CREATE FUNCTION oros_unspent_boosts_due(p_limit integer) RETURNS SETOF uuid
LANGUAGE sql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT c.id
    FROM campaigns c
   CROSS JOIN LATERAL (SELECT max(h.changed_at) AS at FROM campaign_status_history h
                        WHERE h.campaign_id = c.id AND h.status = 'completed') AS completed
   WHERE c.status = 'completed' AND c.remaining_budget > 0
     AND EXISTS (SELECT 1 FROM boost_values v WHERE v.campaign_id = c.id AND v.value > 0)
     AND EXISTS (SELECT 1 FROM settlement_runs r
                  WHERE r.kind = 'settle' AND r.status = 'succeeded' AND NOT r.dry_run AND r.started_at > completed.at)
   ORDER BY completed.at, c.id
   LIMIT p_limit
$$;

REVOKE ALL ON FUNCTION oros_unspent_boosts_due(integer) FROM PUBLIC;

REVOKE ALL ON FUNCTION oros_refund_unspent(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oros_refund_unspent(uuid) TO oros_app;
