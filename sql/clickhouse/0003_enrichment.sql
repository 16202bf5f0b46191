-- Why: reports group by where a visitor came from and on what (country, device, browser, OS,
-- referrer host), and count distinct visitors, without parsing user agents or looking up IPs at
-- query time. Ingest fills these columns before the insert (ingest/enrich.py); events stored
-- before this migration read as '' (unknown). The limits are oros.events.ENRICHED_LIMITS and
-- DEVICE_TYPES, which ingest/rows.py checks in Python too.
--
-- ip_hash is a keyed hash of the full address (OROS_IP_HASH_KEY), what the settler deduplicates
-- clicks and counts a day's unique visitors by when the stored ip is truncated
-- (OROS_ANONYMIZE_IP). It is kept through the event's UTC day and one more (the dedupe window,
-- at most a day when anonymizing, and a day's grace for a settler that was down), then the TTL
-- blanks it at the next merge: docs/security.md, "IP addresses".
-- A creator's own stats (GET /v1/me/stats) select by creator_id, which is not in the sort key;
-- a creator's events cluster by campaign, so a bloom filter skips most granules.
-- One ALTER: each is a metadata change of its own, and a test migrates a fresh database.
ALTER TABLE events
    ADD COLUMN IF NOT EXISTS country LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS device_type LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS browser LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS browser_version LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS os LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS os_version LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS referrer_host String DEFAULT '',
    ADD COLUMN IF NOT EXISTS ip_hash String DEFAULT '' TTL toStartOfDay(toDateTime(ts, 'UTC')) + INTERVAL 2 DAY,
    ADD INDEX IF NOT EXISTS idx_creator creator_id TYPE bloom_filter GRANULARITY 4,
    ADD CONSTRAINT IF NOT EXISTS country_code CHECK match(country, '^([A-Z]{2})?$'),
    ADD CONSTRAINT IF NOT EXISTS device_type_known CHECK device_type IN ('', 'desktop', 'mobile', 'tablet', 'bot', 'other'),
    ADD CONSTRAINT IF NOT EXISTS browser_text CHECK isValidUTF8(browser) AND position(browser, '\0') = 0 AND lengthUTF8(browser) <= 64,
    ADD CONSTRAINT IF NOT EXISTS browser_version_text CHECK isValidUTF8(browser_version) AND position(browser_version, '\0') = 0 AND lengthUTF8(browser_version) <= 32,
    ADD CONSTRAINT IF NOT EXISTS os_text CHECK isValidUTF8(os) AND position(os, '\0') = 0 AND lengthUTF8(os) <= 64,
    ADD CONSTRAINT IF NOT EXISTS os_version_text CHECK isValidUTF8(os_version) AND position(os_version, '\0') = 0 AND lengthUTF8(os_version) <= 32,
    ADD CONSTRAINT IF NOT EXISTS referrer_host_text CHECK isValidUTF8(referrer_host) AND position(referrer_host, '\0') = 0 AND lengthUTF8(referrer_host) <= 255,
    ADD CONSTRAINT IF NOT EXISTS ip_hash_hex CHECK match(ip_hash, '^([0-9a-f]{32})?$');
