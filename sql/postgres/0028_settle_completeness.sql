-- Why: the settler proves each run that every ClickHouse event is decided, by
-- comparing per UTC hour of event time how many distinct ids ClickHouse holds
-- with how many rows Postgres events has (settler/completeness.py,
-- docs/settlement.md "Completeness"). Counting events each run would scan the
-- whole table, so triggers keep the per-hour counts as they change. They append
-- deltas and never update a row, so the settlement transactions posting
-- campaigns at once never wait on each other here; the settler folds the
-- deltas of an hour into one row when it reads them. An event's occurred_at
-- (and id) is what it is counted under, so it may no longer change.
CREATE TABLE settle_decided_hours (
  hour TIMESTAMPTZ NOT NULL,
  decided BIGINT NOT NULL
);
CREATE INDEX idx_settle_decided_hours ON settle_decided_hours(hour);

INSERT INTO settle_decided_hours (hour, decided)
SELECT date_trunc('hour', occurred_at, 'UTC'), count(*) FROM events WHERE occurred_at IS NOT NULL GROUP BY 1;

CREATE FUNCTION oros_count_decided_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO settle_decided_hours (hour, decided)
    SELECT date_trunc('hour', occurred_at, 'UTC'), count(*) FROM new_rows WHERE occurred_at IS NOT NULL GROUP BY 1;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO settle_decided_hours (hour, decided)
    SELECT date_trunc('hour', occurred_at, 'UTC'), -count(*) FROM old_rows WHERE occurred_at IS NOT NULL GROUP BY 1;
  ELSE
    DELETE FROM settle_decided_hours;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER events_count_inserted AFTER INSERT ON events
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION oros_count_decided_events();
CREATE TRIGGER events_count_deleted AFTER DELETE ON events
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION oros_count_decided_events();
CREATE TRIGGER events_count_truncated AFTER TRUNCATE ON events
  FOR EACH STATEMENT EXECUTE FUNCTION oros_count_decided_events();

CREATE FUNCTION oros_event_identity_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'event %: id and occurred_at are immutable (the settler counts events by them)', OLD.id;
END
$$;
CREATE TRIGGER events_identity_immutable BEFORE UPDATE OF id, occurred_at ON events
  FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.occurred_at IS DISTINCT FROM NEW.occurred_at)
  EXECUTE FUNCTION oros_event_identity_immutable();

-- Per ClickHouse partition of events (a month of event time): the fingerprint at which every event
-- in it was proven decided -- ClickHouse's highest block number and rows, Postgres's decided count.
-- While both sides are unchanged the partition is not counted again.
CREATE TABLE settle_proven_partitions (
  partition_id VARCHAR(32) PRIMARY KEY,
  max_block BIGINT NOT NULL,
  part_rows BIGINT NOT NULL,
  decided BIGINT NOT NULL,
  proven_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

ALTER TABLE settle_decided_hours ENABLE ROW LEVEL SECURITY;
ALTER TABLE settle_proven_partitions ENABLE ROW LEVEL SECURITY;
CREATE POLICY "admin_read" ON settle_decided_hours FOR SELECT USING (auth.is_admin());
CREATE POLICY "admin_read" ON settle_proven_partitions FOR SELECT USING (auth.is_admin());
