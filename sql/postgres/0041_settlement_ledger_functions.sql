-- Why: the settler wrote the ledger from Python in two places. settler/ledger.py
-- posted a settlement (its legs, the budget, total_earned, the link counters,
-- missing wallets) and settler/refunds.py reversed a sale and booked what it
-- still pays, so the three-leg rule (debit escrow the payout; credit the
-- creator the net and the platform the fee, both held) was written twice. Every
-- ledger write of the settler now goes through these functions, as funding,
-- withdrawals and adjustments already do (0008, 0025):
--  * oros_book_payouts: the three-leg rule, the one place it is written;
--  * oros_post_settlement: one campaign's settlement, after its decided events
--    were recorded in the same transaction;
--  * oros_reverse_sale: a refund's reversal of one sale, and the rest of its
--    commission booked again.
-- They are the settler's, which runs as the owner: no other role may execute
-- them (0024's default privileges; revoked again here by name). They run as
-- their caller, so they have no caller of their own to check, but they pin
-- search_path all the same, and they check their arguments: the settler
-- decides, the database is the last line.

-- Pays creators from a campaign's escrow, one transfer per element: debit
-- escrow the payout (settled), credit the creator's main wallet the net and the
-- fees wallet the fee (both pending until p_hold_until). A zero fee, or a zero
-- net at a 100 % fee, is no movement and gets no leg.
CREATE FUNCTION oros_book_payouts(p_campaign uuid, p_hold_until timestamptz, p_transfers uuid[],
                                  p_creators uuid[], p_payouts numeric[], p_fees numeric[], p_metadata jsonb[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_escrow uuid := oros_platform_wallet('escrow');
  v_fees uuid := oros_platform_wallet('fees');
  v_bad uuid;
BEGIN
  IF p_hold_until IS NULL THEN
    RAISE EXCEPTION 'oros_book_payouts: campaign % pays held credits without a hold', p_campaign
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT t INTO v_bad FROM unnest(p_transfers, p_creators, p_payouts, p_fees) AS u(t, c, payout, fee)
   WHERE t IS NULL OR c IS NULL OR payout IS NULL OR fee IS NULL OR payout <= 0 OR fee < 0 OR fee > payout
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'oros_book_payouts: transfer % of campaign % needs a creator, a positive payout and a fee within it',
      v_bad, p_campaign USING ERRCODE = 'check_violation';
  END IF;
  -- Every user gets a main wallet at signup (0003); made here if missing, so a payout never lacks a home.
  INSERT INTO wallets (user_id) SELECT DISTINCT c FROM unnest(p_creators) AS c
  ON CONFLICT (user_id, purpose) DO NOTHING;
  -- One statement: the ledger trigger checks that every transfer balances and moves each wallet once.
  INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status, hold_until,
                              description, metadata)
  SELECT leg.wallet, t.transfer, 'campaign', p_campaign, leg.amount, leg.direction, leg.status,
         CASE WHEN leg.status = 'pending' THEN p_hold_until END, leg.description, t.metadata
    FROM unnest(p_transfers, p_creators, p_payouts, p_fees, p_metadata)
           WITH ORDINALITY AS t(transfer, creator, payout, fee, metadata, n)
    JOIN wallets w ON w.user_id = t.creator AND w.purpose = 'main'
   CROSS JOIN LATERAL (VALUES (1, v_escrow, t.payout, 'debit', 'settled', 'campaign payout from escrow'),
                              (2, w.id, t.payout - t.fee, 'credit', 'pending', 'creator earnings'),
                              (3, v_fees, t.fee, 'credit', 'pending', 'platform fee'))
           AS leg(k, wallet, amount, direction, status, description)
   WHERE leg.amount > 0
   ORDER BY t.n, leg.k;
END;
$$;

-- One campaign's settlement, called after its decided events were copied into
-- events in the same transaction, by a caller that holds the campaign's row
-- lock and allocated its budget under it. Per transfer: its creator and how
-- many events it pays (one transfer per creator, or per sale). Per link: the
-- paid clicks and conversions. Books the legs at the campaign's payout and
-- p_fee per event, raises total_earned by the net and the link counters,
-- lowers remaining_budget by what was spent, and completes an active campaign
-- when p_complete (it cannot pay one more action). Returns what was spent.
CREATE FUNCTION oros_post_settlement(p_campaign uuid, p_run uuid, p_hold_until timestamptz, p_fee numeric,
                                     p_complete boolean, p_transfers uuid[], p_creators uuid[], p_counts integer[],
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
     OR cardinality(p_counts) IS DISTINCT FROM cardinality(p_transfers) THEN
    RAISE EXCEPTION 'oros_post_settlement: campaign % needs a positive count of events per transfer', p_campaign
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT coalesce(sum(n), 0) INTO v_events FROM unnest(p_counts) AS n;
  IF v_events > 0 THEN
    PERFORM oros_book_payouts(
      p_campaign, p_hold_until, p_transfers, p_creators,
      ARRAY(SELECT v_payout * n FROM unnest(p_counts) WITH ORDINALITY AS u(n, i) ORDER BY i),
      ARRAY(SELECT p_fee * n FROM unnest(p_counts) WITH ORDINALITY AS u(n, i) ORDER BY i),
      ARRAY(SELECT jsonb_build_object('run_id', p_run::text, 'events', n)
              FROM unnest(p_counts) WITH ORDINALITY AS u(n, i) ORDER BY i));
    -- Rows locked in id order first: UPDATE ... FROM takes its row locks in no promised order.
    PERFORM 1 FROM campaign_creators WHERE campaign_id = p_campaign AND creator_id = ANY(p_creators)
     ORDER BY id FOR UPDATE;
    UPDATE campaign_creators cc SET total_earned = cc.total_earned + (v_payout - p_fee) * x.n
      FROM (SELECT c, sum(n) AS n FROM unnest(p_creators, p_counts) AS u(c, n) GROUP BY c) x
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

-- A refund takes back p_payout_back of one paid sale's commission, p_fee_back
-- of it the platform's (settler/refunds.py decides how much: pro rata, the fee
-- following the payout left). The caller holds the campaign's and the sale's
-- row locks and the sale's legs (FOR UPDATE) and found its credit still held.
-- The sale's live transfer is reversed whole and what the sale still pays is
-- booked again as a new transfer with the same hold (ledger entries never
-- change amount); the campaign gets back the payout, the creator's
-- total_earned loses the net, and the sale records the refunded total (NULL:
-- unchanged) and what went back, becoming reversed once nothing is left.
-- Returns the sale's live transfer.
CREATE FUNCTION oros_reverse_sale(p_sale uuid, p_refunded numeric, p_payout_back numeric, p_fee_back numeric,
                                  p_run uuid, p_refund uuid)
RETURNS uuid
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_sale events;
  v_payout_left numeric;
  v_fee_left numeric;
  v_hold timestamptz;
  v_transfer uuid;
BEGIN
  SELECT * INTO v_sale FROM events WHERE id = p_sale AND event_type = 'sale' AND status = 'paid' FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'oros_reverse_sale: % is not a paid sale', p_sale USING ERRCODE = 'no_data_found';
  END IF;
  v_payout_left := v_sale.payout_amount - v_sale.reversed_payout - p_payout_back;
  v_fee_left := v_sale.platform_fee - v_sale.reversed_fee - p_fee_back;
  -- The fee never moves without the payout, the creator's net never grows, and nothing goes back
  -- beyond what the sale still pays.
  IF p_payout_back IS NULL OR p_fee_back IS NULL OR p_payout_back < 0 OR p_fee_back < 0
     OR p_fee_back > p_payout_back OR (p_fee_back > 0 AND p_payout_back = 0)
     OR v_payout_left < 0 OR v_fee_left < 0 OR v_fee_left > v_payout_left THEN
    RAISE EXCEPTION 'oros_reverse_sale: sale % cannot give back % (fee %) of what it still pays, % (fee %)',
      p_sale, p_payout_back, p_fee_back, v_sale.payout_amount - v_sale.reversed_payout,
      v_sale.platform_fee - v_sale.reversed_fee USING ERRCODE = 'check_violation';
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
    UPDATE ledger_entries SET status = 'reversed'
     WHERE transfer_id = v_sale.transfer_id AND status IN ('pending', 'settled');
    IF v_payout_left > 0 THEN
      v_transfer := gen_random_uuid();
      PERFORM oros_book_payouts(
        v_sale.campaign_id, v_hold, ARRAY[v_transfer], ARRAY[v_sale.creator_id], ARRAY[v_payout_left],
        ARRAY[v_fee_left], ARRAY[jsonb_build_object('run_id', p_run::text, 'events', 1,
                                                    'rebooked_from', v_sale.transfer_id::text,
                                                    'refund', p_refund::text)]);
    END IF;
    UPDATE campaigns SET remaining_budget = remaining_budget + p_payout_back WHERE id = v_sale.campaign_id;
    UPDATE campaign_creators SET total_earned = total_earned - (p_payout_back - p_fee_back)
     WHERE campaign_id = v_sale.campaign_id AND creator_id = v_sale.creator_id;
  END IF;
  UPDATE events
     SET refunded_value = coalesce(p_refunded, refunded_value), reversed_payout = reversed_payout + p_payout_back,
         reversed_fee = reversed_fee + p_fee_back, transfer_id = v_transfer,
         status = CASE WHEN v_payout_left = 0 THEN 'reversed' ELSE status END
   WHERE id = p_sale;
  RETURN v_transfer;
END;
$$;

REVOKE ALL ON FUNCTION oros_book_payouts(uuid, timestamptz, uuid[], uuid[], numeric[], numeric[], jsonb[]),
  oros_post_settlement(uuid, uuid, timestamptz, numeric, boolean, uuid[], uuid[], integer[], uuid[], integer[],
                       integer[]),
  oros_reverse_sale(uuid, numeric, numeric, numeric, uuid, uuid) FROM PUBLIC;
