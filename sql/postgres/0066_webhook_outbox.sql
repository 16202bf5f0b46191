-- Why: a webhook must announce a fact if and only if the fact committed. The outbox rows are
-- written here, by triggers on the tables that record the facts, so they commit or roll back with
-- the statement that wrote the fact, whoever wrote it (the settler today, SQL functions tomorrow),
-- and no Python writer can forget one. The triggers read only table shapes:
--  * events (the settler's decisions): a paid conversion or sale -> conversion.recorded, a
--    rejected conversion, sale or refund -> event.rejected with its reason, both for the campaign's
--    business. Rejected clicks are not announced one by one (a bot wave would be a webhook flood);
--    settlement.completed counts them by reason. The same trigger adds up, per run and campaign,
--    what was decided (webhook_run_totals), for:
--  * settlement_runs: when a run ends (succeeded, failed, or found interrupted), one
--    settlement.completed per business whose campaigns it decided events of, with the totals of
--    each campaign; a failed run's campaigns that committed are settled too, so they are announced.
--  * ledger_entries: credits to a user's own wallet -> earning.credited, one per user per source
--    (campaign, tip, ...) per statement, so a settlement paying a creator 100,000 clicks is one
--    event. A partial refund's re-booked remainder (metadata rebooked_from) is not a new earning.
--  * withdrawals: status moved to completed -> withdrawal.paid, to failed -> withdrawal.failed.
-- Every trigger first asks whether any enabled endpoint listens to its types at all (one probe of
-- the GIN index of 0065), so without subscribers a settlement costs what it did
-- (loadtests/bench_settle.py --webhooks compare). Triggers are statement-level over transition
-- tables: a million-row statement is one call. They run as the owner (SECURITY DEFINER), since
-- a withdrawal or an adjustment may be written from a request role's function.

-- A UUIDv7 (48-bit Unix milliseconds, version 7, random rest), as oros/events.py makes them:
-- the event ids sort by when the event was created. Postgres 18 has uuidv7(); 15-17 do not.
-- Without a SET clause it is inlined into the triggers' queries (a SET costs a call per row).
CREATE FUNCTION oros_uuidv7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
  SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                  PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                  FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;

-- The enabled endpoints listening to any of these types. No SET clause, so the planner inlines it
-- into the trigger's query (it is called only from the triggers below, whose search_path is pinned).
CREATE FUNCTION oros_webhook_listeners(p_types text[])
RETURNS TABLE (endpoint_id uuid, owner_id uuid, events text[])
LANGUAGE sql STABLE AS $$
  SELECT e.id, e.owner_id, e.events FROM webhook_endpoints e WHERE e.disabled_at IS NULL AND e.events && p_types
$$;

-- What a settlement run decided, per campaign: a row per statement of events (append-only, so
-- campaigns posted in parallel never wait on each other), folded and deleted when the run ends.
-- Kept only for campaigns whose business listens to settlement.completed.
CREATE TABLE webhook_run_totals (
  settlement_run_id UUID NOT NULL,
  campaign_id UUID NOT NULL,
  reason VARCHAR(40) NOT NULL,  -- '' for paid events
  events BIGINT NOT NULL,
  amount_paid DECIMAL(14,2) NOT NULL,
  fees DECIMAL(14,2) NOT NULL
);
CREATE INDEX idx_webhook_run_totals_run ON webhook_run_totals(settlement_run_id);
ALTER TABLE webhook_run_totals ENABLE ROW LEVEL SECURITY;  -- and no policy: the owner's bookkeeping

CREATE FUNCTION oros_webhooks_on_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_types constant text[] := ARRAY['conversion.recorded', 'event.rejected', 'settlement.completed'];
  v_campaigns uuid[];
BEGIN
  IF NOT EXISTS (SELECT 1 FROM oros_webhook_listeners(v_types)) THEN
    RETURN NULL;
  END IF;
  -- The statement's campaigns whose business listens (the settler writes one campaign per statement).
  SELECT array_agg(c.id) INTO v_campaigns
    FROM campaigns c
   WHERE c.id IN (SELECT DISTINCT n.campaign_id FROM new_rows n WHERE n.campaign_id IS NOT NULL)
     AND c.business_id IN (SELECT l.owner_id FROM oros_webhook_listeners(v_types) l);
  IF v_campaigns IS NULL THEN
    RETURN NULL;
  END IF;

  WITH facts AS MATERIALIZED (
    SELECT oros_uuidv7() AS event_id, c.business_id AS owner_id,
           CASE n.status WHEN 'paid' THEN 'conversion.recorded' ELSE 'event.rejected' END AS event_type,
           jsonb_build_object(
             'id', n.id, 'event_type', n.event_type, 'campaign_id', n.campaign_id, 'creator_id', n.creator_id,
             'tracking_link_id', n.tracking_link_id, 'click_id', n.click_id, 'order_id', n.order_id,
             'value', n.value::text, 'currency', n.currency, 'occurred_at', n.occurred_at, 'status', n.status,
             'settlement_run_id', n.settlement_run_id) || CASE WHEN n.status = 'paid'
             THEN jsonb_build_object('payout_amount', n.payout_amount::text, 'platform_fee', n.platform_fee::text)
             ELSE jsonb_build_object('reason', n.rejection_reason) END AS payload
      FROM new_rows n JOIN campaigns c ON c.id = n.campaign_id
     WHERE n.campaign_id = ANY(v_campaigns)
       AND ((n.status = 'paid' AND n.event_type IN ('conversion', 'sale'))
         OR (n.status = 'rejected' AND n.event_type IN ('conversion', 'sale', 'refund')))
  )
  INSERT INTO webhook_deliveries (event_id, endpoint_id, owner_id, event_type, payload)
  SELECT f.event_id, l.endpoint_id, l.owner_id, f.event_type, f.payload
    FROM facts f JOIN oros_webhook_listeners(v_types) l ON l.owner_id = f.owner_id AND f.event_type = ANY(l.events);

  INSERT INTO webhook_run_totals (settlement_run_id, campaign_id, reason, events, amount_paid, fees)
  SELECT n.settlement_run_id, n.campaign_id, coalesce(n.rejection_reason, ''), count(*),
         coalesce(sum(n.payout_amount) FILTER (WHERE n.status = 'paid'), 0),
         coalesce(sum(n.platform_fee) FILTER (WHERE n.status = 'paid'), 0)
    FROM new_rows n JOIN campaigns c ON c.id = n.campaign_id
   WHERE n.campaign_id = ANY(v_campaigns) AND n.settlement_run_id IS NOT NULL AND n.event_type <> 'refund'
     AND c.business_id IN (SELECT l.owner_id FROM oros_webhook_listeners(ARRAY['settlement.completed']) l)
   GROUP BY n.settlement_run_id, n.campaign_id, coalesce(n.rejection_reason, '');
  RETURN NULL;
END;
$$;

CREATE TRIGGER events_webhooks AFTER INSERT ON events
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION oros_webhooks_on_events();

CREATE FUNCTION oros_webhooks_on_run_end() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM webhook_run_totals t WHERE t.settlement_run_id = NEW.id) THEN
    RETURN NULL;
  END IF;
  WITH per_campaign AS (
    SELECT t.campaign_id, sum(t.events) FILTER (WHERE t.reason = '') AS paid,
           sum(t.events) FILTER (WHERE t.reason <> '') AS rejected,
           sum(t.amount_paid) AS amount_paid, sum(t.fees) AS fees,
           jsonb_object_agg(t.reason, t.events) FILTER (WHERE t.reason <> '') AS by_reason
      FROM (SELECT r.campaign_id, r.reason, sum(r.events) AS events, sum(r.amount_paid) AS amount_paid,
                   sum(r.fees) AS fees
              FROM webhook_run_totals r WHERE r.settlement_run_id = NEW.id
             GROUP BY r.campaign_id, r.reason) t
     GROUP BY t.campaign_id
  ), facts AS MATERIALIZED (
    SELECT oros_uuidv7() AS event_id, c.business_id AS owner_id, jsonb_build_object(
             'settlement_run_id', NEW.id, 'run_status', NEW.status, 'started_at', NEW.started_at,
             'finished_at', NEW.finished_at,
             'campaigns', jsonb_agg(jsonb_build_object(
               'campaign_id', c.id, 'events_paid', coalesce(p.paid, 0), 'events_rejected', coalesce(p.rejected, 0),
               'rejected_by_reason', coalesce(p.by_reason, '{}'), 'amount_paid', p.amount_paid::text,
               'fees', p.fees::text, 'remaining_budget', c.remaining_budget::text, 'campaign_status', c.status)
               ORDER BY c.id)) AS payload
      FROM per_campaign p JOIN campaigns c ON c.id = p.campaign_id
     GROUP BY c.business_id
  )
  INSERT INTO webhook_deliveries (event_id, endpoint_id, owner_id, event_type, payload)
  SELECT f.event_id, l.endpoint_id, l.owner_id, 'settlement.completed', f.payload
    FROM facts f JOIN oros_webhook_listeners(ARRAY['settlement.completed']) l ON l.owner_id = f.owner_id;
  DELETE FROM webhook_run_totals t WHERE t.settlement_run_id = NEW.id;
  RETURN NULL;
