-- Why: the wallets and the immutable double-entry ledger, with the seed's
-- defects fixed:
--  * The seed never raised pending_balance for a pending credit, so the first
--    settlement broke positive_pending. Here balances are derived from entries
--    by one rule, applied when entries are inserted and when their status moves.
--  * The seed debited a withdrawal only when it settled, so the same money could
--    be requested twice. Here a debit reserves available_balance while pending.
--  * The seed's "immutable" entries could be updated and deleted. Here only the
--    status may change, only forward; nothing may be deleted or truncated.
--  * The seed's wallets.user_id was UNIQUE, leaving the platform one wallet.
--    A wallet now has a purpose, unique per user, so the system user owns the
--    escrow, fees and Stripe clearing wallets.
--
-- The balance rule, for an entry on the wallet's normal side (+) or against it (-):
--   + pending  -> pending_balance   += amount   (held; not spendable yet)
--   + settled  -> available_balance += amount
--   - pending  -> available_balance -= amount   (reserved at once: no double spend)
--   - settled  -> available_balance -= amount
--   failed, reversed -> no effect
-- User, escrow and fee wallets are credit-normal (liabilities: money we owe).
-- The clearing wallet is debit-normal (an asset: cash held at Stripe), so money
-- coming in debits it and money paid out credits it, and it never goes negative.
--
-- Balances are applied by statement-level triggers over transition tables, so
-- a bulk settlement that inserts a million legs updates each wallet once, with
-- wallet rows locked in id order to prevent deadlocks. The lock is FOR NO KEY
-- UPDATE: each inserted leg's foreign-key check already holds KEY SHARE on its
-- wallet, which FOR UPDATE would conflict with, deadlocking two concurrent
-- movements on one wallet (a settlement and a funding, both on escrow).
CREATE TABLE wallets (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id UUID REFERENCES users(id) ON DELETE CASCADE,
  purpose VARCHAR(20) NOT NULL DEFAULT 'main'
    CHECK (purpose IN ('main', 'escrow', 'fees', 'clearing')),
  normal_balance VARCHAR(10) NOT NULL DEFAULT 'credit'
    CHECK (normal_balance IN ('credit', 'debit')),
  currency VARCHAR(3) DEFAULT 'USD',
  available_balance DECIMAL(12,2) DEFAULT 0.00,
  pending_balance DECIMAL(12,2) DEFAULT 0.00,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  updated_at TIMESTAMPTZ DEFAULT NOW(),
  UNIQUE (user_id, purpose),
  CONSTRAINT positive_available CHECK (available_balance >= 0),
  CONSTRAINT positive_pending CHECK (pending_balance >= 0)
);

CREATE TABLE ledger_entries (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  wallet_id UUID NOT NULL REFERENCES wallets(id) ON DELETE RESTRICT,
  -- All legs of one balanced movement share a transfer id.
  transfer_id UUID NOT NULL,
  source_type VARCHAR(30) NOT NULL
    CHECK (source_type IN (
      'campaign', 'escrow', 'withdrawal', 'tip', 'boost', 'live_sale', 'refund', 'adjustment'
    )),
  source_id UUID,
  amount DECIMAL(12,2) NOT NULL CHECK (amount > 0),
  direction VARCHAR(10) NOT NULL CHECK (direction IN ('credit', 'debit')),
  status VARCHAR(20) NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'settled', 'failed', 'reversed')),
  -- When a pending credit may settle (creator earnings are held).
  hold_until TIMESTAMPTZ,
  description TEXT,
  metadata JSONB DEFAULT '{}',
  created_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE withdrawals (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  wallet_id UUID REFERENCES wallets(id) ON DELETE RESTRICT,
  amount DECIMAL(12,2) NOT NULL,
  method VARCHAR(20) NOT NULL CHECK (method IN ('ach', 'instant', 'card')),
  status VARCHAR(20) DEFAULT 'requested'
    CHECK (status IN ('requested', 'processing', 'completed', 'failed')),
  stripe_transfer_id VARCHAR(100),
  transfer_id UUID,
  failure_reason TEXT,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  processed_at TIMESTAMPTZ,
  CONSTRAINT positive_withdrawal CHECK (amount > 0)
);

