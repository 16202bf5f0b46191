-- Why: the admin API and the tracker connected as the schema owner, so a bug
-- or an injection in either one could do anything, and the admin API did
-- owner-level work outside the request role: signup and login, the Stripe
-- webhook's claim and funding, pending funding rows, and the admin KYC,
-- funding and adjustment writes. Each process now has a role that holds
-- exactly what its code needs:
--  * oros_api (NOLOGIN, NOINHERIT), the admin API's group. It can SET ROLE
--    oros_app for a user's request but does not inherit oros_app's rights.
--    Without a user it reads what identifies a caller (users, roles, API
--    keys), claims Stripe events, and reads the settled sale a refund names.
--  * oros_tracker (NOLOGIN), the tracker's group: its link lookup
--    (oros/links.py LINK_SQL), the API key lookup (oros/apikeys.py) and
--    api_keys.last_used_at (tracker/key_usage.py).
-- The owner (migrations and the settler) is none of these. Login roles join a
-- group (deploy/postgres/initdb/10-oros-roles.sh); the groups are created here
-- when absent (a superuser migrating), and checked when they already exist.
-- A write that needs more than a column grant is a prefixed SECURITY DEFINER
-- function that checks its caller (issue 13: every ledger write goes through
-- oros_* functions). Admin functions check auth.is_admin(); functions without a
-- user are granted to oros_api only, never to oros_app.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oros_api') THEN
    CREATE ROLE oros_api NOLOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oros_tracker') THEN
    CREATE ROLE oros_tracker NOLOGIN;
  END IF;
  IF NOT pg_has_role('oros_api', 'oros_app', 'MEMBER') THEN
    GRANT oros_app TO oros_api;
  END IF;
  -- Made by someone else beforehand: refuse a group role looser than this file makes it.
  IF EXISTS (SELECT 1 FROM pg_roles
              WHERE rolname IN ('oros_app', 'oros_api', 'oros_tracker')
                AND (rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication
                     OR (rolname = 'oros_api' AND rolinherit)))
     OR EXISTS (SELECT 1 FROM pg_auth_members m
                 WHERE m.member IN ('oros_app'::regrole, 'oros_tracker'::regrole)
                    OR (m.member = 'oros_api'::regrole AND m.roleid <> 'oros_app'::regrole)) THEN
    RAISE EXCEPTION 'oros_app, oros_api and oros_tracker must be NOLOGIN, unprivileged, oros_api NOINHERIT and a '
                    'member of oros_app only (see deploy/postgres/initdb/10-oros-roles.sh)';
  END IF;
END
$$;

-- The request policies (0007, 0020, 0021) were created for PUBLIC but are meant
-- for the request role. Bound to oros_app, they are not evaluated for the
-- service roles, whose queries see only the policies below: the tracker's
-- lookups plan no per-user subqueries, and no service role needs auth.*.
DO $$
DECLARE
  p record;
BEGIN
  FOR p IN SELECT tablename, policyname FROM pg_policies
            WHERE schemaname = 'public' AND roles = ARRAY['public']::name[] LOOP
    EXECUTE format('ALTER POLICY %I ON public.%I TO oros_app', p.policyname, p.tablename);
  END LOOP;
END
$$;

GRANT USAGE ON SCHEMA public TO oros_api, oros_tracker;

-- Who is calling (admin_api/auth.py) and login (admin_api/users.py).
GRANT SELECT (id, email, password_hash, is_system) ON users TO oros_api;
GRANT SELECT (user_id, role) ON user_roles TO oros_api;
GRANT SELECT (user_id, key_hash, revoked_at) ON api_keys TO oros_api;
CREATE POLICY "api_identifies_callers" ON users FOR SELECT TO oros_api USING (true);
CREATE POLICY "api_reads_roles" ON user_roles FOR SELECT TO oros_api USING (true);
CREATE POLICY "services_read_api_keys" ON api_keys FOR SELECT TO oros_api, oros_tracker USING (true);
-- The Stripe webhook (admin_api/webhooks.py): each event is claimed once; a
-- refund finds the sale the settler recorded.
GRANT SELECT (id), INSERT (id, type) ON stripe_events TO oros_api;
CREATE POLICY "api_reads_stripe_events" ON stripe_events FOR SELECT TO oros_api USING (true);
CREATE POLICY "api_claims_stripe_events" ON stripe_events FOR INSERT TO oros_api WITH CHECK (true);
GRANT SELECT (id, business_id) ON campaigns TO oros_api;
GRANT SELECT (campaign_id, tracking_link_id, creator_id, supporter_id, click_id, event_type, order_id, status)
  ON events TO oros_api;
