-- Why: GET /px.gif carried no credential, and its events counted as posted by
-- the campaign's owner, so anyone holding a click id could report paid
-- conversions. A pixel is now billable only when the business signed it with
-- its pixel secret (oros/pixel.py), or when its campaign opts into unsigned
-- pixels (pixel_billable, default false).
--
-- The secret must be readable to compute the HMAC, so it is stored as given,
-- not hashed. Only the owner reads it: the settler, which checks signatures.
-- No service role has a grant on the table, so a request (or a compromised
-- API or tracker) can make a new secret but never read one; the secret is
-- shown once, by POST /v1/pixel-secret.
ALTER TABLE campaigns ADD COLUMN pixel_billable BOOLEAN NOT NULL DEFAULT false;
GRANT INSERT (pixel_billable), UPDATE (pixel_billable) ON campaigns TO oros_app;

-- A secret signs the pixels that arrive before expires_at; NULL: the current one.
CREATE TABLE pixel_secrets (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  business_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  secret TEXT NOT NULL CHECK (length(secret) >= 32),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  expires_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX idx_pixel_secrets_current ON pixel_secrets(business_id) WHERE expires_at IS NULL;
CREATE INDEX idx_pixel_secrets_business ON pixel_secrets(business_id, expires_at);
ALTER TABLE pixel_secrets ENABLE ROW LEVEL SECURITY;  -- and no policy: no role but the owner sees a row

-- The caller's new pixel secret (made by the API, shown to the caller once).
-- The one it replaces stays valid for p_grace_s more seconds (0 to 86400), so
-- pages signing with it keep working while the new one is deployed; any older
-- one ends now. Serialised per business, so two rotations at once leave one
-- current secret.
CREATE FUNCTION oros_rotate_pixel_secret(p_secret text, p_grace_s integer)
RETURNS TABLE (created_at timestamptz, previous_valid_until timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_caller uuid := auth.uid();
BEGIN
  IF v_caller IS NULL OR NOT EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = v_caller AND r.role = 'business') THEN
    RAISE EXCEPTION 'oros_rotate_pixel_secret: caller % is not a business', v_caller
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_secret IS NULL OR length(p_secret) < 32 THEN
    RAISE EXCEPTION 'oros_rotate_pixel_secret: a secret needs at least 32 characters' USING ERRCODE = 'check_violation';
  END IF;
  IF p_grace_s IS NULL OR p_grace_s NOT BETWEEN 0 AND 86400 THEN
    RAISE EXCEPTION 'oros_rotate_pixel_secret: grace_s must be 0 to 86400, got %', p_grace_s
      USING ERRCODE = 'check_violation';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('oros_pixel_secret:' || v_caller::text, 0));
  UPDATE pixel_secrets s SET expires_at = now()
   WHERE s.business_id = v_caller AND s.expires_at > now();
  UPDATE pixel_secrets s SET expires_at = now() + make_interval(secs => p_grace_s)
   WHERE s.business_id = v_caller AND s.expires_at IS NULL
  RETURNING s.expires_at INTO previous_valid_until;
  INSERT INTO pixel_secrets (business_id, secret) VALUES (v_caller, p_secret)
  RETURNING pixel_secrets.created_at INTO created_at;
  RETURN NEXT;
END;
$$;
REVOKE ALL ON FUNCTION oros_rotate_pixel_secret(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oros_rotate_pixel_secret(text, integer) TO oros_app;
