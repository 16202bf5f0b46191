-- Why: the webhook deliverer (webhooks/deliver.py) logged in as the schema owner, the settler's login,
-- although it sends HTTP requests to URLs users choose and reads their answers: a bug there (an SSRF
-- that got past webhooks/addresses.py, a parser fed by a hostile receiver) held every right on the
-- books. It now logs in as a member of oros_webhooks, which holds exactly what the deliverer's queries
-- need (CLAIM_SQL, RECORD_SQL, CANCEL_SQL, STATS_SQL, PRUNE_SQL):
--  * webhook_deliveries: read the delivery, lease it, record its outcome, cancel it, prune finished
--    ones (their attempts go by the foreign key's cascade, which runs as the table's owner);
--  * webhook_endpoints: an endpoint's URL and whether it is disabled;
--  * webhook_endpoint_secrets: the secrets that sign its deliveries (the reason it held the owner's
--    login: RLS keeps every other role out of them);
--  * webhook_attempts: append an attempt.
-- Nothing of the ledger, users, campaigns or events; no function. The group is created here when absent
-- (a superuser migrating) and checked when it exists (deploy/postgres/initdb/10-oros-roles.sh makes it
-- for compose, whose owner cannot create roles).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oros_webhooks') THEN
    CREATE ROLE oros_webhooks NOLOGIN;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles
              WHERE rolname = 'oros_webhooks'
                AND (rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication))
     OR EXISTS (SELECT 1 FROM pg_auth_members WHERE member = 'oros_webhooks'::regrole) THEN
    RAISE EXCEPTION 'oros_webhooks must be NOLOGIN, unprivileged and a member of no role '
                    '(see deploy/postgres/initdb/10-oros-roles.sh)';
  END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO oros_webhooks;

GRANT SELECT (id, event_id, endpoint_id, event_type, payload, status, attempt_count, next_attempt_at, give_up_at,
              leased_until, lease_token, created_at, finished_at),
      UPDATE (status, attempt_count, next_attempt_at, finished_at, leased_until, lease_token),
      DELETE
   ON webhook_deliveries TO oros_webhooks;
CREATE POLICY "webhooks_reads_deliveries" ON webhook_deliveries FOR SELECT TO oros_webhooks USING (true);
CREATE POLICY "webhooks_leases_deliveries" ON webhook_deliveries FOR UPDATE TO oros_webhooks
  USING (true) WITH CHECK (true);
CREATE POLICY "webhooks_prunes_deliveries" ON webhook_deliveries FOR DELETE TO oros_webhooks
  USING (status <> 'pending');

GRANT SELECT (id, url, disabled_at) ON webhook_endpoints TO oros_webhooks;
CREATE POLICY "webhooks_reads_endpoints" ON webhook_endpoints FOR SELECT TO oros_webhooks USING (true);

GRANT SELECT (endpoint_id, secret, created_at, expires_at) ON webhook_endpoint_secrets TO oros_webhooks;
CREATE POLICY "webhooks_reads_secrets" ON webhook_endpoint_secrets FOR SELECT TO oros_webhooks USING (true);

-- INSERT ... RETURNING attempt reads back the row it wrote.
GRANT SELECT (delivery_id, attempt),
      INSERT (delivery_id, attempt, started_at, duration_ms, status_code, response_excerpt, error)
   ON webhook_attempts TO oros_webhooks;
GRANT USAGE ON SEQUENCE webhook_attempts_id_seq TO oros_webhooks;
CREATE POLICY "webhooks_reads_attempts" ON webhook_attempts FOR SELECT TO oros_webhooks USING (true);
CREATE POLICY "webhooks_records_attempts" ON webhook_attempts FOR INSERT TO oros_webhooks WITH CHECK (true);
