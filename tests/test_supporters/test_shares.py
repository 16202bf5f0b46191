"""Share links in the books: a supporter's share of each payout through its link, out of the creator's net.

Real Postgres and chDB; events go into ClickHouse through ingest's writer (and,
for the wire format, through the Redis stream and the ingester), the settler
settles them, reconcile checks the books after each step.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from decimal import Decimal

import orjson
import psycopg
import pytest

from ingest.consumer import Ingester
from ingest.enrich import Enricher
from ingest.writer import BatchWriter
from oros.clientip import ip_hash, ip_hash_key, ip_hash_key_id
from oros.events import STREAM_FIELD, Event, click_link_fields, encode_click, uuid7
from oros.reasons import UNKNOWN_CAMPAIGN
from oros.settings import Settings, SettingsError
from settler.reconcile import reconcile
from settler.run import run_settle_command, settle_once

from factories import SYSTEM, World, now_ms

D = Decimal
SUPPORTER_IP = "10.9.8.7"
KEY = "k" * 40


def share(world: World, campaign: str, creator: tuple[str, str], *, ip: str | None = SUPPORTER_IP,
          pct: str = "10", anonymized: bool = False) -> tuple[str, str, str]:
    """A supporter's share link of ``creator``'s link, made from ``ip``: (supporter, link id, code)."""
    supporter = world.user("supporter")
    code = uuid.uuid4().hex[:12]
    key = ip_hash_key(world.settings.ip_hash_key)
    link = world.pg.execute(
        "INSERT INTO tracking_links (campaign_id, creator_id, supporter_id, code, url, destination_url, shared_from,"
        " share_pct, share_ip_hash, share_ip, share_ip_key) VALUES (%s, %s, %s, %s, 'http://t/s',"
        " 'https://example.com', %s, %s, %s, %s, %s) RETURNING id::text AS id",
        (campaign, creator[0], supporter, code, creator[1], D(pct), ip_hash(ip, key) if ip else None,
         None if anonymized or ip is None else ip, ip_hash_key_id(key))).fetchone()["id"]
    return supporter, link, code


def through(world: World, campaign: str, creator: tuple[str, str], shared: tuple[str, str, str], **kw) -> Event:
    """A click through the share link: the creator's, carrying the supporter (as the tracker writes it)."""
    return world.click(campaign, (creator[0], shared[1]), supporter_id=shared[0], **kw)


def pending(world: World, user: str) -> Decimal:
    return world.wallet(user)["pending_balance"]


def rewards(world: World, supporter: str) -> list[dict]:
    return world.pg.execute(
        "SELECT source, status, amount, tracking_link_id::text AS link, transfer_id::text AS transfer,"
        " campaign_id::text AS campaign FROM rewards WHERE user_id = %s ORDER BY created_at", (supporter,)).fetchall()


def shares_of(world: World, event: Event) -> dict:
    return world.pg.execute("SELECT status, rejection_reason, supporter_id::text AS supporter, share_reward,"
                            " payout_amount, platform_fee, transfer_id::text AS transfer FROM events WHERE id = %s",
                            (event.event_id,)).fetchone()


