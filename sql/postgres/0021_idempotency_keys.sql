-- Why: a client that times out and retries a money request (a withdrawal, an
-- off-Stripe funding) must not move the money twice. The first response is
-- stored under the caller's Idempotency-Key in the same transaction as the
-- movement itself, so either both exist or neither does.
CREATE TABLE idempotency_keys (
  user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  key VARCHAR(100) NOT NULL,
  request_hash CHAR(64) NOT NULL,
  status_code INTEGER NOT NULL,
  response JSONB NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, key)
);

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY "idempotency_keys_owner" ON idempotency_keys FOR ALL USING (auth.uid() = user_id);
GRANT SELECT, INSERT ON idempotency_keys TO oros_app;
