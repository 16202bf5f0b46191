-- Why: Phase 3 (issue 15) makes live_events and live_sales (0006) work, and
-- 0006/0007 left them unsafe to use: the app role may INSERT and UPDATE any
-- column of a creator's own live event, so a creator could set its own
-- started_at a day back (widening the window its sales are paid in), go
-- "live" on a campaign it was never accepted on, or set the business's
-- commission. Now:
--  * a live event is opened, moved along its lifecycle and given a commission
--    only through SECURITY DEFINER functions that check the caller and use the
--    database's clock (the app role keeps no write grant on live_events);
--  * a live link is a tracking link bound to its event (tracking_links.
--    live_event_id), opened with the event, so viewers are counted like any
--    click and a sale through its click is known as a live sale by its link
--    (its code and url are public, through live_event_links);
--  * commission_pct: the per-event percent of the sale amount the business may
--    pay instead of the campaign's payout (settable only before the event goes
--    live, so a sale is never paid at a percent changed after it happened);
--  * live_sales records each paid live sale: the events row the settler
--    decided (event_id), its campaign (escrow it is paid from), what it still
--    pays (commission, platform_fee: refunds lower them) and its live transfer.
--    Only paid sales get a row, so a rejected order never holds the order id.
--    status: 'paid', or 'refunded' once a refund took all of it back
--    ('pending' of the seed is left allowed and unused).

ALTER TABLE live_events ADD COLUMN commission_pct NUMERIC(5,2)
  CONSTRAINT live_commission_pct CHECK (commission_pct > 0 AND commission_pct <= 100);
ALTER TABLE live_events ADD CONSTRAINT live_event_lifecycle CHECK (
  (status = 'scheduled' AND started_at IS NULL AND ended_at IS NULL)
  OR (status = 'live' AND started_at IS NOT NULL AND ended_at IS NULL)
  OR (status = 'ended' AND started_at IS NOT NULL AND ended_at IS NOT NULL)
  OR (status = 'canceled' AND started_at IS NULL));
CREATE INDEX idx_live_events_campaign ON live_events(campaign_id);

ALTER TABLE tracking_links ADD COLUMN live_event_id UUID REFERENCES live_events(id) ON DELETE RESTRICT;
CREATE UNIQUE INDEX idx_tracking_links_live_event ON tracking_links(live_event_id) WHERE live_event_id IS NOT NULL;

ALTER TABLE live_sales ADD COLUMN event_id UUID UNIQUE REFERENCES events(id) ON DELETE RESTRICT;
ALTER TABLE live_sales ADD COLUMN campaign_id UUID REFERENCES campaigns(id) ON DELETE RESTRICT;
ALTER TABLE live_sales ADD COLUMN creator_id UUID REFERENCES users(id) ON DELETE RESTRICT;
ALTER TABLE live_sales ADD CONSTRAINT live_sale_fee_within CHECK (platform_fee <= commission);
ALTER TABLE live_sales ADD CONSTRAINT live_sale_refunded CHECK (status <> 'refunded' OR commission = 0);
CREATE INDEX idx_live_sales_transfer ON live_sales(transfer_id);