def test_a_share_clicks_pay_the_creator_and_the_supporter_exactly(world):
    # 0.55 a click: fee round_half_up(0.055) = 0.06, reward round_half_up(0.055) = 0.06 out of the net 0.49.
    campaign = world.campaign(payout="0.55", fund="10.00")
    creator = world.creator(campaign)
    shared = share(world, campaign, creator)
    clicks = [through(world, campaign, creator, shared) for _ in range(3)]
    own = world.click(campaign, creator)
    world.put([*clicks, own])
    assert settle_once(world.settings)["events_paid"] == 4

    assert pending(world, creator[0]) == D("0.43") * 3 + D("0.49")
    assert pending(world, shared[0]) == D("0.18")
    assert world.wallet(SYSTEM, "fees")["pending_balance"] == D("0.24")
    assert world.campaign_row(campaign)["remaining_budget"] == D("10.00") - D("0.55") * 4  # the business pays as before
    earned = world.pg.execute("SELECT total_earned FROM campaign_creators WHERE campaign_id = %s",
                              (campaign,)).fetchone()["total_earned"]
    assert earned == D("1.78")
    [reward] = rewards(world, shared[0])
    assert reward | {"transfer": None} == {"source": "share", "status": "paid", "amount": D("0.18"), "link": shared[1],
                                           "transfer": None, "campaign": campaign}
    row = shares_of(world, clicks[0])
    assert row["supporter"] == shared[0] and row["share_reward"] == D("0.06") and row["transfer"] == reward["transfer"]
    assert shares_of(world, own)["supporter"] is None and shares_of(world, own)["share_reward"] is None
    # The supporter's leg is held with the creator's, in the payout's own transfer.
    legs = world.pg.execute(
        "SELECT l.amount, l.status, l.hold_until IS NOT NULL AS held, l.description FROM ledger_entries l"
        " JOIN wallets w ON w.id = l.wallet_id WHERE w.user_id = %s", (shared[0],)).fetchall()
    assert legs == [{"amount": D("0.18"), "status": "pending", "held": True, "description": "share reward"}]
    world.assert_books()

    # Released with the creator's earnings: available, withdrawable like them.
    world.pg.execute("SELECT oros_release_holds(now() + interval '100 days')")
    assert world.wallet(shared[0])["available_balance"] == D("0.18")
    world.assert_books()


def test_the_share_percent_is_the_links_and_never_more_than_the_net(world):
    campaign = world.campaign(payout="1.00", fund="10.00")
    creator = world.creator(campaign)
    generous = share(world, campaign, creator, pct="95")  # 0.95 asked, 0.90 is all the net holds
    precise = share(world, campaign, creator, pct="12.34", ip="10.9.8.6")  # 0.1234 -> 0.12
    world.put([through(world, campaign, creator, generous), through(world, campaign, creator, precise)])
    settle_once(world.settings)
    assert pending(world, generous[0]) == D("0.90")
    assert pending(world, precise[0]) == D("0.12")
    assert pending(world, creator[0]) == D("0.00") + D("0.78")
    world.assert_books()


def test_a_supporter_never_earns_on_its_own_clicks(world):
    campaign = world.campaign(payout="1.00", fund="10.00")
    creator = world.creator(campaign)
    shared = share(world, campaign, creator)
    own = through(world, campaign, creator, shared, ip=SUPPORTER_IP)
    unknown = replace(through(world, campaign, creator, shared), ip=None)  # no address: cannot be told apart
    other = through(world, campaign, creator, shared)
    world.put([own, unknown, other])
    assert settle_once(world.settings)["events_paid"] == 3
    # Paid to the creator as a normal click, no reward; the event still says whose link it came through.
    assert shares_of(world, own) | {"transfer": None} == {
        "status": "paid", "rejection_reason": None, "supporter": shared[0], "share_reward": None,
        "payout_amount": D("1.00"), "platform_fee": D("0.10"), "transfer": None}
    assert shares_of(world, unknown)["share_reward"] is None
    assert shares_of(world, other)["share_reward"] == D("0.10")
    assert pending(world, creator[0]) == D("0.90") * 2 + D("0.80")
    assert pending(world, shared[0]) == D("0.10")
    assert [r["amount"] for r in rewards(world, shared[0])] == [D("0.10")]
    world.assert_books()


def test_a_supporter_who_became_a_creator_of_the_campaign_earns_no_more_shares(world):
    """Sharing is refused to the campaign's creators; one who joins after sharing is held to the same rule."""
    campaign = world.campaign(payout="1.00", fund="10.00")
    creator = world.creator(campaign)
    shared = share(world, campaign, creator)
    world.pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'creator')", (shared[0],))
    world.pg.execute("INSERT INTO campaign_creators (campaign_id, creator_id, status) VALUES (%s, %s, 'accepted')",
                     (campaign, shared[0]))
    click = through(world, campaign, creator, shared)
    world.put([click])
    settle_once(world.settings)
    assert (shares_of(world, click)["status"], shares_of(world, click)["share_reward"]) == ("paid", None)
    assert (pending(world, creator[0]), pending(world, shared[0])) == (D("0.90"), D("0.00"))
    world.assert_books()


