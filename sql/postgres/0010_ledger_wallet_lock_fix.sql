-- Why: a fix to 0003's balance triggers. Every ledger insert first takes FOR KEY
-- SHARE locks on its wallets (the wallet_id foreign key check, row by row), then
-- the statement trigger asked for FOR UPDATE on the same wallets. Two concurrent
-- money movements touching one wallet (two settler connections, or a settlement
-- and a campaign funding, both on the escrow wallet) each held KEY SHARE and
-- waited for the other's to upgrade: a deadlock. FOR NO KEY UPDATE (what an
-- UPDATE of non-key columns takes anyway) does not conflict with KEY SHARE, so
-- movements now simply queue on the wallets, still locked in id order.
-- New entries: every transfer in the statement must balance, then balances move.
CREATE OR REPLACE FUNCTION ledger_apply_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  bad uuid;
BEGIN
  SELECT transfer_id INTO bad FROM new_rows GROUP BY transfer_id
   HAVING sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) <> 0 LIMIT 1;
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'transfer % does not balance: credits must equal debits', bad
      USING ERRCODE = 'check_violation';
  END IF;
  PERFORM 1 FROM wallets WHERE id IN (SELECT wallet_id FROM new_rows) ORDER BY id FOR NO KEY UPDATE;
  UPDATE wallets w
     SET available_balance = w.available_balance + d.available,
         pending_balance = w.pending_balance + d.pending
    FROM (SELECT n.wallet_id,
                 sum(ledger_available_effect(n.direction, w2.normal_balance, n.status, n.amount)) AS available,
                 sum(ledger_pending_effect(n.direction, w2.normal_balance, n.status, n.amount)) AS pending
            FROM new_rows n JOIN wallets w2 ON w2.id = n.wallet_id
           GROUP BY n.wallet_id) d
   WHERE w.id = d.wallet_id AND (d.available <> 0 OR d.pending <> 0);
  RETURN NULL;
END;
$$;

-- Status moves: apply the difference; a transfer must still balance over its live legs.
CREATE OR REPLACE FUNCTION ledger_apply_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  bad uuid;
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
  PERFORM 1 FROM wallets WHERE id IN (SELECT wallet_id FROM new_rows) ORDER BY id FOR NO KEY UPDATE;
  UPDATE wallets w
     SET available_balance = w.available_balance + d.available,
         pending_balance = w.pending_balance + d.pending
    FROM (SELECT n.wallet_id,
                 sum(ledger_available_effect(n.direction, w2.normal_balance, n.status, n.amount)
                   - ledger_available_effect(o.direction, w2.normal_balance, o.status, o.amount)) AS available,
                 sum(ledger_pending_effect(n.direction, w2.normal_balance, n.status, n.amount)
                   - ledger_pending_effect(o.direction, w2.normal_balance, o.status, o.amount)) AS pending
            FROM new_rows n
            JOIN old_rows o ON o.id = n.id
            JOIN wallets w2 ON w2.id = n.wallet_id
           WHERE n.status <> o.status
           GROUP BY n.wallet_id) d
   WHERE w.id = d.wallet_id AND (d.available <> 0 OR d.pending <> 0);
  RETURN NULL;
END;
$$;

