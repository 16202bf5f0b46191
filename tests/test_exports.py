"""CSV exports stream: a million rows arrive whole, in pages, and later pages are read after the first bytes left.

The proof that nothing buffers the whole result is structural, not a memory
measurement: after the client has read the first bytes, the test adds an
event that sorts last; a handler that had read everything first could not
send it, a paged one sends it in its last page.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from admin_api import exports
from admin_api.app import create_app
from admin_api.exports import EARNINGS_COLUMNS, EVENT_COLUMNS, EXPORT_CHUNK_ROWS

from factories import make_campaign, make_user

DAY = datetime(2026, 3, 1, tzinfo=UTC)
MILLION = 1_000_000
PAGE_ROWS = 7
EARNINGS_ROWS = 95  # 13 full pages and a part
RANGE = {"from": DAY.isoformat(), "to": (DAY + timedelta(days=2)).isoformat()}


@pytest.fixture
async def api(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings))


def fill_earnings(pg, campaign: str, creator: str, rows: int) -> None:
    """``rows`` paid clicks of ``creator``, one a millisecond from ``DAY``, in one statement.

    As the owner with the table's triggers off for the fill (the hourly sums, the webhook outbox,
    the completeness counts and the foreign-key checks: every row names a real campaign and
    creator): a million rows take about 10 s of Postgres time instead of 30 to 40 s.
    """
    with pg.transaction():
        pg.execute("ALTER TABLE events DISABLE TRIGGER ALL")
        pg.execute("""INSERT INTO events (campaign_id, creator_id, event_type, occurred_at, status, payout_amount,
                                          platform_fee, paid)
                      SELECT %s, %s, 'click', %s + n * interval '1 millisecond', 'paid', 0.50, 0.05, true
                        FROM generate_series(0, %s - 1) AS n""", (campaign, creator, DAY, rows))
        pg.execute("ALTER TABLE events ENABLE TRIGGER ALL")


async def read_in_two_parts(response, after_first_bytes) -> bytes:
    """The body: its first bytes, then ``after_first_bytes()``, then the rest."""
    assert response.status == 200, await response.text()
    assert response.headers["Transfer-Encoding"] == "chunked"
    first = await response.content.readany()
    after_first_bytes()
    return first + await response.content.read()


async def test_events_csv_streams_a_million_rows(api, pg, ch, settings):
    business, auth = make_user(pg, settings, "business")
    campaign = make_campaign(pg, business)
    ch.command(
        "INSERT INTO events (event_id, event_type, ts_ms, campaign_id, ip, user_agent, referrer, is_bot, bot_reason,"
        " source, metadata, country) SELECT generateUUIDv7(), 'click', {ms:Int64} + number * 100, {c:UUID},"
        " '203.0.113.9', 'secret-agent', '', false, '', 'redirect', '{}', 'US' FROM numbers({n:UInt64})",
        parameters={"ms": int(DAY.timestamp() * 1000), "c": campaign, "n": MILLION})
    marker = str(uuid.uuid4())

    def add_the_last_event():
        ch.command("INSERT INTO events (event_id, event_type, ts_ms, campaign_id, ip, user_agent, referrer, is_bot,"
                   " bot_reason, source, metadata, value) VALUES ({id:UUID}, 'sale', {ms:Int64}, {c:UUID}, '', '', '',"
                   " false, '', 'api', '{}', 12.5)",
                   parameters={"id": marker, "ms": int(DAY.timestamp() * 1000) + 5, "c": campaign})

    response = await api.get(f"/v1/campaigns/{campaign}/events.csv", params=RANGE, headers=auth)
    body = await read_in_two_parts(response, add_the_last_event)

    lines = body.split(b"\n")
    assert lines[0].decode() == ",".join(EVENT_COLUMNS) and lines[-1] == b""
    assert len(lines) - 2 == MILLION + 1 > 2 * EXPORT_CHUNK_ROWS  # every row once, over many pages
    last = next(csv.reader([lines[-2].decode()]))
    assert last[:2] == ["sale", marker] and last[EVENT_COLUMNS.index("value")] == "12.5"
    assert b"203.0.113.9" not in body and b"secret-agent" not in body  # no raw IP or user agent leaves
    assert len(set(lines)) == len(lines)  # no row twice across page boundaries


async def test_events_csv_rows_are_the_campaigns_and_formula_safe(api, pg, ch, settings):
    business, auth = make_user(pg, settings, "business")
    campaign, other = make_campaign(pg, business), make_campaign(pg, business)
    at = int(DAY.timestamp() * 1000)
    for camp, order_id in ((campaign, "=HYPERLINK(\"http://evil\")"), (campaign, "line\nbreak"), (other, "x")):
        ch.command("INSERT INTO events (event_id, event_type, ts_ms, campaign_id, ip, user_agent, referrer, is_bot,"
                   " bot_reason, source, metadata, order_id, referrer_host) VALUES (generateUUIDv7(), 'sale',"
                   " {ms:Int64}, {c:UUID}, '', '', '', false, '', 'api', '{}', {o:String}, '@evil.example')",
                   parameters={"ms": at, "c": camp, "o": order_id})
    response = await api.get(f"/v1/campaigns/{campaign}/events.csv", params=RANGE, headers=auth)
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert sorted(r["order_id"] for r in rows) == ["'=HYPERLINK(\"http://evil\")", "line break"]
    assert {r["referrer_host"] for r in rows} == {"'@evil.example"}
    assert {r["occurred_at"] for r in rows} == {"2026-03-01T00:00:00.000Z"}

    _, stranger = make_user(pg, settings, "business")
    _, creator = make_user(pg, settings, "creator")
    assert (await api.get(f"/v1/campaigns/{campaign}/events.csv", headers=stranger)).status == 404
    assert (await api.get(f"/v1/campaigns/{campaign}/events.csv", headers=creator)).status == 403
    bad = await api.get(f"/v1/campaigns/{campaign}/events.csv", params={"from": "soon"}, headers=auth)
    assert bad.status == 422 and (await bad.json())["error"]["field"] == "from"


async def test_earnings_csv_streams_every_row_once_in_bounded_pages(api, pg, settings, monkeypatch):
    """The paging invariant that makes the export's size irrelevant, on pages of 7 rows.

    Each page is one query of at most ``EXPORT_CHUNK_ROWS`` rows in (occurred_at, id) order that
    starts after the previous page's last row, so a million rows are 20 such pages of 50,000 (the
    process holds one), as the events export above shows over ClickHouse. Here many pages from few
    rows: events share timestamps across page boundaries (only the id breaks the tie), one creator's
    total is an exact multiple of the page (the last page comes back empty), and an event added after
    the first bytes left arrives in the last page.
    """
    monkeypatch.setattr(exports, "EXPORT_CHUNK_ROWS", PAGE_ROWS)
    business, _ = make_user(pg, settings, "business")
    creator, auth = make_user(pg, settings, "creator")
    exact, exact_auth = make_user(pg, settings, "creator")
    _, someone = make_user(pg, settings, "creator")
    campaign = make_campaign(pg, business)
    pg.execute("UPDATE campaigns SET title = '-1+1', status = 'active' WHERE id = %s", (campaign,))  # public
    for who, rows in ((creator, EARNINGS_ROWS), (exact, 3 * PAGE_ROWS)):
        # Ten events per millisecond: a page boundary falls inside a run of equal timestamps.
        pg.execute("""INSERT INTO events (campaign_id, creator_id, event_type, occurred_at, status, payout_amount,
                                          platform_fee, paid)
                      SELECT %s, %s, 'click', %s + (n / 10) * interval '1 millisecond', 'paid', 0.50, 0.05, true
                        FROM generate_series(0, %s - 1) AS n""", (campaign, who, DAY, rows))
    pg.execute("""INSERT INTO events (campaign_id, creator_id, event_type, occurred_at, status, rejection_reason)
                  VALUES (%s, %s, 'click', %s, 'rejected', 'bot')""", (campaign, creator, DAY))  # earned nothing
    marker = str(uuid.uuid4())

    def add_the_last_event():
        # A sale refunded in part (40 %): the creator keeps 3.00 of the payout less 0.30 of the fee.
        pg.execute("""INSERT INTO events (id, campaign_id, creator_id, event_type, occurred_at, status, payout_amount,
                                          platform_fee, paid, value, refunded_value, reversed_payout, reversed_fee)
                      VALUES (%s, %s, %s, 'sale', %s, 'paid', 5.00, 0.50, true, 50.00, 20.00, 2.00, 0.20)""",
                   (marker, campaign, creator, DAY + timedelta(days=1, hours=23)))

    response = await api.get("/v1/me/earnings.csv", params=RANGE, headers=auth)
    body = await read_in_two_parts(response, add_the_last_event)

    lines = body.split(b"\n")
    assert lines[0].decode() == ",".join(EARNINGS_COLUMNS) and lines[-1] == b""
    rows = [next(csv.reader([line.decode()])) for line in lines[1:-1]]
    expected = pg.execute("SELECT id::text AS id FROM events WHERE creator_id = %s AND status = 'paid'"
                          " ORDER BY occurred_at, id", (creator,)).fetchall()
    assert [row[1] for row in rows] == [r["id"] for r in expected]  # every row once, in key order
    assert len(rows) == EARNINGS_ROWS + 1 > 10 * PAGE_ROWS
    assert rows[0][3:] == ["'-1+1", "click", "paid", "0.45"] and rows[0][0] == "2026-03-01T00:00:00.000000Z"
    assert rows[-1][1] == marker and rows[-1][5:] == ["paid", "2.70"]
    whole = await (await api.get("/v1/me/earnings.csv", params=RANGE, headers=exact_auth)).read()
    assert whole.count(b"\n") == 3 * PAGE_ROWS + 1 and len(set(whole.split(b"\n"))) == 3 * PAGE_ROWS + 2
    empty = await api.get("/v1/me/earnings.csv", params=RANGE, headers=someone)
    assert (await empty.read()).decode() == ",".join(EARNINGS_COLUMNS) + "\n"  # only the caller's own


async def test_earnings_csv_streams_a_million_rows(api, pg, settings):
    business, _ = make_user(pg, settings, "business")
    creator, auth = make_user(pg, settings, "creator")
    campaign = make_campaign(pg, business)
    fill_earnings(pg, campaign, creator, MILLION)
    marker = str(uuid.uuid4())

    def add_the_last_event():
        pg.execute("""INSERT INTO events (id, campaign_id, creator_id, event_type, occurred_at, status, payout_amount,
                                          platform_fee, paid)
                      VALUES (%s, %s, %s, 'click', %s, 'paid', 2.00, 0.20, true)""",
                   (marker, campaign, creator, DAY + timedelta(days=1, hours=23)))

    response = await api.get("/v1/me/earnings.csv", params=RANGE, headers=auth)
    body = await read_in_two_parts(response, add_the_last_event)

    lines = body.split(b"\n")
    assert lines[0].decode() == ",".join(EARNINGS_COLUMNS) and lines[-1] == b""
    assert len(lines) - 2 == MILLION + 1 > 2 * EXPORT_CHUNK_ROWS  # every row once, over many pages
    assert next(csv.reader([lines[1].decode()]))[0] == "2026-03-01T00:00:00.000000Z"
    assert next(csv.reader([lines[-2].decode()]))[1::5] == [marker, "1.80"]  # sent after the first bytes left
    assert len(set(lines)) == len(lines)  # no row twice across page boundaries


async def test_a_failure_mid_stream_cuts_the_connection(api, pg, settings):
    """A page that fails after the first bytes left: the client gets a broken download, not a short CSV."""
    business, _ = make_user(pg, settings, "business")
    creator, auth = make_user(pg, settings, "creator")
    fill_earnings(pg, make_campaign(pg, business), creator, 4 * EXPORT_CHUNK_ROWS)

    def break_the_next_page():
        pg.execute("REVOKE SELECT ON events FROM oros_app")  # the request role's next page is refused

    response = await api.get("/v1/me/earnings.csv", params=RANGE, headers=auth)
    with pytest.raises(aiohttp.ClientPayloadError):
        await read_in_two_parts(response, break_the_next_page)
