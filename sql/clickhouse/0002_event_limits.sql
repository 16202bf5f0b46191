-- Why: ingest checks every stream entry in Python before it dead-letters or replays it
-- (ingest/rows.py, limits in oros/events.py), and an entry's fate must not depend on the
-- batch it arrived in: ClickHouse must refuse exactly what Python refuses. 0001 checks the
-- type and the lower ts bound; these add the rest of what the pipeline can hold. An event id
-- is required (a missing one parses as the zero UUID and would collapse every such event into
-- one), ts has an upper bound (a bad clock far in the future), money is never negative, and
-- text is valid UTF-8 without NUL (Postgres refuses both when the settler copies the event)
-- and fits the Postgres columns the settler copies it to (order_id VARCHAR(200), currency
-- VARCHAR(3)) or a sane size. tests/test_ingest_rows.py inserts every boundary both ways.
ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS has_event_id
    CHECK event_id != toUUID('00000000-0000-0000-0000-000000000000');
ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS ts_before_2100
    CHECK ts < toDateTime64('2100-01-01 00:00:00', 3, 'UTC');
ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS value_not_negative
    CHECK value IS NULL OR value >= 0;
ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS currency_code
    CHECK currency IS NULL OR match(currency, '^[A-Z]{3}$');
ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS order_id_text
    CHECK order_id IS NULL OR (isValidUTF8(order_id) AND position(order_id, '\0') = 0 AND lengthUTF8(order_id) <= 200);
ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS ip_text
    CHECK isValidUTF8(ip) AND position(ip, '\0') = 0 AND lengthUTF8(ip) <= 64;
ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS user_agent_text
    CHECK isValidUTF8(user_agent) AND position(user_agent, '\0') = 0 AND lengthUTF8(user_agent) <= 4096;
ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS referrer_text
    CHECK isValidUTF8(referrer) AND position(referrer, '\0') = 0 AND lengthUTF8(referrer) <= 4096;
ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS bot_reason_text
    CHECK isValidUTF8(bot_reason) AND position(bot_reason, '\0') = 0 AND lengthUTF8(bot_reason) <= 64;
ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS source_text
    CHECK isValidUTF8(source) AND position(source, '\0') = 0 AND lengthUTF8(source) <= 64;
ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS metadata_text
    CHECK isValidUTF8(metadata) AND position(metadata, '\0') = 0 AND lengthUTF8(metadata) <= 16384;
