-- Why: money taken back after it was released to a user (a tip refunded or
-- disputed past its hold, a disputed card funding its campaign already spent)
-- had nowhere to come from: debiting the user's wallet below zero breaks
-- positive_available, and not debiting it loses the money without a trace.
-- It now becomes a receivable: a debit-normal wallet per user (purpose
-- 'receivable', an asset of the platform: what the user owes), which
--  * the user's future credits repay first (oros_receivable_repayments: the
--    settler's campaign earnings, tips, dispute reinstatements), and
--  * what the user has available repays as well (oros_sweep_receivables: when
--    the debt is opened, after each hold release, and before any withdrawal is
--    reserved, by the trigger below), so money owed is never withdrawable.
-- Lock order: every writer that may touch a receivable locks the receivable
-- wallets first (oros_lock_receivables, in id order), then the ledger trigger
-- locks the rest in id order; a writer that touches none locks none, so two
-- writers never wait on each other in opposite orders.

ALTER TABLE wallets DROP CONSTRAINT wallets_purpose_check;
ALTER TABLE wallets ADD CONSTRAINT wallets_purpose_check
  CHECK (purpose IN ('main', 'escrow', 'fees', 'clearing', 'receivable'));
ALTER TABLE wallets ADD CONSTRAINT receivable_is_an_asset
  CHECK (purpose <> 'receivable' OR normal_balance = 'debit');

-- 'receivable': a debt repaid from the user's available balance (the sweep).
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_source_type_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_source_type_check CHECK (source_type IN (
  'campaign', 'escrow', 'withdrawal', 'tip', 'boost', 'live_sale', 'refund', 'adjustment', 'receivable'));

-- The user's receivable wallet, made the first time the user owes something.
CREATE FUNCTION oros_receivable_wallet(p_user uuid) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
  v_wallet uuid;
BEGIN
  INSERT INTO wallets (user_id, purpose, normal_balance) VALUES (p_user, 'receivable', 'debit')
  ON CONFLICT (user_id, purpose) DO NOTHING;
  SELECT id INTO v_wallet FROM wallets WHERE user_id = p_user AND purpose = 'receivable';
  RETURN v_wallet;
END;
$$;

