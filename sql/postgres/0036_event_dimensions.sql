-- Why: a campaign's stats group by country, device, browser, OS and referrer host, and count
-- unique visitors, for what the settler decided (billable, duplicate, each rejection) as well as
-- for what happened. ClickHouse knows the dimensions (ingest enriches every event), Postgres the
-- decisions; the settler copies an event's dimensions with its decision, so one Postgres query
-- answers each report. first_visit: the visitor's first human click on this link that UTC day
-- (by the IP hash while IPs are anonymized); unique = how many such clicks. Events decided before
-- this migration read as unknown ('') and not first. The sizes are ClickHouse's
-- (oros.events.ENRICHED_LIMITS).
ALTER TABLE events
  ADD COLUMN country VARCHAR(2) NOT NULL DEFAULT '',
  ADD COLUMN device_type VARCHAR(16) NOT NULL DEFAULT '',
  ADD COLUMN browser VARCHAR(64) NOT NULL DEFAULT '',
  ADD COLUMN os VARCHAR(64) NOT NULL DEFAULT '',
  ADD COLUMN referrer_host VARCHAR(255) NOT NULL DEFAULT '',
  ADD COLUMN first_visit BOOLEAN NOT NULL DEFAULT FALSE;

-- The reports' reads: a campaign's (or a creator's) decided events in a time range, and the
-- creator's earnings export, which pages through them in (occurred_at, id) order.
CREATE INDEX idx_events_campaign_occurred ON events(campaign_id, occurred_at);
CREATE INDEX idx_events_creator_occurred ON events(creator_id, occurred_at, id);