-- A live link is public (viewers are sent to it), its counters are not: everyone reads the link of a
-- live event through this view (the owner's rights), a link's row stays its creator's and business's.
CREATE VIEW live_event_links AS
SELECT live_event_id, id AS link_id, code, url FROM tracking_links WHERE live_event_id IS NOT NULL;
GRANT SELECT ON live_event_links TO oros_app;

-- Writes go through the functions below; reads stay as 0007 granted them.
REVOKE INSERT, UPDATE ON live_events FROM oros_app;
-- A campaign's business sees the live sales paid from its campaign (the creator already does, 0007).
CREATE POLICY "live_sales_business" ON live_sales FOR SELECT USING (
  campaign_id IN (SELECT id FROM campaigns WHERE business_id = auth.uid()));

-- POST /v1/live-events: the caller (a creator accepted on the active campaign
-- p_campaign) schedules a live event and its live link (p_code, p_url: the
-- API draws the code and retries on a collision), to the campaign's landing
-- page. Returns the event's id.
CREATE FUNCTION oros_open_live_event(p_campaign uuid, p_title text, p_starts_at timestamptz, p_code text,
                                     p_url text)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_caller uuid := auth.uid();
  v_campaign campaigns;
  v_event uuid;
BEGIN
  SELECT * INTO v_campaign FROM campaigns WHERE id = p_campaign;
  IF v_caller IS NULL OR NOT FOUND OR NOT EXISTS (
       SELECT 1 FROM campaign_creators
        WHERE campaign_id = p_campaign AND creator_id = v_caller AND status = 'accepted') THEN
    RAISE EXCEPTION 'live event on campaign % refused: % is not a creator accepted on it', p_campaign, v_caller
      USING ERRCODE = 'insufficient_privilege', HINT = 'not_accepted';
  END IF;
  IF v_campaign.status <> 'active' THEN
    RAISE EXCEPTION 'campaign % is %, not active', p_campaign, v_campaign.status
      USING ERRCODE = 'object_not_in_prerequisite_state', HINT = v_campaign.status;
  END IF;
  IF v_campaign.destination_url IS NULL THEN
    RAISE EXCEPTION 'campaign % has no destination_url for a live link', p_campaign
      USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'no_destination';
  END IF;
  INSERT INTO live_events (creator_id, campaign_id, title, scheduled_at)
  VALUES (v_caller, p_campaign, p_title, p_starts_at) RETURNING id INTO v_event;
  INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url, live_event_id)
  VALUES (p_campaign, v_caller, p_code, p_url, v_campaign.destination_url, v_event);
  RETURN v_event;
END;
$$;