-- The first lock of any writer that may touch these users' receivables.
CREATE FUNCTION oros_lock_receivables(p_users uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM wallets WHERE user_id = ANY(p_users) AND purpose = 'receivable' ORDER BY id FOR NO KEY UPDATE;
END;
$$;

-- Credits about to be booked, the n-th paying p_amounts[n] to p_users[n]: how
-- much of each repays its user's receivable instead (credits of one user in
-- order, until the debt is covered). Only rows with something to repay come
-- back. The caller books, in the same transaction, a settled credit of
-- `repay` to `wallet_id` and the rest to the user's main wallet.
CREATE FUNCTION oros_receivable_repayments(p_users uuid[], p_amounts numeric[])
RETURNS TABLE (n bigint, wallet_id uuid, repay numeric)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM oros_lock_receivables(p_users);
  -- A new statement: it sees the balances as the lock holders committed them.
  RETURN QUERY
  WITH credit AS (
    SELECT c.n, c.u, c.a FROM unnest(p_users, p_amounts) WITH ORDINALITY AS c(u, a, n)
  ), owed AS (
    SELECT w.user_id, w.id, w.available_balance AS owed FROM wallets w
     WHERE w.user_id = ANY(p_users) AND w.purpose = 'receivable' AND w.available_balance > 0
  ), running AS (
    SELECT c.n, o.id, o.owed, c.a,
           coalesce(sum(c.a) OVER (PARTITION BY c.u ORDER BY c.n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                    0) AS before
      FROM credit c JOIN owed o ON o.user_id = c.u
  )
  SELECT r.n, r.id, least(r.a, r.owed - r.before) FROM running r WHERE r.a > 0 AND r.owed > r.before;
END;
$$;

-- The one rule by which a credit to a user meets what the user owes (a
-- campaign earning, sql/postgres/0082; a tip and a reinstated tip, 0079,
-- 0080): the legs paying p_nets[n] to p_users[n]. What the user owes is repaid
-- first, by a settled credit of its receivable (repays); the rest credits its
-- main wallet with p_status (held until p_hold_until if pending). A zero
-- amount gets no leg. Locks the receivables first (oros_receivable_repayments).
CREATE FUNCTION oros_credit_legs(p_users uuid[], p_nets numeric[], p_status text, p_hold_until timestamptz)
RETURNS TABLE (n bigint, wallet_id uuid, amount numeric, status text, hold_until timestamptz, repays boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  RETURN QUERY
  WITH repaid AS (SELECT r.n, r.wallet_id, r.repay FROM oros_receivable_repayments(p_users, p_nets) r)
  SELECT c.i, leg.wallet, leg.amount, leg.status, leg.hold, leg.repays
    FROM unnest(p_users, p_nets) WITH ORDINALITY AS c(u, net, i)
    JOIN wallets m ON m.user_id = c.u AND m.purpose = 'main'
    LEFT JOIN repaid r ON r.n = c.i
   CROSS JOIN LATERAL (VALUES (r.wallet_id, coalesce(r.repay, 0), 'settled', NULL::timestamptz, true),
                              (m.id, c.net - coalesce(r.repay, 0), p_status,
                               CASE WHEN p_status = 'pending' THEN p_hold_until END, false))
           AS leg(wallet, amount, status, hold, repays)
   WHERE leg.amount > 0
   ORDER BY c.i, leg.repays DESC;
END;
$$;

-- Move what owing users have available into their receivables (all owing
-- users, or these). Returns the total moved.
CREATE FUNCTION oros_sweep_receivables(p_users uuid[] DEFAULT NULL) RETURNS numeric
LANGUAGE plpgsql AS $$
DECLARE
  v_total numeric;
BEGIN
  PERFORM 1 FROM wallets
   WHERE purpose = 'receivable' AND available_balance > 0 AND (p_users IS NULL OR user_id = ANY(p_users))
   ORDER BY id FOR NO KEY UPDATE;
  WITH due AS (
    SELECT r.user_id, r.id AS receivable, m.id AS main, least(r.available_balance, m.available_balance) AS amount,
           gen_random_uuid() AS transfer
      FROM wallets r JOIN wallets m ON m.user_id = r.user_id AND m.purpose = 'main'
     WHERE r.purpose = 'receivable' AND r.available_balance > 0 AND m.available_balance > 0
       AND (p_users IS NULL OR r.user_id = ANY(p_users))
  ), legs AS (
    INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status, description)
    SELECT leg.wallet, d.transfer, 'receivable', d.user_id, d.amount, leg.direction, 'settled', leg.description
      FROM due d
      CROSS JOIN LATERAL (VALUES (d.main, 'debit', 'repays what the user owes'),
                                 (d.receivable, 'credit', 'receivable repaid from the available balance'))
                 AS leg(wallet, direction, description)
    RETURNING amount, direction
  )
  SELECT coalesce(sum(amount), 0) INTO v_total FROM legs WHERE direction = 'debit';
  RETURN v_total;
END;
$$;

-- A withdrawal is reserved only from what its user does not owe. The lock
-- order is the one every receivable writer keeps: the receivable, then the
-- rest in id order (the main and clearing wallets the reservation then
-- takes, so a payout finishing on the same wallets cannot interleave).
CREATE FUNCTION withdrawals_sweep_receivable() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_user uuid;
BEGIN
  SELECT user_id INTO v_user FROM wallets WHERE id = NEW.wallet_id;
  IF EXISTS (SELECT 1 FROM wallets WHERE user_id = v_user AND purpose = 'receivable' AND available_balance > 0) THEN
    PERFORM oros_lock_receivables(ARRAY[v_user]);
    PERFORM 1 FROM wallets WHERE id IN (NEW.wallet_id, oros_platform_wallet('clearing'))
     ORDER BY id FOR NO KEY UPDATE;
    PERFORM oros_sweep_receivables(ARRAY[v_user]);
  END IF;
  RETURN NEW;
END;
$$;

CREATE TRIGGER withdrawals_sweep_receivable BEFORE INSERT ON withdrawals
  FOR EACH ROW EXECUTE FUNCTION withdrawals_sweep_receivable();

-- Campaign earnings repay too, by the same rule as tips: the settler's booking
-- function (0041, the one place the three-leg payout rule is written) credits
-- each creator's net through oros_credit_legs, so what a creator owes is
-- repaid first (a settled credit of its receivable) and only the rest is
-- credited to its main wallet, held. Unchanged otherwise.
CREATE OR REPLACE FUNCTION oros_book_payouts(p_campaign uuid, p_hold_until timestamptz, p_transfers uuid[],
                                             p_creators uuid[], p_payouts numeric[], p_fees numeric[],
                                             p_metadata jsonb[])
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
  -- oros_credit_legs locks the creators' receivables before that trigger locks the other wallets.
  WITH t AS (
    SELECT * FROM unnest(p_transfers, p_payouts, p_fees, p_metadata) WITH ORDINALITY
                    AS t(transfer, payout, fee, metadata, n)
  ), credit AS (
    SELECT * FROM oros_credit_legs(p_creators, ARRAY(SELECT t.payout - t.fee FROM t ORDER BY t.n), 'pending',
                                   p_hold_until)
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
            FROM credit c
          UNION ALL
          SELECT t.n, 4, v_fees, t.fee, 'credit', 'pending', p_hold_until, 'platform fee' FROM t) leg
    JOIN t ON t.n = leg.n
   WHERE leg.amount > 0
   ORDER BY leg.n, leg.k;
END;
$$;

-- A sale's reversal gives back the repayment its transfer made (the debt
-- returns) and books the rest again through oros_book_payouts, which repays
-- it again: the creator's receivable is locked first, before the reversal's
-- trigger locks the other wallets, as every receivable writer does. Unchanged
-- otherwise (0041).
CREATE OR REPLACE FUNCTION oros_reverse_sale(p_sale uuid, p_refunded numeric, p_payout_back numeric,
                                             p_fee_back numeric, p_run uuid, p_refund uuid)
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
    PERFORM oros_lock_receivables(ARRAY[v_sale.creator_id]);
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