CREATE INDEX idx_wallets_user ON wallets(user_id);
CREATE INDEX idx_ledger_wallet ON ledger_entries(wallet_id);
CREATE INDEX idx_ledger_source ON ledger_entries(source_type, source_id);
CREATE INDEX idx_ledger_status ON ledger_entries(status);
CREATE INDEX idx_ledger_created ON ledger_entries(created_at DESC);
CREATE INDEX idx_ledger_transfer ON ledger_entries(transfer_id);
CREATE INDEX idx_ledger_hold ON ledger_entries(hold_until) WHERE status = 'pending';
CREATE INDEX idx_withdrawals_wallet ON withdrawals(wallet_id);
CREATE INDEX idx_withdrawals_status ON withdrawals(status);

CREATE TRIGGER update_wallets_updated_at BEFORE UPDATE ON wallets
  FOR EACH ROW EXECUTE FUNCTION update_updated_at();

-- The seed's wallet-on-signup trigger, kept: every user gets a main wallet.
CREATE OR REPLACE FUNCTION create_wallet_for_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  INSERT INTO wallets (user_id) VALUES (NEW.id);
  RETURN NEW;
END;
$$;

CREATE TRIGGER on_user_created_create_wallet AFTER INSERT ON users
  FOR EACH ROW EXECUTE FUNCTION create_wallet_for_user();

-- Effect of one entry on (available, pending), per the rule above.
CREATE OR REPLACE FUNCTION ledger_available_effect(direction text, normal text, status text, amount numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN status IN ('failed', 'reversed') THEN 0
    WHEN direction = normal THEN CASE WHEN status = 'settled' THEN amount ELSE 0 END
    ELSE -amount
  END
$$;

CREATE OR REPLACE FUNCTION ledger_pending_effect(direction text, normal text, status text, amount numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN direction = normal AND status = 'pending' THEN amount ELSE 0 END
$$;

-- Only the status may change, only forward; the seed's on_ledger_settled is replaced by this.
CREATE OR REPLACE FUNCTION ledger_guard_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.wallet_id, NEW.transfer_id, NEW.source_type, NEW.source_id, NEW.amount,
      NEW.direction, NEW.hold_until, NEW.description, NEW.metadata, NEW.created_at)
     IS DISTINCT FROM
     (OLD.id, OLD.wallet_id, OLD.transfer_id, OLD.source_type, OLD.source_id, OLD.amount,
      OLD.direction, OLD.hold_until, OLD.description, OLD.metadata, OLD.created_at) THEN
    RAISE EXCEPTION 'ledger entry % is immutable: only its status may change', OLD.id
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
       (OLD.status = 'pending' AND NEW.status IN ('settled', 'failed', 'reversed'))
    OR (OLD.status = 'settled' AND NEW.status = 'reversed')) THEN
    RAISE EXCEPTION 'ledger entry %: status may not move from % to %', OLD.id, OLD.status, NEW.status
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION ledger_forbid_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger entries cannot be deleted' USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER ledger_entries_guard_update BEFORE UPDATE ON ledger_entries
  FOR EACH ROW EXECUTE FUNCTION ledger_guard_update();
CREATE TRIGGER ledger_entries_forbid_delete BEFORE DELETE ON ledger_entries
  FOR EACH ROW EXECUTE FUNCTION ledger_forbid_delete();
CREATE TRIGGER ledger_entries_forbid_truncate BEFORE TRUNCATE ON ledger_entries
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_delete();

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

CREATE TRIGGER ledger_entries_apply_insert AFTER INSERT ON ledger_entries
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_apply_insert();
CREATE TRIGGER ledger_entries_apply_update AFTER UPDATE ON ledger_entries
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_apply_update();