def put_enriched(settings: Settings, events: list[Event]) -> None:
    """Into ClickHouse as ingest writes them: enriched (the stored IP truncated, its keyed hash beside it)."""
    enricher, writer = Enricher(settings), BatchWriter(settings)
    for event in events:
        writer.submit(event.event_id.encode(), enricher.line(event.encode()))
    writer.close()


def test_while_anonymizing_the_keyed_hash_tells_the_supporters_clicks(world):
    world.settings = replace(world.settings, anonymize_ip=True, ip_hash_key=KEY)
    campaign = world.campaign(payout="1.00", fund="10.00")
    creator = world.creator(campaign)
    shared = share(world, campaign, creator, anonymized=True)
    # Same /24 as the supporter: the truncated addresses are equal, the hashes of the full ones are not.
    neighbour = through(world, campaign, creator, shared, ip="10.9.8.99")
    own = through(world, campaign, creator, shared, ip=SUPPORTER_IP)
    put_enriched(world.settings, [neighbour, own])
    settle_once(world.settings)
    assert shares_of(world, neighbour)["share_reward"] == D("0.10")
    assert shares_of(world, own)["share_reward"] is None
    assert world.pg.execute("SELECT share_ip FROM tracking_links WHERE id = %s", (shared[1],)).fetchone() == {
        "share_ip": None}
    world.assert_books()


@pytest.mark.parametrize("anonymized", [False, True])
def test_an_ipv6_supporter_is_its_64(world, anonymized):
    """An IPv6 host may use any address of its /64: a click from there is the supporter's own, and a second
    click from the same /64 on the link is a duplicate; another /64 earns."""
    if anonymized:
        world.settings = replace(world.settings, anonymize_ip=True, ip_hash_key=KEY)
    campaign = world.campaign(payout="1.00", fund="10.00")
    creator = world.creator(campaign)
    shared = share(world, campaign, creator, ip="2001:db8:7:1::10", anonymized=anonymized)
    t = now_ms() - 10_000
    own = through(world, campaign, creator, shared, ip="2001:db8:7:1:abcd::99", ts_ms=t)
    other = through(world, campaign, creator, shared, ip="2001:db8:7:2::10", ts_ms=t + 1000)
    again = through(world, campaign, creator, shared, ip="2001:db8:7:2:ffff::1", ts_ms=t + 2000)
    if anonymized:
        put_enriched(world.settings, [own, other, again])
    else:
        world.put([own, other, again])
    settle_once(world.settings)
    assert (shares_of(world, own)["status"], shares_of(world, own)["share_reward"]) == ("paid", None)
    assert shares_of(world, other)["share_reward"] == D("0.10")
    assert (shares_of(world, again)["status"], shares_of(world, again)["rejection_reason"]) == (
        "rejected", "duplicate_click")
    assert pending(world, shared[0]) == D("0.10")
    world.assert_books()


def test_a_hash_under_a_rotated_key_earns_nothing_until_the_link_is_asked_for_again(world):
    """Rotating OROS_IP_HASH_KEY while anonymizing: the link's old hash can match no click, so the address
    is unknown (no reward, not "someone else"); asking for the link again hashes it under the new key."""
    world.settings = replace(world.settings, anonymize_ip=True, ip_hash_key=KEY)
    campaign = world.campaign(payout="1.00", fund="10.00")
    creator = world.creator(campaign)
    shared = share(world, campaign, creator, anonymized=True)
    world.settings = replace(world.settings, ip_hash_key="r" * 40)
    t = now_ms() - 10_000
    own, other = (through(world, campaign, creator, shared, ip=ip, ts_ms=t) for ip in (SUPPORTER_IP, "10.1.1.1"))
    put_enriched(world.settings, [own, other])
    settle_once(world.settings)
    assert [shares_of(world, e)["share_reward"] for e in (own, other)] == [None, None]
    # The supporter asks for its link again (POST /v1/links/{code}/shares), from where it made it.
    key = ip_hash_key(world.settings.ip_hash_key)
    with psycopg.connect(world.settings.database_url, autocommit=True) as conn:
        conn.execute("SELECT 1 FROM oros_open_share(%s, %s, 'unused', 'http://t', 10, %s, NULL, %s)",
                     (shared[0], shared[2], ip_hash(SUPPORTER_IP, key), ip_hash_key_id(key)))
    own, other = (through(world, campaign, creator, shared, ip=ip, ts_ms=t + 1000)
                  for ip in (SUPPORTER_IP, "10.1.1.2"))
    put_enriched(world.settings, [own, other])
    settle_once(world.settings)
    assert [shares_of(world, e)["share_reward"] for e in (own, other)] == [None, D("0.10")]
    world.assert_books()


