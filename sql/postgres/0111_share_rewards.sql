-- Why: an event paid through a share link (0110) earns its supporter a share
-- of the payout, booked in the payout's own transfer, in the settlement's
-- transaction. Who pays: the creator, out of its net. The business pays the
-- payout as before (escrow debited the same), the platform's fee is the same;
-- the creator's net is split:
--   reward = least(round_half_up(payout x share_pct / 100, 2), payout - fee)
--   creator = payout - fee - reward
-- so creator + reward is exactly what the creator alone would have got
-- (settler/plan.py decides the reward per event, oros/money.py owns the
-- formula; these functions check it stays within the net). A share link
-- exists to bring the creator clicks it would not have had: the creator pays
-- for that reach as a business pays for the creator's. The platform's own
-- rewards wallet (0100) is for rewards the platform grants (boosts).
--
-- oros_book_payouts gains the supporters' legs: per transfer an optional
-- supporter and its reward, credited through the one credit rule
-- (oros_credit_legs: what the supporter owes, a boost taken back, is repaid
-- first), pending with the creator's hold, so it is released (and a refund
-- inside the hold reverses it) with the creator's earnings. The new arguments
-- default to none: a caller that pays no share (0075's callers, a live sale)
-- calls it as before. oros_post_settlement takes the share link and the reward
-- per event of each transfer, reads the supporter from the link (not from the
-- caller), writes each share transfer's `rewards` row (source 'share', paid:
-- booked, held by the ledger like any earning) and raises total_earned by the
-- creator's part only. oros_reverse_sale takes back the reward pro rata with
-- the payout (p_reward_back, the settler's decision, checked here).
DROP FUNCTION oros_book_payouts(uuid, timestamptz, uuid[], uuid[], numeric[], numeric[], jsonb[]);
CREATE FUNCTION oros_book_payouts(p_campaign uuid, p_hold_until timestamptz, p_transfers uuid[],
                                  p_creators uuid[], p_payouts numeric[], p_fees numeric[], p_metadata jsonb[],
                                  p_supporters uuid[] DEFAULT NULL, p_rewards numeric[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_escrow uuid := oros_platform_wallet('escrow');
  v_fees uuid := oros_platform_wallet('fees');
  v_count integer := cardinality(p_transfers);
  v_supporters uuid[] := coalesce(p_supporters, array_fill(NULL::uuid, ARRAY[v_count]));
  v_rewards numeric[] := coalesce(p_rewards, array_fill(0::numeric, ARRAY[v_count]));
  v_bad uuid;
BEGIN
  IF p_hold_until IS NULL THEN
    RAISE EXCEPTION 'oros_book_payouts: campaign % pays held credits without a hold', p_campaign
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF cardinality(v_supporters) IS DISTINCT FROM v_count OR cardinality(v_rewards) IS DISTINCT FROM v_count THEN
    RAISE EXCEPTION 'oros_book_payouts: campaign % needs a supporter and a reward per transfer', p_campaign
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT t INTO v_bad FROM unnest(p_transfers, p_creators, p_payouts, p_fees, v_supporters, v_rewards)
                             AS u(t, c, payout, fee, s, reward)
   WHERE t IS NULL OR c IS NULL OR payout IS NULL OR fee IS NULL OR reward IS NULL OR payout <= 0 OR fee < 0
      OR fee > payout OR reward < 0 OR reward > payout - fee OR (reward > 0 AND (s IS NULL OR s = c))
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'oros_book_payouts: transfer % of campaign % needs a creator, a positive payout, a fee within '
      'it and a reward within the net paid to another user', v_bad, p_campaign USING ERRCODE = 'check_violation';
  END IF;
  -- Every user gets a main wallet at signup (0003); made here if missing, so a payout never lacks a home.
  INSERT INTO wallets (user_id)
  SELECT DISTINCT u FROM (SELECT unnest(p_creators) UNION ALL SELECT unnest(v_supporters)) AS x(u) WHERE u IS NOT NULL
  ON CONFLICT (user_id, purpose) DO NOTHING;
  -- One statement: the ledger trigger checks that every transfer balances and moves each wallet once.
  -- oros_credit_legs locks the creators' and supporters' receivables (in id order) before that trigger
  -- locks the other wallets: credit i pays transfer i's creator, credit v_count + i its supporter.
  WITH t AS (
    SELECT * FROM unnest(p_transfers, p_payouts, p_fees, p_metadata, v_rewards) WITH ORDINALITY
                    AS t(transfer, payout, fee, metadata, reward, n)
  ), credit AS (
    SELECT * FROM oros_credit_legs(
      p_creators || ARRAY(SELECT coalesce(s, p_creators[i]) FROM unnest(v_supporters) WITH ORDINALITY AS u(s, i)
                           ORDER BY i),
      ARRAY(SELECT t.payout - t.fee - t.reward FROM t ORDER BY t.n) || ARRAY(SELECT t.reward FROM t ORDER BY t.n),
      'pending', p_hold_until)
  )
  INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status, hold_until,
                              description, metadata)
  SELECT leg.wallet, t.transfer, 'campaign', p_campaign, leg.amount, leg.direction, leg.status, leg.hold,
         leg.description, t.metadata
    FROM (SELECT t.n, 1 AS k, v_escrow AS wallet, t.payout AS amount, 'debit' AS direction, 'settled' AS status,
                 NULL::timestamptz AS hold, 'campaign payout from escrow' AS description
            FROM t
          UNION ALL
          SELECT c.n, CASE WHEN c.repays THEN 2 ELSE 3 END, c.wallet_id, c.amount, 'credit', c.status, c.hold_until,
                 CASE WHEN c.repays THEN 'creator earnings repaying a debt' ELSE 'creator earnings' END
            FROM credit c WHERE c.n <= v_count
          UNION ALL
          SELECT c.n - v_count, CASE WHEN c.repays THEN 4 ELSE 5 END, c.wallet_id, c.amount, 'credit', c.status,
                 c.hold_until, CASE WHEN c.repays THEN 'share reward repaying a debt' ELSE 'share reward' END
            FROM credit c WHERE c.n > v_count
          UNION ALL
          SELECT t.n, 6, v_fees, t.fee, 'credit', 'pending', p_hold_until, 'platform fee' FROM t) leg
    JOIN t ON t.n = leg.n
   WHERE leg.amount > 0
   ORDER BY leg.n, leg.k;
END;
$$;

-- One campaign's settlement (0108), with its share links: p_shares[i] is the
-- share link transfer i's events came through (NULL: none, or no reward),
-- p_rewards[i] the reward of each of its p_counts[i] events (0 with no share).
DROP FUNCTION oros_post_settlement(uuid, uuid, timestamptz, boolean, uuid[], uuid[], integer[], numeric[], uuid[],
                                   integer[], integer[]);
CREATE FUNCTION oros_post_settlement(p_campaign uuid, p_run uuid, p_hold_until timestamptz, p_complete boolean,
                                     p_transfers uuid[], p_creators uuid[], p_counts integer[], p_fees numeric[],
                                     p_links uuid[], p_clicks integer[], p_conversions integer[],
                                     p_shares uuid[], p_rewards numeric[])
RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_payout numeric;
  v_events bigint;
  v_supporters uuid[];
  v_bad uuid;
BEGIN
  SELECT payout_per_action INTO v_payout FROM campaigns WHERE id = p_campaign FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'oros_post_settlement: campaign % does not exist', p_campaign USING ERRCODE = 'no_data_found';
  END IF;
  IF EXISTS (SELECT 1 FROM unnest(p_counts) AS n WHERE n IS NULL OR n <= 0)
     OR cardinality(p_counts) IS DISTINCT FROM cardinality(p_transfers)
     OR cardinality(p_fees) IS DISTINCT FROM cardinality(p_transfers)
     OR cardinality(p_shares) IS DISTINCT FROM cardinality(p_transfers)
     OR cardinality(p_rewards) IS DISTINCT FROM cardinality(p_transfers) THEN
    RAISE EXCEPTION 'oros_post_settlement: campaign % needs a positive count of events, a fee, a share and a reward '
      'per transfer', p_campaign USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- The supporter is the share link's, a link of this campaign and of the transfer's creator.
  SELECT u.t INTO v_bad FROM unnest(p_transfers, p_creators, p_shares, p_rewards) AS u(t, c, s, r)
    LEFT JOIN tracking_links l ON l.id = u.s
   WHERE u.r IS NULL OR u.r < 0 OR (u.s IS NULL AND u.r > 0)
      OR (u.s IS NOT NULL AND (l.id IS NULL OR l.supporter_id IS NULL OR l.campaign_id <> p_campaign
                               OR l.creator_id <> u.c))
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'oros_post_settlement: transfer % of campaign % names no share link of its creator, or a reward '
      'without one', v_bad, p_campaign USING ERRCODE = 'check_violation';
  END IF;
  v_supporters := ARRAY(SELECT l.supporter_id FROM unnest(p_shares) WITH ORDINALITY AS u(s, i)
                          LEFT JOIN tracking_links l ON l.id = u.s ORDER BY u.i);
  SELECT coalesce(sum(n), 0) INTO v_events FROM unnest(p_counts) AS n;
  IF p_complete THEN
    -- Completing pays the boosters' rewards (0105), which may repay what they owe: every receivable this
    -- transaction may touch is locked now, in id order, before the ledger trigger locks any other wallet.
    PERFORM oros_lock_receivables(p_creators || v_supporters || ARRAY(SELECT b.supporter_id FROM boosts b
                                                                       WHERE b.campaign_id = p_campaign));
  END IF;
  IF v_events > 0 THEN
    -- oros_book_payouts refuses a missing, negative or excessive fee or reward.
    PERFORM oros_book_payouts(
      p_campaign, p_hold_until, p_transfers, p_creators,
      ARRAY(SELECT v_payout * n FROM unnest(p_counts) WITH ORDINALITY AS u(n, i) ORDER BY i),
      ARRAY(SELECT f * n FROM unnest(p_fees, p_counts) WITH ORDINALITY AS u(f, n, i) ORDER BY i),
      ARRAY(SELECT jsonb_build_object('run_id', p_run::text, 'events', n)
              FROM unnest(p_counts) WITH ORDINALITY AS u(n, i) ORDER BY i),
      v_supporters,
      ARRAY(SELECT r * n FROM unnest(p_rewards, p_counts) WITH ORDINALITY AS u(r, n, i) ORDER BY i));
    INSERT INTO rewards (user_id, source, amount, status, campaign_id, tracking_link_id, transfer_id, paid_at)
    SELECT s, 'share', r * n, 'paid', p_campaign, l, t, now()
      FROM unnest(v_supporters, p_shares, p_rewards, p_counts, p_transfers) AS u(s, l, r, n, t)
     WHERE r > 0;
    -- Rows locked in id order first: UPDATE ... FROM takes its row locks in no promised order.
    PERFORM 1 FROM campaign_creators WHERE campaign_id = p_campaign AND creator_id = ANY(p_creators)
     ORDER BY id FOR UPDATE;
    UPDATE campaign_creators cc SET total_earned = cc.total_earned + x.net
      FROM (SELECT c, sum((v_payout - f - r) * n) AS net
              FROM unnest(p_creators, p_counts, p_fees, p_rewards) AS u(c, n, f, r) GROUP BY c) x
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

-- A sale's reversal (0075), with its share: p_reward_back of the supporter's
-- reward goes back with p_payout_back (the settler's pro rata decision), the
-- rest is booked again in the new transfer, and the sale's rewards row follows
-- its live transfer and what it still pays.
DROP FUNCTION oros_reverse_sale(uuid, numeric, numeric, numeric, uuid, uuid);
CREATE FUNCTION oros_reverse_sale(p_sale uuid, p_refunded numeric, p_payout_back numeric, p_fee_back numeric,
                                  p_run uuid, p_refund uuid, p_reward_back numeric DEFAULT 0)
RETURNS uuid
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_sale events;
  v_payout_left numeric;
  v_fee_left numeric;
  v_reward_left numeric;
  v_hold timestamptz;
  v_transfer uuid;
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
    SELECT hold_until INTO v_hold FROM ledger_entries
     WHERE transfer_id = v_sale.transfer_id AND status = 'pending' AND hold_until IS NOT NULL
     LIMIT 1;
    IF v_hold IS NULL THEN
      RAISE EXCEPTION 'oros_reverse_sale: the commission of sale % is no longer held', p_sale
        USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM oros_lock_receivables(ARRAY[v_sale.creator_id, v_sale.supporter_id]);
    UPDATE ledger_entries SET status = 'reversed'
     WHERE transfer_id = v_sale.transfer_id AND status IN ('pending', 'settled');
    IF v_payout_left > 0 THEN
      v_transfer := gen_random_uuid();
      PERFORM oros_book_payouts(
        v_sale.campaign_id, v_hold, ARRAY[v_transfer], ARRAY[v_sale.creator_id], ARRAY[v_payout_left],
        ARRAY[v_fee_left], ARRAY[jsonb_build_object('run_id', p_run::text, 'events', 1,
                                                    'rebooked_from', v_sale.transfer_id::text,
                                                    'refund', p_refund::text)],
        ARRAY[CASE WHEN v_reward_left > 0 THEN v_sale.supporter_id END], ARRAY[v_reward_left]);
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

REVOKE ALL ON FUNCTION
  oros_book_payouts(uuid, timestamptz, uuid[], uuid[], numeric[], numeric[], jsonb[], uuid[], numeric[]),
  oros_post_settlement(uuid, uuid, timestamptz, boolean, uuid[], uuid[], integer[], numeric[], uuid[], integer[],
                       integer[], uuid[], numeric[]),
  oros_reverse_sale(uuid, numeric, numeric, numeric, uuid, uuid, numeric) FROM PUBLIC;

-- What each paid event still pays (0042): the creator's net is now what the
-- supporter's share left it, and the share is a column of its own.
CREATE OR REPLACE VIEW oros_paid_events WITH (security_invoker = true) AS
SELECT id, campaign_id, creator_id, transfer_id, event_type,
       payout_amount - reversed_payout AS payout,
       platform_fee - reversed_fee AS fee,
       (payout_amount - reversed_payout) - (platform_fee - reversed_fee)
         - (coalesce(share_reward, 0) - reversed_reward) AS net,
       supporter_id, coalesce(share_reward, 0) - reversed_reward AS reward
  FROM events
 WHERE status = 'paid';