END;
$$;

CREATE TRIGGER settlement_runs_webhooks AFTER UPDATE OF status ON settlement_runs
  FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running')
  EXECUTE FUNCTION oros_webhooks_on_run_end();

CREATE FUNCTION oros_webhooks_on_ledger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM oros_webhook_listeners(ARRAY['earning.credited'])) THEN
    RETURN NULL;
  END IF;
  WITH facts AS MATERIALIZED (
    SELECT oros_uuidv7() AS event_id, w.user_id AS owner_id, jsonb_build_object(
             'wallet_id', w.id, 'amount', sum(n.amount)::text, 'currency', w.currency, 'status', n.status,
             'hold_until', max(n.hold_until), 'source_type', n.source_type, 'source_id', n.source_id,
             'transfer_ids', jsonb_agg(DISTINCT n.transfer_id), 'events', sum(CASE WHEN jsonb_typeof(n.metadata -> 'events') = 'number'
                                           THEN (n.metadata ->> 'events')::numeric END),
             'credited_at', min(n.created_at)) AS payload
      FROM new_rows n JOIN wallets w ON w.id = n.wallet_id
     WHERE n.direction = 'credit' AND w.purpose = 'main' AND w.normal_balance = 'credit'
       AND NOT coalesce(n.metadata ? 'rebooked_from', false)
       AND w.user_id IN (SELECT l.owner_id FROM oros_webhook_listeners(ARRAY['earning.credited']) l)
     GROUP BY w.id, w.user_id, w.currency, n.status, n.source_type, n.source_id
  )
  INSERT INTO webhook_deliveries (event_id, endpoint_id, owner_id, event_type, payload)
  SELECT f.event_id, l.endpoint_id, l.owner_id, 'earning.credited', f.payload
    FROM facts f JOIN oros_webhook_listeners(ARRAY['earning.credited']) l ON l.owner_id = f.owner_id;
  RETURN NULL;