CREATE POLICY "api_reads_sales" ON events FOR SELECT TO oros_api USING (true);

-- The tracker: link lookup, API key check, last_used_at.
GRANT SELECT (id, code, campaign_id, creator_id, supporter_id, destination_url) ON tracking_links TO oros_tracker;
GRANT SELECT (id, business_id, status) ON campaigns TO oros_tracker;
GRANT SELECT (user_id, key_hash, revoked_at, last_used_at), UPDATE (last_used_at) ON api_keys TO oros_tracker;
CREATE POLICY "tracker_reads_links" ON tracking_links FOR SELECT TO oros_tracker USING (true);
CREATE POLICY "tracker_touches_api_keys" ON api_keys FOR UPDATE TO oros_tracker USING (true) WITH CHECK (true);
CREATE POLICY "services_read_campaigns" ON campaigns FOR SELECT TO oros_api, oros_tracker USING (true);

-- Signup: there is no uid yet, so the API role creates the bare user; the new
-- user then adds their own roles and profiles as oros_app, where RLS refuses
-- 'admin' (users_add_own_roles).
CREATE OR REPLACE FUNCTION oros_sign_up(p_email text, p_password_hash text, p_username text, p_display_name text)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_user uuid;
BEGIN
  IF p_email IS NULL OR p_password_hash IS NULL THEN
    RAISE EXCEPTION 'oros_sign_up needs an email and a password hash'
      USING ERRCODE = 'invalid_parameter_value', COLUMN = 'email';
  END IF;
  INSERT INTO users (email, password_hash, username, display_name)
  VALUES (p_email, p_password_hash, p_username, p_display_name) RETURNING id INTO v_user;
  RETURN v_user;
END;
$$;

-- POST /v1/campaigns/{id}/fund: the business records the PaymentIntent it
-- created as a pending funding of its own campaign. Nothing is credited.
CREATE OR REPLACE FUNCTION oros_open_stripe_funding(p_funding uuid, p_campaign uuid, p_amount numeric,
                                                    p_payment_intent text)
RETURNS campaign_fundings
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_status text;
  v_row campaign_fundings;
BEGIN
  SELECT status INTO v_status FROM campaigns WHERE id = p_campaign AND business_id = auth.uid();
  IF NOT FOUND THEN
    RAISE EXCEPTION 'campaign % is not a campaign of the caller %', p_campaign, auth.uid()
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF v_status = 'completed' THEN
    RAISE EXCEPTION 'campaign % is completed', p_campaign USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  IF p_amount IS NULL OR p_amount <= 0 OR p_amount <> round(p_amount, 2) THEN
    RAISE EXCEPTION 'funding amount must be positive with at most two decimals, got %', p_amount
      USING ERRCODE = 'invalid_parameter_value', COLUMN = 'amount';
  END IF;
  IF p_payment_intent IS NULL OR p_payment_intent = '' THEN
    RAISE EXCEPTION 'a Stripe funding needs its PaymentIntent id' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO campaign_fundings (id, campaign_id, amount, method, reference, stripe_payment_intent_id, status,
                                 created_by)
  VALUES (p_funding, p_campaign, p_amount, 'stripe', p_payment_intent, p_payment_intent, 'pending', auth.uid())
  RETURNING * INTO v_row;
  RETURN v_row;
END;
$$;

