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

-- The legs that pay p_net to p_user: what it owes is repaid first (settled),
-- the rest credits its main wallet with p_status (and p_hold_until if pending).
CREATE FUNCTION oros_user_credit_legs(p_user uuid, p_net numeric, p_status text, p_hold_until timestamptz)
RETURNS TABLE (wallet_id uuid, amount numeric, status text, hold_until timestamptz, description text)
LANGUAGE plpgsql AS $$
DECLARE
  v_repay numeric := 0;
  v_receivable uuid;
BEGIN
  SELECT r.repay, r.wallet_id INTO v_repay, v_receivable FROM oros_receivable_repayments(ARRAY[p_user], ARRAY[p_net]) r;
  v_repay := coalesce(v_repay, 0);
  IF v_repay > 0 THEN
    RETURN QUERY SELECT v_receivable, v_repay, 'settled'::text, NULL::timestamptz, 'repays what the user owes'::text;
  END IF;
  IF p_net - v_repay > 0 THEN
    RETURN QUERY SELECT w.id, p_net - v_repay, p_status, CASE WHEN p_status = 'pending' THEN p_hold_until END,
                        'earnings'::text
                   FROM wallets w WHERE w.user_id = p_user AND w.purpose = 'main';
  END IF;
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
