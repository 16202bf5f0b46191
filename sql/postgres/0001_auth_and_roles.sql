-- Why: the seed's RLS policies call auth.uid(). On plain Postgres we provide the
-- same function, reading the transaction setting request.jwt.claim.sub (the
-- Supabase/PostgREST convention), so the policies work unchanged on both. The
-- admin API runs each request as the non-owner role oros_app with that setting.
CREATE SCHEMA IF NOT EXISTS auth;

CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE AS $$
  SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid
$$;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oros_app') THEN
    CREATE ROLE oros_app NOLOGIN;
  END IF;
END
$$;

-- The migrating (owner) role must be able to SET ROLE oros_app.
DO $$
BEGIN
  IF NOT pg_has_role(current_user, 'oros_app', 'MEMBER') THEN
    EXECUTE format('GRANT oros_app TO %I', current_user);
  END IF;
END
$$;

GRANT USAGE ON SCHEMA auth TO oros_app;
GRANT EXECUTE ON FUNCTION auth.uid() TO oros_app;
