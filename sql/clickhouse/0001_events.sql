-- Why: the raw, immutable event log, one row per tracked action, written by
-- ingest in large columnar batches. ReplacingMergeTree keyed on the edge event
-- id collapses replays (the settler also reads with LIMIT 1 BY event_id, so a
-- not-yet-merged duplicate never reaches money). The sort key serves the
-- reports and the settler's per-campaign scans; ingested_at (with a minmax
-- index) serves the settler's "what arrived since my watermark" read. Ingest
-- inserts the stream's JSON as is (FORMAT JSONEachRow): ClickHouse parses and
-- types it far faster than Python could build columns.
CREATE TABLE IF NOT EXISTS events
(
    event_id      UUID,
    event_type    LowCardinality(String),
    -- The stream's JSON carries ts_ms; ingest inserts the raw JSON lines and ts is derived here.
    ts_ms         Int64 EPHEMERAL,
    ts            DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(ts_ms, 'UTC'),
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3),
    campaign_id   UUID,
    link_id       Nullable(UUID),
    creator_id    Nullable(UUID),
    supporter_id  Nullable(UUID),
    business_id   Nullable(UUID),
    click_id      Nullable(UUID),
    order_id      Nullable(String),
    value         Nullable(Decimal(12, 2)),
    currency      LowCardinality(Nullable(String)),
    ip            String,
    user_agent    String,
    referrer      String,
    is_bot        Bool,
    bot_reason    LowCardinality(String),
    source        LowCardinality(String),
    metadata      String,
    -- Checked on every insert: a batch holding a malformed event fails as a whole, and ingest
    -- then validates entry by entry and dead-letters the bad ones.
    CONSTRAINT known_type CHECK event_type IN ('click', 'conversion', 'sale', 'refund'),
    CONSTRAINT sane_ts CHECK ts > toDateTime64('2000-01-01 00:00:00', 3, 'UTC'),
    INDEX idx_ingested ingested_at TYPE minmax GRANULARITY 1,
    INDEX idx_click click_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (campaign_id, event_type, event_id)
SETTINGS non_replicated_deduplication_window = 1000
