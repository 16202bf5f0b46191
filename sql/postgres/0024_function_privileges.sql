-- Why: Postgres lets PUBLIC execute every new function, so the request role
-- oros_app could call the jobs' money functions: SELECT oros_fund_campaign(...)
-- minted 5,000,000.00, and oros_finish_withdrawal and oros_release_holds ran as
-- well. And every SECURITY DEFINER function had search_path = public, which
-- still searches pg_temp first (pg_temp goes first unless it is listed), so a
-- temp table named ledger_entries shadowed the real one inside
-- oros_request_withdrawal: a 1,000.00 withdrawal with no reservation. Here:
--  * EXECUTE is revoked from PUBLIC on every routine of public and auth, and by
--    default on every routine the migrating role creates from now on. Only
--    what the request role calls is granted back, by name.
--  * Every SECURITY DEFINER function's search_path becomes
--    pg_catalog, public, pg_temp (pg_temp last, so it can shadow nothing). The
--    functions whose bodies stay as 0001-0020 wrote them only get ALTER
--    FUNCTION ... SET: that way each body still has one definition.
--  * oros_request_withdrawal is redefined (CREATE OR REPLACE, since 0008 has
--    shipped) so that it checks its caller and its arguments itself.
-- The TEMP privilege is database-level (pg_database.datacl), and
-- CREATE DATABASE ... TEMPLATE does not copy it, so `oros migrate` revokes it
-- on every run (oros/migrate.py) rather than once here.

REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA public, auth FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON ROUTINES FROM PUBLIC;
-- Since Postgres 15 this is the default for a new database; older clusters
-- would let any role plant a function or table in public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- What oros_app may run: the helpers its RLS policies call (a policy runs with
-- the querying role's rights) and the one money function a user starts.
GRANT EXECUTE ON FUNCTION auth.uid(), auth.is_admin(), auth.is_campaign_member(uuid) TO oros_app;
GRANT EXECUTE ON FUNCTION oros_request_withdrawal(numeric, text) TO oros_app;

-- Trigger functions cannot be called directly; they only fire.
ALTER FUNCTION create_wallet_for_user() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION ledger_apply_insert() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION ledger_apply_update() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION campaign_record_status() SET search_path = pg_catalog, public, pg_temp;
-- They answer only about the caller (auth.uid()).
ALTER FUNCTION auth.is_admin() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION auth.is_campaign_member(uuid) SET search_path = pg_catalog, public, pg_temp;
-- Jobs only (settler, owner): executable by no other role.
ALTER FUNCTION oros_fund_campaign(uuid, numeric, text, text, uuid, text) SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION oros_finish_withdrawal(uuid, boolean, text, text) SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION oros_release_holds(timestamptz) SET search_path = pg_catalog, public, pg_temp;

-- A creator asks to withdraw: the amount is reserved at once (a pending debit
-- lowers available_balance; positive_available refuses an overdraft). It acts
-- only for auth.uid(), which must be a KYC-approved user (the API checks this
-- first for a clear answer; the database is the last line), never the system
-- user, whose main wallet would otherwise be payable.
CREATE OR REPLACE FUNCTION oros_request_withdrawal(p_amount numeric, p_method text)
RETURNS withdrawals
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_caller uuid := auth.uid();
  v_kyc text;
  v_wallet uuid;
  v_transfer uuid := gen_random_uuid();
  v_row withdrawals;
BEGIN
  SELECT u.kyc_status, w.id INTO v_kyc, v_wallet
    FROM users u JOIN wallets w ON w.user_id = u.id AND w.purpose = 'main'
   WHERE u.id = v_caller AND NOT u.is_system;
  IF v_wallet IS NULL THEN
    RAISE EXCEPTION 'oros_request_withdrawal: no wallet for the caller %', v_caller
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF v_kyc IS DISTINCT FROM 'approved' THEN
    RAISE EXCEPTION 'oros_request_withdrawal: user % is not KYC-approved', v_caller
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_amount IS NULL OR p_amount <= 0 OR p_amount <> round(p_amount, 2) THEN
    RAISE EXCEPTION 'withdrawal amount must be positive with at most two decimals, got %', p_amount
      USING ERRCODE = 'invalid_parameter_value', COLUMN = 'amount';
  END IF;
  INSERT INTO withdrawals (wallet_id, amount, method, transfer_id)
  VALUES (v_wallet, p_amount, p_method, v_transfer) RETURNING * INTO v_row;
  INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status, description)
  VALUES
    (v_wallet, v_transfer, 'withdrawal', v_row.id, p_amount, 'debit', 'pending', 'withdrawal requested'),
    (oros_platform_wallet('clearing'), v_transfer, 'withdrawal', v_row.id, p_amount, 'credit', 'pending',
     'withdrawal payable');
  RETURN v_row;
END;
$$;
