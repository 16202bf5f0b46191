-- Why: "a sale's commission is still held, so a refund reverses it" was
-- written four times and two disagreed. The settler (settler/refunds.py) and
-- the reversals (oros_reverse_sale, 0111; oros_reverse_live_sale, 0115) said
-- "its legs are still pending with a hold", the live listing (0163) computed
-- the hold's end, and the admin API compared that end with its own clock. So
-- between a hold's end and the release job the API refused a live sale's
-- refund (refund_after_hold) that POST /v1/conversions got reversed. One rule
-- now, owned here: a credit is held until it is released (its legs are still
-- pending: the money has not moved), whatever the clock says.
--
-- And the two reversals were copies (the argument checks, the held check,
-- reverse-and-rebook): oros_reverse_and_rebook is the one core, and
-- oros_reverse_live_sale adds only its live_sales row and its legs' kind.

-- Until when a transfer's credit is held: its pending legs' hold; NULL once
-- released (settled) or reversed. Held means "NOT NULL", never a clock test.
CREATE FUNCTION oros_sale_held_until(p_transfer uuid) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT min(l.hold_until) FROM ledger_entries AS l
   WHERE l.transfer_id = p_transfer AND l.status = 'pending' AND l.hold_until IS NOT NULL;
$$;

-- A sale's reversal (the settler's pro rata decision): the caller holds the
-- campaign's row lock and the sale's legs and found the credit still held.
-- The sale's transfer is reversed whole, what it still pays booked again with
-- the same hold (as a live-sale transfer when p_live names its live_sales
-- row, p_meta adding to its legs' metadata), the payout returned to the
-- budget and taken off total_earned; a share reward (never on a live sale)
-- follows. Returns the sale's live transfer.
CREATE FUNCTION oros_reverse_and_rebook(p_sale uuid, p_refunded numeric, p_payout_back numeric, p_fee_back numeric,
                                        p_reward_back numeric, p_run uuid, p_refund uuid, p_live uuid,
                                        p_meta jsonb)
RETURNS uuid
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_sale events;
  v_payout_left numeric;
  v_fee_left numeric;
  v_reward_left numeric;
  v_hold timestamptz;
  v_transfer uuid;
  v_meta jsonb;
BEGIN
  SELECT * INTO v_sale FROM events WHERE id = p_sale AND event_type = 'sale' AND status = 'paid' FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'oros_reverse_sale: % is not a paid sale', p_sale USING ERRCODE = 'no_data_found';
  END IF;
  v_payout_left := v_sale.payout_amount - v_sale.reversed_payout - p_payout_back;
  v_fee_left := v_sale.platform_fee - v_sale.reversed_fee - p_fee_back;
  v_reward_left := coalesce(v_sale.share_reward, 0) - v_sale.reversed_reward - p_reward_back;
  -- The fee and the reward never move without the payout, the creator's net never grows, and nothing goes
  -- back beyond what the sale still pays.
  IF p_payout_back IS NULL OR p_fee_back IS NULL OR p_reward_back IS NULL OR p_payout_back < 0 OR p_fee_back < 0
     OR p_reward_back < 0 OR p_fee_back + p_reward_back > p_payout_back
     OR ((p_fee_back > 0 OR p_reward_back > 0) AND p_payout_back = 0)
     OR v_payout_left < 0 OR v_fee_left < 0 OR v_reward_left < 0 OR v_fee_left + v_reward_left > v_payout_left THEN
    RAISE EXCEPTION 'oros_reverse_sale: sale % cannot give back % (fee %, reward %) of what it still pays, % (fee %, '
      'reward %)', p_sale, p_payout_back, p_fee_back, p_reward_back, v_sale.payout_amount - v_sale.reversed_payout,
      v_sale.platform_fee - v_sale.reversed_fee, coalesce(v_sale.share_reward, 0) - v_sale.reversed_reward
      USING ERRCODE = 'check_violation';
  END IF;
  v_transfer := v_sale.transfer_id;
  IF p_payout_back > 0 THEN
    v_hold := oros_sale_held_until(v_sale.transfer_id);
    IF v_hold IS NULL THEN
      RAISE EXCEPTION 'oros_reverse_sale: the commission of sale % is no longer held', p_sale
        USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM oros_lock_receivables(ARRAY[v_sale.creator_id, v_sale.supporter_id]);
    UPDATE ledger_entries SET status = 'reversed'
     WHERE transfer_id = v_sale.transfer_id AND status IN ('pending', 'settled');
    IF v_payout_left > 0 THEN
      v_transfer := gen_random_uuid();
      v_meta := jsonb_build_object('run_id', p_run::text, 'events', 1, 'rebooked_from', v_sale.transfer_id::text,
                                   'refund', p_refund::text) || coalesce(p_meta, '{}');
      IF p_live IS NULL THEN
        PERFORM oros_book_payouts(
          v_sale.campaign_id, v_hold, ARRAY[v_transfer], ARRAY[v_sale.creator_id], ARRAY[v_payout_left],
          ARRAY[v_fee_left], ARRAY[v_meta], ARRAY[CASE WHEN v_reward_left > 0 THEN v_sale.supporter_id END],
          ARRAY[v_reward_left]);
      ELSE
        PERFORM oros_book_live_legs(v_hold, ARRAY[p_live], ARRAY[v_transfer], ARRAY[v_sale.creator_id],
                                    ARRAY[v_payout_left], ARRAY[v_fee_left], ARRAY[v_meta]);
      END IF;
    END IF;
    UPDATE rewards SET amount = v_reward_left, transfer_id = v_transfer
     WHERE source = 'share' AND transfer_id = v_sale.transfer_id;
    UPDATE campaigns SET remaining_budget = remaining_budget + p_payout_back WHERE id = v_sale.campaign_id;
    UPDATE campaign_creators SET total_earned = total_earned - (p_payout_back - p_fee_back - p_reward_back)
     WHERE campaign_id = v_sale.campaign_id AND creator_id = v_sale.creator_id;
  END IF;
  UPDATE events
     SET refunded_value = coalesce(p_refunded, refunded_value), reversed_payout = reversed_payout + p_payout_back,
         reversed_fee = reversed_fee + p_fee_back, reversed_reward = reversed_reward + p_reward_back,
         transfer_id = v_transfer, status = CASE WHEN v_payout_left = 0 THEN 'reversed' ELSE status END
   WHERE id = p_sale;
  RETURN v_transfer;
END;
$$;

CREATE OR REPLACE FUNCTION oros_reverse_sale(p_sale uuid, p_refunded numeric, p_payout_back numeric,
                                             p_fee_back numeric, p_run uuid, p_refund uuid,
                                             p_reward_back numeric DEFAULT 0)
RETURNS uuid
LANGUAGE sql SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT oros_reverse_and_rebook(p_sale, p_refunded, p_payout_back, p_fee_back, p_reward_back, p_run, p_refund,
                                 NULL, NULL);
$$;

-- A live sale's reversal: its rest is booked again as a live-sale transfer,
-- and its live_sales row keeps what the sale still pays and its live
-- transfer, 'refunded' once nothing is left. Live sales pay no share reward.
CREATE OR REPLACE FUNCTION oros_reverse_live_sale(p_sale uuid, p_refunded numeric, p_payout_back numeric,
                                                  p_fee_back numeric, p_run uuid, p_refund uuid)
RETURNS uuid
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_live live_sales;
  v_transfer uuid;
BEGIN
  SELECT * INTO v_live FROM live_sales WHERE event_id = p_sale FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'oros_reverse_live_sale: % is not a paid live sale', p_sale USING ERRCODE = 'no_data_found';
  END IF;
  v_transfer := oros_reverse_and_rebook(
    p_sale, p_refunded, p_payout_back, p_fee_back, 0, p_run, p_refund, v_live.id,
    jsonb_build_object('live_event_id', v_live.live_event_id::text, 'event_id', p_sale::text));
  UPDATE live_sales AS s
     SET commission = e.payout_amount - e.reversed_payout, platform_fee = e.platform_fee - e.reversed_fee,
         transfer_id = v_transfer, status = CASE WHEN e.status = 'reversed' THEN 'refunded' ELSE s.status END
    FROM events AS e
   WHERE s.id = v_live.id AND e.id = p_sale;
  RETURN v_transfer;
END;
$$;

-- The live listing's hold (0163), by the same rule.
CREATE OR REPLACE FUNCTION oros_live_sale_holds(p_sales uuid[]) RETURNS TABLE (id uuid, held_until timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT s.id, oros_sale_held_until(s.transfer_id)
    FROM live_sales AS s
   WHERE s.id IN (SELECT u.id FROM unnest(p_sales) WITH ORDINALITY AS u (id, n) WHERE u.n <= 200)
     AND (s.creator_id = auth.uid() OR auth.is_admin()
          OR s.campaign_id IN (SELECT c.id FROM campaigns AS c WHERE c.business_id = auth.uid()));
$$;

REVOKE ALL ON FUNCTION oros_sale_held_until(uuid),
  oros_reverse_and_rebook(uuid, numeric, numeric, numeric, numeric, uuid, uuid, uuid, jsonb) FROM PUBLIC;