-- payment_intent.payment_failed: the pending funding of this intent failed.
CREATE OR REPLACE FUNCTION oros_fail_stripe_funding(p_payment_intent text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_count integer;
BEGIN
  UPDATE campaign_fundings SET status = 'failed'
   WHERE stripe_payment_intent_id = p_payment_intent AND method = 'stripe' AND status = 'pending';
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$$;

CREATE OR REPLACE FUNCTION oros_require_admin(p_what text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  IF NOT auth.is_admin() THEN
    RAISE EXCEPTION '% is for admins; the caller % is not one', p_what, auth.uid()
      USING ERRCODE = 'insufficient_privilege';
  END IF;
END;
$$;

-- POST /v1/admin/users/{id}/kyc.
CREATE OR REPLACE FUNCTION oros_set_kyc(p_user uuid, p_status text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  PERFORM oros_require_admin('oros_set_kyc');
  UPDATE users SET kyc_status = p_status WHERE id = p_user AND NOT is_system;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user % does not exist', p_user USING ERRCODE = 'no_data_found';
  END IF;
END;
$$;

-- POST /v1/admin/campaigns/{id}/funding: money received off-Stripe, recorded by an admin.
CREATE OR REPLACE FUNCTION oros_admin_fund_campaign(p_campaign uuid, p_amount numeric, p_reference text)
RETURNS campaign_fundings
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_status text;
  v_funded numeric;
  v_funding uuid;
  v_row campaign_fundings;
BEGIN
  PERFORM oros_require_admin('oros_admin_fund_campaign');
  IF p_amount IS NULL OR p_amount <= 0 OR p_amount <> round(p_amount, 2) THEN
    RAISE EXCEPTION 'funding amount must be positive with at most two decimals, got %', p_amount
      USING ERRCODE = 'invalid_parameter_value', COLUMN = 'amount';
  END IF;
  IF p_reference IS NULL OR btrim(p_reference) = '' THEN
    RAISE EXCEPTION 'an off-Stripe funding needs a reference' USING ERRCODE = 'invalid_parameter_value',
      COLUMN = 'reference';
  END IF;
  SELECT status, funded_budget INTO v_status, v_funded FROM campaigns WHERE id = p_campaign FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'campaign % does not exist', p_campaign USING ERRCODE = 'no_data_found';
  END IF;
  IF v_status = 'completed' THEN
    RAISE EXCEPTION 'campaign % is completed', p_campaign USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  IF v_funded + p_amount > 9999999999.99 THEN
    RAISE EXCEPTION 'funding campaign % with % would overflow its budget', p_campaign, p_amount
      USING ERRCODE = 'numeric_value_out_of_range', COLUMN = 'amount';
  END IF;
  v_funding := oros_fund_campaign(p_campaign, p_amount, 'manual', p_reference, auth.uid());
  SELECT * INTO v_row FROM campaign_fundings WHERE id = v_funding;
  RETURN v_row;
END;
$$;

-- POST /v1/admin/adjustments: one balanced, settled transfer with a reason.
-- Each leg names its wallet by exactly one of wallet_id, user_id (that user's
-- main wallet; never the system user's) or platform ('fees' or 'clearing').
-- Escrow moves only with a campaign's budget (escrow = sum of
-- remaining_budget), so no leg may touch it. A refusal names the leg (COLUMN).
CREATE OR REPLACE FUNCTION oros_post_adjustment(p_reason text, p_legs jsonb)
RETURNS SETOF ledger_entries
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_leg jsonb;
  v_field text;
  v_wallet uuid;
  v_wallets uuid[] := '{}';
  v_amounts numeric[] := '{}';
  v_directions text[] := '{}';
  v_balance numeric := 0;
  v_uuid constant text := '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
BEGIN
  PERFORM oros_require_admin('oros_post_adjustment');
  IF p_reason IS NULL OR btrim(p_reason) = '' OR length(p_reason) > 500 THEN
    RAISE EXCEPTION 'an adjustment needs a reason of 1 to 500 characters'
      USING ERRCODE = 'invalid_parameter_value', COLUMN = 'reason';
  END IF;
  IF jsonb_typeof(p_legs) IS DISTINCT FROM 'array' OR jsonb_array_length(p_legs) NOT BETWEEN 2 AND 20 THEN
    RAISE EXCEPTION 'legs must be an array of 2 to 20 legs' USING ERRCODE = 'invalid_parameter_value',
      COLUMN = 'legs';
  END IF;
  FOR i IN 0 .. jsonb_array_length(p_legs) - 1 LOOP
    v_leg := p_legs -> i;
    v_field := format('legs[%s]', i);
    IF jsonb_typeof(v_leg) IS DISTINCT FROM 'object'
       OR (v_leg ? 'wallet_id')::int + (v_leg ? 'user_id')::int + (v_leg ? 'platform')::int <> 1 THEN
      RAISE EXCEPTION '% must name exactly one of wallet_id, user_id, platform', v_field
        USING ERRCODE = 'invalid_parameter_value', COLUMN = v_field;
    END IF;
    IF v_leg ? 'platform' THEN
      SELECT id INTO v_wallet FROM wallets
       WHERE user_id = '00000000-0000-0000-0000-000000000001' AND purpose = v_leg ->> 'platform'
         AND purpose IN ('fees', 'clearing');
    ELSIF coalesce(v_leg ->> 'user_id', v_leg ->> 'wallet_id') !~ v_uuid THEN
      v_wallet := NULL;
    ELSIF v_leg ? 'user_id' THEN
      SELECT w.id INTO v_wallet FROM wallets w JOIN users u ON u.id = w.user_id
       WHERE w.user_id = (v_leg ->> 'user_id')::uuid AND w.purpose = 'main' AND NOT u.is_system;
    ELSE
      SELECT id INTO v_wallet FROM wallets WHERE id = (v_leg ->> 'wallet_id')::uuid AND purpose <> 'escrow';
    END IF;
    IF v_wallet IS NULL THEN
      RAISE EXCEPTION '% names no adjustable wallet', v_field USING ERRCODE = 'invalid_parameter_value',
        COLUMN = v_field;
    END IF;
    IF v_leg ->> 'direction' IS NULL OR v_leg ->> 'direction' NOT IN ('credit', 'debit') THEN
      RAISE EXCEPTION '%.direction must be credit or debit', v_field USING ERRCODE = 'invalid_parameter_value',
        COLUMN = v_field || '.direction';
    END IF;
    IF (CASE WHEN jsonb_typeof(v_leg -> 'amount') = 'string' AND v_leg ->> 'amount' ~ '^[0-9]{1,10}(\.[0-9]{1,2})?$'
             THEN (v_leg ->> 'amount')::numeric <= 0 ELSE true END) THEN
      RAISE EXCEPTION '%.amount must be a positive decimal string with at most two decimals', v_field
        USING ERRCODE = 'invalid_parameter_value', COLUMN = v_field || '.amount';
    END IF;
    v_wallets := v_wallets || v_wallet;
    v_amounts := v_amounts || (v_leg ->> 'amount')::numeric;
    v_directions := v_directions || (v_leg ->> 'direction');
    v_balance := v_balance + CASE v_leg ->> 'direction' WHEN 'credit' THEN 1 ELSE -1 END
                             * (v_leg ->> 'amount')::numeric;
  END LOOP;
  IF v_balance <> 0 THEN
    RAISE EXCEPTION 'credits must equal debits' USING ERRCODE = 'invalid_parameter_value', COLUMN = 'legs';
  END IF;
  -- One statement: the ledger trigger checks that the whole transfer balances.
  RETURN QUERY
  INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, amount, direction, status, description, metadata)
  SELECT leg.wallet, t.id, 'adjustment', leg.amount, leg.direction, 'settled', p_reason,
         jsonb_build_object('reason', p_reason, 'admin_id', auth.uid())
    FROM unnest(v_wallets, v_amounts, v_directions) WITH ORDINALITY AS leg(wallet, amount, direction, n),
         (SELECT gen_random_uuid() AS id) AS t
   ORDER BY leg.n
  RETURNING *;
END;
$$;

GRANT EXECUTE ON FUNCTION oros_sign_up(text, text, text, text), oros_fail_stripe_funding(text) TO oros_api;
GRANT EXECUTE ON FUNCTION oros_open_stripe_funding(uuid, uuid, numeric, text), oros_set_kyc(uuid, text),
  oros_admin_fund_campaign(uuid, numeric, text), oros_post_adjustment(text, jsonb) TO oros_app;