def test_duplicate_clicks_are_judged_per_share_link(world):
    campaign = world.campaign(payout="1.00", fund="10.00")
    creator = world.creator(campaign)
    shared = share(world, campaign, creator)
    t = now_ms() - 10_000
    first = through(world, campaign, creator, shared, ip="10.1.1.1", ts_ms=t)
    again = through(world, campaign, creator, shared, ip="10.1.1.1", ts_ms=t + 1000)
    on_the_creators_link = world.click(campaign, creator, ip="10.1.1.1", ts_ms=t + 2000)
    world.put([first, again, on_the_creators_link])
    settle_once(world.settings)
    assert shares_of(world, first)["share_reward"] == D("0.10")
    assert (shares_of(world, again)["status"], shares_of(world, again)["rejection_reason"]) == (
        "rejected", "duplicate_click")
    assert shares_of(world, on_the_creators_link)["status"] == "paid"
    assert pending(world, shared[0]) == D("0.10")
    world.assert_books()


def refund(business: str, order: str, total: str | None) -> Event:
    return Event(event_id=str(uuid7()), event_type="refund", ts_ms=now_ms(), campaign_id=UNKNOWN_CAMPAIGN,
                 order_id=order, business_id=business, value=total, source="api")


def test_a_shared_sale_refunded_reverses_both_pro_rata(world):
    # payout 10.00 on a 50.00 order: fee 1.00, reward 1.00, creator 8.00.
    campaign = world.campaign(objective="sale", payout="10.00", fund="100.00")
    creator = world.creator(campaign)
    shared = share(world, campaign, creator)
    click = through(world, campaign, creator, shared, ts_ms=now_ms() - 60_000)
    sale = world.conversion(click, kind="sale", order_id="O-9", value="50.00")
    world.put([click, sale])
    assert settle_once(world.settings)["events_paid"] == 1
    assert (pending(world, creator[0]), pending(world, shared[0])) == (D("8.00"), D("1.00"))
    assert shares_of(world, sale)["supporter"] == shared[0]
    world.assert_books()
    business = world.business_of(campaign)

    # 20.00 of 50.00 refunded: 6.00 of the payout left, its fee 0.60, the reward 0.60, the creator 4.80.
    world.put([refund(business, "O-9", "20.00")])
    report = settle_once(world.settings)
    assert (pending(world, creator[0]), pending(world, shared[0])) == (D("4.80"), D("0.60"))
    # The run reports what the refund took from the supporter: its pending reward fell 1.00 -> 0.60.
    assert report["refunds"]["share_rewards"] == {"count": 1, "amount": "0.40"}
    assert world.wallet(SYSTEM, "fees")["pending_balance"] == D("0.60")
    [reward] = rewards(world, shared[0])
    assert reward["amount"] == D("0.60") and reward["transfer"] == shares_of(world, sale)["transfer"]
    assert world.pg.execute("SELECT total_earned FROM campaign_creators WHERE campaign_id = %s",
                            (campaign,)).fetchone()["total_earned"] == D("4.80")
    assert world.campaign_row(campaign)["remaining_budget"] == D("94.00")
    world.assert_books()

    world.put([refund(business, "O-9", None)])
    report = settle_once(world.settings)
    assert (pending(world, creator[0]), pending(world, shared[0])) == (D("0.00"), D("0.00"))
    assert report["refunds"]["share_rewards"] == {"count": 1, "amount": "0.60"}
    assert [r["amount"] for r in rewards(world, shared[0])] == [D("0.00")]
    assert world.pg.execute("SELECT status, reversed_reward FROM events WHERE id = %s", (sale.event_id,)).fetchone() \
        == {"status": "reversed", "reversed_reward": D("1.00")}
    world.assert_books()


