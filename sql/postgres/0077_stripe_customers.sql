-- Why: subscriptions (monthly tips, memberships) need a Stripe customer, and
-- a user must keep one customer, not a new one per subscription (Stripe
-- forgets idempotency keys after a day). The API creates the customer, then
-- records it here as the user; the first one recorded wins.
CREATE TABLE stripe_customers (
  user_id UUID PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
  customer_id VARCHAR(100) NOT NULL UNIQUE,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE stripe_customers ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON stripe_customers TO oros_app;
CREATE POLICY "stripe_customers_owner" ON stripe_customers FOR SELECT TO oros_app USING (auth.uid() = user_id);
CREATE POLICY "admin_read" ON stripe_customers FOR SELECT TO oros_app USING (auth.is_admin());

-- The caller's customer: p_customer unless one is recorded already (then that one).
CREATE FUNCTION oros_remember_stripe_customer(p_customer text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_caller uuid := auth.uid();
  v_customer text;
BEGIN
  IF v_caller IS NULL OR p_customer IS NULL OR p_customer !~ '^cus_[A-Za-z0-9]+$' THEN
    RAISE EXCEPTION 'oros_remember_stripe_customer needs a caller and a customer id, got % for %', p_customer, v_caller
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO stripe_customers (user_id, customer_id) VALUES (v_caller, p_customer) ON CONFLICT (user_id) DO NOTHING;
  SELECT customer_id INTO v_customer FROM stripe_customers WHERE user_id = v_caller;
  RETURN v_customer;
END;
$$;
GRANT EXECUTE ON FUNCTION oros_remember_stripe_customer(text) TO oros_app;
