-- Why: businesses and creators are told what happens to their money as it happens (issue 17,
-- "Webhooks out"). A user subscribes endpoints to event types; every event is delivered to each
-- subscribed endpoint from an outbox (webhook_deliveries) that the transaction recording the fact
-- writes itself (0066's triggers), so an event is announced if and only if its fact committed, and
-- a crash between the two cannot happen. The delivery process (webhooks/deliver.py, `oros
-- webhooks`) claims due rows with FOR UPDATE SKIP LOCKED and a lease, signs and posts them, and
-- records each attempt (docs/webhooks.md).
--  * Secrets sign deliveries, so they are stored as given, like pixel secrets (0031): in a table
--    of their own with RLS and no policy, which only the owner (the delivery process) reads. A
--    request can make a secret (shown once) but never read one.
--  * A user sees only their own endpoints, deliveries and attempts (owner_id = auth.uid()).
--    Nobody else does: admins neither, since a payload carries a business's sales.
--  * Writes go through functions that check the caller (0024): who may subscribe to what, at
--    most 16 endpoints each, a rotation keeping one current secret.
--  * A deleted endpoint is disabled, not removed (its deliveries stay until pruned): its
--    pending deliveries are canceled with it, and one written by a transaction that read the
--    endpoint just before is canceled by the delivery process instead of sent.
CREATE TABLE webhook_endpoints (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  url TEXT NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
  -- The event types, each from the list oros/webhooks.py EVENT_TYPES owns.
  events TEXT[] NOT NULL CHECK (cardinality(events) BETWEEN 1 AND 6 AND events <@ ARRAY[
    'conversion.recorded', 'event.rejected', 'settlement.completed', 'earning.credited',
    'withdrawal.paid', 'withdrawal.failed']::text[]),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  disabled_at TIMESTAMPTZ
);
CREATE INDEX idx_webhook_endpoints_owner ON webhook_endpoints(owner_id, created_at DESC, id DESC);
-- The outbox triggers' first question, "does anyone listen to this type?", one index probe.
CREATE INDEX idx_webhook_endpoints_events ON webhook_endpoints USING GIN (events) WHERE disabled_at IS NULL;

-- The secret that signs an endpoint's deliveries; a rotated-out one keeps signing until expires_at.
CREATE TABLE webhook_endpoint_secrets (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  endpoint_id UUID NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
  secret TEXT NOT NULL CHECK (length(secret) >= 32),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  expires_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX idx_webhook_endpoint_secrets_current ON webhook_endpoint_secrets(endpoint_id)
  WHERE expires_at IS NULL;
CREATE INDEX idx_webhook_endpoint_secrets_endpoint ON webhook_endpoint_secrets(endpoint_id, expires_at);
ALTER TABLE webhook_endpoint_secrets ENABLE ROW LEVEL SECURITY;  -- and no policy: the owner alone reads it

-- The outbox: one row per (event, subscribed endpoint). event_id is the event's UUIDv7, the same
-- for every endpoint and every attempt (the receiver's dedupe key). owner_id is the endpoint's,
-- copied so RLS reads it without a join (no foreign key of its own: the endpoint's cascades, and a
-- settlement writing 100,000 deliveries would pay a check per row). give_up_at: a day after the
-- event, when a delivery still failing becomes failed. leased_until/lease_token: the attempt in
-- flight; a process that dies holding one loses it when it expires, and another tries again.
-- Only the indexes the delivery process and the listing need: every row is written by a settlement.
CREATE TABLE webhook_deliveries (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  event_id UUID NOT NULL,
  endpoint_id UUID NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
  owner_id UUID NOT NULL,
  event_type VARCHAR(40) NOT NULL,
  payload JSONB NOT NULL,
  status VARCHAR(12) NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed', 'canceled')),
  attempt_count INTEGER NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
  next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  give_up_at TIMESTAMPTZ NOT NULL DEFAULT now() + interval '24 hours',
  leased_until TIMESTAMPTZ,
  lease_token UUID,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at TIMESTAMPTZ
);
-- What the delivery process claims: the due pending rows, oldest first.
CREATE INDEX idx_webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX idx_webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, created_at DESC, id DESC);
-- Pruning finished deliveries after the retention period.
CREATE INDEX idx_webhook_deliveries_finished ON webhook_deliveries(finished_at) WHERE status <> 'pending';

-- Each HTTP attempt of a delivery: what the receiver answered (status code, the start of its body),
-- or why there was no answer (error), and how long it took.
CREATE TABLE webhook_attempts (
  id BIGSERIAL PRIMARY KEY,
  delivery_id UUID NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
  attempt INTEGER NOT NULL CHECK (attempt >= 1),
  started_at TIMESTAMPTZ NOT NULL,
  duration_ms INTEGER NOT NULL CHECK (duration_ms >= 0),
  status_code INTEGER,
  response_excerpt TEXT,
  error TEXT,
  UNIQUE (delivery_id, attempt)
);

ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY "webhook_endpoints_owner" ON webhook_endpoints FOR SELECT TO oros_app
  USING (owner_id = auth.uid());
CREATE POLICY "webhook_deliveries_owner" ON webhook_deliveries FOR SELECT TO oros_app
  USING (owner_id = auth.uid());
CREATE POLICY "webhook_attempts_owner" ON webhook_attempts FOR SELECT TO oros_app
  USING (delivery_id IN (SELECT d.id FROM webhook_deliveries d WHERE d.owner_id = auth.uid()));
-- Reads only (the lease columns say nothing to a user); every write is a function below.
GRANT SELECT (id, owner_id, url, events, created_at, disabled_at) ON webhook_endpoints TO oros_app;
GRANT SELECT (id, event_id, endpoint_id, owner_id, event_type, payload, status, attempt_count, next_attempt_at,
              give_up_at, created_at, finished_at) ON webhook_deliveries TO oros_app;
GRANT SELECT (id, delivery_id, attempt, started_at, duration_ms, status_code, response_excerpt, error)
  ON webhook_attempts TO oros_app;

-- Who may subscribe to a type: the role the events of that type reach (0066 decides the owner).
CREATE FUNCTION oros_webhook_audience(p_type text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT CASE
    WHEN p_type IN ('conversion.recorded', 'event.rejected', 'settlement.completed') THEN 'business'
    WHEN p_type IN ('earning.credited', 'withdrawal.paid', 'withdrawal.failed') THEN 'creator'
  END
$$;

-- The caller's new endpoint with its first secret (made by the API, shown to the caller once).
-- At most 16 enabled endpoints per user (Stripe's limit), serialised per user so two concurrent
-- creates cannot both pass the count.
CREATE FUNCTION oros_create_webhook_endpoint(p_url text, p_events text[], p_secret text)
RETURNS TABLE (id uuid, url text, events text[], created_at timestamptz, disabled_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_caller uuid := auth.uid();
  v_type text;
  v_id uuid;
BEGIN
  IF v_caller IS NULL OR NOT EXISTS (SELECT 1 FROM users u WHERE u.id = v_caller AND NOT u.is_system) THEN
    RAISE EXCEPTION 'oros_create_webhook_endpoint: no caller' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_url IS NULL OR p_url !~ '^https?://' OR length(p_url) > 2048 THEN
    RAISE EXCEPTION 'url must be an http(s) URL of at most 2048 characters'
      USING ERRCODE = 'invalid_parameter_value', COLUMN = 'url';
  END IF;
  IF p_events IS NULL OR cardinality(p_events) = 0 THEN
    RAISE EXCEPTION 'events must name at least one event type' USING ERRCODE = 'invalid_parameter_value',
      COLUMN = 'events';
  END IF;
  FOREACH v_type IN ARRAY p_events LOOP
    IF oros_webhook_audience(v_type) IS NULL OR NOT EXISTS (
         SELECT 1 FROM user_roles r WHERE r.user_id = v_caller AND r.role = oros_webhook_audience(v_type)) THEN
      RAISE EXCEPTION 'caller % may not subscribe to %', v_caller, v_type
        USING ERRCODE = 'invalid_parameter_value', COLUMN = 'events';
    END IF;
  END LOOP;
  IF p_secret IS NULL OR length(p_secret) < 32 THEN
    RAISE EXCEPTION 'a webhook secret needs at least 32 characters' USING ERRCODE = 'check_violation';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('oros_webhook_endpoints:' || v_caller::text, 0));
  IF (SELECT count(*) FROM webhook_endpoints e WHERE e.owner_id = v_caller AND e.disabled_at IS NULL) >= 16 THEN
    RAISE EXCEPTION 'at most 16 webhook endpoints; delete one first' USING ERRCODE = 'check_violation',
      COLUMN = 'url';
  END IF;
  INSERT INTO webhook_endpoints (owner_id, url, events)
  VALUES (v_caller, p_url, ARRAY(SELECT DISTINCT unnest(p_events) ORDER BY 1))
  RETURNING webhook_endpoints.id INTO v_id;
  INSERT INTO webhook_endpoint_secrets (endpoint_id, secret) VALUES (v_id, p_secret);
  RETURN QUERY SELECT e.id, e.url, e.events, e.created_at, e.disabled_at FROM webhook_endpoints e WHERE e.id = v_id;
END;
$$;

-- The caller's endpoint disabled, and its pending deliveries canceled. NULL: not the caller's
-- (or already deleted).
CREATE FUNCTION oros_disable_webhook_endpoint(p_endpoint uuid)
RETURNS TABLE (id uuid, url text, events text[], created_at timestamptz, disabled_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  RETURN QUERY
  UPDATE webhook_endpoints e SET disabled_at = now()
   WHERE e.id = p_endpoint AND e.owner_id = auth.uid() AND e.disabled_at IS NULL
  RETURNING e.id, e.url, e.events, e.created_at, e.disabled_at;
  IF FOUND THEN
    UPDATE webhook_deliveries d SET status = 'canceled', finished_at = now(), leased_until = NULL, lease_token = NULL
     WHERE d.endpoint_id = p_endpoint AND d.status = 'pending';
  END IF;
END;
$$;

-- A new secret for the caller's endpoint (shown to the caller once). The one it replaces still
-- signs for p_grace_s more seconds (0 to 86400): deliveries carry both signatures meanwhile, so
-- the receiver can switch without losing one. Serialised per endpoint: one current secret.
CREATE FUNCTION oros_rotate_webhook_secret(p_endpoint uuid, p_secret text, p_grace_s integer)
RETURNS TABLE (created_at timestamptz, previous_valid_until timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  IF p_grace_s IS NULL OR p_grace_s NOT BETWEEN 0 AND 86400 THEN
    RAISE EXCEPTION 'grace_s must be 0 to 86400, got %', p_grace_s USING ERRCODE = 'invalid_parameter_value',
      COLUMN = 'grace_s';
  END IF;
  IF p_secret IS NULL OR length(p_secret) < 32 THEN
    RAISE EXCEPTION 'a webhook secret needs at least 32 characters' USING ERRCODE = 'check_violation';
  END IF;
  PERFORM 1 FROM webhook_endpoints e
   WHERE e.id = p_endpoint AND e.owner_id = auth.uid() AND e.disabled_at IS NULL FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;  -- not the caller's: nothing rotated, no row returned
  END IF;
  UPDATE webhook_endpoint_secrets s SET expires_at = now()
   WHERE s.endpoint_id = p_endpoint AND s.expires_at > now();
  UPDATE webhook_endpoint_secrets s SET expires_at = now() + make_interval(secs => p_grace_s)
   WHERE s.endpoint_id = p_endpoint AND s.expires_at IS NULL
  RETURNING s.expires_at INTO previous_valid_until;
  INSERT INTO webhook_endpoint_secrets (endpoint_id, secret) VALUES (p_endpoint, p_secret)
  RETURNING webhook_endpoint_secrets.created_at INTO created_at;
  RETURN NEXT;
END;
$$;

-- A failed delivery of the caller's endpoint tried again from now, for another day. Same event id:
-- a receiver that did process it after all dedupes it. NULL: not the caller's, or not failed.
CREATE FUNCTION oros_retry_webhook_delivery(p_endpoint uuid, p_delivery uuid)
RETURNS TABLE (id uuid, status text, next_attempt_at timestamptz, give_up_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  RETURN QUERY
  UPDATE webhook_deliveries d
     SET status = 'pending', next_attempt_at = now(), give_up_at = now() + interval '24 hours', finished_at = NULL
    FROM webhook_endpoints e
   WHERE d.id = p_delivery AND d.endpoint_id = p_endpoint AND d.status = 'failed'
     AND e.id = d.endpoint_id AND e.owner_id = auth.uid() AND e.disabled_at IS NULL
  RETURNING d.id, d.status::text, d.next_attempt_at, d.give_up_at;
END;
$$;

GRANT EXECUTE ON FUNCTION oros_create_webhook_endpoint(text, text[], text), oros_disable_webhook_endpoint(uuid),
  oros_rotate_webhook_secret(uuid, text, integer), oros_retry_webhook_delivery(uuid, uuid) TO oros_app;
