-- Why: a campaign's (or a creator's) stats count what happened per hour or day, grouped or
-- filtered by one dimension (admin_api/reports.py); reading a month of raw events FINAL takes
-- seconds at millions of rows. A materialized view adds every inserted block to these hourly
-- sums, one row set per scope (the campaign, and the creator whose link it was) and per
-- dimension ('' for none, then country, device, browser, os, referrer, link, and creator or
-- campaign), keyed as the reports name them, so a report reads one dimension's rows.
--
-- Replays count once, as they do in events (a ReplacingMergeTree by event id, read FINAL):
-- * a batch inserted again with its deduplication token (ingest/writer.py, after a crash) is
--   dropped by ClickHouse before it reaches any materialized view;
-- * an event inserted again in another block (a spooled batch appended twice, ingest's probe,
--   a redelivery batched differently) is looked up: inside the view, "events" is the inserted
--   block, while merge() reads the table, which already holds the block. An event with a row
--   ingested before this block is left out, and so is a second row of it within the block.
--   The lookup is by the table's sort key, so it reads the granules the block's ids fall in.
--   ClickHouse stores currentDatabase() resolved: the view looks up the database it was made in.
--   Left: two copies inserted in the same millisecond both count, and a copy the table merged
--   away in the instant between the block's write and the view's run (merges pick parts later)
--   is missed; docs/analytics.md, "Reports".
-- Refunds are not counted by the reports and are left out.
CREATE TABLE IF NOT EXISTS event_hours
(
    scope        Enum8('campaign' = 1, 'creator' = 2),
    scope_id     UUID,
    dim          LowCardinality(String),
    hour         DateTime('UTC'),
    key          String,
    clicks       UInt64,
    bot_clicks   UInt64,
    conversions  UInt64,
    sales        UInt64,
    sales_value  Decimal(38, 2)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (scope, scope_id, dim, hour, key);

CREATE MATERIALIZED VIEW IF NOT EXISTS event_hours_mv TO event_hours AS
SELECT sc.1 AS scope, assumeNotNull(sc.2) AS scope_id, d.1 AS dim, toStartOfHour(ts, 'UTC') AS hour, d.2 AS key,
       countIf(event_type = 'click') AS clicks, countIf(event_type = 'click' AND is_bot) AS bot_clicks,
       countIf(event_type = 'conversion') AS conversions, countIf(event_type = 'sale') AS sales,
       toDecimal128(sumIf(ifNull(value, 0), event_type = 'sale'), 2) AS sales_value
  FROM (SELECT * FROM events
         WHERE event_type IN ('click', 'conversion', 'sale')
           AND (campaign_id, event_type, event_id) NOT IN (
               SELECT campaign_id, event_type, event_id FROM merge(currentDatabase(), '^events$')
                WHERE (campaign_id, event_type, event_id) IN (SELECT campaign_id, event_type, event_id FROM events)
                  AND ingested_at < (SELECT min(ingested_at) FROM events))
         LIMIT 1 BY campaign_id, event_type, event_id)
 ARRAY JOIN arrayFilter(s -> isNotNull(s.2), [('campaign', toNullable(campaign_id)), ('creator', creator_id)]) AS sc
 ARRAY JOIN [('', ''), ('country', toString(country)), ('device', toString(device_type)),
             ('browser', toString(browser)), ('os', toString(os)), ('referrer', referrer_host),
             ('link', ifNull(toString(link_id), '')),
             if(sc.1 = 'campaign', ('creator', ifNull(toString(creator_id), '')),
                ('campaign', toString(campaign_id)))] AS d
 GROUP BY scope, scope_id, dim, hour, key;

-- The events stored before the view existed, each once (FINAL). Run by `oros migrate` before
-- ingest starts, as deploys do: a batch inserted in the second the view was made could count twice.
INSERT INTO event_hours
SELECT sc.1 AS scope, assumeNotNull(sc.2) AS scope_id, d.1 AS dim, toStartOfHour(ts, 'UTC') AS hour, d.2 AS key,
       countIf(event_type = 'click') AS clicks, countIf(event_type = 'click' AND is_bot) AS bot_clicks,
       countIf(event_type = 'conversion') AS conversions, countIf(event_type = 'sale') AS sales,
       toDecimal128(sumIf(ifNull(value, 0), event_type = 'sale'), 2) AS sales_value
  FROM events FINAL
 ARRAY JOIN arrayFilter(s -> isNotNull(s.2), [('campaign', toNullable(campaign_id)), ('creator', creator_id)]) AS sc
 ARRAY JOIN [('', ''), ('country', toString(country)), ('device', toString(device_type)),
             ('browser', toString(browser)), ('os', toString(os)), ('referrer', referrer_host),
             ('link', ifNull(toString(link_id), '')),
             if(sc.1 = 'campaign', ('creator', ifNull(toString(creator_id), '')),
                ('campaign', toString(campaign_id)))] AS d
 WHERE event_type IN ('click', 'conversion', 'sale')
   AND ingested_at < (SELECT min(metadata_modification_time) FROM system.tables
                       WHERE database = currentDatabase() AND name = 'event_hours_mv')
 GROUP BY scope, scope_id, dim, hour, key