END;
$$;

CREATE TRIGGER ledger_entries_webhooks AFTER INSERT ON ledger_entries
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION oros_webhooks_on_ledger();

CREATE FUNCTION oros_webhooks_on_withdrawals() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_types constant text[] := ARRAY['withdrawal.paid', 'withdrawal.failed'];
BEGIN
  IF NOT EXISTS (SELECT 1 FROM oros_webhook_listeners(v_types)) THEN
    RETURN NULL;
  END IF;
  WITH facts AS MATERIALIZED (
    SELECT oros_uuidv7() AS event_id, w.user_id AS owner_id,
           CASE n.status WHEN 'completed' THEN 'withdrawal.paid' ELSE 'withdrawal.failed' END AS event_type,
           jsonb_build_object('id', n.id, 'wallet_id', n.wallet_id, 'amount', n.amount::text, 'currency', w.currency,
                              'method', n.method, 'status', n.status, 'stripe_transfer_id', n.stripe_transfer_id,
                              'failure_reason', n.failure_reason, 'created_at', n.created_at,
                              'processed_at', n.processed_at) AS payload
      FROM new_rows n JOIN old_rows o ON o.id = n.id JOIN wallets w ON w.id = n.wallet_id
     WHERE n.status IN ('completed', 'failed') AND o.status IS DISTINCT FROM n.status
  )
  INSERT INTO webhook_deliveries (event_id, endpoint_id, owner_id, event_type, payload)
  SELECT f.event_id, l.endpoint_id, l.owner_id, f.event_type, f.payload
    FROM facts f JOIN oros_webhook_listeners(v_types) l ON l.owner_id = f.owner_id AND f.event_type = ANY(l.events);
  RETURN NULL;
END;
$$;

CREATE TRIGGER withdrawals_webhooks AFTER UPDATE ON withdrawals
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION oros_webhooks_on_withdrawals();
