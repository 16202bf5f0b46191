-- Why: the creator tiers (creator_plus, creator_pro) lower the platform fee on
-- the creator's campaign earnings and tips, and an earning or a tip must be
-- charged the fee that applied when it happened, however late it is settled
-- (as campaign status already is, 0004). Each paid creator membership records
-- one span [effective_from, effective_until) with its tier's fee cap; the fee
-- of an earning or tip at time T is the base fee lowered to the smallest cap
-- whose span holds T (oros/fees.py owns that rule). A span starts when OROS
-- records the membership's first payment and ends when it records its end,
-- both now(): a span never reaches into the past, so nothing already charged
-- would have been charged differently.
CREATE TABLE fee_history (
  id BIGSERIAL PRIMARY KEY,
  user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  membership_id UUID NOT NULL UNIQUE REFERENCES memberships(id) ON DELETE CASCADE,
  fee_pct DECIMAL(5,2) NOT NULL CHECK (fee_pct >= 0 AND fee_pct <= 100),
  effective_from TIMESTAMPTZ NOT NULL DEFAULT now(),
  effective_until TIMESTAMPTZ,
  CONSTRAINT fee_span_forward CHECK (effective_until IS NULL OR effective_until >= effective_from)
);
CREATE INDEX idx_fee_history_user ON fee_history(user_id, effective_from);

-- History is appended to: a span's cap and start never change, and its end is
-- set once.
CREATE FUNCTION fee_history_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'fee history span % cannot be deleted', OLD.id USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF (NEW.id, NEW.user_id, NEW.membership_id, NEW.fee_pct, NEW.effective_from)
     IS DISTINCT FROM (OLD.id, OLD.user_id, OLD.membership_id, OLD.fee_pct, OLD.effective_from)
     OR (OLD.effective_until IS NOT NULL AND NEW.effective_until IS DISTINCT FROM OLD.effective_until) THEN
    RAISE EXCEPTION 'fee history span % may only be closed, once', OLD.id
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END;
$$;
CREATE TRIGGER fee_history_guard BEFORE UPDATE OR DELETE ON fee_history
  FOR EACH ROW EXECUTE FUNCTION fee_history_guard();

ALTER TABLE fee_history ENABLE ROW LEVEL SECURITY;
-- The Stripe webhook prices a tip with it (oros/fees.py); a user reads their own.
GRANT SELECT ON fee_history TO oros_api, oros_app;
CREATE POLICY "api_reads_fee_history" ON fee_history FOR SELECT TO oros_api USING (true);
CREATE POLICY "fee_history_owner" ON fee_history FOR SELECT TO oros_app USING (auth.uid() = user_id);
CREATE POLICY "admin_read" ON fee_history FOR SELECT TO oros_app USING (auth.is_admin());
