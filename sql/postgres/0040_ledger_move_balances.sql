-- Why: the two statement-level ledger triggers of 0003 (ledger_apply_insert for
-- new entries, ledger_apply_update for status moves) each carried the same
-- block: lock the touched wallets in id order, then add each wallet's deltas to
-- its balances. That block is now one function, oros_move_balances; each
-- trigger only computes its deltas under the balance rule and hands them over.
-- 0003 has shipped, so the trigger functions are replaced here (CREATE OR
-- REPLACE, keeping the SECURITY DEFINER and the search_path 0024 pinned);
-- their balance checks are unchanged.

-- Adds each wallet's deltas to its balances. The wallets are locked first, in
-- id order, so concurrent movements never deadlock; FOR NO KEY UPDATE because
-- each inserted leg's foreign-key check already holds KEY SHARE on its wallet
-- (see 0003). Only the triggers call it (as their definer): it moves balances
-- without entries, so no role but the owner may execute it.
CREATE FUNCTION oros_move_balances(p_wallets uuid[], p_available numeric[], p_pending numeric[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  PERFORM 1 FROM wallets WHERE id = ANY(p_wallets) ORDER BY id FOR NO KEY UPDATE;
  UPDATE wallets w
     SET available_balance = w.available_balance + d.available,
         pending_balance = w.pending_balance + d.pending
    FROM unnest(p_wallets, p_available, p_pending) AS d(wallet_id, available, pending)
   WHERE w.id = d.wallet_id AND (d.available <> 0 OR d.pending <> 0);
END;
$$;
REVOKE ALL ON FUNCTION oros_move_balances(uuid[], numeric[], numeric[]) FROM PUBLIC;

-- New entries: every transfer in the statement must balance, then balances move.
CREATE OR REPLACE FUNCTION ledger_apply_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  bad uuid;
  v_wallets uuid[];
  v_available numeric[];
  v_pending numeric[];
BEGIN
  SELECT transfer_id INTO bad FROM new_rows GROUP BY transfer_id
   HAVING sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) <> 0 LIMIT 1;
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'transfer % does not balance: credits must equal debits', bad
      USING ERRCODE = 'check_violation';
  END IF;
  SELECT array_agg(d.wallet_id), array_agg(d.available), array_agg(d.pending)
    INTO v_wallets, v_available, v_pending
    FROM (SELECT n.wallet_id,
                 sum(ledger_available_effect(n.direction, w.normal_balance, n.status, n.amount)) AS available,
                 sum(ledger_pending_effect(n.direction, w.normal_balance, n.status, n.amount)) AS pending
            FROM new_rows n JOIN wallets w ON w.id = n.wallet_id
           GROUP BY n.wallet_id) d;
  PERFORM oros_move_balances(v_wallets, v_available, v_pending);
  RETURN NULL;
END;
$$;

-- Status moves: apply the difference; a transfer must still balance over its live legs.
CREATE OR REPLACE FUNCTION ledger_apply_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  bad uuid;
  v_wallets uuid[];
  v_available numeric[];
  v_pending numeric[];
BEGIN
  SELECT l.transfer_id INTO bad
    FROM ledger_entries l
   WHERE l.transfer_id IN (SELECT n.transfer_id FROM new_rows n
                            WHERE n.status IN ('failed', 'reversed'))
   GROUP BY l.transfer_id
  HAVING sum(CASE WHEN l.status IN ('failed', 'reversed') THEN 0
                  WHEN l.direction = 'credit' THEN l.amount ELSE -l.amount END) <> 0
   LIMIT 1;
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'transfer % would no longer balance: fail or reverse all of its legs together', bad
      USING ERRCODE = 'check_violation';
  END IF;
  SELECT array_agg(d.wallet_id), array_agg(d.available), array_agg(d.pending)
    INTO v_wallets, v_available, v_pending
    FROM (SELECT n.wallet_id,
                 coalesce(sum(ledger_available_effect(n.direction, w.normal_balance, n.status, n.amount)
                            - ledger_available_effect(o.direction, w.normal_balance, o.status, o.amount))
                          FILTER (WHERE n.status <> o.status), 0) AS available,
                 coalesce(sum(ledger_pending_effect(n.direction, w.normal_balance, n.status, n.amount)
                            - ledger_pending_effect(o.direction, w.normal_balance, o.status, o.amount))
                          FILTER (WHERE n.status <> o.status), 0) AS pending
            FROM new_rows n
            JOIN old_rows o ON o.id = n.id
            JOIN wallets w ON w.id = n.wallet_id
           GROUP BY n.wallet_id) d;
  PERFORM oros_move_balances(v_wallets, v_available, v_pending);
  RETURN NULL;
END;
$$;