-- start | end | cancel by the event's creator: scheduled -> live -> ended,
-- scheduled -> canceled; the times are the database's. Anything else raises
-- object_not_in_prerequisite_state with the current status as its HINT.
CREATE FUNCTION oros_move_live_event(p_event uuid, p_to text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_event live_events;
BEGIN
  SELECT * INTO v_event FROM live_events WHERE id = p_event FOR UPDATE;
  IF NOT FOUND OR v_event.creator_id IS DISTINCT FROM auth.uid() THEN
    RAISE EXCEPTION 'live event % is not the caller''s', p_event USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (p_to, v_event.status) NOT IN (('live', 'scheduled'), ('ended', 'live'), ('canceled', 'scheduled')) THEN
    RAISE EXCEPTION 'live event % is %: it cannot become %', p_event, v_event.status, p_to
      USING ERRCODE = 'object_not_in_prerequisite_state', HINT = v_event.status;
  END IF;
  UPDATE live_events
     SET status = p_to,
         started_at = CASE WHEN p_to = 'live' THEN clock_timestamp() ELSE started_at END,
         ended_at = CASE WHEN p_to = 'ended' THEN clock_timestamp() ELSE ended_at END
   WHERE id = p_event;
END;
$$;

-- The campaign's business sets (or, NULL, clears) the event's commission
-- percent while the event is still scheduled.
CREATE FUNCTION oros_set_live_commission(p_event uuid, p_pct numeric) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_status text;
BEGIN
  SELECT e.status INTO v_status FROM live_events e JOIN campaigns c ON c.id = e.campaign_id
   WHERE e.id = p_event AND c.business_id = auth.uid()
     FOR UPDATE OF e;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'live event % is not of a campaign of the caller', p_event
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF v_status <> 'scheduled' THEN
    RAISE EXCEPTION 'live event % is %: its commission is fixed once it went live', p_event, v_status
      USING ERRCODE = 'object_not_in_prerequisite_state', HINT = v_status;
  END IF;
  UPDATE live_events SET commission_pct = p_pct WHERE id = p_event;
END;
$$;

GRANT EXECUTE ON FUNCTION oros_open_live_event(uuid, text, timestamptz, text, text),
  oros_move_live_event(uuid, text), oros_set_live_commission(uuid, numeric) TO oros_app;

-- The legs of live-sale transfers, one per element (source_type 'live_sale',
-- source_id the live_sales row): escrow debited the payout (settled), the
-- creator credited the net through oros_credit_legs (what it owes repaid
-- first, the rest held until p_hold_until), the fee wallet the fee (held).
-- One statement: the ledger trigger checks each transfer balances.
CREATE FUNCTION oros_book_live_legs(p_hold_until timestamptz, p_sales uuid[], p_transfers uuid[], p_creators uuid[],
                                    p_payouts numeric[], p_fees numeric[], p_metadata jsonb[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_escrow uuid := oros_platform_wallet('escrow');
  v_fees uuid := oros_platform_wallet('fees');
BEGIN
  IF p_hold_until IS NULL OR EXISTS (
       SELECT 1 FROM unnest(p_sales, p_transfers, p_creators, p_payouts, p_fees) AS u(s, t, c, payout, fee)
        WHERE s IS NULL OR t IS NULL OR c IS NULL OR payout IS NULL OR fee IS NULL
           OR payout <= 0 OR fee < 0 OR fee > payout) THEN
    RAISE EXCEPTION 'oros_book_live_legs: each live sale needs a hold, a creator, a positive payout and a fee within it'
      USING ERRCODE = 'check_violation';
  END IF;
  INSERT INTO wallets (user_id) SELECT DISTINCT c FROM unnest(p_creators) AS c ON CONFLICT (user_id, purpose) DO NOTHING;
  WITH t AS (
    SELECT * FROM unnest(p_sales, p_transfers, p_payouts, p_fees, p_metadata) WITH ORDINALITY
                    AS t(sale, transfer, payout, fee, metadata, n)
  ), credit AS (
    SELECT * FROM oros_credit_legs(p_creators, ARRAY(SELECT t.payout - t.fee FROM t ORDER BY t.n), 'pending',
                                   p_hold_until)
  )
  INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status, hold_until,
                              description, metadata)
  SELECT leg.wallet, t.transfer, 'live_sale', t.sale, leg.amount, leg.direction, leg.status, leg.hold,
         leg.description, t.metadata
    FROM (SELECT t.n, 1 AS k, v_escrow AS wallet, t.payout AS amount, 'debit' AS direction, 'settled' AS status,
                 NULL::timestamptz AS hold, 'live sale commission from escrow' AS description
            FROM t
          UNION ALL
          SELECT c.n, CASE WHEN c.repays THEN 2 ELSE 3 END, c.wallet_id, c.amount, 'credit', c.status, c.hold_until,
                 CASE WHEN c.repays THEN 'live sale earnings repaying a debt' ELSE 'live sale earnings' END
            FROM credit c
          UNION ALL
          SELECT t.n, 4, v_fees, t.fee, 'credit', 'pending', p_hold_until, 'platform fee' FROM t) leg
    JOIN t ON t.n = leg.n
   WHERE leg.amount > 0
   ORDER BY leg.n, leg.k;
END;
$$;

-- One campaign's live sales of a settlement run, after their events rows were
-- copied in the same transaction: one live_sales row and one transfer each.
-- Locks as oros_post_settlement does: the campaign row (the caller allocated
-- its budget under it), the creators' receivables, then the ledger trigger's
-- wallets in id order; then campaign_creators and the live links in id order.
-- Checks that each sale's event, live event, creator and campaign agree, and
-- that the budget covers them. Returns what was spent.
CREATE FUNCTION oros_post_live_sales(p_campaign uuid, p_run uuid, p_hold_until timestamptz, p_sales uuid[],
                                     p_events uuid[], p_live_events uuid[], p_transfers uuid[], p_creators uuid[],
                                     p_links uuid[], p_payouts numeric[], p_fees numeric[])
RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_remaining numeric;
  v_spent numeric;
  v_n integer := cardinality(p_sales);
BEGIN
  SELECT remaining_budget INTO v_remaining FROM campaigns WHERE id = p_campaign FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'oros_post_live_sales: campaign % does not exist', p_campaign USING ERRCODE = 'no_data_found';
  END IF;
  IF v_n IS NULL OR v_n = 0 OR cardinality(p_events) IS DISTINCT FROM v_n
     OR cardinality(p_live_events) IS DISTINCT FROM v_n OR cardinality(p_transfers) IS DISTINCT FROM v_n
     OR cardinality(p_creators) IS DISTINCT FROM v_n OR cardinality(p_links) IS DISTINCT FROM v_n
     OR cardinality(p_payouts) IS DISTINCT FROM v_n OR cardinality(p_fees) IS DISTINCT FROM v_n THEN
    RAISE EXCEPTION 'oros_post_live_sales: campaign % needs one of each argument per live sale', p_campaign
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT sum(p) INTO v_spent FROM unnest(p_payouts) AS p;
  IF v_spent > v_remaining THEN
    RAISE EXCEPTION 'oros_post_live_sales: campaign % has % left, its live sales cost %', p_campaign, v_remaining,
      v_spent USING ERRCODE = 'check_violation';
  END IF;
  IF EXISTS (
       SELECT 1 FROM unnest(p_events, p_live_events, p_creators, p_links, p_payouts, p_fees) AS u(ev, le, c, l, p, f)
         LEFT JOIN events e ON e.id = u.ev
         LEFT JOIN live_events v ON v.id = u.le
         LEFT JOIN tracking_links k ON k.id = u.l
        WHERE e.id IS NULL OR e.event_type <> 'sale' OR e.status <> 'paid' OR e.campaign_id <> p_campaign
           OR e.creator_id IS DISTINCT FROM u.c OR e.payout_amount <> u.p OR e.platform_fee <> u.f
           OR v.id IS NULL OR v.campaign_id IS DISTINCT FROM p_campaign OR v.creator_id <> u.c
           OR k.live_event_id IS DISTINCT FROM u.le) THEN
    RAISE EXCEPTION 'oros_post_live_sales: campaign % was given a live sale whose event, live event, creator, link '
      'or amounts disagree', p_campaign USING ERRCODE = 'check_violation';
  END IF;
  PERFORM oros_lock_receivables(p_creators);
  INSERT INTO live_sales (id, live_event_id, event_id, campaign_id, creator_id, order_id, amount, currency,
                          commission, platform_fee, status, transfer_id, created_at)
  SELECT u.s, u.le, u.ev, p_campaign, u.c, e.order_id, e.value, coalesce(e.currency, 'USD'), u.p, u.f, 'paid', u.t,
         e.occurred_at
    FROM unnest(p_sales, p_events, p_live_events, p_creators, p_payouts, p_fees, p_transfers)
           AS u(s, ev, le, c, p, f, t)
    JOIN events e ON e.id = u.ev;
  PERFORM oros_book_live_legs(
    p_hold_until, p_sales, p_transfers, p_creators, p_payouts, p_fees,
    ARRAY(SELECT jsonb_build_object('run_id', p_run::text, 'events', 1, 'live_event_id', le::text,
                                    'event_id', ev::text)
            FROM unnest(p_live_events, p_events) WITH ORDINALITY AS u(le, ev, i) ORDER BY i));
  PERFORM 1 FROM campaign_creators WHERE campaign_id = p_campaign AND creator_id = ANY(p_creators)
   ORDER BY id FOR UPDATE;
  UPDATE campaign_creators cc SET total_earned = cc.total_earned + x.net
    FROM (SELECT c, sum(p - f) AS net FROM unnest(p_creators, p_payouts, p_fees) AS u(c, p, f) GROUP BY c) x
   WHERE cc.campaign_id = p_campaign AND cc.creator_id = x.c;
  PERFORM 1 FROM tracking_links WHERE id = ANY(p_links) ORDER BY id FOR UPDATE;
  UPDATE tracking_links t SET conversion_count = t.conversion_count + x.n
    FROM (SELECT l, count(*) AS n FROM unnest(p_links) AS l GROUP BY l) x
   WHERE t.id = x.l;
  UPDATE campaigns SET remaining_budget = remaining_budget - v_spent WHERE id = p_campaign;
  RETURN v_spent;
END;
$$;

-- A refund of a live sale, as oros_reverse_sale (0075) does for any sale: the
-- caller holds the campaign's row lock and the sale's legs and found the
-- credit still held; the sale's live transfer is reversed whole, what it still
-- pays booked again as a live-sale transfer with the same hold, the payout
-- returned to the budget and taken off total_earned. The live_sales row keeps
-- what the sale still pays and its live transfer, and becomes 'refunded' when
-- nothing is left. Returns the live transfer.
CREATE FUNCTION oros_reverse_live_sale(p_sale uuid, p_refunded numeric, p_payout_back numeric, p_fee_back numeric,
                                       p_run uuid, p_refund uuid)
RETURNS uuid
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_sale events;
  v_live live_sales;
  v_payout_left numeric;
  v_fee_left numeric;
  v_hold timestamptz;
  v_transfer uuid;
BEGIN
  SELECT * INTO v_sale FROM events WHERE id = p_sale AND event_type = 'sale' AND status = 'paid' FOR UPDATE;
  SELECT * INTO v_live FROM live_sales WHERE event_id = p_sale FOR UPDATE;
  IF v_sale.id IS NULL OR v_live.id IS NULL THEN
    RAISE EXCEPTION 'oros_reverse_live_sale: % is not a paid live sale', p_sale USING ERRCODE = 'no_data_found';
  END IF;
  v_payout_left := v_sale.payout_amount - v_sale.reversed_payout - p_payout_back;
  v_fee_left := v_sale.platform_fee - v_sale.reversed_fee - p_fee_back;
  IF p_payout_back IS NULL OR p_fee_back IS NULL OR p_payout_back < 0 OR p_fee_back < 0
     OR p_fee_back > p_payout_back OR (p_fee_back > 0 AND p_payout_back = 0)
     OR v_payout_left < 0 OR v_fee_left < 0 OR v_fee_left > v_payout_left THEN
    RAISE EXCEPTION 'oros_reverse_live_sale: sale % cannot give back % (fee %) of what it still pays, % (fee %)',
      p_sale, p_payout_back, p_fee_back, v_sale.payout_amount - v_sale.reversed_payout,
      v_sale.platform_fee - v_sale.reversed_fee USING ERRCODE = 'check_violation';
  END IF;
  v_transfer := v_sale.transfer_id;
  IF p_payout_back > 0 THEN
    SELECT hold_until INTO v_hold FROM ledger_entries
     WHERE transfer_id = v_sale.transfer_id AND status = 'pending' AND hold_until IS NOT NULL
     LIMIT 1;
    IF v_hold IS NULL THEN
      RAISE EXCEPTION 'oros_reverse_live_sale: the commission of sale % is no longer held', p_sale
        USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM oros_lock_receivables(ARRAY[v_sale.creator_id]);
    UPDATE ledger_entries SET status = 'reversed'
     WHERE transfer_id = v_sale.transfer_id AND status IN ('pending', 'settled');
    IF v_payout_left > 0 THEN
      v_transfer := gen_random_uuid();
      PERFORM oros_book_live_legs(
        v_hold, ARRAY[v_live.id], ARRAY[v_transfer], ARRAY[v_sale.creator_id], ARRAY[v_payout_left],
        ARRAY[v_fee_left], ARRAY[jsonb_build_object('run_id', p_run::text, 'events', 1,
                                                    'live_event_id', v_live.live_event_id::text,
                                                    'event_id', p_sale::text,
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
  UPDATE live_sales
     SET commission = v_payout_left, platform_fee = v_fee_left, transfer_id = v_transfer,
         status = CASE WHEN v_payout_left = 0 THEN 'refunded' ELSE status END
   WHERE id = v_live.id;
  RETURN v_transfer;
END;
$$;

REVOKE ALL ON FUNCTION oros_book_live_legs(timestamptz, uuid[], uuid[], uuid[], numeric[], numeric[], jsonb[]),
  oros_post_live_sales(uuid, uuid, timestamptz, uuid[], uuid[], uuid[], uuid[], uuid[], uuid[], numeric[], numeric[]),
  oros_reverse_live_sale(uuid, numeric, numeric, numeric, uuid, uuid) FROM PUBLIC;