def test_a_shared_sale_from_the_supporters_own_click_earns_nothing(world):
    campaign = world.campaign(objective="sale", payout="10.00", fund="100.00")
    creator = world.creator(campaign)
    shared = share(world, campaign, creator)
    click = through(world, campaign, creator, shared, ip=SUPPORTER_IP, ts_ms=now_ms() - 60_000)
    sale = world.conversion(click, kind="sale", order_id="O-1", value="50.00")  # posted from the shop's server
    world.put([click, sale])
    settle_once(world.settings)
    assert shares_of(world, sale)["status"] == "paid" and shares_of(world, sale)["share_reward"] is None
    assert (pending(world, creator[0]), pending(world, shared[0])) == (D("9.00"), D("0.00"))
    world.assert_books()


def test_two_settlers_at_once_pay_each_share_once(world):
    campaign = world.campaign(payout="1.00", fund="50.00")
    creators = [world.creator(campaign) for _ in range(2)]
    shared = [share(world, campaign, c, ip=f"10.9.8.{i}") for i, c in enumerate(creators)]
    world.put([through(world, campaign, creators[i % 2], shared[i % 2]) for i in range(20)])
    reports: list[dict] = []
    threads = [threading.Thread(target=lambda: reports.append(settle_once(world.settings))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(r["events_paid"] for r in reports) == [0, 20]
    assert [pending(world, s[0]) for s in shared] == [D("1.00"), D("1.00")]
    assert world.pg.execute("SELECT count(*) AS n, sum(amount) AS total FROM rewards WHERE source = 'share'"
                            ).fetchone() == {"n": 2, "total": D("2.00")}
    world.assert_books()


def test_reconcile_names_a_share_reward_its_ledger_does_not_pay(world):
    campaign = world.campaign(payout="1.00", fund="10.00")
    creator = world.creator(campaign)
    shared = share(world, campaign, creator)
    world.put([through(world, campaign, creator, shared)])
    settle_once(world.settings)
    world.assert_books()
    world.pg.execute("UPDATE rewards SET amount = amount + 0.01 WHERE user_id = %s", (shared[0],))
    failed = {c.name: c.detail for c in reconcile(world.settings) if not c.ok}
    assert list(failed) == ["share_rewards_match_ledger"]
    assert "ledger 0.10, events 0.10" in failed["share_rewards_match_ledger"]
    world.pg.execute("UPDATE rewards SET amount = amount - 0.01 WHERE user_id = %s", (shared[0],))
    world.pg.execute("DELETE FROM rewards WHERE user_id = %s", (shared[0],))
    failed = {c.name: c.detail for c in reconcile(world.settings) if not c.ok}
    assert list(failed) == ["share_rewards_match_ledger"]
    assert "no rewards row records" in failed["share_rewards_match_ledger"]


async def test_supporter_id_travels_from_the_stream_to_clickhouse_and_postgres(world, settings, redis, ch):
    campaign = world.campaign(payout="1.00", fund="10.00")
    creator = world.creator(campaign)
    shared = share(world, campaign, creator)
    business = world.business_of(campaign)
    ts = now_ms()
    click_id = str(uuid7(ts))
    # As the tracker encodes a click through the share link (its byte template).
    fields = click_link_fields(campaign, shared[1], creator[0], shared[0], business)
    shared_click = encode_click(fields, click_id, ts, "10.2.3.4", "pytest", None, None, "redirect", {})
    assert Event.decode(shared_click).supporter_id == shared[0]
    # A message written before supporter_id was part of the wire format still decodes and goes in.
    old = world.click(campaign, creator, ts_ms=ts + 1)
    legacy = old.encode().replace(b'"supporter_id":null,', b"")
    assert b"supporter_id" not in legacy and Event.decode(legacy) == old
    async with redis.pipeline(transaction=False) as pipe:
        for raw in (shared_click, legacy):
            pipe.xadd(settings.keys.stream, {STREAM_FIELD: raw})
        await pipe.execute()
    ingester = Ingester(settings, "a", batch_size=100)
    try:
        assert await ingester.drain_once() == 2
    finally:
        await ingester.close()
    # ClickHouse orders UUIDs by their second half first: the text of a UUIDv7 sorts by time.
    rows = ch.query("SELECT toString(event_id) AS id, toString(supporter_id) FROM events ORDER BY id").result_rows
    assert rows == [(click_id, shared[0]), (old.event_id, None)]
    assert settle_once(settings)["events_paid"] == 2
    assert world.pg.execute("SELECT id::text AS id, supporter_id::text AS s, share_reward FROM events ORDER BY id"
                            ).fetchall() == [{"id": click_id, "s": shared[0], "share_reward": D("0.10")},
                                             {"id": old.event_id, "s": None, "share_reward": None}]
    world.assert_books()


def test_a_forged_supporter_on_an_event_earns_nothing(world):
    """The stream's supporter_id is not believed: the supporter is the link's, as Postgres knows it."""
    campaign = world.campaign(payout="1.00", fund="10.00")
    creator = world.creator(campaign)
    shared = share(world, campaign, creator)
    forger = world.user("supporter")
    on_creators_link = world.click(campaign, creator, supporter_id=forger)
    on_share = world.click(campaign, (creator[0], shared[1]), supporter_id=forger)
    world.put([on_creators_link, on_share])
    settle_once(world.settings)
    assert shares_of(world, on_creators_link)["supporter"] is None
    assert shares_of(world, on_share)["supporter"] == shared[0]
    assert (pending(world, forger), pending(world, shared[0])) == (D("0.00"), D("0.10"))
    world.assert_books()


@pytest.mark.parametrize(("value", "ok"), [("10", True), ("12.5", True), ("0", True), ("100", True),
                                           ("10.005", False), ("100.01", False), ("-1", False), ("ten", False)])
def test_oros_share_pct_is_a_percent_with_two_places_at_most(value, ok):
    if ok:
        assert Settings.from_env({"OROS_SHARE_PCT": value}).share_pct == D(value)
    else:
        with pytest.raises(SettingsError):
            Settings.from_env({"OROS_SHARE_PCT": value})


def test_the_run_report_counts_the_share_rewards_the_ledger_holds(world, capsys):
    campaign = world.campaign(payout="0.55", fund="10.00")
    creator = world.creator(campaign)
    first, second = share(world, campaign, creator), share(world, campaign, creator, pct="20", ip="10.9.8.6")
    world.put([*(through(world, campaign, creator, first) for _ in range(3)),
               through(world, campaign, creator, first, ip=SUPPORTER_IP),  # the supporter's own: no reward
               through(world, campaign, creator, second), world.click(campaign, creator)])

    assert run_settle_command(world.settings, dry_run=False) == 0  # `oros settle --once` prints the report
    printed = orjson.loads(capsys.readouterr().out)

    run = printed["run_id"]
    transfers = "SELECT transfer_id FROM events WHERE settlement_run_id = %(run)s AND share_reward IS NOT NULL"
    booked = world.pg.execute(
        f"SELECT (SELECT count(*) FROM rewards WHERE source = 'share' AND transfer_id IN ({transfers})) AS rewards,"
        f" (SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE transfer_id IN ({transfers})"
        "   AND description LIKE 'share reward%%') AS amount", {"run": run}).fetchone()
    rewarded = world.pg.execute("SELECT count(*) AS n FROM events WHERE settlement_run_id = %s"
                                " AND share_reward IS NOT NULL", (run,)).fetchone()["n"]
    # 0.55 a click: the first's 10 % is 0.06 (x 3), the second's 20 % 0.11.
    assert printed["share_rewards"] == {"events": rewarded, "rewards": booked["rewards"],
                                        "amount": str(booked["amount"])} == {"events": 4, "rewards": 2,
                                                                             "amount": "0.29"}
    assert (printed["events_paid"], printed["live_sales"]) == (6, {"paid": 0, "amount": "0.00"})
    stored = world.pg.execute("SELECT report FROM settlement_runs WHERE id = %s", (run,)).fetchone()["report"]
    assert stored["share_rewards"] == printed["share_rewards"]
    world.assert_books()
